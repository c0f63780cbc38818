#pragma once
/// \file
/// Fused Adam/AdamW kernel and its launcher (nvcc only; instantiated in kernels.cu). The
/// launcher declaration lives in backend/cuda/adam.hpp (not included: it pulls in the CPU
/// optimiser); the span type is repeated here identically.
///
/// The step count t lives in device memory: the update reads it (bias correction from t + 1,
/// computed on the device as the CPU does), then a one-thread kernel increments it. Both
/// skip when a guarding loss total is bad, so a cancelled step changes neither the parameters,
/// nor the moments, nor t; and a captured CUDA Graph sees the current t at every replay.

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/backend/cuda/loss.hpp"
#include "nddr/ops/math/adam.hpp"

namespace nddr::cuda {

template <class T>
struct AdamSpan {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  T lr = T(0);
  T wd = T(0);
};

}  // namespace nddr::cuda

namespace nddr::cuda::kernels {

/// Whether every guarding loss total is finite and met no bad label.
__device__ inline bool adam_guard_ok(const LossStats* guard, std::int64_t guards,
                                     std::int64_t guard_stride) {
  for (std::int64_t g = 0; g < guards; ++g) {
    const LossStats& st = guard[g * guard_stride];
    if (!isfinite(st.sum) || st.first_bad != ULLONG_MAX) return false;
  }
  return true;
}

template <class T>
__global__ void adam_step(T* __restrict__ values, const T* __restrict__ grads,
                          T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
                          T* __restrict__ max_exp_avg_sq, const AdamSpan<T>* __restrict__ spans,
                          std::int64_t count, double beta1, double beta2, double eps,
                          bool decoupled, const std::int64_t* __restrict__ step,
                          const LossStats* __restrict__ guard, std::int64_t guards,
                          std::int64_t guard_stride, const T* __restrict__ lr_scale) {
  if (!adam_guard_ok(guard, guards, guard_stride)) return;
  const ops::AdamBias bias = ops::adam_bias(beta1, beta2, *step + 1);
  // With a device learning rate the spans hold the group multipliers.
  const T scale = lr_scale != nullptr ? *lr_scale : T(1);
  for (std::int64_t s = blockIdx.x; s < count; s += gridDim.x) {
    const AdamSpan<T> span = spans[s];
    const ops::AdamElementArgs<T> a{span.lr * scale,
                                    span.wd,
                                    static_cast<T>(beta1),
                                    static_cast<T>(beta2),
                                    static_cast<T>(eps),
                                    static_cast<T>(bias.bc1),
                                    static_cast<T>(bias.bc2_sqrt),
                                    decoupled};
    for (std::int64_t i = span.begin + threadIdx.x; i < span.end; i += blockDim.x)
      ops::adam_element(values[i], grads[i], exp_avg[i], exp_avg_sq[i],
                        max_exp_avg_sq != nullptr ? max_exp_avg_sq + i : nullptr, a);
  }
}

/// t += 1 unless a guarding loss total is bad (one thread, after adam_step).
__global__ void adam_advance(std::int64_t* step, const LossStats* __restrict__ guard,
                             std::int64_t guards, std::int64_t guard_stride) {
  if (adam_guard_ok(guard, guards, guard_stride)) *step += 1;
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void adam_step(cudaStream_t stream, T* values, const T* grads, T* exp_avg, T* exp_avg_sq,
               T* max_exp_avg_sq, const AdamSpan<T>* spans, std::int64_t count, double beta1,
               double beta2, double eps, bool decoupled, std::int64_t* step,
               const LossStats* guard, std::int64_t guards, std::int64_t guard_stride,
               const T* lr_scale) {
  if (count > 0) {
    const auto blocks =
        static_cast<unsigned>(count < kernels::kMaxBlocks ? count : kernels::kMaxBlocks);
    NDDR_LAUNCH(blocks, kernels::kBlock, 0, stream, kernels::adam_step<T>)
    (values, grads, exp_avg, exp_avg_sq, max_exp_avg_sq, spans, count, beta1, beta2, eps,
     decoupled, step, guard, guards, guard_stride, lr_scale);
    check_launch("adam_step");
  }
  NDDR_LAUNCH(1, 1, 0, stream, kernels::adam_advance)(step, guard, guards, guard_stride);
  check_launch("adam_advance");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiation of the Adam launcher for element type `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_ADAM(T)                                                         \
  template void nddr::cuda::launch::adam_step<T>(                                             \
      cudaStream_t, T*, const T*, T*, T*, T*, const nddr::cuda::AdamSpan<T>*, std::int64_t,  \
      double, double, double, bool, std::int64_t*, const nddr::cuda::LossStats*, std::int64_t, \
      std::int64_t, const T*);
