#pragma once
/// \file
/// The arg-max kernel and its launcher (nvcc only; instantiated in kernels.cu). The launcher
/// declaration lives in backend/cuda/argmax.hpp (not needed here: the definition declares it).

#include <cuda_runtime.h>

#include <cstdint>

#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/ops/math/argmax.hpp"

namespace nddr::cuda::kernels {

/// One thread per pixel p = n * plane + i; neighbouring threads read neighbouring addresses.
template <class T>
__global__ void argmax_channels(const T* __restrict__ x, std::int32_t* __restrict__ out,
                                std::int64_t pixels, std::int64_t channels, std::int64_t plane) {
  for (std::int64_t p = first_index(); p < pixels; p += grid_stride()) {
    const std::int64_t n = p / plane, i = p % plane;
    out[p] = ops::argmax_pixel(x + n * channels * plane + i, channels, plane);
  }
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void argmax_channels(cudaStream_t stream, const T* x, std::int32_t* out, std::int64_t pixels,
                     std::int64_t channels, std::int64_t plane) {
  if (pixels == 0) return;
  NDDR_LAUNCH(kernels::grid_for(pixels), kernels::kBlock, 0, stream, kernels::argmax_channels<T>)
  (x, out, pixels, channels, plane);
  check_launch("argmax_channels");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiation of the arg-max launcher for element type `T` (kernels.cu).
#define NDDR_CUDA_INSTANTIATE_ARGMAX(T)                                                       \
  template void nddr::cuda::launch::argmax_channels<T>(cudaStream_t, const T*, std::int32_t*, \
                                                       std::int64_t, std::int64_t, std::int64_t);
