#pragma once
/// \file
/// Element-wise sums, the front door: y += x, and the residual unit's y = ReLU(a + b). Validates
/// once, then runs `backend::Elementwise<D>` (backend/cpu/elementwise.hpp,
/// backend/cuda/elementwise.hpp). Element bodies: nddr/ops/math/elementwise.hpp.

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/elementwise.hpp"

namespace nddr::ops {

/// y += x. Shapes must match; an empty y is skipped. x and y must not overlap.
template <class T, class D>
void accumulate(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<T, D> y) {
  if (y.empty()) return;
  check_shape("nddr::ops::accumulate", "y", y.shape(), x.shape());
  backend::Elementwise<D>::accumulate(ctx, x, y);
}

/// y = a + b where a + b > 0, else 0 (NaN included: a diverging sum reads as 0, as the residual
/// unit of the authors' code). Shapes must match; y may be a's or b's memory.
template <class T, class D>
void add_relu(Context<D>& ctx, ViewOn<const T, D> a, ViewOn<const T, D> b, ViewOn<T, D> y) {
  check_shape("nddr::ops::add_relu", "b", b.shape(), a.shape());
  check_shape("nddr::ops::add_relu", "y", y.shape(), a.shape());
  backend::Elementwise<D>::add_relu(ctx, a, b, y);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/elementwise.hpp"
