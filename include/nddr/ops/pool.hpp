#pragma once
/// \file
/// Max, average and global average pooling, the front door (options, geometry and window
/// bodies: nddr/ops/math/pool.hpp). Validates once and computes the geometry, then runs
/// `backend::Pool<D>`.

#include <cstdint>
#include <limits>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/pool.hpp"

namespace nddr::ops {

namespace detail {

/// Checks the options and y against x; returns the geometry.
inline Pool2dGeometry checked_pool_forward(const char* op, const Shape& x, const Shape& y,
                                           const Pool2dOptions& opt) {
  const Pool2dGeometry g = pool2d_geometry(op, x, opt);
  check_shape(op, "y", y, Shape::nchw(x.n(), x.c(), g.out_h, g.out_w));
  return g;
}

inline void check_global_avg_pool(const char* op, const Shape& x, const Shape& y) {
  check_rank4(op, "x", x);
  check<ShapeError>(x.h() > 0 && x.w() > 0, op, ": x ", x, " has no pixels");
  check_shape(op, "y", y, Shape::nchw(x.n(), x.c(), 1, 1));
}

}  // namespace detail

/// y = max over each window (padded cells ignored). y has shape pool2d_output_shape(x, opt).
template <class T, class D>
void max_pool2d_forward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<T, D> y,
                        const Pool2dOptions& opt) {
  const Pool2dGeometry g =
      detail::checked_pool_forward("nddr::ops::max_pool2d_forward", x.shape(), y.shape(), opt);
  backend::Pool<D>::template max_pool2d_forward<T, std::int64_t>(ctx, g, x, y, nullptr);
}

/// As above and records in `argmax` (shape of y, int32 or int64) the index h * W + w of the
/// first maximum within its (H, W) plane, as PyTorch's return_indices.
template <class T, class I, class D>
requires std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>
void max_pool2d_forward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<T, D> y, ViewOn<I, D> argmax,
                        const Pool2dOptions& opt) {
  const char* op = "nddr::ops::max_pool2d_forward";
  check_shape(op, "argmax", argmax.shape(), y.shape());
  check<OptionError>(std::is_same_v<I, std::int64_t> ||
                         x.shape().h() * x.shape().w() <= std::numeric_limits<std::int32_t>::max(),
                     op, ": int32 argmax cannot index planes of ", x.shape());
  const Pool2dGeometry g = detail::checked_pool_forward(op, x.shape(), y.shape(), opt);
  backend::Pool<D>::template max_pool2d_forward<T, I>(ctx, g, x, y, argmax.data());
}

/// dx += dy routed to the recorded argmax of each output pixel. An empty dx is skipped.
/// Throws ValueError (before touching dx; on a GPU this waits for the device) for an index
/// outside its plane. `ArgmaxCheck::kTrusted` skips that range check, for an argmax that this
/// library's forward wrote (the layer's case; on a GPU the check costs a host round trip).
template <class T, class I, class D>
requires std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>
void max_pool2d_backward(Context<D>& ctx, ViewOn<const I, D> argmax, ViewOn<const T, D> dy,
                         ViewOn<T, D> dx, ArgmaxCheck check_argmax = ArgmaxCheck::kValidate) {
  if (dx.empty()) return;
  const char* op = "nddr::ops::max_pool2d_backward";
  check_rank4(op, "dx", dx.shape());
  check_rank4(op, "dy", dy.shape());
  check_shape(op, "argmax", argmax.shape(), dy.shape());
  check<ShapeError>(dy.shape().n() == dx.shape().n() && dy.shape().c() == dx.shape().c(), op,
                    ": dy ", dy.shape(), " and dx ", dx.shape(), " differ in batch or channels");
  backend::Pool<D>::template max_pool2d_backward<T, I>(ctx, argmax, dy, dx, check_argmax);
}

/// dx += dy routed to the first maximum of each window, recomputed from x.
template <class T, class D>
void max_pool2d_backward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<const T, D> dy,
                         ViewOn<T, D> dx, const Pool2dOptions& opt) {
  if (dx.empty()) return;
  const char* op = "nddr::ops::max_pool2d_backward";
  const Pool2dGeometry g = detail::checked_pool_forward(op, x.shape(), dy.shape(), opt);
  check_shape(op, "dx", dx.shape(), x.shape());
  backend::Pool<D>::template max_pool2d_backward<T>(ctx, g, x, dy, dx);
}

/// y = mean over each window; padded cells are excluded from the count unless
/// opt.include_pad (PyTorch count_include_pad).
template <class T, class D>
void avg_pool2d_forward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<T, D> y,
                        const Pool2dOptions& opt) {
  const Pool2dGeometry g =
      detail::checked_pool_forward("nddr::ops::avg_pool2d_forward", x.shape(), y.shape(), opt);
  backend::Pool<D>::template avg_pool2d_forward<T>(ctx, g, x, y, opt);
}

/// dx += dy / divisor spread over each window. x supplies the input shape only.
template <class T, class D>
void avg_pool2d_backward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<const T, D> dy,
                         ViewOn<T, D> dx, const Pool2dOptions& opt) {
  if (dx.empty()) return;
  const char* op = "nddr::ops::avg_pool2d_backward";
  const Pool2dGeometry g = detail::checked_pool_forward(op, x.shape(), dy.shape(), opt);
  check_shape(op, "dx", dx.shape(), x.shape());
  backend::Pool<D>::template avg_pool2d_backward<T>(ctx, g, x, dy, dx, opt);
}

/// y(n, c, 0, 0) = mean of x(n, c, :, :). x (N, C, H, W), y (N, C, 1, 1).
template <class T, class D>
void global_avg_pool_forward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<T, D> y) {
  detail::check_global_avg_pool("nddr::ops::global_avg_pool_forward", x.shape(), y.shape());
  backend::Pool<D>::template global_avg_pool_forward<T>(ctx, x, y);
}

/// dx(n, c, h, w) += dy(n, c, 0, 0) / (H * W).
template <class T, class D>
void global_avg_pool_backward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<const T, D> dy,
                              ViewOn<T, D> dx) {
  if (dx.empty()) return;
  const char* op = "nddr::ops::global_avg_pool_backward";
  detail::check_global_avg_pool(op, x.shape(), dy.shape());
  check_shape(op, "dx", dx.shape(), x.shape());
  backend::Pool<D>::template global_avg_pool_backward<T>(ctx, x, dy, dx);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/pool.hpp"
