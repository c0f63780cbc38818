#pragma once
/// \file
/// Fully connected map, the front door (shape rules: nddr/ops/math/linear.hpp). Validates once,
/// then runs `backend::Linear<D>`.

#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/linear.hpp"

namespace nddr::ops {

namespace detail {

/// Checks x against w (out, F) and returns F.
inline std::int64_t check_linear_weight(const char* who, const Shape& x, const Shape& w) {
  const std::int64_t features = linear_features(who, x);
  check<ShapeError>(w.rank() == 2 && w[1] == features, who, ": weight has shape ", w, " but input ",
                    x, " has ", features, " features per item; expected weight (out, ", features,
                    ")");
  return features;
}

inline void check_linear_bias(const char* who, const char* what, const Shape& b, std::int64_t out) {
  check_shape(who, what, b, Shape{out});
}

}  // namespace detail

/// y = x W^T + b with x flattened to (N, F). x is (N, C, H, W) or (N, F); w is (out, F); b is
/// (out) or empty (no bias); y is (N, out, 1, 1) for a rank-4 x, (N, out) for a rank-2 x.
template <class T, class D>
void linear_forward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<const T, D> w,
                    ViewOn<const T, D> b, ViewOn<T, D> y) {
  constexpr const char* kWho = "nddr::ops::linear_forward";
  detail::check_linear_weight(kWho, x.shape(), w.shape());
  const std::int64_t out = w.shape()[0];
  check_shape(kWho, "y", y.shape(), linear_output_shape(kWho, x.shape(), out));
  if (!b.empty()) detail::check_linear_bias(kWho, "bias", b.shape(), out);
  backend::Linear<D>::linear_forward(ctx, x, w, b, y);
}

/// Gradients of `linear_forward` for upstream gradient dy (shaped like y):
/// dw = dy^T x and db = sum_n dy (assigned); dx += dy W (accumulated). Each of dx, dw, db is
/// skipped when empty.
template <class T, class D>
void linear_backward(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<const T, D> w,
                     ViewOn<const T, D> dy, ViewOn<T, D> dx, ViewOn<T, D> dw, ViewOn<T, D> db) {
  constexpr const char* kWho = "nddr::ops::linear_backward";
  detail::check_linear_weight(kWho, x.shape(), w.shape());
  const std::int64_t out = w.shape()[0];
  check_shape(kWho, "dy", dy.shape(), linear_output_shape(kWho, x.shape(), out));
  if (!dw.empty()) check_shape(kWho, "dw", dw.shape(), w.shape());
  if (!db.empty()) detail::check_linear_bias(kWho, "db", db.shape(), out);
  if (!dx.empty()) check_shape(kWho, "dx", dx.shape(), x.shape());
  backend::Linear<D>::linear_backward(ctx, x, w, dy, dx, dw, db);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/linear.hpp"
