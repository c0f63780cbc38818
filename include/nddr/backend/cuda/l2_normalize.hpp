#pragma once
/// \file
/// CUDA L2 normalisation over channels (kernels/l2_normalize.cuh): one thread per pixel runs
/// ops::l2_normalize_pixel / ops::l2_normalize_backward_pixel, as the CPU op does.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "nddr/backend/cpu/l2_normalize.hpp"
#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/l2_normalize.hpp"

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

namespace nddr::ops {

/// y = x / max(||x||_2, eps) over the channels of every pixel, on the GPU. x is (N, C, H, W)
/// or (N, C); y has its shape and may alias it.
template <class T>
void l2_normalize_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> x, TensorView<T, Cuda> y,
                          const L2NormalizeOptions& opt = {}) {
  static_assert(cuda::kKernelType<T>, "nddr::ops::l2_normalize_forward: CUDA supports float and double");
  constexpr const char* kWho = "nddr::ops::l2_normalize_forward";
  detail::check_l2_normalize_options(kWho, opt);
  std::int64_t channels = 0, plane = 0;
  detail::channels_and_plane(kWho, x.shape(), channels, plane);
  check_shape(kWho, "y", y.shape(), x.shape());
  const std::int64_t pixels = channels == 0 ? 0 : x.numel() / channels;
  cuda::launch::l2_normalize_forward<T>(ctx.stream(), x.data(), y.data(), pixels, channels, plane,
                                        static_cast<T>(opt.eps()));
}

/// dx += (dy/dx)^T dy for y = l2_normalize(x), on the GPU. An empty dx is skipped.
template <class T>
void l2_normalize_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                           TensorView<const T, Cuda> dy, TensorView<T, Cuda> dx,
                           const L2NormalizeOptions& opt = {}) {
  static_assert(cuda::kKernelType<T>, "nddr::ops::l2_normalize_backward: CUDA supports float and double");
  if (dx.empty()) return;
  constexpr const char* kWho = "nddr::ops::l2_normalize_backward";
  detail::check_l2_normalize_options(kWho, opt);
  std::int64_t channels = 0, plane = 0;
  detail::channels_and_plane(kWho, x.shape(), channels, plane);
  check_shape(kWho, "dy", dy.shape(), x.shape());
  check_shape(kWho, "dx", dx.shape(), x.shape());
  const std::int64_t pixels = channels == 0 ? 0 : x.numel() / channels;
  cuda::launch::l2_normalize_backward<T>(ctx.stream(), x.data(), dy.data(), dx.data(), pixels,
                                         channels, plane, static_cast<T>(opt.eps()));
}

}  // namespace nddr::ops
