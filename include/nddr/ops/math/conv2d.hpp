#pragma once
/// \file
/// 2-D convolution (cross-correlation, like PyTorch and TF): options, output shape, and the
/// im2col / col2im index math shared by every backend.
///
/// Layouts: x (N, C_in, H, W), w (C_out, C_in, kh, kw), bias (C_out), y (N, C_out, OH, OW).
/// The column matrix of one batch item is (C_in * kh * kw, OH * OW), row-major: row
/// (c * kh + i) * kw + j, column oh * OW + ow holds x(c, oh * sh - pad_top + i * dh,
/// ow * sw - pad_left + j * dw), or 0 in the padding.

#include <cstdint>

#include "nddr/core/error.hpp"
#include "nddr/core/macros.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/ops/math/window.hpp"

namespace nddr {

/// Run-time hyper-parameters of a 2-D convolution, with fluent setters:
/// `Conv2dOptions{}.stride(2).same()`, `Conv2dOptions{}.dilation(12).padding(12)`.
struct Conv2dOptions {
  std::int64_t stride_h = 1;
  std::int64_t stride_w = 1;
  std::int64_t dilation_h = 1;
  std::int64_t dilation_w = 1;
  std::int64_t pad_h = 0;  ///< explicit symmetric padding (ignored when same_padding)
  std::int64_t pad_w = 0;
  bool same_padding = false;  ///< TF 'SAME': OH = ceil(H / stride), extra pad after
  bool use_bias = true;

  Conv2dOptions& stride(std::int64_t s) { return stride(s, s); }
  Conv2dOptions& stride(std::int64_t h, std::int64_t w) {
    stride_h = h;
    stride_w = w;
    return *this;
  }
  Conv2dOptions& dilation(std::int64_t d) { return dilation(d, d); }
  Conv2dOptions& dilation(std::int64_t h, std::int64_t w) {
    dilation_h = h;
    dilation_w = w;
    return *this;
  }
  /// Explicit symmetric zero padding; turns 'SAME' off.
  Conv2dOptions& padding(std::int64_t p) { return padding(p, p); }
  Conv2dOptions& padding(std::int64_t h, std::int64_t w) {
    pad_h = h;
    pad_w = w;
    same_padding = false;
    return *this;
  }
  /// TF 'SAME' padding (possibly one more row/column after than before).
  Conv2dOptions& same() {
    same_padding = true;
    return *this;
  }
  Conv2dOptions& bias(bool on) {
    use_bias = on;
    return *this;
  }
};

/// A convolution with every size resolved: what a kernel needs, plain integers only.
struct Conv2dGeometry {
  std::int64_t in_c = 0, in_h = 0, in_w = 0;
  std::int64_t out_c = 0, out_h = 0, out_w = 0;
  std::int64_t kernel_h = 0, kernel_w = 0;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t dilation_h = 1, dilation_w = 1;
  std::int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;

  /// K of the GEMM: rows of the column matrix.
  NDDR_HOST_DEVICE constexpr std::int64_t col_rows() const { return in_c * kernel_h * kernel_w; }
  /// N of the GEMM: output pixels per batch item.
  NDDR_HOST_DEVICE constexpr std::int64_t col_cols() const { return out_h * out_w; }
  /// A 1x1, stride-1, unpadded convolution is a plain GEMM on the input (no im2col).
  NDDR_HOST_DEVICE constexpr bool is_pointwise() const {
    return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && pad_top == 0 &&
           pad_bottom == 0 && pad_left == 0 && pad_right == 0;
  }
};

namespace detail {

/// Output extent and padding of one spatial axis; throws unless the kernel fits.
inline void conv2d_resolve_axis(const char* who, const Shape& x, const Shape& w, const char* axis,
                                std::int64_t in, std::int64_t k, std::int64_t stride,
                                std::int64_t dilation, std::int64_t pad, bool same,
                                std::int64_t& out, std::int64_t& before, std::int64_t& after) {
  const std::int64_t extent = (k - 1) * dilation + 1;
  if (same) {
    check<ShapeError>(in > 0, who, ": input ", x, " has an empty ", axis, " axis");
    const SameAxis a = same_axis(in, extent, stride);
    out = a.out;
    before = a.before;
    after = a.after;
    return;
  }
  check<ShapeError>(in + 2 * pad >= extent, who, ": effective kernel ", axis, " extent ", extent,
                    " (kernel ", w, ", dilation ", dilation, ") exceeds the padded input ",
                    axis, " ", in + 2 * pad, " (input ", x, ", padding ", pad, ")");
  out = (in + 2 * pad - extent) / stride + 1;
  before = pad;
  after = pad;
}

}  // namespace detail

/// Resolves and validates a convolution of input shape `x` (N, C_in, H, W) with weights `w`
/// (C_out, C_in, kh, kw). Throws OptionError for a stride or dilation < 1 or a negative pad,
/// ShapeError (naming `who` and the shapes) for bad ranks, a channel mismatch or a kernel that
/// does not fit the padded input.
inline Conv2dGeometry conv2d_geometry(const Shape& x, const Shape& w, const Conv2dOptions& opt,
                                      const char* who = "nddr::ops::conv2d") {
  check<OptionError>(opt.stride_h >= 1, who, ": stride_h must be >= 1, got ", opt.stride_h);
  check<OptionError>(opt.stride_w >= 1, who, ": stride_w must be >= 1, got ", opt.stride_w);
  check<OptionError>(opt.dilation_h >= 1, who, ": dilation_h must be >= 1, got ", opt.dilation_h);
  check<OptionError>(opt.dilation_w >= 1, who, ": dilation_w must be >= 1, got ", opt.dilation_w);
  check<OptionError>(opt.pad_h >= 0, who, ": pad_h must be >= 0, got ", opt.pad_h);
  check<OptionError>(opt.pad_w >= 0, who, ": pad_w must be >= 0, got ", opt.pad_w);
  check_rank4(who, "input", x);
  check_rank4(who, "weight", w);
  check<ShapeError>(w.n() >= 1 && w.h() >= 1 && w.w() >= 1, who, ": weight ", w,
                    " has an empty extent");
  check<ShapeError>(x.c() == w.c(), who, ": input ", x, " has ", x.c(),
                    " channels but weight ", w, " expects ", w.c());
  Conv2dGeometry g;
  g.in_c = x.c();
  g.in_h = x.h();
  g.in_w = x.w();
  g.out_c = w.n();
  g.kernel_h = w.h();
  g.kernel_w = w.w();
  g.stride_h = opt.stride_h;
  g.stride_w = opt.stride_w;
  g.dilation_h = opt.dilation_h;
  g.dilation_w = opt.dilation_w;
  detail::conv2d_resolve_axis(who, x, w, "height", x.h(), w.h(), opt.stride_h, opt.dilation_h,
                              opt.pad_h, opt.same_padding, g.out_h, g.pad_top, g.pad_bottom);
  detail::conv2d_resolve_axis(who, x, w, "width", x.w(), w.w(), opt.stride_w, opt.dilation_w,
                              opt.pad_w, opt.same_padding, g.out_w, g.pad_left, g.pad_right);
  return g;
}

/// Output shape (N, C_out, OH, OW) of a convolution; validates like `conv2d_geometry`.
inline Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dOptions& opt) {
  const Conv2dGeometry g = conv2d_geometry(x, w, opt, "nddr::conv2d_output_shape");
  return Shape::nchw(x.n(), g.out_c, g.out_h, g.out_w);
}

namespace ops {

/// Input coordinate read by output coordinate `o` through kernel tap `k` along one axis
/// (negative or >= the input extent inside the padding).
NDDR_HOST_DEVICE constexpr std::int64_t conv2d_input_coord(std::int64_t o, std::int64_t k,
                                                           std::int64_t stride,
                                                           std::int64_t dilation,
                                                           std::int64_t pad_before) {
  return o * stride - pad_before + k * dilation;
}

/// The outputs [lo, hi) whose tap `k` lands inside [0, in) along one axis; empty when lo >= hi.
NDDR_HOST_DEVICE constexpr void conv2d_valid_outputs(std::int64_t k, std::int64_t in,
                                                     std::int64_t out, std::int64_t stride,
                                                     std::int64_t dilation, std::int64_t pad_before,
                                                     std::int64_t& lo, std::int64_t& hi) {
  // Solve 0 <= o * stride + offset < in for o, with offset = k * dilation - pad_before.
  const std::int64_t offset = k * dilation - pad_before;
  lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  hi = in - offset <= 0 ? 0 : (in - offset - 1) / stride + 1;
  if (hi > out) hi = out;
  if (lo > hi) lo = hi;
}

/// Element (row, col) of one batch item's column matrix; `x` points at that item (C, H, W).
/// One CUDA thread per element computes exactly this.
template <class T>
NDDR_HOST_DEVICE inline T im2col_element(const T* x, const Conv2dGeometry& g, std::int64_t row,
                                         std::int64_t col) {
  const std::int64_t j = row % g.kernel_w;
  const std::int64_t i = (row / g.kernel_w) % g.kernel_h;
  const std::int64_t c = row / (g.kernel_w * g.kernel_h);
  const std::int64_t ow = col % g.out_w;
  const std::int64_t oh = col / g.out_w;
  const std::int64_t ih = conv2d_input_coord(oh, i, g.stride_h, g.dilation_h, g.pad_top);
  const std::int64_t iw = conv2d_input_coord(ow, j, g.stride_w, g.dilation_w, g.pad_left);
  if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) return T(0);
  return x[(c * g.in_h + ih) * g.in_w + iw];
}

/// Sum over every column-matrix entry that reads input pixel (c, ih, iw): the col2im value of
/// that pixel, gathered (race-free: one CUDA thread per input pixel).
template <class T>
NDDR_HOST_DEVICE inline T col2im_element(const T* col, const Conv2dGeometry& g, std::int64_t c,
                                         std::int64_t ih, std::int64_t iw) {
  T sum = T(0);
  const std::int64_t cols = g.col_cols();
  for (std::int64_t i = 0; i < g.kernel_h; ++i) {
    const std::int64_t num_h = ih + g.pad_top - i * g.dilation_h;
    if (num_h < 0 || num_h % g.stride_h != 0) continue;
    const std::int64_t oh = num_h / g.stride_h;
    if (oh >= g.out_h) continue;
    for (std::int64_t j = 0; j < g.kernel_w; ++j) {
      const std::int64_t num_w = iw + g.pad_left - j * g.dilation_w;
      if (num_w < 0 || num_w % g.stride_w != 0) continue;
      const std::int64_t ow = num_w / g.stride_w;
      if (ow >= g.out_w) continue;
      sum += col[((c * g.kernel_h + i) * g.kernel_w + j) * cols + oh * g.out_w + ow];
    }
  }
  return sum;
}

}  // namespace ops
}  // namespace nddr
