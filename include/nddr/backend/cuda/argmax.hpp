#pragma once
/// \file
/// CUDA arg-max over channels (kernels/argmax.cuh): one thread per pixel runs
/// ops::argmax_pixel, as the CPU op does. The evaluation of segmentation on the GPU uses it so
/// that only the (N, H, W) predictions travel to the host.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "nddr/backend/cpu/argmax.hpp"
#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/argmax.hpp"

namespace nddr::cuda::launch {

/// out[p] = argmax over `channels` values `plane` apart, for `pixels` pixels of (N, C, H, W).
template <class T>
void argmax_channels(cudaStream_t stream, const T* x, std::int32_t* out, std::int64_t pixels,
                     std::int64_t channels, std::int64_t plane);

}  // namespace nddr::cuda::launch

namespace nddr::ops {

/// out (N, H, W) = argmax over the channels of x (N, C, H, W) on the GPU, the first channel on
/// ties; as the CPU op.
template <class T>
void argmax_channels(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                     TensorView<std::int32_t, Cuda> out) {
  static_assert(cuda::kKernelType<T>, "nddr::ops::argmax_channels: CUDA supports float and double");
  detail::check_argmax("nddr::ops::argmax_channels", x.shape(), out.shape());
  const std::int64_t plane = x.shape().h() * x.shape().w();
  cuda::launch::argmax_channels<T>(ctx.stream(), x.data(), out.data(), x.shape().n() * plane,
                                   x.shape().c(), plane);
}

}  // namespace nddr::ops
