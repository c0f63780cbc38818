#pragma once
/// \file
/// CPU fully connected map (front door: nddr/ops/linear.hpp): Eigen GEMM on `Eigen::Map`s of
/// our row-major buffers; Eigen's GEMM runs on its own OpenMP threads.

#include <Eigen/Core>
#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/linear.hpp"

namespace nddr::ops::backend {

template <>
struct Linear<Cpu> {
  template <class T>
  using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  template <class T>
  static void linear_forward(Context<Cpu>&, TensorView<const T, Cpu> x, TensorView<const T, Cpu> w,
                             TensorView<const T, Cpu> b, TensorView<T, Cpu> y) {
    const std::int64_t out = w.shape()[0], features = w.shape()[1];
    const std::int64_t batch = x.shape()[0];
    using Mat = RowMajorMatrix<T>;
    Eigen::Map<const Mat> xm(x.data(), batch, features);  // (N, F)
    Eigen::Map<const Mat> wm(w.data(), out, features);    // (out, F)
    Eigen::Map<Mat> ym(y.data(), batch, out);             // (N, out)
    ym.noalias() = xm * wm.transpose();
    if (!b.empty()) {
      Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> bm(b.data(), out);  // (1, out)
      ym.rowwise() += bm;
    }
  }

  template <class T>
  static void linear_backward(Context<Cpu>&, TensorView<const T, Cpu> x, TensorView<const T, Cpu> w,
                              TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx,
                              TensorView<T, Cpu> dw, TensorView<T, Cpu> db) {
    const std::int64_t out = w.shape()[0], features = w.shape()[1];
    const std::int64_t batch = x.shape()[0];
    using Mat = RowMajorMatrix<T>;
    Eigen::Map<const Mat> xm(x.data(), batch, features);  // (N, F)
    Eigen::Map<const Mat> wm(w.data(), out, features);    // (out, F)
    Eigen::Map<const Mat> dym(dy.data(), batch, out);     // (N, out)
    if (!dw.empty()) {
      Eigen::Map<Mat> dwm(dw.data(), out, features);  // (out, F)
      dwm.noalias() = dym.transpose() * xm;
    }
    if (!db.empty()) {
      Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> dbm(db.data(), out);  // (1, out)
      dbm.noalias() = dym.colwise().sum();
    }
    if (!dx.empty()) {
      Eigen::Map<Mat> dxm(dx.data(), batch, features);  // (N, F)
      dxm.noalias() += dym * wm;
    }
  }
};

}  // namespace nddr::ops::backend
