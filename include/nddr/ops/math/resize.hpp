#pragma once
/// \file
/// Spatial resizing of (N, C, H, W) tensors: options and the separable per-axis source taps
/// shared by every backend. Each output index d of an axis reads two source indices i0, i1
/// with weights (1 - w, w); the 2-D value is the product of the two axes' taps.

#include <cstdint>

#include "nddr/core/error.hpp"
#include "nddr/core/macros.hpp"
#include "nddr/core/shape.hpp"

namespace nddr {

/// Source-coordinate conventions (per axis, in -> out cells).
enum class ResizeMode {
  /// TF 1.x `resize_bilinear(align_corners=False)`: f = d * in / out, no half-pixel offset.
  kBilinearTfLegacy,
  /// PyTorch `interpolate(bilinear, align_corners=False)`: f = max((d + 0.5) * in / out - 0.5, 0).
  kBilinearHalfPixel,
  /// PyTorch/TF align_corners=True: f = d * (in - 1) / (out - 1) (0 when out == 1).
  kBilinearAlignCorners,
  /// TF 1.x `resize_nearest_neighbor(align_corners=False)`: src = min(floor(d * in / out), in - 1).
  kNearestTfLegacy,
};

/// Human-readable name of a mode, for messages.
inline const char* resize_mode_name(ResizeMode m) {
  switch (m) {
    case ResizeMode::kBilinearTfLegacy:
      return "kBilinearTfLegacy";
    case ResizeMode::kBilinearHalfPixel:
      return "kBilinearHalfPixel";
    case ResizeMode::kBilinearAlignCorners:
      return "kBilinearAlignCorners";
    case ResizeMode::kNearestTfLegacy:
      return "kNearestTfLegacy";
  }
  return "unknown";
}

/// Output size and mode of `resize_*`: `ResizeOptions{}.size(41, 41).mode(ResizeMode::k...)`.
struct ResizeOptions {
  std::int64_t out_h = 0;
  std::int64_t out_w = 0;
  ResizeMode resize_mode = ResizeMode::kBilinearTfLegacy;

  ResizeOptions& size(std::int64_t h, std::int64_t w) {
    out_h = h;
    out_w = w;
    return *this;
  }
  ResizeOptions& mode(ResizeMode m) {
    resize_mode = m;
    return *this;
  }
};

/// Validates `opt` (OptionError for a zero output size) and `x` (ShapeError naming `op` unless
/// rank 4 with pixels); returns (N, C, opt.out_h, opt.out_w).
inline Shape resize_output_shape(const char* op, const Shape& x, const ResizeOptions& opt) {
  check<OptionError>(opt.out_h >= 1, op, ": out_h must be >= 1, got ", opt.out_h);
  check<OptionError>(opt.out_w >= 1, op, ": out_w must be >= 1, got ", opt.out_w);
  check_rank4(op, "x", x);
  check<ShapeError>(x.h() > 0 && x.w() > 0, op, ": x ", x, " has no pixels");
  return Shape::nchw(x.n(), x.c(), opt.out_h, opt.out_w);
}

namespace ops {

/// Source taps of one output index on one axis: value = (1 - w) * x[i0] + w * x[i1].
template <class S>
struct ResizeTap {
  std::int64_t i0;
  std::int64_t i1;
  S w;
};

/// The taps of output index `d` on an axis of `in` source and `out` (>= 1) destination cells.
/// `S` is the floating type of the coordinate arithmetic (TF uses float).
template <class S>
NDDR_HOST_DEVICE inline ResizeTap<S> resize_tap(ResizeMode mode, std::int64_t d, std::int64_t in,
                                                std::int64_t out) {
  const std::int64_t last = in - 1;
  S f = S(0);
  switch (mode) {
    case ResizeMode::kBilinearTfLegacy:
    case ResizeMode::kNearestTfLegacy:
      f = static_cast<S>(d) * (static_cast<S>(in) / static_cast<S>(out));
      break;
    case ResizeMode::kBilinearHalfPixel:
      f = (static_cast<S>(d) + S(0.5)) * (static_cast<S>(in) / static_cast<S>(out)) - S(0.5);
      if (f < S(0)) f = S(0);  // PyTorch clamps below only
      break;
    case ResizeMode::kBilinearAlignCorners:
      f = out > 1 ? static_cast<S>(d) * (static_cast<S>(last) / static_cast<S>(out - 1)) : S(0);
      break;
  }
  // f >= 0 here, so truncation is floor; the clamp guards rounding at the last cell.
  std::int64_t i0 = static_cast<std::int64_t>(f);
  if (i0 > last) i0 = last;
  if (mode == ResizeMode::kNearestTfLegacy) return {i0, i0, S(0)};
  const std::int64_t i1 = i0 < last ? i0 + 1 : last;
  return {i0, i1, f - static_cast<S>(i0)};
}

/// Bilinear value at one output pixel from one (H, W) plane of width `in_w`.
template <class T, class S>
NDDR_HOST_DEVICE inline T resize_bilinear_element(const T* plane, std::int64_t in_w,
                                                  const ResizeTap<S>& th, const ResizeTap<S>& tw) {
  const T wh = static_cast<T>(th.w);
  const T ww = static_cast<T>(tw.w);
  const T* r0 = plane + th.i0 * in_w;
  const T* r1 = plane + th.i1 * in_w;
  const T top = (T(1) - ww) * r0[tw.i0] + ww * r0[tw.i1];
  const T bottom = (T(1) - ww) * r1[tw.i0] + ww * r1[tw.i1];
  return (T(1) - wh) * top + wh * bottom;
}

/// Scatters dy of one output pixel onto its four bilinear sources in a dx plane (accumulates).
template <class T, class S>
NDDR_HOST_DEVICE inline void resize_bilinear_backward_element(T dy, std::int64_t in_w,
                                                              const ResizeTap<S>& th,
                                                              const ResizeTap<S>& tw, T* dx_plane) {
  const T wh = static_cast<T>(th.w);
  const T ww = static_cast<T>(tw.w);
  T* r0 = dx_plane + th.i0 * in_w;
  T* r1 = dx_plane + th.i1 * in_w;
  r0[tw.i0] += (T(1) - wh) * (T(1) - ww) * dy;
  r0[tw.i1] += (T(1) - wh) * ww * dy;
  r1[tw.i0] += wh * (T(1) - ww) * dy;
  r1[tw.i1] += wh * ww * dy;
}

}  // namespace ops
}  // namespace nddr
