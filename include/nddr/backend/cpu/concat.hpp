#pragma once
/// \file
/// CPU channel concatenation and split (front door: nddr/ops/concat.hpp).

#include <algorithm>
#include <cstdint>
#include <span>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/concat.hpp"

namespace nddr::ops {

namespace detail {

/// Calls `f(k, part_index, whole_index, count)` for every (H, W) plane of every non-empty part,
/// in parallel over the planes of each part: `count` contiguous elements of part k starting at
/// `part_index` sit at `whole_index` in the joined tensor.
template <class V, class F>
void for_each_part_plane(Context<Cpu>& ctx, std::span<const V> parts, const Shape& whole, F&& f) {
  const std::int64_t plane = whole.h() * whole.w();
  const std::int64_t item = whole.c() * plane;
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const std::int64_t part_item = parts[k].shape().c() * plane;
    if (!parts[k].empty() && part_item > 0) {
      const std::int64_t planes = whole.n() * parts[k].shape().c();
      nddr::detail::parallel_for(ctx, planes, [&, offset, part_item](std::int64_t p) {
        const std::int64_t i = p * plane;
        f(k, i, concat_index(i, part_item, offset, item), plane);
      });
    }
    offset += part_item;
  }
}

}  // namespace detail

namespace backend {

template <>
struct Concat<Cpu> {
  template <class T>
  static void concat_channels_forward(Context<Cpu>& ctx,
                                      std::span<const TensorView<const T, Cpu>> xs,
                                      TensorView<T, Cpu> y) {
    T* yp = y.data();
    detail::for_each_part_plane(ctx, xs, y.shape(),
                                [&](std::size_t k, std::int64_t i, std::int64_t j, std::int64_t n) {
                                  const T* src = xs[k].data() + i;
                                  std::copy(src, src + n, yp + j);
                                });
  }

  template <class T>
  static void concat_channels_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> dy,
                                       std::span<const TensorView<T, Cpu>> dxs) {
    const T* dyp = dy.data();
    detail::for_each_part_plane(ctx, dxs, dy.shape(),
                                [&](std::size_t k, std::int64_t i, std::int64_t j, std::int64_t n) {
                                  T* dst = dxs[k].data() + i;
                                  const T* src = dyp + j;
                                  for (std::int64_t e = 0; e < n; ++e) dst[e] += src[e];
                                });
  }

  template <class T>
  static void split_channels_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                                     std::span<const TensorView<T, Cpu>> ys) {
    const T* xp = x.data();
    detail::for_each_part_plane(ctx, ys, x.shape(),
                                [&](std::size_t k, std::int64_t i, std::int64_t j, std::int64_t n) {
                                  std::copy(xp + j, xp + j + n, ys[k].data() + i);
                                });
  }

  template <class T>
  static void split_channels_backward(Context<Cpu>& ctx,
                                      std::span<const TensorView<const T, Cpu>> dys,
                                      TensorView<T, Cpu> dx) {
    T* dxp = dx.data();
    detail::for_each_part_plane(ctx, dys, dx.shape(),
                                [&](std::size_t k, std::int64_t i, std::int64_t j, std::int64_t n) {
                                  const T* src = dys[k].data() + i;
                                  T* dst = dxp + j;
                                  for (std::int64_t e = 0; e < n; ++e) dst[e] += src[e];
                                });
  }
};

}  // namespace backend
}  // namespace nddr::ops
