#pragma once
/// \file
/// Pooling layers: `MaxPool2d<T, D>`, `AvgPool2d<T, D>` (both configured by `Pool2dOptions`)
/// and `GlobalAvgPool<T, D>` ((N, C, H, W) -> (N, C, 1, 1)). No parameters.

#include <cstdint>
#include <string>

#include "nddr/ops/pool.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

/// Max pooling. Padded cells never win; dy goes to the first maximum of each window.
/// Forward records the argmax indices that backward uses.
template <class T, class D = Cpu>
class MaxPool2d {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward never reads the output (nddr/layers/layer_traits.hpp).
  static constexpr bool backward_reads_output = false;

  /// e.g. `MaxPool2d<float>(Pool2dOptions{}.kernel(3).stride(2).same())` (VGG pool1).
  explicit MaxPool2d(const Pool2dOptions& opt) : opt_(opt) {}

  const Pool2dOptions& options() const { return opt_; }
  Shape output_shape(const Shape& in) const {
    return pool2d_output_shape("nddr::MaxPool2d", in, opt_);
  }
  void declare(ParameterStore<T, D>&, const std::string&) {}
  void initialize(Rng&) {}
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    argmax_.resize(y.shape());
    ops::max_pool2d_forward(ctx, x, y, argmax_.view(), opt_);
  }
  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D>,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    if (dx.empty()) return;
    check_shape("nddr::MaxPool2d::backward", "dx", dx.shape(), x.shape());
    ops::max_pool2d_backward(ctx, argmax_.cview(), dy, dx, ArgmaxCheck::kTrusted);
  }

 private:
  Pool2dOptions opt_;
  Tensor<std::int32_t, D> argmax_;  // (N, C, out_h, out_w), index into each (H, W) plane
  bool training_ = true;
};

/// Average pooling; padded cells are excluded from the divisor unless
/// `Pool2dOptions::count_include_pad()`.
template <class T, class D = Cpu>
class AvgPool2d {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward never reads the output (nddr/layers/layer_traits.hpp).
  static constexpr bool backward_reads_output = false;

  /// e.g. `AvgPool2d<float>(Pool2dOptions{}.kernel(3).same())` (VGG pool5_avg).
  explicit AvgPool2d(const Pool2dOptions& opt) : opt_(opt) {}

  const Pool2dOptions& options() const { return opt_; }
  Shape output_shape(const Shape& in) const {
    return pool2d_output_shape("nddr::AvgPool2d", in, opt_);
  }
  void declare(ParameterStore<T, D>&, const std::string&) {}
  void initialize(Rng&) {}
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    ops::avg_pool2d_forward(ctx, x, y, opt_);
  }
  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D>,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    ops::avg_pool2d_backward(ctx, x, dy, dx, opt_);
  }

 private:
  Pool2dOptions opt_;
  bool training_ = true;
};

/// Mean over each (H, W) plane: (N, C, H, W) -> (N, C, 1, 1).
template <class T, class D = Cpu>
class GlobalAvgPool {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward never reads the output (nddr/layers/layer_traits.hpp).
  static constexpr bool backward_reads_output = false;

  Shape output_shape(const Shape& in) const {
    check_rank4("nddr::GlobalAvgPool", "input", in);
    check<ShapeError>(in.h() > 0 && in.w() > 0, "nddr::GlobalAvgPool: input ", in,
                      " has no pixels");
    return Shape::nchw(in.n(), in.c(), 1, 1);
  }
  void declare(ParameterStore<T, D>&, const std::string&) {}
  void initialize(Rng&) {}
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    ops::global_avg_pool_forward(ctx, x, y);
  }
  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D>,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    ops::global_avg_pool_backward(ctx, x, dy, dx);
  }

 private:
  bool training_ = true;
};

}  // namespace nddr
