#pragma once
/// \file
/// Channel concatenation and split, the front door (index map and part checks:
/// nddr/ops/math/concat.hpp). Validates once, then runs `backend::Concat<D>`.

#include <cstddef>
#include <span>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/concat.hpp"

namespace nddr::ops {

/// y = [x_0, ..., x_{K-1}] along the channels. Every x_k is (N, C_k, H, W) with the N, H, W of
/// y, and sum C_k = C of y. T is deduced from y, so a std::vector or std::array of views
/// converts to the span.
template <class T, class D>
void concat_channels_forward(Context<D>& ctx,
                             std::span<const ViewOn<const std::type_identity_t<T>, D>> xs,
                             ViewOn<T, D> y) {
  constexpr const char* kWho = "nddr::ops::concat_channels_forward";
  detail::check_channel_parts(kWho, "input", xs, "y", y.shape());
  for (std::size_t k = 0; k < xs.size(); ++k)
    check<ShapeError>(!xs[k].empty() || xs[k].numel() == 0, kWho, ": input ", k, " with shape ",
                      xs[k].shape(), " has no data");
  backend::Concat<D>::template concat_channels_forward<T>(ctx, xs, y);
}

/// dx_k += the channels of dy that came from x_k. An empty dx_k (null data, but carrying its
/// shape so that the channel offsets are known) is skipped.
template <class T, class D>
void concat_channels_backward(Context<D>& ctx, ViewOn<const T, D> dy,
                              std::span<const ViewOn<std::type_identity_t<T>, D>> dxs) {
  detail::check_channel_parts("nddr::ops::concat_channels_backward", "dx", dxs, "dy", dy.shape());
  backend::Concat<D>::template concat_channels_backward<T>(ctx, dy, dxs);
}

/// y_k = channels [C_0 + ... + C_{k-1}, C_0 + ... + C_k) of x (assigned). Every y_k is
/// (N, C_k, H, W) with the N, H, W of x, and sum C_k = C of x. An empty y_k (null data,
/// carrying its shape) is skipped.
template <class T, class D>
void split_channels_forward(Context<D>& ctx, ViewOn<const T, D> x,
                            std::span<const ViewOn<std::type_identity_t<T>, D>> ys) {
  detail::check_channel_parts("nddr::ops::split_channels_forward", "y", ys, "x", x.shape());
  backend::Concat<D>::template split_channels_forward<T>(ctx, x, ys);
}

/// dx += [dy_0, ..., dy_{K-1}] along the channels. An empty dy_k (null data, carrying its
/// shape) counts as zero. An empty dx is skipped.
template <class T, class D>
void split_channels_backward(Context<D>& ctx,
                             std::span<const ViewOn<const std::type_identity_t<T>, D>> dys,
                             ViewOn<T, D> dx) {
  if (dx.empty()) return;
  detail::check_channel_parts("nddr::ops::split_channels_backward", "dy", dys, "dx", dx.shape());
  backend::Concat<D>::template split_channels_backward<T>(ctx, dys, dx);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/concat.hpp"
