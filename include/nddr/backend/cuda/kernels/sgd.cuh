#pragma once
/// \file
/// Fused momentum-SGD kernel and its launcher (nvcc only; instantiated in kernels.cu). The
/// launcher declaration lives in backend/cuda/sgd.hpp (not included: it pulls in the CPU
/// optimiser); the span type is repeated here identically.

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/backend/cuda/loss.hpp"
#include "nddr/ops/math/sgd.hpp"

namespace nddr::cuda {

template <class T>
struct SgdSpan {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  T lr = T(0);
  T wd = T(0);
};

}  // namespace nddr::cuda

namespace nddr::cuda::kernels {

template <class T>
__global__ void sgd_step(T* __restrict__ values, const T* __restrict__ grads,
                         T* __restrict__ velocity, const SgdSpan<T>* __restrict__ spans,
                         std::int64_t count, T momentum, bool nesterov,
                         const LossStats* __restrict__ guard, std::int64_t guards,
                         std::int64_t guard_stride, const T* __restrict__ lr_scale) {
  // A loss that is not finite, or that met an out-of-range label, cancels the whole update
  // (parameters and velocity stay as they were), as the CPU trainer stops before its step.
  for (std::int64_t g = 0; g < guards; ++g) {
    const LossStats& st = guard[g * guard_stride];
    if (!isfinite(st.sum) || st.first_bad != ULLONG_MAX) return;
  }
  // With a device learning rate the spans hold the group multipliers.
  const T scale = lr_scale != nullptr ? *lr_scale : T(1);
  for (std::int64_t s = blockIdx.x; s < count; s += gridDim.x) {
    const SgdSpan<T> span = spans[s];
    const T lr = span.lr * scale;
    for (std::int64_t i = span.begin + threadIdx.x; i < span.end; i += blockDim.x)
      ops::sgd_momentum_element(values[i], grads[i], velocity[i], lr, momentum, span.wd, nesterov);
  }
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void sgd_step(cudaStream_t stream, T* values, const T* grads, T* velocity, const SgdSpan<T>* spans,
              std::int64_t count, T momentum, bool nesterov, const LossStats* guard,
              std::int64_t guards, std::int64_t guard_stride, const T* lr_scale) {
  if (count == 0) return;
  const auto blocks =
      static_cast<unsigned>(count < kernels::kMaxBlocks ? count : kernels::kMaxBlocks);
  NDDR_LAUNCH(blocks, kernels::kBlock, 0, stream, kernels::sgd_step<T>)
  (values, grads, velocity, spans, count, momentum, nesterov, guard, guards, guard_stride,
   lr_scale);
  check_launch("sgd_step");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiation of the SGD launcher for element type `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_SGD(T)                                                        \
  template void nddr::cuda::launch::sgd_step<T>(                                            \
      cudaStream_t, T*, const T*, T*, const nddr::cuda::SgdSpan<T>*, std::int64_t, T, bool, \
      const nddr::cuda::LossStats*, std::int64_t, std::int64_t, const T*);
