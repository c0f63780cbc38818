#pragma once
/// \file
/// ReLU kernels and their launchers (nvcc only; instantiated in kernels.cu).

#include <cuda_runtime.h>

#include <cstdint>

#include "nddr/backend/cuda/activation.hpp"
#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/ops/math/activation.hpp"

namespace nddr::cuda::kernels {

// x and y may be the same buffer (Sequential runs ReLU in place), so neither is __restrict__.
template <class T>
__global__ void relu_forward(const T* x, T* y, std::int64_t n) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) y[i] = ops::relu_element(x[i]);
}

template <class T>
__global__ void relu_backward(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx,
                              std::int64_t n) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride())
    ops::relu_backward_element(x[i], dy[i], dx[i]);
}

template <class T>
__global__ void relu_gradient(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ g,
                              std::int64_t n) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride())
    g[i] = ops::relu_pass(y[i], dy[i]);
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void relu_forward(cudaStream_t stream, const T* x, T* y, std::int64_t n) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::relu_forward<T>)(x, y, n);
  check_launch("relu_forward");
}

template <class T>
void relu_backward(cudaStream_t stream, const T* x, const T* dy, T* dx, std::int64_t n) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::relu_backward<T>)
  (x, dy, dx, n);
  check_launch("relu_backward");
}

template <class T>
void relu_gradient(cudaStream_t stream, const T* y, const T* dy, T* g, std::int64_t n) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::relu_gradient<T>)
  (y, dy, g, n);
  check_launch("relu_gradient");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiations of the ReLU launchers for element type `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_ACTIVATION(T)                                                    \
  template void nddr::cuda::launch::relu_forward<T>(cudaStream_t, const T*, T*, std::int64_t); \
  template void nddr::cuda::launch::relu_backward<T>(cudaStream_t, const T*, const T*, T*,     \
                                                     std::int64_t);                             \
  template void nddr::cuda::launch::relu_gradient<T>(cudaStream_t, const T*, const T*, T*,     \
                                                     std::int64_t);
