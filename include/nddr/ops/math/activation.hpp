#pragma once
/// \file
/// ReLU: y = max(x, 0); dx += dy * [x > 0]. Element bodies shared by every backend.

#include "nddr/core/macros.hpp"

namespace nddr::ops {

/// Element body of the ReLU forward pass. NaN propagates (as in PyTorch), so a diverging
/// network is reported by its loss instead of being silently zeroed.
template <class T>
NDDR_HOST_DEVICE inline T relu_element(T x) {
  return x < T(0) ? T(0) : x;
}

/// The gradient that passes a ReLU whose output (or input) is `y`: dy where y > 0, else 0.
template <class T>
NDDR_HOST_DEVICE inline T relu_pass(T y, T dy) {
  return y > T(0) ? dy : T(0);
}

/// Element body of the ReLU backward pass (accumulates).
template <class T>
NDDR_HOST_DEVICE inline void relu_backward_element(T x, T dy, T& dx) {
  dx += relu_pass(x, dy);
}

}  // namespace nddr::ops
