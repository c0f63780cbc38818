#pragma once
/// \file
/// Momentum SGD with L2 weight decay, per element (TF `MomentumOptimizer` / PyTorch `SGD` with
/// dampening 0): g' = g + wd * theta; v = momentum * v + g'; theta -= lr * v, or with Nesterov
/// theta -= lr * (g' + momentum * v). Element bodies shared by every backend.

#include "nddr/core/macros.hpp"

namespace nddr::ops {

/// Updates one parameter `theta` with gradient `g` and velocity `v` in place. `wd` is the
/// effective decay of this element (0 for parameters that are not decayed), `lr` the group's
/// learning rate (scheduled lr times the group multiplier).
template <class T>
NDDR_HOST_DEVICE inline void sgd_momentum_element(T& theta, T g, T& v, T lr, T momentum, T wd,
                                                  bool nesterov = false) {
  const T gd = g + wd * theta;
  v = momentum * v + gd;
  theta -= lr * (nesterov ? gd + momentum * v : v);
}

}  // namespace nddr::ops
