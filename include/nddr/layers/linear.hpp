#pragma once
/// \file
/// `Linear<T, D>`: a fully connected layer as a `Layer`. Input (N, C, H, W) or (N, F),
/// flattened to (N, F); output (N, out, 1, 1) or (N, out). Parameters `prefix.weight`
/// (out, F) and `prefix.bias` (out), PyTorch layout.

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "nddr/ops/linear.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

template <class T, class D = Cpu>
class Linear {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward never reads the output (nddr/layers/layer_traits.hpp).
  static constexpr bool backward_reads_output = false;

  /// A map from `in_features` (= C * H * W of the input) to `out_features` outputs.
  Linear(std::int64_t in_features, std::int64_t out_features, LinearOptions opt = {})
      : in_(in_features), out_(out_features), opt_(std::move(opt)) {
    check<OptionError>(in_features >= 1, "nddr::Linear: in_features must be >= 1, got ",
                       in_features);
    check<OptionError>(out_features >= 1, "nddr::Linear: out_features must be >= 1, got ",
                       out_features);
  }

  std::int64_t in_features() const { return in_; }
  std::int64_t out_features() const { return out_; }
  const LinearOptions& options() const { return opt_; }

  /// (N, out, 1, 1) for (N, C, H, W) with C * H * W = in_features; (N, out) for (N, F).
  Shape output_shape(const Shape& in) const {
    const std::int64_t features = ops::linear_features("nddr::Linear", in);
    check<ShapeError>(features == in_, "nddr::Linear: input shape ", in, " has ", features,
                      " features per item, expected ", in_, " (in_features)");
    return ops::linear_output_shape("nddr::Linear", in, out_);
  }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    store_ = &store;
    weight_ = store.declare(prefix + ".weight", Shape{out_, in_}, opt_.weight_group());
    if (opt_.bias()) bias_ = store.declare(prefix + ".bias", Shape{out_}, opt_.bias_group());
  }

  /// Glorot-uniform weight (TF xavier: U(-a, a), a = sqrt(6 / (in + out))), zero bias.
  void initialize(Rng& rng) {
    const double a = std::sqrt(6.0 / static_cast<double>(in_ + out_));
    auto w = store_->value(weight_);
    for (std::int64_t i = 0; i < w.numel(); ++i) w[i] = static_cast<T>(rng.uniform(-a, a));
    if (bias_.valid()) {
      auto b = store_->value(bias_);
      for (std::int64_t i = 0; i < b.numel(); ++i) b[i] = T(0);
    }
  }

  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    output_shape(x.shape());
    ops::linear_forward(ctx, x, weight(), bias(), y);
  }

  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D>,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    TensorView<T, D> db = bias_.valid() ? store_->grad(bias_) : TensorView<T, D>{};
    ops::linear_backward(ctx, x, weight(), dy, dx, store_->grad(weight_), db);
  }

  /// The weight (out, F) and the bias (out; empty without bias).
  TensorView<const T, D> weight() const { return store_->value(weight_); }
  TensorView<const T, D> bias() const {
    return bias_.valid() ? TensorView<const T, D>(store_->value(bias_)) : TensorView<const T, D>{};
  }

 private:
  std::int64_t in_;
  std::int64_t out_;
  LinearOptions opt_;
  ParameterStore<T, D>* store_ = nullptr;
  ParamId weight_;
  ParamId bias_;
  bool training_ = true;
};

}  // namespace nddr
