#pragma once
/// \file
/// 2-D convolution, the front door (options, geometry: nddr/ops/math/conv2d.hpp). Validates
/// once, then runs `backend::Conv2d<D>`, which picks the algorithm and the precision from the
/// context's settings (CPU: im2col, Winograd or tap-skipping, BF16 emulation; CUDA: cuDNN).

#include <cstdint>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/conv2d.hpp"

namespace nddr::ops {

namespace detail {

/// Checks the bias view against the options: present with shape (C_out) iff use_bias.
template <class V>
void conv2d_check_bias(const char* who, const char* what, const V& b, const Conv2dOptions& opt,
                       std::int64_t out_c) {
  if (!opt.use_bias) {
    check<OptionError>(b.empty(), who, ": use_bias is false but a ", what, " tensor ", b.shape(),
                       " was given");
    return;
  }
  check<ShapeError>(!b.empty(), who, ": use_bias is true but ", what, " is empty");
  check_shape(who, what, b.shape(), Shape{out_c});
}

/// Checks x, w, b and y of a forward pass.
template <class V, class W>
void conv2d_check_forward(const V& x, const V& w, const V& b, const W& y,
                          const Conv2dOptions& opt) {
  constexpr const char* kWho = "nddr::ops::conv2d_forward";
  const Conv2dGeometry g = conv2d_geometry(x.shape(), w.shape(), opt, kWho);
  conv2d_check_bias(kWho, "bias", b, opt, g.out_c);
  check_shape(kWho, "y", y.shape(), Shape::nchw(x.shape().n(), g.out_c, g.out_h, g.out_w));
}

/// Checks w, dy and a non-empty dx of a data-gradient pass.
template <class V, class W>
void conv2d_check_backward_data(const V& w, const V& dy, const W& dx, const Conv2dOptions& opt) {
  constexpr const char* kWho = "nddr::ops::conv2d_backward_data";
  const Conv2dGeometry g = conv2d_geometry(dx.shape(), w.shape(), opt, kWho);
  check_shape(kWho, "dy", dy.shape(), Shape::nchw(dx.shape().n(), g.out_c, g.out_h, g.out_w));
}

/// Checks x, dy and the non-empty ones of dw and db of a weight-gradient pass.
template <class V, class W>
void conv2d_check_backward_weights(const V& x, const V& dy, const W& dw, const W& db,
                                   const Conv2dOptions& opt) {
  constexpr const char* kWho = "nddr::ops::conv2d_backward_weights";
  if (!db.empty()) {
    check<OptionError>(opt.use_bias, kWho, ": use_bias is false but a db tensor ", db.shape(),
                       " was given");
    check_rank4(kWho, "dy", dy.shape());
    check_shape(kWho, "db", db.shape(), Shape{dy.shape().c()});
  }
  if (dw.empty()) return;
  const Conv2dGeometry g = conv2d_geometry(x.shape(), dw.shape(), opt, kWho);
  check_shape(kWho, "dy", dy.shape(), Shape::nchw(x.shape().n(), g.out_c, g.out_h, g.out_w));
}

}  // namespace detail

/// y = conv(x, w) + b. x (N, C_in, H, W), w (C_out, C_in, kh, kw), b (C_out) when
/// `opt.use_bias` (else empty), y (N, C_out, OH, OW) assigned. With the context's `conv_bf16`
/// setting on, float convolutions run in BF16 (on the CPU emulated bit for bit:
/// y = bf16(conv(bf16(x), bf16(w))) + b).
template <class T, class D>
void conv2d_forward(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> x,
                    std::type_identity_t<TensorView<const T, D>> w,
                    std::type_identity_t<TensorView<const T, D>> b, ViewOn<T, D> y,
                    const Conv2dOptions& opt) {
  detail::conv2d_check_forward(x, w, b, y, opt);
  backend::Conv2d<D>::template conv2d_forward<T>(ctx, x, w, b, y, opt);
}

/// dx += conv^T(dy, w): the data gradient, accumulated. An empty dx is skipped.
/// w (C_out, C_in, kh, kw), dy (N, C_out, OH, OW), dx (N, C_in, H, W). With the context's
/// `conv_bf16` setting on (float): dx += bf16(conv^T(bf16(dy), bf16(w))).
template <class T, class D>
void conv2d_backward_data(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> w,
                          std::type_identity_t<TensorView<const T, D>> dy, ViewOn<T, D> dx,
                          const Conv2dOptions& opt) {
  if (dx.empty()) return;
  detail::conv2d_check_backward_data(w, dy, dx, opt);
  backend::Conv2d<D>::template conv2d_backward_data<T>(ctx, w, dy, dx, opt);
}

/// dw = sum_n dy_n * col(x_n)^T and db = sum over (n, h, w) of dy, both assigned. An empty dw
/// or db is skipped; db must be empty unless `opt.use_bias`.
/// x (N, C_in, H, W), dy (N, C_out, OH, OW), dw (C_out, C_in, kh, kw), db (C_out). With the
/// context's `conv_bf16` setting on (float): dw = bf16(dconv(bf16(x), bf16(dy))); db from the
/// float dy.
template <class T, class D>
void conv2d_backward_weights(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> x,
                             std::type_identity_t<TensorView<const T, D>> dy, ViewOn<T, D> dw,
                             std::type_identity_t<TensorView<T, D>> db, const Conv2dOptions& opt) {
  detail::conv2d_check_backward_weights(x, dy, dw, db, opt);
  backend::Conv2d<D>::template conv2d_backward_weights<T>(ctx, x, dy, dw, db, opt);
}

/// Full backward pass: dx accumulated (skipped when empty), dw and db assigned (each skipped
/// when empty). Under the context's `conv_bf16` setting (float), dy is rounded once for both
/// gradients.
template <class T, class D>
void conv2d_backward(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> x,
                     std::type_identity_t<TensorView<const T, D>> w,
                     std::type_identity_t<TensorView<const T, D>> dy, ViewOn<T, D> dx,
                     std::type_identity_t<TensorView<T, D>> dw,
                     std::type_identity_t<TensorView<T, D>> db, const Conv2dOptions& opt) {
  detail::conv2d_check_backward_weights(x, dy, dw, db, opt);
  if (!dx.empty()) detail::conv2d_check_backward_data(w, dy, dx, opt);
  backend::Conv2d<D>::template conv2d_backward<T>(ctx, x, w, dy, dx, dw, db, opt);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/conv2d.hpp"
