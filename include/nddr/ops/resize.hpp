#pragma once
/// \file
/// Resize (bilinear in three conventions, TF legacy nearest), the front door (options, taps and
/// element bodies: nddr/ops/math/resize.hpp). Validates once, then runs `backend::Resize<D>`.

#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/resize.hpp"

namespace nddr::ops {

namespace detail {

inline void check_resize(const char* op, const Shape& x, const Shape& y, const ResizeOptions& opt) {
  check_shape(op, "y", y, resize_output_shape(op, x, opt));
}

}  // namespace detail

/// y = x resized to (opt.out_h, opt.out_w) with opt.resize_mode. Integer tensors (label maps:
/// uint8, int32, int64) support kNearestTfLegacy only.
template <class T, class D>
void resize_forward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<T, D> y,
                    const ResizeOptions& opt) {
  const char* op = "nddr::ops::resize_forward";
  detail::check_resize(op, x.shape(), y.shape(), opt);
  check<OptionError>(std::is_floating_point_v<T> || opt.resize_mode == ResizeMode::kNearestTfLegacy,
                     op, ": integer tensors support only mode kNearestTfLegacy, got ",
                     resize_mode_name(opt.resize_mode));
  backend::Resize<D>::resize_forward(ctx, x, y, opt);
}

/// dx += the transpose of resize_forward applied to dy: every dy value is scattered onto its
/// source cells with the interpolation weights (nearest: onto its single source). x supplies
/// the input shape.
template <class T, class D>
requires std::is_floating_point_v<T>
void resize_backward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<const T, D> dy, ViewOn<T, D> dx,
                     const ResizeOptions& opt) {
  if (dx.empty()) return;
  const char* op = "nddr::ops::resize_backward";
  detail::check_resize(op, x.shape(), dy.shape(), opt);
  check_shape(op, "dx", dx.shape(), x.shape());
  backend::Resize<D>::resize_backward(ctx, x, dy, dx, opt);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/resize.hpp"
