#pragma once
/// \file
/// CPU 2-D convolution: im2col + Eigen GEMM per batch item (a 1x1, stride-1, unpadded
/// convolution skips im2col and is a plain GEMM on the input).
///
/// Per batch item, with K = C_in * kh * kw and P = OH * OW, all matrices row-major over our
/// NCHW buffers:   forward        Y (C_out, P)  = W (C_out, K) * col (K, P) [+ b]
///                 weight grad    dW (C_out, K) = sum_n dY_n (C_out, P) * col_n^T
///                 data grad      dcol (K, P)   = W^T * dY_n, then col2im adds it into dx.
/// The column matrix lives in `ctx.workspace<T>()`, so steady-state calls do not allocate.

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/conv2d.hpp"

namespace nddr {
namespace detail {

template <class T>
using Conv2dMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Conv2dMap = Eigen::Map<Conv2dMatrix<T>>;
template <class T>
using Conv2dConstMap = Eigen::Map<const Conv2dMatrix<T>>;

/// Runs `body(begin, end)` on disjoint column ranges covering [0, n), one per thread, each
/// range a single-threaded Eigen GEMM, so the context's thread count is honoured. Boundaries
/// are multiples of 16 columns to keep the GEMM micro-kernel on full panels.
template <class F>
void conv2d_split_columns(const Context<Cpu>& ctx, std::int64_t n, F&& body) {
  constexpr std::int64_t kMinColumns = 64;
  const std::int64_t chunks =
      std::max<std::int64_t>(1, std::min<std::int64_t>(ctx.threads(), n / kMinColumns));
  auto bound = [=](std::int64_t t) { return t == chunks ? n : n * t / chunks / 16 * 16; };
  parallel_for(ctx, chunks, [&](std::int64_t t) {
#if defined(_OPENMP)
    // Eigen parallelises a product unless omp_get_num_threads() > 1, so in a one-thread
    // region it would nest its own team. Capping this task's thread ICV (task-local, gone at
    // the end of the region) keeps it serial unless Eigen::setNbThreads was raised globally.
    omp_set_num_threads(1);
#endif
    const std::int64_t begin = bound(t);
    const std::int64_t end = bound(t + 1);
    if (end > begin) body(begin, end);
  });
}

/// Checks the bias view against the options: present with shape (C_out) iff use_bias.
template <class T>
void conv2d_check_bias(const char* who, const char* what, TensorView<T, Cpu> b,
                       const Conv2dOptions& opt, std::int64_t out_c) {
  if (!opt.use_bias) {
    check<OptionError>(b.empty(), who, ": use_bias is false but a ", what, " tensor ",
                       b.shape().str(), " was given");
    return;
  }
  check<ShapeError>(!b.empty(), who, ": use_bias is true but ", what, " is empty");
  check_shape(who, what, b.shape(), Shape{out_c});
}

}  // namespace detail

namespace ops {

/// Writes the column matrix (K, P) of one batch item `x` (C_in, H, W) into `col`.
template <class T>
void conv2d_im2col(const Context<Cpu>& ctx, const T* x, const Conv2dGeometry& g, T* col) {
  const std::int64_t cols = g.col_cols();
  const std::int64_t plane = g.in_h * g.in_w;
  nddr::detail::parallel_for(ctx, g.col_rows(), [&](std::int64_t row) {
    const std::int64_t j = row % g.kernel_w;
    const std::int64_t i = (row / g.kernel_w) % g.kernel_h;
    const T* src = x + row / (g.kernel_w * g.kernel_h) * plane;
    T* dst = col + row * cols;
    std::int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    conv2d_valid_outputs(i, g.in_h, g.out_h, g.stride_h, g.dilation_h, g.pad_top, oh_lo, oh_hi);
    conv2d_valid_outputs(j, g.in_w, g.out_w, g.stride_w, g.dilation_w, g.pad_left, ow_lo, ow_hi);
    std::fill(dst, dst + oh_lo * g.out_w, T(0));
    const std::int64_t iw_lo = conv2d_input_coord(ow_lo, j, g.stride_w, g.dilation_w, g.pad_left);
    for (std::int64_t oh = oh_lo; oh < oh_hi; ++oh) {
      T* d = dst + oh * g.out_w;
      const T* s =
          src + conv2d_input_coord(oh, i, g.stride_h, g.dilation_h, g.pad_top) * g.in_w + iw_lo;
      std::fill(d, d + ow_lo, T(0));
      if (g.stride_w == 1) {
        std::copy(s, s + (ow_hi - ow_lo), d + ow_lo);
      } else {
        for (std::int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = s[(ow - ow_lo) * g.stride_w];
      }
      std::fill(d + ow_hi, d + g.out_w, T(0));
    }
    std::fill(dst + oh_hi * g.out_w, dst + cols, T(0));
  });
}

/// Adds the column matrix `col` (K, P) back onto one batch item `dx` (C_in, H, W): every
/// entry goes to the input pixel it was read from (the adjoint of `conv2d_im2col`).
template <class T>
void conv2d_col2im_add(const Context<Cpu>& ctx, const T* col, const Conv2dGeometry& g, T* dx) {
  const std::int64_t cols = g.col_cols();
  // One channel per task: its rows of `col` touch only its own plane of dx, so no races.
  nddr::detail::parallel_for(ctx, g.in_c, [&](std::int64_t c) {
    T* plane = dx + c * g.in_h * g.in_w;
    for (std::int64_t i = 0; i < g.kernel_h; ++i) {
      std::int64_t oh_lo, oh_hi;
      conv2d_valid_outputs(i, g.in_h, g.out_h, g.stride_h, g.dilation_h, g.pad_top, oh_lo, oh_hi);
      for (std::int64_t j = 0; j < g.kernel_w; ++j) {
        std::int64_t ow_lo, ow_hi;
        conv2d_valid_outputs(j, g.in_w, g.out_w, g.stride_w, g.dilation_w, g.pad_left, ow_lo,
                             ow_hi);
        const T* src = col + ((c * g.kernel_h + i) * g.kernel_w + j) * cols;
        const std::int64_t iw_lo =
            conv2d_input_coord(ow_lo, j, g.stride_w, g.dilation_w, g.pad_left);
        for (std::int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          T* d = plane + conv2d_input_coord(oh, i, g.stride_h, g.dilation_h, g.pad_top) * g.in_w +
                 iw_lo;
          const T* s = src + oh * g.out_w;
          for (std::int64_t ow = ow_lo; ow < ow_hi; ++ow) d[(ow - ow_lo) * g.stride_w] += s[ow];
        }
      }
    }
  });
}

/// y = conv(x, w) + b. x (N, C_in, H, W), w (C_out, C_in, kh, kw), b (C_out) when
/// `opt.use_bias` (else empty), y (N, C_out, OH, OW) assigned.
template <class T>
void conv2d_forward(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> x,
                    std::type_identity_t<TensorView<const T, Cpu>> w,
                    std::type_identity_t<TensorView<const T, Cpu>> b, TensorView<T, Cpu> y,
                    const Conv2dOptions& opt) {
  constexpr const char* kWho = "nddr::ops::conv2d_forward";
  const Conv2dGeometry g = conv2d_geometry(x.shape(), w.shape(), opt, kWho);
  nddr::detail::conv2d_check_bias(kWho, "bias", b, opt, g.out_c);
  check_shape(kWho, "y", y.shape(), Shape::nchw(x.shape().n(), g.out_c, g.out_h, g.out_w));
  const std::int64_t k = g.col_rows();
  const std::int64_t p = g.col_cols();
  T* col = g.is_pointwise() ? nullptr : ctx.workspace<T>(static_cast<std::size_t>(k * p));
  const nddr::detail::Conv2dConstMap<T> wm(w.data(), g.out_c, k);  // (C_out, K)
  for (std::int64_t n = 0; n < x.shape().n(); ++n) {
    const T* xn = x.data() + n * x.shape().item_size();  // (C_in, H, W)
    if (col) conv2d_im2col(ctx, xn, g, col);
    const nddr::detail::Conv2dConstMap<T> cm(col ? col : xn, k, p);                   // (K, P)
    nddr::detail::Conv2dMap<T> ym(y.data() + n * y.shape().item_size(), g.out_c, p);  // (C_out, P)
    nddr::detail::conv2d_split_columns(ctx, p, [&](std::int64_t begin, std::int64_t end) {
      auto yb = ym.middleCols(begin, end - begin);
      yb.noalias() = wm * cm.middleCols(begin, end - begin);
      if (opt.use_bias)
        yb.colwise() += Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(b.data(), g.out_c);
    });
  }
}

/// dx += conv^T(dy, w): the data gradient, accumulated. An empty dx is skipped.
/// w (C_out, C_in, kh, kw), dy (N, C_out, OH, OW), dx (N, C_in, H, W).
template <class T>
void conv2d_backward_data(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> w,
                          std::type_identity_t<TensorView<const T, Cpu>> dy, TensorView<T, Cpu> dx,
                          const Conv2dOptions& opt) {
  if (dx.empty()) return;
  constexpr const char* kWho = "nddr::ops::conv2d_backward_data";
  const Conv2dGeometry g = conv2d_geometry(dx.shape(), w.shape(), opt, kWho);
  check_shape(kWho, "dy", dy.shape(), Shape::nchw(dx.shape().n(), g.out_c, g.out_h, g.out_w));
  const std::int64_t k = g.col_rows();
  const std::int64_t p = g.col_cols();
  T* dcol = g.is_pointwise() ? nullptr : ctx.workspace<T>(static_cast<std::size_t>(k * p));
  const auto wt = nddr::detail::Conv2dConstMap<T>(w.data(), g.out_c, k).transpose();  // (K, C_out)
  for (std::int64_t n = 0; n < dx.shape().n(); ++n) {
    const nddr::detail::Conv2dConstMap<T> dym(dy.data() + n * dy.shape().item_size(), g.out_c, p);
    T* dxn = dx.data() + n * dx.shape().item_size();  // (C_in, H, W)
    if (!dcol) {
      nddr::detail::Conv2dMap<T> dxm(dxn, k, p);  // (C_in, H * W)
      nddr::detail::conv2d_split_columns(ctx, p, [&](std::int64_t begin, std::int64_t end) {
        dxm.middleCols(begin, end - begin).noalias() += wt * dym.middleCols(begin, end - begin);
      });
      continue;
    }
    nddr::detail::Conv2dMap<T> dcm(dcol, k, p);  // (K, P)
    nddr::detail::conv2d_split_columns(ctx, p, [&](std::int64_t begin, std::int64_t end) {
      dcm.middleCols(begin, end - begin).noalias() = wt * dym.middleCols(begin, end - begin);
    });
    conv2d_col2im_add(ctx, static_cast<const T*>(dcol), g, dxn);
  }
}

/// dw = sum_n dy_n * col(x_n)^T and db = sum over (n, h, w) of dy, both assigned. An empty dw
/// or db is skipped; db must be empty unless `opt.use_bias`.
/// x (N, C_in, H, W), dy (N, C_out, OH, OW), dw (C_out, C_in, kh, kw), db (C_out).
template <class T>
void conv2d_backward_weights(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> x,
                             std::type_identity_t<TensorView<const T, Cpu>> dy,
                             TensorView<T, Cpu> dw, std::type_identity_t<TensorView<T, Cpu>> db,
                             const Conv2dOptions& opt) {
  constexpr const char* kWho = "nddr::ops::conv2d_backward_weights";
  if (!db.empty()) {
    check<OptionError>(opt.use_bias, kWho, ": use_bias is false but a db tensor ", db.shape().str(),
                       " was given");
    check_rank4(kWho, "dy", dy.shape());
    check_shape(kWho, "db", db.shape(), Shape{dy.shape().c()});
    const std::int64_t batch = dy.shape().n();
    const std::int64_t channels = dy.shape().c();
    const std::int64_t p = dy.shape().h() * dy.shape().w();
    nddr::detail::parallel_for(ctx, channels, [&](std::int64_t c) {
      T sum = T(0);
      for (std::int64_t n = 0; n < batch; ++n) {
        const T* d = dy.data() + (n * channels + c) * p;
        for (std::int64_t i = 0; i < p; ++i) sum += d[i];
      }
      db[c] = sum;
    });
  }
  if (dw.empty()) return;
  const Conv2dGeometry g = conv2d_geometry(x.shape(), dw.shape(), opt, kWho);
  check_shape(kWho, "dy", dy.shape(), Shape::nchw(x.shape().n(), g.out_c, g.out_h, g.out_w));
  const std::int64_t k = g.col_rows();
  const std::int64_t p = g.col_cols();
  T* col = g.is_pointwise() ? nullptr : ctx.workspace<T>(static_cast<std::size_t>(k * p));
  nddr::detail::Conv2dMap<T> dwm(dw.data(), g.out_c, k);  // (C_out, K)
  if (x.shape().n() == 0) dwm.setZero();
  for (std::int64_t n = 0; n < x.shape().n(); ++n) {
    const T* xn = x.data() + n * x.shape().item_size();  // (C_in, H, W)
    if (col) conv2d_im2col(ctx, xn, g, col);
    const nddr::detail::Conv2dConstMap<T> cm(col ? col : xn, k, p);  // (K, P)
    const nddr::detail::Conv2dConstMap<T> dym(dy.data() + n * dy.shape().item_size(), g.out_c, p);
    // Split over K (columns of dW) so each thread owns its slice of the sum over n.
    nddr::detail::conv2d_split_columns(ctx, k, [&](std::int64_t begin, std::int64_t end) {
      auto dwb = dwm.middleCols(begin, end - begin);
      const auto cb = cm.middleRows(begin, end - begin).transpose();  // (P, end - begin)
      if (n == 0)
        dwb.noalias() = dym * cb;
      else
        dwb.noalias() += dym * cb;
    });
  }
}

/// Full backward pass: dx accumulated (skipped when empty), dw and db assigned (each skipped
/// when empty).
template <class T>
void conv2d_backward(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> x,
                     std::type_identity_t<TensorView<const T, Cpu>> w,
                     std::type_identity_t<TensorView<const T, Cpu>> dy, TensorView<T, Cpu> dx,
                     std::type_identity_t<TensorView<T, Cpu>> dw,
                     std::type_identity_t<TensorView<T, Cpu>> db, const Conv2dOptions& opt) {
  conv2d_backward_weights<T>(ctx, x, dy, dw, db, opt);
  conv2d_backward_data<T>(ctx, w, dy, dx, opt);
}

}  // namespace ops
}  // namespace nddr
