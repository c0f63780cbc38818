#pragma once
/// \file
/// CPU ReLU.

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/activation.hpp"

namespace nddr::ops {

/// y = max(x, 0). Shapes must match.
template <class T>
void relu_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y) {
  check_shape("nddr::ops::relu_forward", "y", y.shape(), x.shape());
  const T* xp = x.data();
  T* yp = y.data();
  nddr::detail::parallel_for(ctx, x.numel(), [=](std::int64_t i) { yp[i] = relu_element(xp[i]); });
}

/// dx += dy * [x > 0]. An empty dx is skipped.
template <class T>
void relu_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<const T, Cpu> dy,
                   TensorView<T, Cpu> dx) {
  if (dx.empty()) return;
  check_shape("nddr::ops::relu_backward", "dy", dy.shape(), x.shape());
  check_shape("nddr::ops::relu_backward", "dx", dx.shape(), x.shape());
  const T* xp = x.data();
  const T* dyp = dy.data();
  T* dxp = dx.data();
  nddr::detail::parallel_for(ctx, x.numel(),
                       [=](std::int64_t i) { relu_backward_element(xp[i], dyp[i], dxp[i]); });
}

}  // namespace nddr::ops
