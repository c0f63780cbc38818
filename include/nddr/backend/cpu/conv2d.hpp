#pragma once
/// \file
/// CPU 2-D convolution (front door: nddr/ops/conv2d.hpp): im2col + Eigen GEMM per batch item (a
/// 1x1, stride-1, unpadded convolution skips im2col and is a plain GEMM on the input).
///
/// Per batch item, with K = C_in * kh * kw and P = OH * OW, all matrices row-major over our
/// NCHW buffers:   forward        Y (C_out, P)  = W (C_out, K) * col (K, P) [+ b]
///                 weight grad    dW (C_out, K) = sum_n dY_n (C_out, P) * col_n^T
///                 data grad      dcol (K, P)   = W^T * dY_n, then col2im adds it into dx.
/// All three build the column matrix in blocks of output columns small enough to stay in
/// cache (the whole matrix is 60 MB at VGG conv1_2, 161^2). Forward and weight grad give
/// each thread its own block; the data grad, whose col2im scatters across block boundaries,
/// gives each thread the rows of one range of input channels of a shared block, so the
/// threads add into disjoint dx planes. Columns live in `ctx.workspace<T>()`, so
/// steady-state calls do not allocate.
///
/// Two other algorithms are dispatched to when they do less work (`conv2d_select_algorithm`):
/// Winograd F(4x4, 3x3) or F(2x2, 3x3) for 3x3 stride-1 kernels (nddr/backend/cpu/winograd.hpp),
/// and tap-skipping for dilated kernels: the convolution as a sum over the kh * kw taps of 1x1
/// GEMMs, each restricted to the outputs whose tap lands inside the image, so taps that read
/// only padding (most of DeepLab's fc6, dilation 12 on a 21x21 map) cost nothing.
/// A context's `NumericSettings::cpu_conv_algorithm` forces one of them (tests, benchmarks).

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "nddr/backend/cpu/winograd.hpp"
#include "nddr/core/bfloat16.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/conv2d.hpp"

namespace nddr {
namespace cpu {

// cpu::ConvAlgo and the forced algorithm: NumericSettings::cpu_conv_algorithm (core/settings.hpp).

}  // namespace cpu

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
    omp_set_num_threads(1);  // Eigen stays serial inside: see detail::parallel_ranges
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

/// The outputs of one kernel tap whose input lands inside the image: rows [oh_lo, oh_lo +
/// rows), columns [ow_lo, ow_lo + cols); output (oh, ow) reads input (oh * stride_h + ih_off,
/// ow * stride_w + iw_off).
struct Conv2dTapWindow {
  std::int64_t oh_lo = 0, rows = 0, ow_lo = 0, cols = 0;
  std::int64_t stride_h = 1, stride_w = 1, ih_off = 0, iw_off = 0;

  std::int64_t area() const { return rows * cols; }
};

inline Conv2dTapWindow conv2d_tap_window(const Conv2dGeometry& g, std::int64_t i, std::int64_t j) {
  std::int64_t oh_lo, oh_hi, ow_lo, ow_hi;
  ops::conv2d_valid_outputs(i, g.in_h, g.out_h, g.stride_h, g.dilation_h, g.pad_top, oh_lo, oh_hi);
  ops::conv2d_valid_outputs(j, g.in_w, g.out_w, g.stride_w, g.dilation_w, g.pad_left, ow_lo, ow_hi);
  return {oh_lo,
          oh_hi - oh_lo,
          ow_lo,
          ow_hi - ow_lo,
          g.stride_h,
          g.stride_w,
          ops::conv2d_input_coord(0, i, g.stride_h, g.dilation_h, g.pad_top),
          ops::conv2d_input_coord(0, j, g.stride_w, g.dilation_w, g.pad_left)};
}

/// The window of a tap on the output grid itself (offset 0, stride 1): where dy is read.
inline Conv2dTapWindow conv2d_output_window(const Conv2dTapWindow& t) {
  return {t.oh_lo, t.rows, t.ow_lo, t.cols, 1, 1, 0, 0};
}

/// Fraction of the kh * kw * OH * OW (tap, output) pairs that read the image, not padding:
/// the work tap-skipping does relative to im2col.
inline double conv2d_tap_fraction(const Conv2dGeometry& g) {
  std::int64_t inside = 0;
  for (std::int64_t i = 0; i < g.kernel_h; ++i)
    for (std::int64_t j = 0; j < g.kernel_w; ++j) inside += conv2d_tap_window(g, i, j).area();
  const std::int64_t all = g.kernel_h * g.kernel_w * g.col_cols();
  return all == 0 ? 1.0 : static_cast<double>(inside) / static_cast<double>(all);
}

/// dst (count, batch * area) = the window's pixels of channels [c0, c0 + count) of src
/// (batch, channels, h, w), columns ordered (n, row, col); serial, for one thread.
template <class T>
void conv2d_tap_gather(const T* src, std::int64_t batch, std::int64_t channels, std::int64_t c0,
                       std::int64_t count, std::int64_t h, std::int64_t w,
                       const Conv2dTapWindow& win, T* dst) {
  const std::int64_t area = win.area();
  for (std::int64_t c = 0; c < count; ++c)
    for (std::int64_t n = 0; n < batch; ++n) {
      const T* plane = src + (n * channels + c0 + c) * h * w;
      T* d = dst + (c * batch + n) * area;
      for (std::int64_t r = 0; r < win.rows; ++r) {
        const T* s = plane + ((win.oh_lo + r) * win.stride_h + win.ih_off) * w +
                     win.ow_lo * win.stride_w + win.iw_off;
        for (std::int64_t q = 0; q < win.cols; ++q) d[r * win.cols + q] = s[q * win.stride_w];
      }
    }
}

/// Adds buf (count, batch * area), whose rows are channels [c0, c0 + count), onto the window's
/// pixels of those channels of dst (batch, channels, h, w); serial, for one thread's rows.
template <class T>
void conv2d_tap_scatter_add(const T* buf, std::int64_t batch, std::int64_t channels, std::int64_t h,
                            std::int64_t w, const Conv2dTapWindow& win, std::int64_t c0,
                            std::int64_t count, T* dst) {
  const std::int64_t area = win.area();
  for (std::int64_t c = c0; c < c0 + count; ++c)
    for (std::int64_t n = 0; n < batch; ++n) {
      T* plane = dst + (n * channels + c) * h * w;
      const T* s = buf + ((c - c0) * batch + n) * area;
      for (std::int64_t r = 0; r < win.rows; ++r) {
        T* d = plane + ((win.oh_lo + r) * win.stride_h + win.ih_off) * w +
               win.ow_lo * win.stride_w + win.iw_off;
        for (std::int64_t q = 0; q < win.cols; ++q) d[q * win.stride_w] += s[r * win.cols + q];
      }
    }
}

/// wt (kh * kw, C_out, C_in): the weights regrouped by tap, one row-major GEMM operand each.
template <class T>
void conv2d_pack_taps(const Context<Cpu>& ctx, const T* w, const Conv2dGeometry& g, T* wt) {
  const std::int64_t taps = g.kernel_h * g.kernel_w;
  parallel_for(ctx, g.out_c, [&](std::int64_t k) {
    for (std::int64_t c = 0; c < g.in_c; ++c)
      for (std::int64_t tap = 0; tap < taps; ++tap)
        wt[(tap * g.out_c + k) * g.in_c + c] = w[(k * g.in_c + c) * taps + tap];
  });
}

}  // namespace detail

namespace ops {

/// The three passes of a convolution, for algorithm selection.
enum class Conv2dDirection { kForward, kBackwardData, kBackwardWeights };

/// The algorithm `conv2d_forward` / `_backward_data` / `_backward_weights` run for geometry
/// `g`: `forced` (the context's `NumericSettings::cpu_conv_algorithm`) where it applies, else im2col. Under
/// kAuto: Winograd for 3x3 stride-1 kernels with at least 16 input and output channels whose
/// taps land inside the image for at least 75 % of the outputs (every undilated one; VGG
/// conv5, dilation 2 on 21x21: 88 %), F(4x4, 3x3) unless F(2x2, 3x3) needs no more
/// transformed-domain products (maps of a few pixels); else tap-skipping for dilated kernels whose taps read
/// padding for at least 10 % of the outputs (fc6, dilation 12 on 21x21: 62 %); else im2col.
/// The three directions choose alike for now; the direction is there for per-direction rules.
inline cpu::ConvAlgo conv2d_select_algorithm(const Conv2dGeometry& g, Conv2dDirection,
                                             cpu::ConvAlgo forced = cpu::ConvAlgo::kAuto) {
  switch (forced) {
    case cpu::ConvAlgo::kIm2col:
      return cpu::ConvAlgo::kIm2col;
    case cpu::ConvAlgo::kWinograd:
    case cpu::ConvAlgo::kWinogradF4:
      return conv2d_winograd_applicable(g) ? forced : cpu::ConvAlgo::kIm2col;
    case cpu::ConvAlgo::kTapSkip:
      return cpu::ConvAlgo::kTapSkip;
    case cpu::ConvAlgo::kAuto:
      break;
  }
  const bool dilated = g.dilation_h > 1 || g.dilation_w > 1;
  const double inside = dilated ? nddr::detail::conv2d_tap_fraction(g) : 1.0;
  // Winograd's tiles of a dilated phase still multiply the padding, so it only wins while
  // most taps land inside the image; below that, skipping them wins.
  if (conv2d_winograd_applicable(g) && g.in_c >= 16 && g.out_c >= 16 && inside >= 0.75) {
    // F(4x4, 3x3) needs 2.25 products per output against 4, but computes whole 4x4 tiles: on
    // maps too small to fill them F(2x2, 3x3) does less (and is the more accurate on a tie).
    const bool f4 = nddr::detail::winograd_products<WinogradF4x3>(g) <
                    nddr::detail::winograd_products<WinogradF2x3>(g);
    return f4 ? cpu::ConvAlgo::kWinogradF4 : cpu::ConvAlgo::kWinograd;
  }
  if (dilated && inside < 0.9) return cpu::ConvAlgo::kTapSkip;
  return cpu::ConvAlgo::kIm2col;
}

/// Tap-skipping forward: y (batch, C_out, OH, OW) = [bias +] sum over taps of W_tap x_tap,
/// each a GEMM over the tap's in-image outputs only. Each thread owns a range of output
/// channels and gathers its own copy of x_tap (cheap next to the GEMM), so the threads run
/// without synchronising.
template <class T>
void conv2d_tapskip_forward(Context<Cpu>& ctx, const T* x, const T* w, const T* bias, T* y,
                            const Conv2dGeometry& g, std::int64_t batch) {
  using nddr::detail::Conv2dConstMap;
  const std::int64_t taps = g.kernel_h * g.kernel_w;
  const std::int64_t plane = g.out_h * g.out_w;
  const std::int64_t cols_max = batch * plane;
  const std::int64_t wt_size = nddr::detail::winograd_aligned<T>(taps * g.out_c * g.in_c);
  const std::int64_t per_thread = nddr::detail::winograd_aligned<T>((g.in_c + g.out_c) * cols_max);
  T* wt = ctx.workspace<T>(static_cast<std::size_t>(wt_size + ctx.threads() * per_thread));
  nddr::detail::conv2d_pack_taps(ctx, w, g, wt);
  nddr::detail::conv2d_split_columns(
      ctx, g.out_c, [&](std::int64_t t, std::int64_t k0, std::int64_t k1) {
        T* xt = wt + wt_size + t * per_thread;  // (C_in, batch * area)
        T* yt = xt + g.in_c * cols_max;         // (k1 - k0, batch * area)
        for (std::int64_t n = 0; n < batch; ++n)
          for (std::int64_t k = k0; k < k1; ++k)
            std::fill(y + (n * g.out_c + k) * plane, y + (n * g.out_c + k + 1) * plane,
                      bias ? bias[k] : T(0));
        for (std::int64_t tap = 0; tap < taps; ++tap) {
          const auto win = nddr::detail::conv2d_tap_window(g, tap / g.kernel_w, tap % g.kernel_w);
          const std::int64_t cols = batch * win.area();
          if (cols == 0) continue;
          nddr::detail::conv2d_tap_gather(x, batch, g.in_c, 0, g.in_c, g.in_h, g.in_w, win, xt);
          nddr::detail::Conv2dMap<T>(yt, k1 - k0, cols).noalias() =
              Conv2dConstMap<T>(wt + tap * g.out_c * g.in_c, g.out_c, g.in_c)
                  .middleRows(k0, k1 - k0) *
              Conv2dConstMap<T>(xt, g.in_c, cols);
          nddr::detail::conv2d_tap_scatter_add(static_cast<const T*>(yt), batch, g.out_c, g.out_h,
                                               g.out_w, nddr::detail::conv2d_output_window(win), k0,
                                               k1 - k0, y);
        }
      });
}

/// Tap-skipping data gradient: dx += sum over taps of W_tap^T dy over the tap's outputs; each
/// thread owns a range of input channels (and gathers its own dy_tap).
template <class T>
void conv2d_tapskip_backward_data(Context<Cpu>& ctx, const T* w, const T* dy, T* dx,
                                  const Conv2dGeometry& g, std::int64_t batch) {
  using nddr::detail::Conv2dConstMap;
  const std::int64_t taps = g.kernel_h * g.kernel_w;
  const std::int64_t cols_max = batch * g.out_h * g.out_w;
  const std::int64_t wt_size = nddr::detail::winograd_aligned<T>(taps * g.out_c * g.in_c);
  const std::int64_t per_thread = nddr::detail::winograd_aligned<T>((g.in_c + g.out_c) * cols_max);
  T* wt = ctx.workspace<T>(static_cast<std::size_t>(wt_size + ctx.threads() * per_thread));
  nddr::detail::conv2d_pack_taps(ctx, w, g, wt);
  nddr::detail::conv2d_split_columns(
      ctx, g.in_c, [&](std::int64_t t, std::int64_t c0, std::int64_t c1) {
        T* dyt = wt + wt_size + t * per_thread;  // (C_out, batch * area)
        T* dxt = dyt + g.out_c * cols_max;       // (c1 - c0, batch * area)
        for (std::int64_t tap = 0; tap < taps; ++tap) {
          const auto win = nddr::detail::conv2d_tap_window(g, tap / g.kernel_w, tap % g.kernel_w);
          const std::int64_t cols = batch * win.area();
          if (cols == 0) continue;
          nddr::detail::conv2d_tap_gather(dy, batch, g.out_c, 0, g.out_c, g.out_h, g.out_w,
                                          nddr::detail::conv2d_output_window(win), dyt);
          nddr::detail::Conv2dMap<T>(dxt, c1 - c0, cols).noalias() =
              Conv2dConstMap<T>(wt + tap * g.out_c * g.in_c, g.out_c, g.in_c)
                  .middleCols(c0, c1 - c0)
                  .transpose() *
              Conv2dConstMap<T>(dyt, g.out_c, cols);
          nddr::detail::conv2d_tap_scatter_add(static_cast<const T*>(dxt), batch, g.in_c, g.in_h,
                                               g.in_w, win, c0, c1 - c0, dx);
        }
      });
}

/// Tap-skipping weight gradient: dw[:, :, i, j] = dy_tap x_tap^T over the tap's outputs,
/// summed over the batch and assigned (0 for a tap that reads only padding); each thread owns
/// a range of output channels.
template <class T>
void conv2d_tapskip_backward_weights(Context<Cpu>& ctx, const T* x, const T* dy, T* dw,
                                     const Conv2dGeometry& g, std::int64_t batch) {
  using nddr::detail::Conv2dConstMap;
  const std::int64_t taps = g.kernel_h * g.kernel_w;
  const std::int64_t cols_max = batch * g.out_h * g.out_w;
  const std::int64_t per_thread =
      nddr::detail::winograd_aligned<T>((g.in_c + g.out_c) * cols_max + g.out_c * g.in_c);
  T* ws = ctx.workspace<T>(static_cast<std::size_t>(ctx.threads() * per_thread));
  nddr::detail::conv2d_split_columns(
      ctx, g.out_c, [&](std::int64_t t, std::int64_t k0, std::int64_t k1) {
        T* xt = ws + t * per_thread;        // (C_in, batch * area)
        T* dyt = xt + g.in_c * cols_max;    // (k1 - k0, batch * area)
        T* dwt = dyt + g.out_c * cols_max;  // (k1 - k0, C_in) of one tap
        const std::int64_t rows = k1 - k0;
        for (std::int64_t tap = 0; tap < taps; ++tap) {
          const auto win = nddr::detail::conv2d_tap_window(g, tap / g.kernel_w, tap % g.kernel_w);
          const std::int64_t cols = batch * win.area();
          nddr::detail::Conv2dMap<T> dwm(dwt, rows, g.in_c);
          if (cols > 0) {
            nddr::detail::conv2d_tap_gather(x, batch, g.in_c, 0, g.in_c, g.in_h, g.in_w, win, xt);
            nddr::detail::conv2d_tap_gather(dy, batch, g.out_c, k0, rows, g.out_h, g.out_w,
                                            nddr::detail::conv2d_output_window(win), dyt);
            dwm.noalias() = Conv2dConstMap<T>(dyt, rows, cols) *
                            Conv2dConstMap<T>(xt, g.in_c, cols).transpose();
          } else {
            dwm.setZero();
          }
          for (std::int64_t k = 0; k < rows; ++k)
            for (std::int64_t c = 0; c < g.in_c; ++c)
              dw[((k0 + k) * g.in_c + c) * taps + tap] = dwt[k * g.in_c + c];
        }
      });
}

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

/// Adds columns [p0, p1) of row `row` of a column matrix, `src` (p1 - p0 entries), back onto
/// one batch item `dx` (C_in, H, W): each entry goes to the input pixel it was read from (the
/// adjoint of `conv2d_im2col_row`). Only the plane of the row's input channel is touched.
template <class T>
void conv2d_col2im_row_add(const T* src, const Conv2dGeometry& g, std::int64_t row,
                           std::int64_t p0, std::int64_t p1, T* dx) {
  const std::int64_t j = row % g.kernel_w;
  const std::int64_t i = (row / g.kernel_w) % g.kernel_h;
  T* plane = dx + row / (g.kernel_w * g.kernel_h) * g.in_h * g.in_w;
  std::int64_t oh_lo, oh_hi, ow_lo, ow_hi;
  conv2d_valid_outputs(i, g.in_h, g.out_h, g.stride_h, g.dilation_h, g.pad_top, oh_lo, oh_hi);
  conv2d_valid_outputs(j, g.in_w, g.out_w, g.stride_w, g.dilation_w, g.pad_left, ow_lo, ow_hi);
  const std::int64_t iw_lo = conv2d_input_coord(ow_lo, j, g.stride_w, g.dilation_w, g.pad_left);
  for (std::int64_t oh = std::max(p0 / g.out_w, oh_lo); oh < oh_hi && oh * g.out_w < p1; ++oh) {
    // Columns [va, ve) of output row oh: inside the range and reading the image.
    const std::int64_t va = std::max(std::max(p0 - oh * g.out_w, std::int64_t{0}), ow_lo);
    const std::int64_t ve = std::min(std::min(p1 - oh * g.out_w, g.out_w), ow_hi);
    if (va >= ve) continue;
    T* d = plane + conv2d_input_coord(oh, i, g.stride_h, g.dilation_h, g.pad_top) * g.in_w + iw_lo;
    const T* s = src + (oh * g.out_w - p0);  // s[ow] is column oh * out_w + ow; ow >= va
    if (g.stride_w == 1) {
      for (std::int64_t ow = va; ow < ve; ++ow) d[ow - ow_lo] += s[ow];
    } else {
      for (std::int64_t ow = va; ow < ve; ++ow) d[(ow - ow_lo) * g.stride_w] += s[ow];
    }
  }
}

/// Adds the column matrix `col` (K, P) back onto one batch item `dx` (C_in, H, W) (the adjoint
/// of `conv2d_im2col`).
template <class T>
void conv2d_col2im_add(const Context<Cpu>& ctx, const T* col, const Conv2dGeometry& g, T* dx) {
  const std::int64_t cols = g.col_cols();
  const std::int64_t taps = g.kernel_h * g.kernel_w;
  // One channel per task: its rows of `col` touch only its own plane of dx, so no races.
  nddr::detail::parallel_for(ctx, g.in_c, [&](std::int64_t c) {
    for (std::int64_t row = c * taps; row < (c + 1) * taps; ++row)
      conv2d_col2im_row_add(col + row * cols, g, row, 0, cols, dx);
  });
}

/// y = conv(x, w) + b in T's full precision, whatever the context's `conv_bf16` setting says (the public op
/// below dispatches). x (N, C_in, H, W), w (C_out, C_in, kh, kw), b (C_out) when
/// `opt.use_bias` (else empty), y (N, C_out, OH, OW) assigned.
template <class T>
void conv2d_forward_full(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> x,
                    std::type_identity_t<TensorView<const T, Cpu>> w,
                    std::type_identity_t<TensorView<const T, Cpu>> b, TensorView<T, Cpu> y,
                    const Conv2dOptions& opt) {
  constexpr const char* kWho = "nddr::ops::conv2d_forward";
  const Conv2dGeometry g = conv2d_geometry(x.shape(), w.shape(), opt, kWho);
  const T* bias_data = opt.use_bias ? b.data() : nullptr;
  switch (conv2d_select_algorithm(g, Conv2dDirection::kForward,
                                  ctx.settings().cpu_conv_algorithm())) {
    case cpu::ConvAlgo::kWinograd:
      return conv2d_winograd_forward<WinogradF2x3>(ctx, x.data(), w.data(), bias_data, y.data(),
                                                   g, x.shape().n());
    case cpu::ConvAlgo::kWinogradF4:
      return conv2d_winograd_forward<WinogradF4x3>(ctx, x.data(), w.data(), bias_data, y.data(),
                                                   g, x.shape().n());
    case cpu::ConvAlgo::kTapSkip:
      return conv2d_tapskip_forward(ctx, x.data(), w.data(), bias_data, y.data(), g, x.shape().n());
    default:
      break;
  }
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

/// dx += conv^T(dy, w): the data gradient, accumulated, in full precision. An empty dx is
/// skipped. w (C_out, C_in, kh, kw), dy (N, C_out, OH, OW), dx (N, C_in, H, W).
template <class T>
void conv2d_backward_data_full(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> w,
                          std::type_identity_t<TensorView<const T, Cpu>> dy, TensorView<T, Cpu> dx,
                          const Conv2dOptions& opt) {
  if (dx.empty()) return;
  constexpr const char* kWho = "nddr::ops::conv2d_backward_data";
  const Conv2dGeometry g = conv2d_geometry(dx.shape(), w.shape(), opt, kWho);
  switch (conv2d_select_algorithm(g, Conv2dDirection::kBackwardData,
                                  ctx.settings().cpu_conv_algorithm())) {
    case cpu::ConvAlgo::kWinograd:
      return conv2d_winograd_backward_data<WinogradF2x3>(ctx, w.data(), dy.data(), dx.data(), g,
                                                         dx.shape().n());
    case cpu::ConvAlgo::kWinogradF4:
      return conv2d_winograd_backward_data<WinogradF4x3>(ctx, w.data(), dy.data(), dx.data(), g,
                                                         dx.shape().n());
    case cpu::ConvAlgo::kTapSkip:
      return conv2d_tapskip_backward_data(ctx, w.data(), dy.data(), dx.data(), g, dx.shape().n());
    default:
      break;
  }
  const std::int64_t k = g.col_rows();
  const std::int64_t p = g.col_cols();
  const auto wt = nddr::detail::Conv2dConstMap<T>(w.data(), g.out_c, k).transpose();  // (K, C_out)
  if (g.is_pointwise()) {
    for (std::int64_t n = 0; n < dx.shape().n(); ++n) {
      const nddr::detail::Conv2dConstMap<T> dym(dy.data() + n * dy.shape().item_size(), g.out_c,
                                                p);
      nddr::detail::Conv2dMap<T> dxm(dx.data() + n * dx.shape().item_size(), k, p);  // (C_in, HW)
      nddr::detail::conv2d_split_columns(
          ctx, p, [&](std::int64_t, std::int64_t begin, std::int64_t end) {
            dxm.middleCols(begin, end - begin).noalias() += wt * dym.middleCols(begin, end - begin);
          });
    }
    return;
  }
  // The column gradient of one block of output columns at a time, (K, block), added into dx
  // right after its GEMM. Each thread owns the rows of a range of input channels, so its
  // col2im adds only into its own dx planes; every dx pixel then receives its terms in the
  // same order (blocks, then taps) whatever the timing, so results repeat to the bit.
  const std::int64_t taps = g.kernel_h * g.kernel_w;
  const std::int64_t block = std::min(p, nddr::detail::conv2d_block_columns<T>(k));
  T* dcol = ctx.workspace<T>(static_cast<std::size_t>(k * block));
  for (std::int64_t n = 0; n < dx.shape().n(); ++n) {
    const nddr::detail::Conv2dConstMap<T> dym(dy.data() + n * dy.shape().item_size(), g.out_c, p);
    T* dxn = dx.data() + n * dx.shape().item_size();  // (C_in, H, W)
    nddr::detail::parallel_ranges(ctx, g.in_c, [&](std::int64_t c0, std::int64_t c1) {
      const std::int64_t r0 = c0 * taps;
      const std::int64_t rows = (c1 - c0) * taps;
      for (std::int64_t p0 = 0; p0 < p; p0 += block) {
        const std::int64_t cols = std::min(block, p - p0);
        // This thread's (rows, cols) part, in its own rows * block slice of the workspace:
        // the threads need not be at the same block.
        T* cb = dcol + r0 * block;
        nddr::detail::Conv2dMap<T>(cb, rows, cols).noalias() =
            wt.middleRows(r0, rows) * dym.middleCols(p0, cols);
        for (std::int64_t r = 0; r < rows; ++r)
          conv2d_col2im_row_add(static_cast<const T*>(cb + r * cols), g, r0 + r, p0, p0 + cols,
                                dxn);
      }
    });
  }
}

/// dw = sum_n dy_n * col(x_n)^T and db = sum over (n, h, w) of dy, both assigned, in full
/// precision. An empty dw or db is skipped; db must be empty unless `opt.use_bias`.
/// x (N, C_in, H, W), dy (N, C_out, OH, OW), dw (C_out, C_in, kh, kw), db (C_out).
template <class T>
void conv2d_backward_weights_full(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> x,
                             std::type_identity_t<TensorView<const T, Cpu>> dy,
                             TensorView<T, Cpu> dw, std::type_identity_t<TensorView<T, Cpu>> db,
                             const Conv2dOptions& opt) {
  constexpr const char* kWho = "nddr::ops::conv2d_backward_weights";
  if (!db.empty()) {
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
  switch (conv2d_select_algorithm(g, Conv2dDirection::kBackwardWeights,
                                  ctx.settings().cpu_conv_algorithm())) {
    case cpu::ConvAlgo::kWinograd:
      return conv2d_winograd_backward_weights<WinogradF2x3>(ctx, x.data(), dy.data(), dw.data(),
                                                            g, x.shape().n());
    case cpu::ConvAlgo::kWinogradF4:
      return conv2d_winograd_backward_weights<WinogradF4x3>(ctx, x.data(), dy.data(), dw.data(),
                                                            g, x.shape().n());
    case cpu::ConvAlgo::kTapSkip:
      return conv2d_tapskip_backward_weights(ctx, x.data(), dy.data(), dw.data(), g, x.shape().n());
    default:
      break;
  }
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

namespace bf16_emulation {
// Templates on F (always float) so that a translation unit instantiates the float convolutions
// they call only when it runs one with the `conv_bf16` setting, not whenever it includes this
// header (as inline functions did: ~10 CPU-seconds in every file that includes a network).

/// A copy of `src` with every element rounded to bfloat16.
template <class F>
Tensor<F, Cpu> rounded(const Context<Cpu>& ctx,
                       std::type_identity_t<TensorView<const F, Cpu>> src) {
  Tensor<F, Cpu> r(src.shape());
  const F* in = src.data();
  F* out = r.data();
  nddr::detail::parallel_ranges(ctx, src.numel(), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) out[i] = round_to_bfloat16(in[i]);
  });
  return r;
}

/// dx += bf16(conv^T(dyr, wr)) for operands already rounded (dx not empty).
template <class F>
void backward_data(Context<Cpu>& ctx, std::type_identity_t<TensorView<const F, Cpu>> wr,
                   std::type_identity_t<TensorView<const F, Cpu>> dyr, TensorView<F, Cpu> dx,
                   const Conv2dOptions& opt) {
  Tensor<F, Cpu> part(dx.shape());
  conv2d_backward_data_full<F>(ctx, wr, dyr, part.view(), opt);
  const F* in = part.data();
  F* out = dx.data();
  nddr::detail::parallel_ranges(ctx, dx.numel(), [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t i = s; i < e; ++i) out[i] += round_to_bfloat16(in[i]);
  });
}

/// db = sum of the float dy; dw = bf16(dconv(bf16(x), dyr)) with dyr = bf16(dy) given.
template <class F>
void backward_weights(Context<Cpu>& ctx, std::type_identity_t<TensorView<const F, Cpu>> x,
                      std::type_identity_t<TensorView<const F, Cpu>> dy,
                      std::type_identity_t<TensorView<const F, Cpu>> dyr,
                      std::type_identity_t<TensorView<F, Cpu>> dw,
                      std::type_identity_t<TensorView<F, Cpu>> db, const Conv2dOptions& opt) {
  conv2d_backward_weights_full<F>(ctx, x, dy, {}, db, opt);
  if (dw.empty()) return;
  const auto xr = rounded<F>(ctx, x);
  conv2d_backward_weights_full<F>(ctx, xr.cview(), dyr, dw, {}, opt);
  F* out = dw.data();
  for (std::int64_t i = 0; i < dw.numel(); ++i) out[i] = round_to_bfloat16(out[i]);
}

}  // namespace bf16_emulation

namespace backend {

/// The CPU convolution's algorithm choice and BF16 emulation (the context's settings).
template <>
struct Conv2d<Cpu> {
  /// y = conv(x, w) + b. x (N, C_in, H, W), w (C_out, C_in, kh, kw), b (C_out) when
  /// `opt.use_bias` (else empty), y (N, C_out, OH, OW) assigned. With the context's `conv_bf16`
  /// setting on, float convolutions emulate the GPU's BF16 ones: y = bf16(conv(bf16(x), bf16(w))) +
  /// b.
  template <class T>
  static void conv2d_forward(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> x,
                             std::type_identity_t<TensorView<const T, Cpu>> w,
                             std::type_identity_t<TensorView<const T, Cpu>> b, TensorView<T, Cpu> y,
                             const Conv2dOptions& opt) {
    if constexpr (std::is_same_v<T, float>) {
      if (ctx.settings().conv_bf16()) {
        constexpr const char* kWho = "nddr::ops::conv2d_forward";
        const Conv2dGeometry g = conv2d_geometry(x.shape(), w.shape(), opt, kWho);
        const auto xr = bf16_emulation::rounded<T>(ctx, x);
        const auto wr = bf16_emulation::rounded<T>(ctx, w);
        conv2d_forward_full<float>(ctx, xr.cview(), wr.cview(), {}, y,
                                   Conv2dOptions(opt).bias(false));
        const std::int64_t plane = g.out_h * g.out_w, channels = g.out_c;
        const float* bias = opt.use_bias ? b.data() : nullptr;
        float* out = y.data();
        nddr::detail::parallel_ranges(ctx, y.numel(), [&](std::int64_t s, std::int64_t e) {
          for (std::int64_t i = s; i < e; ++i)
            out[i] = round_to_bfloat16(out[i]) + (bias ? bias[(i / plane) % channels] : 0.0f);
        });
        return;
      }
    }
    conv2d_forward_full<T>(ctx, x, w, b, y, opt);
  }

  /// dx += conv^T(dy, w): the data gradient, accumulated. An empty dx is skipped.
  /// w (C_out, C_in, kh, kw), dy (N, C_out, OH, OW), dx (N, C_in, H, W). With the context's
  /// `conv_bf16` setting on (float): dx += bf16(conv^T(bf16(dy), bf16(w))).
  template <class T>
  static void conv2d_backward_data(Context<Cpu>& ctx,
                                   std::type_identity_t<TensorView<const T, Cpu>> w,
                                   std::type_identity_t<TensorView<const T, Cpu>> dy,
                                   TensorView<T, Cpu> dx, const Conv2dOptions& opt) {
    if (dx.empty()) return;
    if constexpr (std::is_same_v<T, float>) {
      if (ctx.settings().conv_bf16()) {
        const auto dyr = bf16_emulation::rounded<T>(ctx, dy);
        const auto wr = bf16_emulation::rounded<T>(ctx, w);
        return bf16_emulation::backward_data<T>(ctx, wr.cview(), dyr.cview(), dx, opt);
      }
    }
    conv2d_backward_data_full<T>(ctx, w, dy, dx, opt);
  }

  /// dw = sum_n dy_n * col(x_n)^T and db = sum over (n, h, w) of dy, both assigned. An empty dw
  /// or db is skipped; db must be empty unless `opt.use_bias`.
  /// x (N, C_in, H, W), dy (N, C_out, OH, OW), dw (C_out, C_in, kh, kw), db (C_out). With the
  /// context's `conv_bf16` setting on (float): dw = bf16(dconv(bf16(x), bf16(dy))); db from the
  /// float dy.
  template <class T>
  static void conv2d_backward_weights(Context<Cpu>& ctx,
                                      std::type_identity_t<TensorView<const T, Cpu>> x,
                                      std::type_identity_t<TensorView<const T, Cpu>> dy,
                                      TensorView<T, Cpu> dw,
                                      std::type_identity_t<TensorView<T, Cpu>> db,
                                      const Conv2dOptions& opt) {
    if constexpr (std::is_same_v<T, float>) {
      if (ctx.settings().conv_bf16()) {
        const auto dyr = bf16_emulation::rounded<T>(ctx, dy);
        return bf16_emulation::backward_weights<T>(ctx, x, dy, dyr.cview(), dw, db, opt);
      }
    }
    conv2d_backward_weights_full<T>(ctx, x, dy, dw, db, opt);
  }

  /// Full backward pass: dx accumulated (skipped when empty), dw and db assigned (each skipped
  /// when empty). Under the context's `conv_bf16` setting (float), dy is rounded once for both
  /// gradients.
  template <class T>
  static void conv2d_backward(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> x,
                              std::type_identity_t<TensorView<const T, Cpu>> w,
                              std::type_identity_t<TensorView<const T, Cpu>> dy,
                              TensorView<T, Cpu> dx, std::type_identity_t<TensorView<T, Cpu>> dw,
                              std::type_identity_t<TensorView<T, Cpu>> db,
                              const Conv2dOptions& opt) {
    if constexpr (std::is_same_v<T, float>) {
      if (ctx.settings().conv_bf16()) {
        const auto dyr = bf16_emulation::rounded<T>(ctx, dy);
        bf16_emulation::backward_weights<T>(ctx, x, dy, dyr.cview(), dw, db, opt);
        if (!dx.empty())
          bf16_emulation::backward_data<T>(ctx, bf16_emulation::rounded<T>(ctx, w).cview(),
                                           dyr.cview(), dx, opt);
        return;
      }
    }
    conv2d_backward_weights<T>(ctx, x, dy, dw, db, opt);
    conv2d_backward_data<T>(ctx, w, dy, dx, opt);
  }
};

}  // namespace backend
}  // namespace ops
}  // namespace nddr
