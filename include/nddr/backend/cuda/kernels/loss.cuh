#pragma once
/// \file
/// Loss kernels and their launchers (nvcc only; instantiated in kernels.cu): per-pixel terms
/// from nddr/ops/loss.hpp and a deterministic two-pass block reduction in double.

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/loss.hpp"
#include "nddr/ops/math/l2_normalize.hpp"
#include "nddr/ops/math/loss.hpp"

namespace nddr::cuda::kernels {

__device__ inline LossStats combine(LossStats a, const LossStats& b) {
  a.sum += b.sum;
  a.count += b.count;
  a.first_bad = b.first_bad < a.first_bad ? b.first_bad : a.first_bad;
  return a;
}

/// Tree reduction of one value per thread of a kBlock-thread block; thread 0 gets the total.
__device__ inline LossStats block_reduce(LossStats v) {
  __shared__ LossStats shared[kBlock];
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = kBlock / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half)
      shared[threadIdx.x] = combine(shared[threadIdx.x], shared[threadIdx.x + half]);
    __syncthreads();
  }
  return shared[0];
}

/// First pass: block b reduces the pixels b * kBlock + t + k * gridDim * kBlock into
/// partial[b]; `term(i)` gives one pixel's stats.
template <class F>
__global__ void loss_stats_pass1(std::int64_t pixels, F term, LossStats* partial) {
  LossStats acc{0.0, 0.0, ULLONG_MAX};
  for (std::int64_t i = first_index(); i < pixels; i += grid_stride()) acc = combine(acc, term(i));
  const LossStats total = block_reduce(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

/// Second pass (one block): partial[0..count) -> partial[launch::kLossBlocks].
__global__ void loss_stats_pass2(LossStats* partial, int count) {
  LossStats acc{0.0, 0.0, ULLONG_MAX};
  for (int i = static_cast<int>(threadIdx.x); i < count; i += kBlock)
    acc = combine(acc, partial[i]);
  const LossStats total = block_reduce(acc);
  if (threadIdx.x == 0) partial[launch::kLossBlocks] = total;
}

template <class F>
void run_loss_stats(cudaStream_t stream, std::int64_t pixels, F term, LossStats* out) {
  const std::int64_t wanted = (pixels + kBlock - 1) / kBlock;
  const int blocks = static_cast<int>(
      wanted < 1 ? 1 : (wanted < launch::kLossBlocks ? wanted : launch::kLossBlocks));
  NDDR_LAUNCH(blocks, kBlock, 0, stream, loss_stats_pass1<F>)(pixels, term, out);
  check_launch("loss_stats_pass1");
  NDDR_LAUNCH(1, kBlock, 0, stream, loss_stats_pass2)(out, blocks);
  check_launch("loss_stats_pass2");
}

template <class T>
struct CrossEntropyTerm {
  const T* logits;
  const std::int32_t* labels;
  std::int64_t classes, plane;
  std::int32_t ignore;
  bool with_loss;

  __device__ LossStats operator()(std::int64_t p) const {
    const std::int32_t label = labels[p];
    switch (ops::classify_label(label, classes, ignore)) {
      case ops::LabelKind::kIgnored:
        return {0.0, 0.0, ULLONG_MAX};
      case ops::LabelKind::kOutOfRange:
        return {0.0, 0.0, static_cast<unsigned long long>(p)};
      case ops::LabelKind::kValid:
        break;
    }
    const double loss =
        with_loss ? static_cast<double>(ops::softmax_cross_entropy_pixel(
                        logits + ops::pixel_offset(p, classes, plane), classes, plane, label))
                  : 0.0;
    return {loss, 1.0, ULLONG_MAX};
  }
};

template <class T>
struct NormalLossTerm {
  const T* p;
  const T* g;
  std::int64_t plane;
  NormalLossForm form;
  T eps;
  bool with_loss;

  __device__ LossStats operator()(std::int64_t i) const {
    const std::int64_t o = ops::pixel_offset(i, 3, plane);
    if (!ops::normal_pixel_valid(g + o, plane)) return {0.0, 0.0, ULLONG_MAX};
    const double loss =
        with_loss ? static_cast<double>(ops::normal_loss_pixel(p + o, g + o, plane, form, eps))
                  : 0.0;
    return {loss, 1.0, ULLONG_MAX};
  }
};

template <class T>
struct DenseLossTerm {
  const T* p;
  const T* g;
  DenseLossForm form;
  DenseLossSubset subset;
  bool zero_invalid;
  bool with_loss;

  __device__ LossStats operator()(std::int64_t i) const {
    if (!ops::dense_element_valid(g[i], zero_invalid, subset)) return {0.0, 0.0, ULLONG_MAX};
    const double loss =
        with_loss ? static_cast<double>(ops::dense_loss_element(p[i], g[i], form)) : 0.0;
    return {loss, 1.0, ULLONG_MAX};
  }
};

/// The gradient coefficient scale / count: with `total` (a reduction finished on the device by
/// an earlier kernel of the same stream) `scale` is divided by its count there, so no host
/// round trip is needed; without it `scale` already is the coefficient.
template <class T>
__device__ inline T device_coefficient(T scale, const LossStats* total) {
  if (total == nullptr) return scale;
  return total->count > 0.0 ? static_cast<T>(static_cast<double>(scale) / total->count) : T(0);
}

template <class T>
__global__ void cross_entropy_backward(const T* __restrict__ logits,
                                       const std::int32_t* __restrict__ labels,
                                       T* __restrict__ dlogits, std::int64_t pixels,
                                       std::int64_t classes, std::int64_t plane,
                                       std::int32_t ignore, T coeff,
                                       const LossStats* __restrict__ total) {
  coeff = device_coefficient(coeff, total);
  for (std::int64_t p = first_index(); p < pixels; p += grid_stride()) {
    // Out-of-range labels are reported by the statistics pass; their pixels get no gradient.
    if (ops::classify_label(labels[p], classes, ignore) != ops::LabelKind::kValid) continue;
    const std::int64_t o = ops::pixel_offset(p, classes, plane);
    ops::softmax_cross_entropy_backward_pixel(logits + o, classes, plane, labels[p], coeff,
                                              dlogits + o);
  }
}

template <class T>
__global__ void normal_loss_backward(const T* __restrict__ p, const T* __restrict__ g,
                                     T* __restrict__ dp, std::int64_t pixels, std::int64_t plane,
                                     NormalLossForm form, T eps, T coeff,
                                     const LossStats* __restrict__ total) {
  coeff = device_coefficient(coeff, total);
  for (std::int64_t i = first_index(); i < pixels; i += grid_stride()) {
    const std::int64_t o = ops::pixel_offset(i, 3, plane);
    if (ops::normal_pixel_valid(g + o, plane))
      ops::normal_loss_backward_pixel(p + o, g + o, plane, form, eps, coeff, dp + o);
  }
}

template <class T>
__global__ void dense_loss_backward(const T* __restrict__ p, const T* __restrict__ g,
                                    T* __restrict__ dp, std::int64_t n, DenseLossForm form,
                                    DenseLossSubset subset, bool zero_invalid, T coeff,
                                    const LossStats* __restrict__ total) {
  coeff = device_coefficient(coeff, total);
  for (std::int64_t i = first_index(); i < n; i += grid_stride())
    if (ops::dense_element_valid(g[i], zero_invalid, subset))
      dp[i] += coeff * ops::dense_loss_gradient(p[i], g[i], form);
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void cross_entropy_stats(cudaStream_t stream, const T* logits, const std::int32_t* labels,
                         std::int64_t pixels, std::int64_t classes, std::int64_t plane,
                         std::int32_t ignore_label, bool with_loss, LossStats* out) {
  kernels::run_loss_stats(
      stream, pixels,
      kernels::CrossEntropyTerm<T>{logits, labels, classes, plane, ignore_label, with_loss}, out);
}

template <class T>
void cross_entropy_backward(cudaStream_t stream, const T* logits, const std::int32_t* labels,
                            T* dlogits, std::int64_t pixels, std::int64_t classes,
                            std::int64_t plane, std::int32_t ignore_label, T coeff,
                            const LossStats* total) {
  if (pixels == 0) return;
  NDDR_LAUNCH(kernels::grid_for(pixels), kernels::kBlock, 0, stream,
              kernels::cross_entropy_backward<T>)
  (logits, labels, dlogits, pixels, classes, plane, ignore_label, coeff, total);
  check_launch("cross_entropy_backward");
}

template <class T>
void normal_loss_stats(cudaStream_t stream, const T* p, const T* g, std::int64_t pixels,
                       std::int64_t plane, NormalLossForm form, T eps, bool with_loss,
                       LossStats* out) {
  kernels::run_loss_stats(stream, pixels,
                          kernels::NormalLossTerm<T>{p, g, plane, form, eps, with_loss}, out);
}

template <class T>
void normal_loss_backward(cudaStream_t stream, const T* p, const T* g, T* dp, std::int64_t pixels,
                          std::int64_t plane, NormalLossForm form, T eps, T coeff,
                          const LossStats* total) {
  if (pixels == 0) return;
  NDDR_LAUNCH(kernels::grid_for(pixels), kernels::kBlock, 0, stream,
              kernels::normal_loss_backward<T>)
  (p, g, dp, pixels, plane, form, eps, coeff, total);
  check_launch("normal_loss_backward");
}

template <class T>
void dense_loss_stats(cudaStream_t stream, const T* p, const T* g, std::int64_t n,
                      DenseLossForm form, DenseLossSubset subset, bool zero_invalid,
                      bool with_loss, LossStats* out) {
  kernels::run_loss_stats(
      stream, n, kernels::DenseLossTerm<T>{p, g, form, subset, zero_invalid, with_loss}, out);
}

template <class T>
void dense_loss_backward(cudaStream_t stream, const T* p, const T* g, T* dp, std::int64_t n,
                         DenseLossForm form, DenseLossSubset subset, bool zero_invalid, T coeff,
                         const LossStats* total) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::dense_loss_backward<T>)
  (p, g, dp, n, form, subset, zero_invalid, coeff, total);
  check_launch("dense_loss_backward");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiations of the loss launchers for element type `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_LOSS(T)                                                              \
  template void nddr::cuda::launch::cross_entropy_stats<T>(                                        \
      cudaStream_t, const T*, const std::int32_t*, std::int64_t, std::int64_t, std::int64_t,       \
      std::int32_t, bool, nddr::cuda::LossStats*);                                                 \
  template void nddr::cuda::launch::cross_entropy_backward<T>(                                     \
      cudaStream_t, const T*, const std::int32_t*, T*, std::int64_t, std::int64_t, std::int64_t,   \
      std::int32_t, T, const nddr::cuda::LossStats*);                                              \
  template void nddr::cuda::launch::normal_loss_stats<T>(                                          \
      cudaStream_t, const T*, const T*, std::int64_t, std::int64_t, nddr::NormalLossForm, T, bool, \
      nddr::cuda::LossStats*);                                                                     \
  template void nddr::cuda::launch::normal_loss_backward<T>(                                       \
      cudaStream_t, const T*, const T*, T*, std::int64_t, std::int64_t, nddr::NormalLossForm, T,   \
      T, const nddr::cuda::LossStats*);                                                            \
  template void nddr::cuda::launch::dense_loss_stats<T>(                                           \
      cudaStream_t, const T*, const T*, std::int64_t, nddr::DenseLossForm, nddr::DenseLossSubset,  \
      bool, bool, nddr::cuda::LossStats*);                                                         \
  template void nddr::cuda::launch::dense_loss_backward<T>(                                        \
      cudaStream_t, const T*, const T*, T*, std::int64_t, nddr::DenseLossForm,                     \
      nddr::DenseLossSubset, bool, T, const nddr::cuda::LossStats*);
