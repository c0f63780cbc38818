#pragma once
/// \file
/// CPU fully connected map: Eigen GEMM on `Eigen::Map`s of our row-major buffers.

#include <Eigen/Core>
#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/linear.hpp"

namespace nddr::ops {

namespace detail {

template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Checks x against w (out, F) and returns F.
inline std::int64_t check_linear_weight(const char* who, const Shape& x, const Shape& w) {
  const std::int64_t features = linear_features(who, x);
  check<ShapeError>(w.rank() == 2 && w[1] == features, who, ": weight has shape ", w,
                    " but input ", x, " has ", features,
                    " features per item; expected weight (out, ", features, ")");
  return features;
}

inline void check_linear_bias(const char* who, const char* what, const Shape& b, std::int64_t out) {
  check_shape(who, what, b, Shape{out});
}

}  // namespace detail

/// y = x W^T + b with x flattened to (N, F). x is (N, C, H, W) or (N, F); w is (out, F); b is
/// (out) or empty (no bias); y is (N, out, 1, 1) for a rank-4 x, (N, out) for a rank-2 x.
/// Eigen's GEMM runs on its own OpenMP threads.
template <class T>
void linear_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<const T, Cpu> w,
                    TensorView<const T, Cpu> b, TensorView<T, Cpu> y) {
  (void)ctx;
  constexpr const char* kWho = "nddr::ops::linear_forward";
  const std::int64_t features = detail::check_linear_weight(kWho, x.shape(), w.shape());
  const std::int64_t out = w.shape()[0];
  const std::int64_t batch = x.shape()[0];
  check_shape(kWho, "y", y.shape(), linear_output_shape(kWho, x.shape(), out));
  if (!b.empty()) detail::check_linear_bias(kWho, "bias", b.shape(), out);

  using Mat = detail::RowMajorMatrix<T>;
  Eigen::Map<const Mat> xm(x.data(), batch, features);  // (N, F)
  Eigen::Map<const Mat> wm(w.data(), out, features);    // (out, F)
  Eigen::Map<Mat> ym(y.data(), batch, out);             // (N, out)
  ym.noalias() = xm * wm.transpose();
  if (!b.empty()) {
    Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> bm(b.data(), out);  // (1, out)
    ym.rowwise() += bm;
  }
}

/// Gradients of `linear_forward` for upstream gradient dy (shaped like y):
/// dw = dy^T x and db = sum_n dy (assigned); dx += dy W (accumulated). Each of dx, dw, db is
/// skipped when empty.
template <class T>
void linear_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<const T, Cpu> w,
                     TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx, TensorView<T, Cpu> dw,
                     TensorView<T, Cpu> db) {
  (void)ctx;
  constexpr const char* kWho = "nddr::ops::linear_backward";
  const std::int64_t features = detail::check_linear_weight(kWho, x.shape(), w.shape());
  const std::int64_t out = w.shape()[0];
  const std::int64_t batch = x.shape()[0];
  check_shape(kWho, "dy", dy.shape(), linear_output_shape(kWho, x.shape(), out));

  using Mat = detail::RowMajorMatrix<T>;
  Eigen::Map<const Mat> xm(x.data(), batch, features);  // (N, F)
  Eigen::Map<const Mat> wm(w.data(), out, features);    // (out, F)
  Eigen::Map<const Mat> dym(dy.data(), batch, out);     // (N, out)
  if (!dw.empty()) {
    check_shape(kWho, "dw", dw.shape(), w.shape());
    Eigen::Map<Mat> dwm(dw.data(), out, features);  // (out, F)
    dwm.noalias() = dym.transpose() * xm;
  }
  if (!db.empty()) {
    detail::check_linear_bias(kWho, "db", db.shape(), out);
    Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> dbm(db.data(), out);  // (1, out)
    dbm.noalias() = dym.colwise().sum();
  }
  if (!dx.empty()) {
    check_shape(kWho, "dx", dx.shape(), x.shape());
    Eigen::Map<Mat> dxm(dx.data(), batch, features);  // (N, F)
    dxm.noalias() += dym * wm;
  }
}

}  // namespace nddr::ops
