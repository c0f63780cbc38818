#pragma once
/// \file
/// ReLU, the front door: y = max(x, 0); dx += dy * [x > 0]. Validates once, then runs
/// `backend::Activation<D>` (nddr/ops/backend.hpp). Element bodies: nddr/ops/math/activation.hpp.

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/activation.hpp"

namespace nddr::ops {

/// y = max(x, 0). Shapes must match; y may be x's memory.
template <class T, class D>
void relu_forward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<T, D> y) {
  check_shape("nddr::ops::relu_forward", "y", y.shape(), x.shape());
  backend::Activation<D>::relu_forward(ctx, x, y);
}

/// dx += dy * [x > 0]. An empty dx is skipped.
template <class T, class D>
void relu_backward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<const T, D> dy, ViewOn<T, D> dx) {
  if (dx.empty()) return;
  check_shape("nddr::ops::relu_backward", "dy", dy.shape(), x.shape());
  check_shape("nddr::ops::relu_backward", "dx", dx.shape(), x.shape());
  backend::Activation<D>::relu_backward(ctx, x, dy, dx);
}

/// g = dy * [y > 0], assigned: the gradient that passes a ReLU whose output is y, for callers
/// that own a buffer per gradient (the CPU's concat-free NDDR, the residual unit).
template <class T, class D>
void relu_gradient(Context<D>& ctx, ViewOn<const T, D> y, ViewOn<const T, D> dy, ViewOn<T, D> g) {
  check_shape("nddr::ops::relu_gradient", "dy", dy.shape(), y.shape());
  check_shape("nddr::ops::relu_gradient", "g", g.shape(), y.shape());
  backend::Activation<D>::relu_gradient(ctx, y, dy, g);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/activation.hpp"
