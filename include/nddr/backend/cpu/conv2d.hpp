#pragma once
/// \file
/// CPU 2-D convolution: im2col + Eigen GEMM per batch item (a 1x1, stride-1, unpadded
/// convolution skips im2col and is a plain GEMM on the input).
///
/// Per batch item, with K = C_in * kh * kw and P = OH * OW, all matrices row-major over our
/// NCHW buffers:   forward        Y (C_out, P)  = W (C_out, K) * col (K, P) [+ b]
///                 weight grad    dW (C_out, K) = sum_n dY_n (C_out, P) * col_n^T
///                 data grad      dcol (K, P)   = W^T * dY_n, then col2im adds it into dx.
/// Forward and weight grad build the column matrix in blocks of output columns small enough
/// to stay in cache (the whole matrix is 60 MB at VGG conv1_2, 161^2), one block per thread
/// at a time; the data grad, whose col2im scatters across block boundaries, uses the whole
/// matrix. Columns live in `ctx.workspace<T>()`, so steady-state calls do not allocate.

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
template <class T>
using Conv2dConstStridedMap = Eigen::Map<const Conv2dMatrix<T>, 0, Eigen::OuterStride<>>;

/// Runs `body(chunk, begin, end)` on disjoint column ranges covering [0, n), one per thread
/// (`chunk` < ctx.threads() numbers the range), each range a single-threaded Eigen GEMM, so
/// the context's thread count is honoured. Boundaries are multiples of 16 columns to keep the
/// GEMM micro-kernel on full panels.
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
    if (end > begin) body(t, begin, end);
  });
}

/// Columns per im2col block for `rows` rows: about kBytes of column matrix, which with the
/// GEMM's packed panels fits a per-core L2 cache, rounded to 16 columns (full GEMM panels).
template <class T>
std::int64_t conv2d_block_columns(std::int64_t rows) {
  constexpr std::int64_t kBytes = std::int64_t{1} << 19;
  const std::int64_t per_row = std::max<std::int64_t>(1, rows) * std::int64_t{sizeof(T)};
  return std::max<std::int64_t>(512, kBytes / per_row / 16 * 16);
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

/// Writes columns [p0, p1) of row `row` of the column matrix of one batch item `x`
/// (C_in, H, W) to `dst` (p1 - p0 entries).
template <class T>
void conv2d_im2col_row(const T* x, const Conv2dGeometry& g, std::int64_t row, std::int64_t p0,
                       std::int64_t p1, T* dst) {
  const std::int64_t j = row % g.kernel_w;
  const std::int64_t i = (row / g.kernel_w) % g.kernel_h;
  const T* src = x + row / (g.kernel_w * g.kernel_h) * g.in_h * g.in_w;
  std::int64_t oh_lo, oh_hi, ow_lo, ow_hi;
  conv2d_valid_outputs(i, g.in_h, g.out_h, g.stride_h, g.dilation_h, g.pad_top, oh_lo, oh_hi);
  conv2d_valid_outputs(j, g.in_w, g.out_w, g.stride_w, g.dilation_w, g.pad_left, ow_lo, ow_hi);
  const std::int64_t iw_lo = conv2d_input_coord(ow_lo, j, g.stride_w, g.dilation_w, g.pad_left);
  // Walk the output rows the range touches; the first and last may be partial.
  for (std::int64_t oh = p0 / g.out_w; oh * g.out_w < p1; ++oh) {
    const std::int64_t a = std::max(p0 - oh * g.out_w, std::int64_t{0});  // first ow
    const std::int64_t e = std::min(p1 - oh * g.out_w, g.out_w);          // end ow
    // Column oh * out_w + ow sits at dst[base + ow]; base < 0 on a partial first row, so
    // pointers are formed only for in-range ow.
    const std::int64_t base = oh * g.out_w - p0;
    if (oh < oh_lo || oh >= oh_hi) {
      std::fill(dst + (base + a), dst + (base + e), T(0));
      continue;
    }
    const T* s =
        src + conv2d_input_coord(oh, i, g.stride_h, g.dilation_h, g.pad_top) * g.in_w + iw_lo;
    // Valid part [va, ve) of [a, e); a <= va <= ve <= e even when they do not overlap.
    const std::int64_t va = std::min(std::max(a, ow_lo), e);
    const std::int64_t ve = std::max(std::min(e, ow_hi), va);
    std::fill(dst + (base + a), dst + (base + va), T(0));
    if (g.stride_w == 1) {
      std::copy(s + (va - ow_lo), s + (ve - ow_lo), dst + (base + va));
    } else {
      for (std::int64_t ow = va; ow < ve; ++ow) dst[base + ow] = s[(ow - ow_lo) * g.stride_w];
    }
    std::fill(dst + (base + ve), dst + (base + e), T(0));
  }
}

/// Writes columns [p0, p1) of the column matrix of one batch item `x` (C_in, H, W) to `col`,
/// a row-major (K, p1 - p0) block; serial, for one thread's block.
template <class T>
void conv2d_im2col_columns(const T* x, const Conv2dGeometry& g, std::int64_t p0, std::int64_t p1,
                           T* col) {
  for (std::int64_t row = 0; row < g.col_rows(); ++row)
    conv2d_im2col_row(x, g, row, p0, p1, col + row * (p1 - p0));
}

/// Writes the column matrix (K, P) of one batch item `x` (C_in, H, W) into `col`.
template <class T>
void conv2d_im2col(const Context<Cpu>& ctx, const T* x, const Conv2dGeometry& g, T* col) {
  const std::int64_t cols = g.col_cols();
  nddr::detail::parallel_for(ctx, g.col_rows(), [&](std::int64_t row) {
    conv2d_im2col_row(x, g, row, 0, cols, col + row * cols);
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
  const std::int64_t block = std::min(p, nddr::detail::conv2d_block_columns<T>(k));
  // One (K, block) column block per thread.
  T* col = g.is_pointwise() ? nullptr
                            : ctx.workspace<T>(static_cast<std::size_t>(ctx.threads() * k * block));
  const nddr::detail::Conv2dConstMap<T> wm(w.data(), g.out_c, k);  // (C_out, K)
  const Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>> bias(b.data(), b.numel());
  for (std::int64_t n = 0; n < x.shape().n(); ++n) {
    const T* xn = x.data() + n * x.shape().item_size();  // (C_in, H, W)
    nddr::detail::Conv2dMap<T> ym(y.data() + n * y.shape().item_size(), g.out_c, p);  // (C_out, P)
    nddr::detail::conv2d_split_columns(
        ctx, p, [&](std::int64_t t, std::int64_t begin, std::int64_t end) {
          for (std::int64_t p0 = begin; p0 < end; p0 += block) {
            const std::int64_t cols = std::min(block, end - p0);
            auto yb = ym.middleCols(p0, cols);
            if (col) {
              T* cb = col + t * k * block;
              conv2d_im2col_columns(xn, g, p0, p0 + cols, cb);
              yb.noalias() = wm * nddr::detail::Conv2dConstMap<T>(cb, k, cols);
            } else {
              yb.noalias() = wm * nddr::detail::Conv2dConstMap<T>(xn, k, p).middleCols(p0, cols);
            }
            if (opt.use_bias) yb.colwise() += bias;
          }
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
      nddr::detail::conv2d_split_columns(
          ctx, p, [&](std::int64_t, std::int64_t begin, std::int64_t end) {
            dxm.middleCols(begin, end - begin).noalias() += wt * dym.middleCols(begin, end - begin);
          });
      continue;
    }
    nddr::detail::Conv2dMap<T> dcm(dcol, k, p);  // (K, P)
    nddr::detail::conv2d_split_columns(
        ctx, p, [&](std::int64_t, std::int64_t begin, std::int64_t end) {
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
  // Each thread owns a slice of K (columns of dW, rows of col) and walks P in blocks of its
  // (K slice, block) column rows; a block sized for all K rows is small enough for any slice.
  const std::int64_t block = std::min(p, nddr::detail::conv2d_block_columns<T>(k));
  T* col = g.is_pointwise() ? nullptr
                            : ctx.workspace<T>(static_cast<std::size_t>(ctx.threads() * k * block));
  nddr::detail::Conv2dMap<T> dwm(dw.data(), g.out_c, k);  // (C_out, K)
  if (x.shape().n() == 0) dwm.setZero();
  for (std::int64_t n = 0; n < x.shape().n(); ++n) {
    const T* xn = x.data() + n * x.shape().item_size();  // (C_in, H, W)
    const nddr::detail::Conv2dConstMap<T> dym(dy.data() + n * dy.shape().item_size(), g.out_c, p);
    nddr::detail::conv2d_split_columns(
        ctx, k, [&](std::int64_t t, std::int64_t begin, std::int64_t end) {
          const std::int64_t rows = end - begin;
          auto dwb = dwm.middleCols(begin, rows);
          for (std::int64_t p0 = 0; p0 < p; p0 += block) {
            const std::int64_t cols = std::min(block, p - p0);
            const auto dyb = dym.middleCols(p0, cols);  // (C_out, cols)
            T* cb = col ? col + t * k * block : nullptr;
            if (cb)
              for (std::int64_t r = 0; r < rows; ++r)
                conv2d_im2col_row(xn, g, begin + r, p0, p0 + cols, cb + r * cols);
            // (rows, cols): the fresh block, or a window of the input itself when pointwise.
            const nddr::detail::Conv2dConstStridedMap<T> cm(
                cb ? cb : xn + begin * p + p0, rows, cols, Eigen::OuterStride<>(cb ? cols : p));
            if (n == 0 && p0 == 0)
              dwb.noalias() = dyb * cm.transpose();
            else
              dwb.noalias() += dyb * cm.transpose();
          }
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
