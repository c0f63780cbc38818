#pragma once
/// \file
/// CPU max, average and global average pooling (plain loops: a window is a few cells, so
/// there is no GEMM to hand to Eigen). Loops run in parallel over the N * C planes,
/// so backward scatters never race.

#include <cstdint>
#include <limits>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/pool.hpp"

namespace nddr {
namespace detail {

inline Pool2dGeometry checked_pool_forward(const char* op, const Shape& x, const Shape& y,
                                           const Pool2dOptions& opt) {
  const Pool2dGeometry g = pool2d_geometry(op, x, opt);
  check_shape(op, "y", y, Shape::nchw(x.n(), x.c(), g.out_h, g.out_w));
  return g;
}

template <class I, class T>
void max_pool2d_forward_impl(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y,
                             I* argmax, const Pool2dOptions& opt) {
  const Pool2dGeometry g =
      checked_pool_forward("nddr::ops::max_pool2d_forward", x.shape(), y.shape(), opt);
  const std::int64_t in_plane = g.in_h * g.in_w;
  const std::int64_t out_plane = g.out_h * g.out_w;
  const T* xp = x.data();
  T* yp = y.data();
  nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
    const T* plane = xp + p * in_plane;
    T* out = yp + p * out_plane;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh)
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        std::int64_t idx = 0;
        out[oh * g.out_w + ow] = ops::max_pool_element(plane, g, oh, ow, idx);
        if (argmax) argmax[p * out_plane + oh * g.out_w + ow] = static_cast<I>(idx);
      }
  });
}

inline void check_global_avg_pool(const char* op, const Shape& x, const Shape& y) {
  check_rank4(op, "x", x);
  check<ShapeError>(x.h() > 0 && x.w() > 0, op, ": x ", x.str(), " has no pixels");
  check_shape(op, "y", y, Shape::nchw(x.n(), x.c(), 1, 1));
}

}  // namespace detail

namespace ops {

/// y = max over each window (padded cells ignored). y has shape pool2d_output_shape(x, opt).
template <class T>
void max_pool2d_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y,
                        const Pool2dOptions& opt) {
  nddr::detail::max_pool2d_forward_impl<std::int64_t>(ctx, x, y, nullptr, opt);
}

/// As above and records in `argmax` (shape of y, int32 or int64) the index h * W + w of the
/// first maximum within its (H, W) plane, as PyTorch's return_indices.
template <class T, class I>
requires std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>
void max_pool2d_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y,
                        TensorView<I, Cpu> argmax, const Pool2dOptions& opt) {
  check_shape("nddr::ops::max_pool2d_forward", "argmax", argmax.shape(), y.shape());
  check<OptionError>(std::is_same_v<I, std::int64_t> ||
                         x.shape().h() * x.shape().w() <= std::numeric_limits<std::int32_t>::max(),
                     "nddr::ops::max_pool2d_forward: int32 argmax cannot index planes of ",
                     x.shape().str());
  nddr::detail::max_pool2d_forward_impl(ctx, x, y, argmax.data(), opt);
}

/// dx += dy routed to the recorded argmax of each output pixel. An empty dx is skipped.
/// `ArgmaxCheck::kTrusted` skips the range check of the indices, for an argmax that this
/// library's forward wrote (the layer's case; on a GPU the check costs a host round trip).
template <class T, class I>
requires std::is_same_v<I, std::int32_t> || std::is_same_v<I, std::int64_t>
void max_pool2d_backward(Context<Cpu>& ctx, TensorView<const I, Cpu> argmax,
                         TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx,
                         ArgmaxCheck check_argmax = ArgmaxCheck::kValidate) {
  if (dx.empty()) return;
  const char* op = "nddr::ops::max_pool2d_backward";
  check_rank4(op, "dx", dx.shape());
  check_rank4(op, "dy", dy.shape());
  check_shape(op, "argmax", argmax.shape(), dy.shape());
  check<ShapeError>(dy.shape().n() == dx.shape().n() && dy.shape().c() == dx.shape().c(), op,
                    ": dy ", dy.shape().str(), " and dx ", dx.shape().str(),
                    " differ in batch or channels");
  const std::int64_t in_plane = dx.shape().h() * dx.shape().w();
  const std::int64_t out_plane = dy.shape().h() * dy.shape().w();
  const I* ap = argmax.data();
  const T* dyp = dy.data();
  T* dxp = dx.data();
  if (check_argmax == ArgmaxCheck::kValidate)
    for (std::int64_t i = 0; i < argmax.numel(); ++i)
      check<ValueError>(ap[i] >= 0 && ap[i] < in_plane, op, ": argmax ", ap[i], " at ", i,
                        " is outside a plane of ", in_plane, " cells");
  nddr::detail::parallel_for(ctx, dy.shape().n() * dy.shape().c(), [=](std::int64_t p) {
    T* plane = dxp + p * in_plane;
    for (std::int64_t o = 0; o < out_plane; ++o)
      plane[ap[p * out_plane + o]] += dyp[p * out_plane + o];
  });
}

/// dx += dy routed to the first maximum of each window, recomputed from x.
template <class T>
void max_pool2d_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<const T, Cpu> dy,
                         TensorView<T, Cpu> dx, const Pool2dOptions& opt) {
  if (dx.empty()) return;
  const char* op = "nddr::ops::max_pool2d_backward";
  const Pool2dGeometry g = nddr::detail::checked_pool_forward(op, x.shape(), dy.shape(), opt);
  check_shape(op, "dx", dx.shape(), x.shape());
  const std::int64_t in_plane = g.in_h * g.in_w;
  const std::int64_t out_plane = g.out_h * g.out_w;
  const T* xp = x.data();
  const T* dyp = dy.data();
  T* dxp = dx.data();
  nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
    const T* plane = xp + p * in_plane;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh)
      for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
        std::int64_t idx = 0;
        max_pool_element(plane, g, oh, ow, idx);
        dxp[p * in_plane + idx] += dyp[p * out_plane + oh * g.out_w + ow];
      }
  });
}

/// y = mean over each window; padded cells are excluded from the count unless
/// opt.include_pad (PyTorch count_include_pad).
template <class T>
void avg_pool2d_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y,
                        const Pool2dOptions& opt) {
  const Pool2dGeometry g = nddr::detail::checked_pool_forward("nddr::ops::avg_pool2d_forward",
                                                              x.shape(), y.shape(), opt);
  const bool include_pad = opt.include_pad;
  const std::int64_t in_plane = g.in_h * g.in_w;
  const std::int64_t out_plane = g.out_h * g.out_w;
  const T* xp = x.data();
  T* yp = y.data();
  nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
    const T* plane = xp + p * in_plane;
    T* out = yp + p * out_plane;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh)
      for (std::int64_t ow = 0; ow < g.out_w; ++ow)
        out[oh * g.out_w + ow] = avg_pool_element(plane, g, oh, ow, include_pad);
  });
}

/// dx += dy / divisor spread over each window. x supplies the input shape only.
template <class T>
void avg_pool2d_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<const T, Cpu> dy,
                         TensorView<T, Cpu> dx, const Pool2dOptions& opt) {
  if (dx.empty()) return;
  const char* op = "nddr::ops::avg_pool2d_backward";
  const Pool2dGeometry g = nddr::detail::checked_pool_forward(op, x.shape(), dy.shape(), opt);
  check_shape(op, "dx", dx.shape(), x.shape());
  const bool include_pad = opt.include_pad;
  const std::int64_t in_plane = g.in_h * g.in_w;
  const std::int64_t out_plane = g.out_h * g.out_w;
  const T* dyp = dy.data();
  T* dxp = dx.data();
  nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
    const T* grad = dyp + p * out_plane;
    for (std::int64_t oh = 0; oh < g.out_h; ++oh)
      for (std::int64_t ow = 0; ow < g.out_w; ++ow)
        avg_pool_backward_element(grad[oh * g.out_w + ow], g, oh, ow, include_pad,
                                  dxp + p * in_plane);
  });
}

/// y(n, c, 0, 0) = mean of x(n, c, :, :). x (N, C, H, W), y (N, C, 1, 1).
template <class T>
void global_avg_pool_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y) {
  nddr::detail::check_global_avg_pool("nddr::ops::global_avg_pool_forward", x.shape(), y.shape());
  const std::int64_t cells = x.shape().h() * x.shape().w();
  const T* xp = x.data();
  T* yp = y.data();
  nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
    const T* plane = xp + p * cells;
    T sum = T(0);
    for (std::int64_t i = 0; i < cells; ++i) sum += plane[i];
    yp[p] = sum / static_cast<T>(cells);
  });
}

/// dx(n, c, h, w) += dy(n, c, 0, 0) / (H * W).
template <class T>
void global_avg_pool_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                              TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx) {
  if (dx.empty()) return;
  const char* op = "nddr::ops::global_avg_pool_backward";
  nddr::detail::check_global_avg_pool(op, x.shape(), dy.shape());
  check_shape(op, "dx", dx.shape(), x.shape());
  const std::int64_t cells = x.shape().h() * x.shape().w();
  const T* dyp = dy.data();
  T* dxp = dx.data();
  nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
    const T share = dyp[p] / static_cast<T>(cells);
    T* plane = dxp + p * cells;
    for (std::int64_t i = 0; i < cells; ++i) plane[i] += share;
  });
}

}  // namespace ops
}  // namespace nddr
