#pragma once
/// \file
/// CPU channel concatenation and split (K parts, any channel counts, same N, H, W).

#include <algorithm>
#include <cstdint>
#include <span>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/concat.hpp"

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

/// y = [x_0, ..., x_{K-1}] along the channels. Every x_k is (N, C_k, H, W) with the N, H, W of
/// y, and sum C_k = C of y. T is deduced from y, so a std::vector or std::array of views
/// converts to the span.
template <class T>
void concat_channels_forward(Context<Cpu>& ctx,
                             std::span<const TensorView<const std::type_identity_t<T>, Cpu>> xs,
                             TensorView<T, Cpu> y) {
  constexpr const char* kWho = "nddr::ops::concat_channels_forward";
  detail::check_channel_parts(kWho, "input", xs, "y", y.shape());
  for (std::size_t k = 0; k < xs.size(); ++k)
    check<ShapeError>(!xs[k].empty() || xs[k].numel() == 0, kWho, ": input ", k, " with shape ",
                      xs[k].shape(), " has no data");
  T* yp = y.data();
  detail::for_each_part_plane(ctx, xs, y.shape(),
                              [&](std::size_t k, std::int64_t i, std::int64_t j, std::int64_t n) {
                                const T* src = xs[k].data() + i;
                                std::copy(src, src + n, yp + j);
                              });
}

/// dx_k += the channels of dy that came from x_k. An empty dx_k (null data, but carrying its
/// shape so that the channel offsets are known) is skipped.
template <class T>
void concat_channels_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> dy,
                              std::span<const TensorView<std::type_identity_t<T>, Cpu>> dxs) {
  detail::check_channel_parts("nddr::ops::concat_channels_backward", "dx", dxs, "dy", dy.shape());
  const T* dyp = dy.data();
  detail::for_each_part_plane(ctx, dxs, dy.shape(),
                              [&](std::size_t k, std::int64_t i, std::int64_t j, std::int64_t n) {
                                T* dst = dxs[k].data() + i;
                                const T* src = dyp + j;
                                for (std::int64_t e = 0; e < n; ++e) dst[e] += src[e];
                              });
}

/// y_k = channels [C_0 + ... + C_{k-1}, C_0 + ... + C_k) of x (assigned). Every y_k is
/// (N, C_k, H, W) with the N, H, W of x, and sum C_k = C of x. An empty y_k (null data,
/// carrying its shape) is skipped.
template <class T>
void split_channels_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                            std::span<const TensorView<std::type_identity_t<T>, Cpu>> ys) {
  detail::check_channel_parts("nddr::ops::split_channels_forward", "y", ys, "x", x.shape());
  const T* xp = x.data();
  detail::for_each_part_plane(ctx, ys, x.shape(),
                              [&](std::size_t k, std::int64_t i, std::int64_t j, std::int64_t n) {
                                std::copy(xp + j, xp + j + n, ys[k].data() + i);
                              });
}

/// dx += [dy_0, ..., dy_{K-1}] along the channels. An empty dy_k (null data, carrying its
/// shape) counts as zero. An empty dx is skipped.
template <class T>
void split_channels_backward(Context<Cpu>& ctx,
                             std::span<const TensorView<const std::type_identity_t<T>, Cpu>> dys,
                             TensorView<T, Cpu> dx) {
  if (dx.empty()) return;
  detail::check_channel_parts("nddr::ops::split_channels_backward", "dy", dys, "dx", dx.shape());
  T* dxp = dx.data();
  detail::for_each_part_plane(ctx, dys, dx.shape(),
                              [&](std::size_t k, std::int64_t i, std::int64_t j, std::int64_t n) {
                                const T* src = dys[k].data() + i;
                                T* dst = dxp + j;
                                for (std::int64_t e = 0; e < n; ++e) dst[e] += src[e];
                              });
}

}  // namespace nddr::ops
