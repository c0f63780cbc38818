#pragma once
/// \file
/// 2-D max and average pooling: options, window geometry and per-output-pixel bodies shared by
/// every backend. Padding is either explicit and symmetric (PyTorch, floor mode) or TensorFlow
/// 'SAME' (out = ceil(in / stride), the odd padding cell goes after).

#include <cstdint>

#include "nddr/core/error.hpp"
#include "nddr/core/macros.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/ops/math/window.hpp"

namespace nddr {

/// Whether `max_pool2d_backward` range-checks a recorded argmax (`kValidate`, for indices from
/// elsewhere) or trusts it (`kTrusted`, for what this library's forward wrote).
enum class ArgmaxCheck { kValidate, kTrusted };

/// Hyper-parameters of `max_pool2d_*` / `avg_pool2d_*`. Unlike PyTorch the stride defaults to
/// 1, not to the kernel size: `Pool2dOptions{}.kernel(3).stride(2).same()`.
struct Pool2dOptions {
  std::int64_t kernel_h = 1;
  std::int64_t kernel_w = 1;
  std::int64_t stride_h = 1;
  std::int64_t stride_w = 1;
  std::int64_t pad_h = 0;  ///< explicit padding, each side (ignored with same_padding)
  std::int64_t pad_w = 0;
  bool same_padding = false;  ///< TF 'SAME': pad_total = max((out-1)*s + k - in, 0)
  bool include_pad = false;   ///< average pooling counts padded cells (count_include_pad)

  /// Square kernel.
  Pool2dOptions& kernel(std::int64_t k) { return kernel(k, k); }
  Pool2dOptions& kernel(std::int64_t h, std::int64_t w) {
    kernel_h = h;
    kernel_w = w;
    return *this;
  }
  Pool2dOptions& stride(std::int64_t s) { return stride(s, s); }
  Pool2dOptions& stride(std::int64_t h, std::int64_t w) {
    stride_h = h;
    stride_w = w;
    return *this;
  }
  /// Explicit symmetric padding (at most half the kernel, as in PyTorch); clears `same()`.
  Pool2dOptions& padding(std::int64_t p) { return padding(p, p); }
  Pool2dOptions& padding(std::int64_t h, std::int64_t w) {
    pad_h = h;
    pad_w = w;
    same_padding = false;
    return *this;
  }
  /// TensorFlow 'SAME' padding.
  Pool2dOptions& same(bool on = true) {
    same_padding = on;
    return *this;
  }
  /// Average pooling divides by kernel_h * kernel_w instead of the in-bounds cell count.
  Pool2dOptions& count_include_pad(bool on = true) {
    include_pad = on;
    return *this;
  }
};

/// Resolved geometry of one pooling call; trivially copyable, passed by value to kernels.
struct Pool2dGeometry {
  std::int64_t in_h = 0, in_w = 0;
  std::int64_t out_h = 0, out_w = 0;
  std::int64_t kernel_h = 1, kernel_w = 1;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_top = 0, pad_left = 0;      ///< cells before the input
  std::int64_t pad_bottom = 0, pad_right = 0;  ///< cells after the input (SAME may differ)
};

namespace detail {

inline void check_pool_option(const char* op, const char* field, std::int64_t value,
                              std::int64_t min) {
  check<OptionError>(value >= min, op, ": ", field, " must be >= ", min, ", got ", value);
}

/// (in, kernel, stride, explicit pad, same) -> out, pad_before, pad_after for one axis.
inline void pool_axis(std::int64_t in, std::int64_t k, std::int64_t s, std::int64_t pad, bool same,
                      std::int64_t& out, std::int64_t& before, std::int64_t& after) {
  if (same) {
    const SameAxis a = same_axis(in, k, s);
    out = a.out;
    before = a.before;
    after = a.after;
    return;
  }
  before = after = pad;
  out = in + 2 * pad >= k ? (in + 2 * pad - k) / s + 1 : 0;
}

}  // namespace detail

/// Validates `opt` against input shape `x` (N, C, H, W) and resolves the window geometry.
/// Throws OptionError for a zero kernel/stride or padding above kernel/2, ShapeError naming
/// `op` and the shapes when the kernel exceeds the padded input or the output is empty.
inline Pool2dGeometry pool2d_geometry(const char* op, const Shape& x, const Pool2dOptions& opt) {
  detail::check_pool_option(op, "kernel_h", opt.kernel_h, 1);
  detail::check_pool_option(op, "kernel_w", opt.kernel_w, 1);
  detail::check_pool_option(op, "stride_h", opt.stride_h, 1);
  detail::check_pool_option(op, "stride_w", opt.stride_w, 1);
  if (!opt.same_padding) {
    detail::check_pool_option(op, "pad_h", opt.pad_h, 0);
    detail::check_pool_option(op, "pad_w", opt.pad_w, 0);
    check<OptionError>(opt.pad_h <= opt.kernel_h / 2, op,
                       ": pad_h must be at most kernel_h / 2 = ", opt.kernel_h / 2, ", got ",
                       opt.pad_h);
    check<OptionError>(opt.pad_w <= opt.kernel_w / 2, op,
                       ": pad_w must be at most kernel_w / 2 = ", opt.kernel_w / 2, ", got ",
                       opt.pad_w);
  }
  check_rank4(op, "x", x);
  Pool2dGeometry g;
  g.in_h = x.h();
  g.in_w = x.w();
  g.kernel_h = opt.kernel_h;
  g.kernel_w = opt.kernel_w;
  g.stride_h = opt.stride_h;
  g.stride_w = opt.stride_w;
  detail::pool_axis(g.in_h, g.kernel_h, g.stride_h, opt.pad_h, opt.same_padding, g.out_h, g.pad_top,
                    g.pad_bottom);
  detail::pool_axis(g.in_w, g.kernel_w, g.stride_w, opt.pad_w, opt.same_padding, g.out_w,
                    g.pad_left, g.pad_right);
  const std::int64_t padded_h = g.in_h + g.pad_top + g.pad_bottom;
  const std::int64_t padded_w = g.in_w + g.pad_left + g.pad_right;
  check<ShapeError>(g.kernel_h <= padded_h && g.kernel_w <= padded_w, op, ": kernel (", g.kernel_h,
                    ", ", g.kernel_w, ") is larger than the padded input (", padded_h, ", ",
                    padded_w, ") of x ", x);
  check<ShapeError>(g.out_h > 0 && g.out_w > 0, op, ": x ", x, " gives an empty output (",
                    g.out_h, ", ", g.out_w, ")");
  return g;
}

/// Output shape (N, C, out_h, out_w) of pooling `x` with `opt`.
inline Shape pool2d_output_shape(const char* op, const Shape& x, const Pool2dOptions& opt) {
  const Pool2dGeometry g = pool2d_geometry(op, x, opt);
  return Shape::nchw(x.n(), x.c(), g.out_h, g.out_w);
}

namespace ops {

/// In-bounds input window [h0, h1) x [w0, w1) of output pixel (oh, ow).
struct PoolWindow {
  std::int64_t h0, h1, w0, w1;
};

/// The window of output pixel (oh, ow), clipped to the input (padded cells dropped).
NDDR_HOST_DEVICE inline PoolWindow pool_window(const Pool2dGeometry& g, std::int64_t oh,
                                               std::int64_t ow) {
  const std::int64_t hs = oh * g.stride_h - g.pad_top;
  const std::int64_t ws = ow * g.stride_w - g.pad_left;
  const std::int64_t he = hs + g.kernel_h;
  const std::int64_t we = ws + g.kernel_w;
  return {hs > 0 ? hs : 0, he < g.in_h ? he : g.in_h, ws > 0 ? ws : 0, we < g.in_w ? we : g.in_w};
}

/// Output columns [lo, hi) whose window lies wholly inside the input columns (no clipping);
/// lo == hi when there are none (a plane narrower than the kernel).
struct PoolInterior {
  std::int64_t lo, hi;
};

/// The interior output columns of `g`.
NDDR_HOST_DEVICE inline PoolInterior pool_interior_columns(const Pool2dGeometry& g) {
  // ow * stride - pad_left >= 0 and ow * stride - pad_left + kernel <= in_w.
  const std::int64_t room = g.in_w - g.kernel_w + g.pad_left;
  std::int64_t hi = room >= 0 ? room / g.stride_w + 1 : 0;
  hi = hi < g.out_w ? hi : g.out_w;
  const std::int64_t lo = (g.pad_left + g.stride_w - 1) / g.stride_w;
  return {lo < hi ? lo : hi, hi};
}

/// Whether a cell of value `v`, later in row-major window order than the current maximum
/// `best`, replaces it: the first NaN wins, else the first strictly larger value (so ties
/// keep the first maximum, PyTorch's rule). Written without short-circuits so that a loop of
/// it vectorises.
template <class T>
NDDR_HOST_DEVICE inline bool max_pool_takes(T v, T best) {
  return (v > best) | ((v != v) & (best == best));
}

/// Whether cell (v, i) of a window replaces the current maximum (best, best_i) when the window
/// is reduced in any order (by columns, say), `i` and `best_i` being plane indices h * W + w:
/// a NaN beats a number, a larger value a smaller one, and on a tie (two NaNs included) the
/// smaller index wins, which is the earlier cell in row-major order, so the outcome is that
/// of `max_pool_element`'s row-major scan.
template <class T, class I>
NDDR_HOST_DEVICE inline bool max_pool_takes_any_order(T v, I i, T best, I best_i) {
  const bool v_nan = v != v;
  const bool best_nan = best != best;
  return (v > best) | (v_nan & !best_nan) | (((v == best) | (v_nan & best_nan)) & (i < best_i));
}

/// Divisor of average pooling at (oh, ow): the in-bounds cell count, or with `include_pad`
/// the cells of the window inside the padded input (PyTorch count_include_pad=True).
NDDR_HOST_DEVICE inline std::int64_t avg_pool_divisor(const Pool2dGeometry& g, std::int64_t oh,
                                                      std::int64_t ow, bool include_pad) {
  if (!include_pad) {
    const PoolWindow win = pool_window(g, oh, ow);
    return (win.h1 - win.h0) * (win.w1 - win.w0);
  }
  const std::int64_t hs = oh * g.stride_h - g.pad_top;
  const std::int64_t ws = ow * g.stride_w - g.pad_left;
  const std::int64_t hlim = g.in_h + g.pad_bottom;
  const std::int64_t wlim = g.in_w + g.pad_right;
  const std::int64_t he = hs + g.kernel_h < hlim ? hs + g.kernel_h : hlim;
  const std::int64_t we = ws + g.kernel_w < wlim ? ws + g.kernel_w : wlim;
  return (he - hs) * (we - ws);
}

/// Max over the window of (oh, ow) in one (H, W) plane; `argmax` receives the plane index
/// h * W + w of the first maximum (PyTorch's tie rule). NaN propagates.
template <class T>
NDDR_HOST_DEVICE inline T max_pool_element(const T* plane, const Pool2dGeometry& g, std::int64_t oh,
                                           std::int64_t ow, std::int64_t& argmax) {
  const PoolWindow win = pool_window(g, oh, ow);
  std::int64_t best_i = win.h0 * g.in_w + win.w0;
  T best = plane[best_i];
  for (std::int64_t h = win.h0; h < win.h1; ++h)
    for (std::int64_t w = win.w0; w < win.w1; ++w) {
      const std::int64_t i = h * g.in_w + w;
      const T v = plane[i];
      if (max_pool_takes(v, best)) {
        best = v;
        best_i = i;
      }
    }
  argmax = best_i;
  return best;
}

/// Average over the window of (oh, ow) in one (H, W) plane.
template <class T>
NDDR_HOST_DEVICE inline T avg_pool_element(const T* plane, const Pool2dGeometry& g, std::int64_t oh,
                                           std::int64_t ow, bool include_pad) {
  const PoolWindow win = pool_window(g, oh, ow);
  T sum = T(0);
  for (std::int64_t h = win.h0; h < win.h1; ++h)
    for (std::int64_t w = win.w0; w < win.w1; ++w) sum += plane[h * g.in_w + w];
  return sum / static_cast<T>(avg_pool_divisor(g, oh, ow, include_pad));
}

/// Scatters dy of output pixel (oh, ow) evenly over its window of one dx plane (accumulates).
template <class T>
NDDR_HOST_DEVICE inline void avg_pool_backward_element(T dy, const Pool2dGeometry& g,
                                                       std::int64_t oh, std::int64_t ow,
                                                       bool include_pad, T* dx_plane) {
  const PoolWindow win = pool_window(g, oh, ow);
  const T share = dy / static_cast<T>(avg_pool_divisor(g, oh, ow, include_pad));
  for (std::int64_t h = win.h0; h < win.h1; ++h)
    for (std::int64_t w = win.w0; w < win.w1; ++w) dx_plane[h * g.in_w + w] += share;
}

}  // namespace ops
}  // namespace nddr
