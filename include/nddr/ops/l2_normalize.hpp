#pragma once
/// \file
/// L2 normalisation over the channels of every pixel, the front door (per-pixel bodies and
/// options: nddr/ops/math/l2_normalize.hpp). Validates once, then runs `backend::L2Normalize<D>`.

#include <cmath>
#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/l2_normalize.hpp"

namespace nddr::ops {

namespace detail {

/// Checks that s is (N, C, H, W) or (N, C).
inline void check_l2_normalize_shape(const char* who, const Shape& s) {
  check<ShapeError>(s.rank() == 2 || s.rank() == 4, who, ": x has shape ", s,
                    ", expected rank 4 (N, C, H, W) or rank 2 (N, C)");
}

inline void check_l2_normalize_options(const char* who, const L2NormalizeOptions& opt) {
  check<OptionError>(opt.eps() > 0.0 && std::isfinite(opt.eps()), who,
                     ": eps must be positive and finite, got ", opt.eps());
}

}  // namespace detail

/// y = x / max(||x||_2, eps) over the channels of every pixel. x is (N, C, H, W) or (N, C);
/// y has the shape of x and may alias it.
template <class T, class D>
void l2_normalize_forward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<T, D> y,
                          const L2NormalizeOptions& opt = {}) {
  constexpr const char* kWho = "nddr::ops::l2_normalize_forward";
  detail::check_l2_normalize_options(kWho, opt);
  detail::check_l2_normalize_shape(kWho, x.shape());
  check_shape(kWho, "y", y.shape(), x.shape());
  backend::L2Normalize<D>::l2_normalize_forward(ctx, x, y, opt);
}

/// dx += (dy/dx)^T dy for y = l2_normalize(x) (see l2_normalize_backward_pixel). An empty dx
/// is skipped.
template <class T, class D>
void l2_normalize_backward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<const T, D> dy,
                           ViewOn<T, D> dx, const L2NormalizeOptions& opt = {}) {
  if (dx.empty()) return;
  constexpr const char* kWho = "nddr::ops::l2_normalize_backward";
  detail::check_l2_normalize_options(kWho, opt);
  detail::check_l2_normalize_shape(kWho, x.shape());
  check_shape(kWho, "dy", dy.shape(), x.shape());
  check_shape(kWho, "dx", dx.shape(), x.shape());
  backend::L2Normalize<D>::l2_normalize_backward(ctx, x, dy, dx, opt);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/l2_normalize.hpp"
