#pragma once
/// \file
/// CUDA arg-max over channels (kernels/argmax.cuh): one thread per pixel runs
/// ops::argmax_pixel, as the CPU op does. The evaluation of segmentation on the GPU uses it so
/// that only the (N, H, W) predictions travel to the host.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/argmax.hpp"

namespace nddr::cuda::launch {

/// out[p] = argmax over `channels` values `plane` apart, for `pixels` pixels of (N, C, H, W).
template <class T>
void argmax_channels(cudaStream_t stream, const T* x, std::int32_t* out, std::int64_t pixels,
                     std::int64_t channels, std::int64_t plane);

}  // namespace nddr::cuda::launch

namespace nddr::ops::backend {

/// Arg-max over channels on the GPU (front door: nddr/ops/argmax.hpp). T = float or double.
template <>
struct Argmax<Cuda> {
  template <class T>
  static void argmax_channels(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                              TensorView<std::int32_t, Cuda> out) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::argmax_channels: CUDA supports float and double");
    const std::int64_t plane = x.shape().h() * x.shape().w();
    cuda::launch::argmax_channels<T>(ctx.stream(), x.data(), out.data(), x.shape().n() * plane,
                                     x.shape().c(), plane);
  }
};

}  // namespace nddr::ops::backend
