#pragma once
/// \file
/// Element-wise sum kernels and their launchers (nvcc only; instantiated in kernels.cu).

#include <cuda_runtime.h>

#include <cstdint>

#include "nddr/backend/cuda/elementwise.hpp"
#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/ops/math/elementwise.hpp"

namespace nddr::cuda::kernels {

template <class T>
__global__ void accumulate(const T* __restrict__ x, T* __restrict__ y, std::int64_t n) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) y[i] += x[i];
}

// y may be a or b (an in-place residual add), so none is __restrict__.
template <class T>
__global__ void add_relu(const T* a, const T* b, T* y, std::int64_t n) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride())
    y[i] = ops::add_relu_element(a[i], b[i]);
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void accumulate(cudaStream_t stream, const T* x, T* y, std::int64_t n) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::accumulate<T>)(x, y, n);
  check_launch("accumulate");
}

template <class T>
void add_relu(cudaStream_t stream, const T* a, const T* b, T* y, std::int64_t n) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::add_relu<T>)(a, b, y, n);
  check_launch("add_relu");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiations of the element-wise sum launchers for `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_ELEMENTWISE(T)                                                 \
  template void nddr::cuda::launch::accumulate<T>(cudaStream_t, const T*, T*, std::int64_t); \
  template void nddr::cuda::launch::add_relu<T>(cudaStream_t, const T*, const T*, T*,        \
                                                std::int64_t);
