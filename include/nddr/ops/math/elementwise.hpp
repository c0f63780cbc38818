#pragma once
/// \file
/// Element-wise sums: y += x, and the residual unit's y = ReLU(a + b). Element bodies shared by
/// every backend (front door: nddr/ops/elementwise.hpp).

#include "nddr/core/macros.hpp"

namespace nddr::ops {

/// Element body of `add_relu`: a + b where a + b > 0, else 0 (NaN included: a diverging sum
/// reads as 0, as the residual unit of the authors' code).
template <class T>
NDDR_HOST_DEVICE inline T add_relu_element(T a, T b) {
  const T z = a + b;
  return z > T(0) ? z : T(0);
}

}  // namespace nddr::ops
