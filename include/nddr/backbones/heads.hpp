#pragma once
/// \file
/// Head specs shared by the backbones (models of `nddr::concepts::Head`) and their building
/// blocks: `OutputConv2d` (the task-output convolution `fc8`, parameters in the "fc8.weight" /
/// "fc8.bias" groups), `LargeFovHead` (DeepLab-LargeFOV fc6..fc8) and `TinyHead` (tests, demos).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "nddr/ops/activation.hpp"
#include "nddr/ops/batch_norm.hpp"
#include "nddr/ops/conv2d.hpp"
#include "nddr/ops/dropout.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/layers/batch_norm.hpp"
#include "nddr/layers/conv2d.hpp"
#include "nddr/layers/dropout.hpp"
#include "nddr/layers/relu.hpp"
#include "nddr/layers/sequential.hpp"

namespace nddr {

/// The convolution that produces a task's outputs (DeepLab's `fc8`): always with a bias,
/// Glorot-uniform weight, zero bias. Unlike `Conv2d` it declares the weight in the parameter
/// group "fc8.weight" and the bias in "fc8.bias", so optimisers can give them their own
/// learning-rate multipliers (x10 and x20 in the NDDR-CNN code).
template <class T, class D = Cpu>
class OutputConv2d {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward never reads the output (nddr/layers/layer_traits.hpp).
  static constexpr bool backward_reads_output = false;

  static constexpr const char* weight_group = "fc8.weight";
  static constexpr const char* bias_group = "fc8.bias";

  /// A kernel x kernel convolution from `in_channels` to `out_channels` (the task's outputs);
  /// `opt.use_bias` is forced on.
  OutputConv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel,
               Conv2dOptions opt = {})
      : in_(in_channels), out_(out_channels), k_(kernel), opt_(opt.bias(true)) {
    check<OptionError>(in_ >= 1, "nddr::OutputConv2d: in_channels must be >= 1, got ", in_);
    check<OptionError>(out_ >= 1, "nddr::OutputConv2d: out_channels (task outputs) must be >= 1, got ",
                       out_);
    check<OptionError>(k_ >= 1, "nddr::OutputConv2d: kernel must be >= 1, got ", k_);
    // Validates stride and dilation now; the probe input is the kernel's extent.
    const auto extent = [](std::int64_t k, std::int64_t d) {
      return std::max<std::int64_t>((k - 1) * d + 1, 1);
    };
    conv2d_geometry(
        Shape::nchw(1, in_, extent(k_, opt_.dilation_h), extent(k_, opt_.dilation_w)),
        weight_shape(), opt_, "nddr::OutputConv2d");
  }

  const Conv2dOptions& options() const { return opt_; }
  /// (C_out, C_in, k, k).
  Shape weight_shape() const { return Shape::nchw(out_, in_, k_, k_); }

  Shape output_shape(const Shape& in) const {
    return conv2d_output_shape(in, weight_shape(), opt_);
  }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    store_ = &store;
    weight_ = store.declare(prefix + ".weight", weight_shape(), weight_group);
    bias_ = store.declare(prefix + ".bias", Shape{out_}, bias_group);
  }

  void initialize(Rng& rng) {
    static_assert(std::is_same_v<D, Cpu>,
                  "nddr::OutputConv2d::initialize: initialise on nddr::Cpu and copy the store");
    auto w = store_->value(weight_);
    const double limit = std::sqrt(6.0 / static_cast<double>((in_ + out_) * k_ * k_));
    for (std::int64_t i = 0; i < w.numel(); ++i) w[i] = static_cast<T>(rng.uniform(-limit, limit));
    auto b = store_->value(bias_);
    for (std::int64_t i = 0; i < b.numel(); ++i) b[i] = T(0);
  }

  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    ops::conv2d_forward<T>(ctx, x, store_->value(weight_), store_->value(bias_), y, opt_);
  }

  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D>,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    ops::conv2d_backward<T>(ctx, x, store_->value(weight_), dy, dx, store_->grad(weight_),
                            store_->grad(bias_), opt_);
  }

 private:
  std::int64_t in_, out_, k_;
  Conv2dOptions opt_;
  ParameterStore<T, D>* store_ = nullptr;
  ParamId weight_{};
  ParamId bias_{};
  bool training_ = true;
};

namespace backbones::detail {

/// Appends `name` (Conv2d, TF 'SAME', no bias) and `name.bn` (BatchNorm2d, TF-slim settings,
/// with the ReLU fused: BatchNormOptions::relu): the conv unit of every backbone here.
template <class T, class D>
void add_conv_bn_relu(Sequential<T, D>& seq, const std::string& name, std::int64_t in,
                      std::int64_t out, std::int64_t kernel, Conv2dOptions opt = {}) {
  seq.add(name, Conv2d<T, D>(in, out, kernel, opt.same().bias(false)));
  seq.add(name + ".bn", BatchNorm2d<T, D>(out, BatchNormOptions::tf_slim().relu(true)));
}

}  // namespace backbones::detail

/// DeepLab-LargeFOV head as coded for NDDR-CNN (paper-spec §2.1): `fc6` (3x3, dilation 12,
/// in -> 1024), `fc6.bn` (BatchNorm2d, ReLU fused), `drop6` (p 0.5), `fc7` (1x1, 1024 -> 1024),
/// `fc7.bn` (ReLU fused), `drop7`, `fc8` (1x1, 1024 -> outputs, bias). Keeps the spatial size.
struct LargeFovHead {
  static constexpr const char* name = "largefov";
  static constexpr std::int64_t hidden_channels = 1024;
  static constexpr std::int64_t fc6_dilation = 12;

  template <class T, class D>
  static Sequential<T, D> build(std::int64_t in_channels, std::int64_t outputs) {
    Sequential<T, D> s;
    backbones::detail::add_conv_bn_relu(s, "fc6", in_channels, hidden_channels, 3,
                                        Conv2dOptions{}.dilation(fc6_dilation));
    s.add("drop6", Dropout<T, D>(DropoutOptions{}.p(0.5)));
    backbones::detail::add_conv_bn_relu(s, "fc7", hidden_channels, hidden_channels, 1);
    s.add("drop7", Dropout<T, D>(DropoutOptions{}.p(0.5)));
    s.add("fc8", OutputConv2d<T, D>(hidden_channels, outputs, 1));
    return s;
  }
};

/// A small dense head for tests and demos, shaped like LargeFOV: `fc6` (3x3, dilation 2,
/// in -> 16, no bias), `fc6.bn` (ReLU fused), `drop6` (p 0.5), `fc8` (1x1, 16 -> outputs, bias).
struct TinyHead {
  static constexpr const char* name = "tiny";
  static constexpr std::int64_t hidden_channels = 16;

  template <class T, class D>
  static Sequential<T, D> build(std::int64_t in_channels, std::int64_t outputs) {
    Sequential<T, D> s;
    backbones::detail::add_conv_bn_relu(s, "fc6", in_channels, hidden_channels, 3,
                                        Conv2dOptions{}.dilation(2));
    s.add("drop6", Dropout<T, D>(DropoutOptions{}.p(0.5)));
    s.add("fc8", OutputConv2d<T, D>(hidden_channels, outputs, 1));
    return s;
  }
};

}  // namespace nddr
