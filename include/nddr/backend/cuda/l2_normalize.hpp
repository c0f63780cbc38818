#pragma once
/// \file
/// CUDA L2 normalisation over channels (kernels/l2_normalize.cuh): one thread per pixel runs
/// ops::l2_normalize_pixel / ops::l2_normalize_backward_pixel, as the CPU op does.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/l2_normalize.hpp"

namespace nddr::cuda::launch {

/// y = x / max(||x||, eps) for `pixels` pixels of `channels` values `plane` apart.
template <class T>
void l2_normalize_forward(cudaStream_t stream, const T* x, T* y, std::int64_t pixels,
                          std::int64_t channels, std::int64_t plane, T eps);
/// dx += (dy/dx)^T dy per pixel.
template <class T>
void l2_normalize_backward(cudaStream_t stream, const T* x, const T* dy, T* dx,
                           std::int64_t pixels, std::int64_t channels, std::int64_t plane, T eps);

}  // namespace nddr::cuda::launch

namespace nddr::ops::backend {

/// Per-pixel L2 normalisation on the GPU (front door: nddr/ops/l2_normalize.hpp).
template <>
struct L2Normalize<Cuda> {
  template <class T>
  static void l2_normalize_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                                   TensorView<T, Cuda> y, const L2NormalizeOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::l2_normalize_forward: CUDA supports float and double");
    std::int64_t channels = 0, plane = 0;
    l2_channels_and_plane(x.shape(), channels, plane);
    const std::int64_t pixels = channels == 0 ? 0 : x.numel() / channels;
    cuda::launch::l2_normalize_forward<T>(ctx.stream(), x.data(), y.data(), pixels, channels, plane,
                                          static_cast<T>(opt.eps()));
  }

  template <class T>
  static void l2_normalize_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                                    TensorView<const T, Cuda> dy, TensorView<T, Cuda> dx,
                                    const L2NormalizeOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::l2_normalize_backward: CUDA supports float and double");
    std::int64_t channels = 0, plane = 0;
    l2_channels_and_plane(x.shape(), channels, plane);
    const std::int64_t pixels = channels == 0 ? 0 : x.numel() / channels;
    cuda::launch::l2_normalize_backward<T>(ctx.stream(), x.data(), dy.data(), dx.data(), pixels,
                                           channels, plane, static_cast<T>(opt.eps()));
  }
};

}  // namespace nddr::ops::backend
