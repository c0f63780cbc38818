#pragma once
/// \file
/// CUDA channel concatenation and split of K parts (kernels/concat.cuh), with the index map
/// ops::concat_index and front door nddr/ops/concat.hpp. One launch per non-empty part.

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
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/concat.hpp"

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

namespace nddr::ops::backend {

/// Channel concatenation and split on the GPU (front door: nddr/ops/concat.hpp).
template <>
struct Concat<Cuda> {
  template <class T>
  static void concat_channels_forward(Context<Cuda>& ctx,
                                      std::span<const TensorView<const T, Cuda>> xs,
                                      TensorView<T, Cuda> y) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::concat_channels_forward: CUDA supports float and double");
    cuda::detail::for_each_part(xs, y.shape(), [&](std::size_t k, cuda::launch::ConcatPart m) {
      cuda::launch::concat_part_to_whole<T>(ctx.stream(), xs[k].data(), y.data(), m);
    });
  }

  template <class T>
  static void concat_channels_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> dy,
                                       std::span<const TensorView<T, Cuda>> dxs) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::concat_channels_backward: CUDA supports float and double");
    cuda::detail::for_each_part(dxs, dy.shape(), [&](std::size_t k, cuda::launch::ConcatPart m) {
      cuda::launch::concat_whole_to_part<T>(ctx.stream(), dy.data(), dxs[k].data(), m, true);
    });
  }

  template <class T>
  static void split_channels_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                                     std::span<const TensorView<T, Cuda>> ys) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::split_channels_forward: CUDA supports float and double");
    cuda::detail::for_each_part(ys, x.shape(), [&](std::size_t k, cuda::launch::ConcatPart m) {
      cuda::launch::concat_whole_to_part<T>(ctx.stream(), x.data(), ys[k].data(), m, false);
    });
  }

  template <class T>
  static void split_channels_backward(Context<Cuda>& ctx,
                                      std::span<const TensorView<const T, Cuda>> dys,
                                      TensorView<T, Cuda> dx) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::split_channels_backward: CUDA supports float and double");
    cuda::detail::for_each_part(dys, dx.shape(), [&](std::size_t k, cuda::launch::ConcatPart m) {
      cuda::launch::concat_part_add_to_whole<T>(ctx.stream(), dys[k].data(), dx.data(), m);
    });
  }
};

}  // namespace nddr::ops::backend
