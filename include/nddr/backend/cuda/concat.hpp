#pragma once
/// \file
/// CUDA channel concatenation and split of K parts (kernels/concat.cuh), with the index map
/// ops::concat_index and the part checks of nddr/ops/concat.hpp. One launch per non-empty part.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/concat.hpp"

namespace nddr::cuda::launch {

/// Where one part sits in the joined tensor: `count` = N * part_item elements of the part;
/// part element i is joined element concat_index(i, part_item, part_offset, item).
struct ConcatPart {
  std::int64_t count, part_item, part_offset, item;
};

/// joined[map(i)] = part[i] (assign) or part[i] += joined[map(i)] (accumulate).
template <class T>
void concat_part_to_whole(cudaStream_t stream, const T* part, T* whole, ConcatPart m);
template <class T>
void concat_whole_to_part(cudaStream_t stream, const T* whole, T* part, ConcatPart m,
                          bool accumulate);
/// whole[map(i)] += part[i].
template <class T>
void concat_part_add_to_whole(cudaStream_t stream, const T* part, T* whole, ConcatPart m);

}  // namespace nddr::cuda::launch

namespace nddr::cuda::detail {

/// Calls `f(k, map)` for every non-empty part of `parts` joined into `whole`.
template <class V, class F>
void for_each_part(std::span<const V> parts, const Shape& whole, F&& f) {
  const std::int64_t plane = whole.h() * whole.w();
  const std::int64_t item = whole.c() * plane;
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const std::int64_t part_item = parts[k].shape().c() * plane;
    if (!parts[k].empty() && part_item > 0)
      f(k, launch::ConcatPart{whole.n() * part_item, part_item, offset, item});
    offset += part_item;
  }
}

}  // namespace nddr::cuda::detail

namespace nddr::ops {

/// y = [x_0, ..., x_{K-1}] along the channels, on the GPU (see the CPU overload).
template <class T>
void concat_channels_forward(Context<Cuda>& ctx,
                             std::span<const TensorView<const std::type_identity_t<T>, Cuda>> xs,
                             TensorView<T, Cuda> y) {
  static_assert(cuda::kKernelType<T>, "nddr::ops::concat_channels_forward: CUDA supports float and double");
  constexpr const char* kWho = "nddr::ops::concat_channels_forward";
  detail::check_channel_parts(kWho, "input", xs, "y", y.shape());
  for (std::size_t k = 0; k < xs.size(); ++k)
    check<ShapeError>(!xs[k].empty() || xs[k].numel() == 0, kWho, ": input ", k, " with shape ",
                      xs[k].shape(), " has no data");
  cuda::detail::for_each_part(xs, y.shape(), [&](std::size_t k, cuda::launch::ConcatPart m) {
    cuda::launch::concat_part_to_whole<T>(ctx.stream(), xs[k].data(), y.data(), m);
  });
}

/// dx_k += the channels of dy that came from x_k; an empty dx_k (carrying its shape) is skipped.
template <class T>
void concat_channels_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> dy,
                              std::span<const TensorView<std::type_identity_t<T>, Cuda>> dxs) {
  static_assert(cuda::kKernelType<T>, "nddr::ops::concat_channels_backward: CUDA supports float and double");
  detail::check_channel_parts("nddr::ops::concat_channels_backward", "dx", dxs, "dy", dy.shape());
  cuda::detail::for_each_part(dxs, dy.shape(), [&](std::size_t k, cuda::launch::ConcatPart m) {
    cuda::launch::concat_whole_to_part<T>(ctx.stream(), dy.data(), dxs[k].data(), m, true);
  });
}

/// y_k = the channels of x belonging to part k (assigned); an empty y_k is skipped.
template <class T>
void split_channels_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                            std::span<const TensorView<std::type_identity_t<T>, Cuda>> ys) {
  static_assert(cuda::kKernelType<T>, "nddr::ops::split_channels_forward: CUDA supports float and double");
  detail::check_channel_parts("nddr::ops::split_channels_forward", "y", ys, "x", x.shape());
  cuda::detail::for_each_part(ys, x.shape(), [&](std::size_t k, cuda::launch::ConcatPart m) {
    cuda::launch::concat_whole_to_part<T>(ctx.stream(), x.data(), ys[k].data(), m, false);
  });
}

/// dx += [dy_0, ..., dy_{K-1}] along the channels; an empty dy_k counts as zero, an empty dx
/// is skipped.
template <class T>
void split_channels_backward(Context<Cuda>& ctx,
                             std::span<const TensorView<const std::type_identity_t<T>, Cuda>> dys,
                             TensorView<T, Cuda> dx) {
  static_assert(cuda::kKernelType<T>, "nddr::ops::split_channels_backward: CUDA supports float and double");
  if (dx.empty()) return;
  detail::check_channel_parts("nddr::ops::split_channels_backward", "dy", dys, "dx", dx.shape());
  cuda::detail::for_each_part(dys, dx.shape(), [&](std::size_t k, cuda::launch::ConcatPart m) {
    cuda::launch::concat_part_add_to_whole<T>(ctx.stream(), dys[k].data(), dx.data(), m);
  });
}

}  // namespace nddr::ops
