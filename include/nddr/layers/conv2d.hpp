#pragma once
/// \file
/// `Conv2d<T, D>`: 2-D convolution as a `Layer`, parameters `prefix.weight`
/// (C_out, C_in, kh, kw) and `prefix.bias` (C_out, when the options enable it).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "nddr/ops/conv2d.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

/// Weight initialisation of `Conv2d`; the bias always starts at 0.
enum class Conv2dInit {
  kGlorotUniform,  ///< U(-a, a), a = sqrt(6 / (fan_in + fan_out)), fan = kh * kw * C (TF xavier)
  kKaimingNormal,  ///< N(0, 2 / fan_out), fan_out = kh * kw * C_out (PyTorch mode='fan_out')
};

template <class T, class D = Cpu>
class Conv2d {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward never reads the output (nddr/layers/layer_traits.hpp).
  static constexpr bool backward_reads_output = false;

  /// A kernel_h x kernel_w convolution from `in_channels` to `out_channels`.
  Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel_h,
         std::int64_t kernel_w, Conv2dOptions opt = {})
      : in_(in_channels), out_(out_channels), kh_(kernel_h), kw_(kernel_w), opt_(opt) {
    check<OptionError>(in_ >= 1, "nddr::Conv2d: in_channels must be >= 1, got ", in_);
    check<OptionError>(out_ >= 1, "nddr::Conv2d: out_channels must be >= 1, got ", out_);
    check<OptionError>(kh_ >= 1, "nddr::Conv2d: kernel_h must be >= 1, got ", kh_);
    check<OptionError>(kw_ >= 1, "nddr::Conv2d: kernel_w must be >= 1, got ", kw_);
    // Validates stride, dilation and padding now rather than at the first forward.
    // The probe input is the kernel's extent (at least 1, so a bad dilation reaches the check).
    const auto extent = [](std::int64_t k, std::int64_t d) {
      return std::max<std::int64_t>((k - 1) * d + 1, 1);
    };
    conv2d_geometry(Shape::nchw(1, in_, extent(kh_, opt_.dilation_h), extent(kw_, opt_.dilation_w)),
                    weight_shape(), opt_, "nddr::Conv2d");
  }
  /// A square kernel x kernel convolution.
  Conv2d(std::int64_t in_channels, std::int64_t out_channels, std::int64_t kernel,
         Conv2dOptions opt = {})
      : Conv2d(in_channels, out_channels, kernel, kernel, opt) {}

  /// Chooses the weight initialisation used by `initialize` (default Glorot-uniform).
  Conv2d& set_init(Conv2dInit init) {
    init_ = init;
    return *this;
  }

  const Conv2dOptions& options() const { return opt_; }
  /// (C_out, C_in, kh, kw).
  Shape weight_shape() const { return Shape::nchw(out_, in_, kh_, kw_); }

  Shape output_shape(const Shape& in) const {
    return conv2d_output_shape(in, weight_shape(), opt_);
  }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    store_ = &store;
    weight_ = store.declare(prefix + ".weight", weight_shape());
    if (opt_.use_bias) bias_ = store.declare(prefix + ".bias", Shape{out_});
  }

  void initialize(Rng& rng) {
    static_assert(std::is_same_v<D, Cpu>,
                  "nddr::Conv2d::initialize: only the CPU store is written in place; initialise "
                  "on nddr::Cpu and copy the store to the device");
    auto w = store_->value(weight_);
    const double fan_in = static_cast<double>(in_ * kh_ * kw_);
    const double fan_out = static_cast<double>(out_ * kh_ * kw_);
    if (init_ == Conv2dInit::kGlorotUniform) {
      const double limit = std::sqrt(6.0 / (fan_in + fan_out));
      for (std::int64_t i = 0; i < w.numel(); ++i)
        w[i] = static_cast<T>(rng.uniform(-limit, limit));
    } else {
      const double stddev = std::sqrt(2.0 / fan_out);
      for (std::int64_t i = 0; i < w.numel(); ++i) w[i] = static_cast<T>(stddev * rng.normal());
    }
    if (opt_.use_bias) {
      auto b = store_->value(bias_);
      for (std::int64_t i = 0; i < b.numel(); ++i) b[i] = T(0);
    }
  }

  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    const auto b = opt_.use_bias ? store_->value(bias_) : TensorView<T, D>{};  // (C_out)
    ops::conv2d_forward<T>(ctx, x, store_->value(weight_), b, y, opt_);
  }

  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D>,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    const auto db = opt_.use_bias ? store_->grad(bias_) : TensorView<T, D>{};  // (C_out)
    ops::conv2d_backward<T>(ctx, x, store_->value(weight_), dy, dx, store_->grad(weight_), db,
                            opt_);
  }

 private:
  std::int64_t in_, out_, kh_, kw_;
  Conv2dOptions opt_;
  Conv2dInit init_ = Conv2dInit::kGlorotUniform;
  ParameterStore<T, D>* store_ = nullptr;
  ParamId weight_{};
  ParamId bias_{};
  bool training_ = true;
};

}  // namespace nddr
