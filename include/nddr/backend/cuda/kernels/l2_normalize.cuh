#pragma once
/// \file
/// L2-normalisation kernels and their launchers (nvcc only; instantiated in kernels.cu). The
/// launcher declarations live in backend/cuda/l2_normalize.hpp (not included: it pulls in the
/// CPU op for its checks).

#include <cuda_runtime.h>

#include <cstdint>

#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/ops/math/l2_normalize.hpp"

namespace nddr::cuda::kernels {

template <class T>
__global__ void l2_normalize_forward(const T* x, T* y, std::int64_t pixels, std::int64_t channels,
                                     std::int64_t plane, T eps) {
  for (std::int64_t p = first_index(); p < pixels; p += grid_stride()) {
    const std::int64_t o = ops::pixel_offset(p, channels, plane);
    ops::l2_normalize_pixel(x + o, y + o, channels, plane, eps);
  }
}

template <class T>
__global__ void l2_normalize_backward(const T* __restrict__ x, const T* __restrict__ dy,
                                      T* __restrict__ dx, std::int64_t pixels,
                                      std::int64_t channels, std::int64_t plane, T eps) {
  for (std::int64_t p = first_index(); p < pixels; p += grid_stride()) {
    const std::int64_t o = ops::pixel_offset(p, channels, plane);
    ops::l2_normalize_backward_pixel(x + o, dy + o, plane, dx + o, channels, plane, eps);
  }
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void l2_normalize_forward(cudaStream_t stream, const T* x, T* y, std::int64_t pixels,
                          std::int64_t channels, std::int64_t plane, T eps) {
  if (pixels == 0) return;
  NDDR_LAUNCH(kernels::grid_for(pixels), kernels::kBlock, 0, stream,
              kernels::l2_normalize_forward<T>)
  (x, y, pixels, channels, plane, eps);
  check_launch("l2_normalize_forward");
}

template <class T>
void l2_normalize_backward(cudaStream_t stream, const T* x, const T* dy, T* dx, std::int64_t pixels,
                           std::int64_t channels, std::int64_t plane, T eps) {
  if (pixels == 0) return;
  NDDR_LAUNCH(kernels::grid_for(pixels), kernels::kBlock, 0, stream,
              kernels::l2_normalize_backward<T>)
  (x, dy, dx, pixels, channels, plane, eps);
  check_launch("l2_normalize_backward");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiations of the L2-normalisation launchers for `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_L2_NORMALIZE(T)                                   \
  template void nddr::cuda::launch::l2_normalize_forward<T>(                    \
      cudaStream_t, const T*, T*, std::int64_t, std::int64_t, std::int64_t, T); \
  template void nddr::cuda::launch::l2_normalize_backward<T>(                   \
      cudaStream_t, const T*, const T*, T*, std::int64_t, std::int64_t, std::int64_t, T);
