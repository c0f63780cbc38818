#pragma once
/// \file
/// CUDA resize (bilinear in three conventions, TF legacy nearest): our own kernels
/// (kernels/resize.cuh) computing the taps with ops::resize_tap, as the CPU op does, and
/// running ops::resize_bilinear_element. Backward scatters with atomicAdd (the weights of
/// ops::resize_bilinear_backward_element), so its float summation order is not fixed.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/resize.hpp"

namespace nddr::cuda {

/// Element types of resize_forward: float, double and the label-map integers.
template <class T>
inline constexpr bool kResizeType = kKernelType<T> || std::is_same_v<T, std::uint8_t> ||
                                    std::is_same_v<T, std::int32_t> ||
                                    std::is_same_v<T, std::int64_t>;

}  // namespace nddr::cuda

namespace nddr::cuda::launch {

/// Geometry of one resize call.
struct ResizeGeometry {
  std::int64_t planes, in_h, in_w, out_h, out_w;
  ResizeMode mode;
};

/// y = resize(x) for every plane (integers: nearest only).
template <class T>
void resize_forward(cudaStream_t stream, const T* x, T* y, ResizeGeometry g);
/// dx += resize^T(dy) (atomicAdd scatter).
template <class T>
void resize_backward(cudaStream_t stream, const T* dy, T* dx, ResizeGeometry g);

}  // namespace nddr::cuda::launch

namespace nddr::ops::backend {

/// Resize on the GPU (front door: nddr/ops/resize.hpp).
template <>
struct Resize<Cuda> {
  template <class T>
  static void resize_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> x, TensorView<T, Cuda> y,
                             const ResizeOptions& opt) {
    static_assert(cuda::kResizeType<T>,
                  "nddr::ops::resize_forward: CUDA supports float, double, uint8, int32, int64");
    cuda::launch::resize_forward<T>(ctx.stream(), x.data(), y.data(),
                                    {x.shape().n() * x.shape().c(), x.shape().h(), x.shape().w(),
                                     opt.out_h, opt.out_w, opt.resize_mode});
  }

  template <class T>
  static void resize_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                              TensorView<const T, Cuda> dy, TensorView<T, Cuda> dx,
                              const ResizeOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::resize_backward: CUDA supports float and double");
    cuda::launch::resize_backward<T>(ctx.stream(), dy.data(), dx.data(),
                                     {x.shape().n() * x.shape().c(), x.shape().h(), x.shape().w(),
                                      opt.out_h, opt.out_w, opt.resize_mode});
  }
};

}  // namespace nddr::ops::backend
