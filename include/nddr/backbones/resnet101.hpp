#pragma once
/// \file
/// `nddr::ResNet101`: the DeepLab-v2 ResNet-101 (paper-spec §4.5) with the layers it needs:
/// `Bottleneck` (residual unit) and `Aspp` (four parallel dilated 3x3 output convs, summed).
///
/// Stages (TF 'SAME' padding everywhere, BatchNorm with TF-slim settings, no conv biases):
///  1. `conv1` (7x7 stride 2, 3 -> 64), `conv1.bn` (ReLU fused), `pool1` (max 3x3 stride 2):
///     stride 4;
///  2. `res2.unit1..3` (256 out), stride 1;
///  3. `res3.unit1..4` (512 out), stride 2 (in unit 1's first 1x1 conv and its projection, as in
///     DeepLab-v2's Caffe model; torchvision puts it in the 3x3 conv);
///  4. `res4.unit1..23` (1024 out), stride 1, 3x3 convs with dilation 2;
///  5. `res5.unit1..3` (2048 out), stride 1, 3x3 convs with dilation 4. Output stride 8.
/// Head `AsppHead`: `fc8.c0..c3`, 3x3 convs 2048 -> outputs with dilations 6, 12, 18, 24 and
/// biases, summed.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nddr/backbones/heads.hpp"
#include "nddr/concepts/backbone.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/layers/pool.hpp"
#include "nddr/layers/sequential.hpp"
#include "nddr/ops/activation.hpp"
#include "nddr/ops/elementwise.hpp"
#include "nddr/ops/pool.hpp"

namespace nddr {

/// The ResNet bottleneck unit y = relu(main(x) + shortcut(x)) with main = `conv1` (1x1,
/// in -> mid, stride), `conv1.bn` (ReLU fused), `conv2` (3x3, mid -> mid, dilation),
/// `conv2.bn` (ReLU fused), `conv3` (1x1, mid -> out), `conv3.bn`; the shortcut is the
/// identity, or `proj` (1x1, in -> out, stride) + `proj.bn` when in != out or stride != 1.
template <class T, class D = Cpu>
class Bottleneck {
 public:
  using value_type = T;
  using device_type = D;

  Bottleneck(std::int64_t in_channels, std::int64_t mid_channels, std::int64_t out_channels,
             std::int64_t stride = 1, std::int64_t dilation = 1)
      : in_(in_channels), out_(out_channels), has_proj_(in_channels != out_channels || stride != 1) {
    backbones::detail::add_conv_bn_relu(main_, "conv1", in_channels, mid_channels, 1,
                                        Conv2dOptions{}.stride(stride));
    backbones::detail::add_conv_bn_relu(main_, "conv2", mid_channels, mid_channels, 3,
                                        Conv2dOptions{}.dilation(dilation));
    main_.add("conv3", Conv2d<T, D>(mid_channels, out_channels, 1, Conv2dOptions{}.same().bias(false)));
    main_.add("conv3.bn", BatchNorm2d<T, D>(out_channels, BatchNormOptions::tf_slim()));
    if (has_proj_) {
      proj_.add("proj", Conv2d<T, D>(in_channels, out_channels, 1,
                                     Conv2dOptions{}.stride(stride).same().bias(false)));
      proj_.add("proj.bn", BatchNorm2d<T, D>(out_channels, BatchNormOptions::tf_slim()));
    }
  }

  /// Whether the shortcut is a projection (else the identity).
  bool has_projection() const { return has_proj_; }
  /// conv1 .. conv3.bn, and the projection (`proj`, `proj.bn`; empty without one).
  const Sequential<T, D>& main_branch() const { return main_; }
  const Sequential<T, D>& projection() const { return proj_; }

  Shape output_shape(const Shape& in) const {
    check<ShapeError>(in.rank() == 4 && in.c() == in_, "nddr::Bottleneck: input has shape ",
                      in, ", expected (N, ", in_, ", H, W)");
    return main_.output_shape(in);
  }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    main_.declare(store, prefix);
    if (has_proj_) proj_.declare(store, prefix);
  }
  void initialize(Rng& rng) {
    main_.initialize(rng);
    if (has_proj_) proj_.initialize(rng);
  }
  void set_training(bool on) {
    main_.set_training(on);
    if (has_proj_) proj_.set_training(on);
  }
  bool training() const { return main_.training(); }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    const Shape out = output_shape(x.shape());
    check_shape("nddr::Bottleneck::forward", "y", y.shape(), out);
    main_out_.resize(out);  // (N, C_out, H', W')
    main_.forward(ctx, x, main_out_.view());
    TensorView<const T, D> shortcut = x;
    if (has_proj_) {
      proj_out_.resize(out);  // (N, C_out, H', W')
      proj_.forward(ctx, x, proj_out_.view());
      shortcut = proj_out_.cview();
    }
    ops::add_relu<T>(ctx, main_out_.cview(), shortcut, y);
  }

  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D> y,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    // y > 0 exactly where main + shortcut > 0: the ReLU's gradient mask.
    dz_.resize(y.shape());  // (N, C_out, H', W')
    ops::relu_gradient<T>(ctx, y, dy, dz_.view());
    main_.backward(ctx, x, main_out_.cview(), dz_.cview(), dx);
    if (has_proj_) {
      proj_.backward(ctx, x, proj_out_.cview(), dz_.cview(), dx);
    } else {
      ops::accumulate<T>(ctx, dz_.cview(), dx);
    }
  }

 private:
  std::int64_t in_, out_;
  bool has_proj_;
  Sequential<T, D> main_;
  Sequential<T, D> proj_;
  Tensor<T, D> main_out_;  // main(x) of the last forward
  Tensor<T, D> proj_out_;  // proj(x) of the last forward
  Tensor<T, D> dz_;        // gradient at main(x) + shortcut(x)
};

/// Atrous spatial pyramid pooling as in DeepLab-v2: parallel 3x3 `OutputConv2d`s (TF 'SAME',
/// bias) from `in` to `outputs` channels, one per dilation, named `<prefix>.c0`, `.c1`, ...;
/// y = the sum of the branches. Parameters are in the "fc8.weight" / "fc8.bias" groups.
template <class T, class D = Cpu>
class Aspp {
 public:
  using value_type = T;
  using device_type = D;

  Aspp(std::int64_t in_channels, std::int64_t outputs,
       std::vector<std::int64_t> dilations = {6, 12, 18, 24}) {
    check<OptionError>(!dilations.empty(), "nddr::Aspp: needs at least one dilation");
    for (std::int64_t d : dilations)
      branches_.emplace_back(in_channels, outputs, 3, Conv2dOptions{}.same().dilation(d));
  }

  std::size_t branches() const { return branches_.size(); }
  /// Branch `i` (< branches()), parameters `<prefix>.c{i}.weight|bias`.
  const OutputConv2d<T, D>& branch(std::size_t i) const { return branches_.at(i); }

  Shape output_shape(const Shape& in) const { return branches_.front().output_shape(in); }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    for (std::size_t i = 0; i < branches_.size(); ++i)
      branches_[i].declare(store, prefix + ".c" + std::to_string(i));
  }
  void initialize(Rng& rng) {
    for (auto& b : branches_) b.initialize(rng);
  }
  void set_training(bool on) {
    training_ = on;
    for (auto& b : branches_) b.set_training(on);
  }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    check_shape("nddr::Aspp::forward", "y", y.shape(), output_shape(x.shape()));
    branches_.front().forward(ctx, x, y);
    branch_out_.resize(y.shape());  // (N, outputs, H, W)
    for (std::size_t i = 1; i < branches_.size(); ++i) {
      branches_[i].forward(ctx, x, branch_out_.view());
      ops::accumulate<T>(ctx, branch_out_.cview(), y);
    }
  }

  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D> y,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    // d(sum)/d(branch) = 1: each branch sees dy and accumulates its share into dx.
    for (auto& b : branches_) b.backward(ctx, x, y, dy, dx);
  }

 private:
  std::vector<OutputConv2d<T, D>> branches_;
  Tensor<T, D> branch_out_;
  bool training_ = true;
};

/// The DeepLab-v2 ASPP head: one child `fc8`, an `Aspp` with dilations 6, 12, 18, 24.
struct AsppHead {
  static constexpr const char* name = "aspp";

  template <class T, class D>
  static Sequential<T, D> build(std::int64_t in_channels, std::int64_t outputs) {
    Sequential<T, D> s;
    s.add("fc8", Aspp<T, D>(in_channels, outputs));
    return s;
  }
};

namespace resnet101::detail {

/// Residual stage `S` (2..5): `Units` bottlenecks named `res{S}.unit{i}`, the first with
/// stride `Stride` and the projection.
template <int S, int Units, std::int64_t In, std::int64_t Mid, std::int64_t Stride,
          std::int64_t Dilation>
struct ResStage {
  static constexpr const char* name = S == 2 ? "res2" : S == 3 ? "res3" : S == 4 ? "res4" : "res5";
  static constexpr std::int64_t in_channels = In, out_channels = 4 * Mid, stride = Stride;

  template <class T, class D>
  static Sequential<T, D> build() {
    Sequential<T, D> seq;
    for (int u = 1; u <= Units; ++u)
      seq.add(std::string(name) + ".unit" + std::to_string(u),
              Bottleneck<T, D>(u == 1 ? In : out_channels, Mid, out_channels,
                               u == 1 ? Stride : 1, Dilation));
    return seq;
  }
};

}  // namespace resnet101::detail

/// A DeepLab-v2 ResNet of stem width `Width` and `U2`..`U5` bottleneck units in res2..res5:
/// stage channels W, 4W, 8W, 16W, 32W (bottleneck widths W, 2W, 4W, 8W); strides 4, 1, 2, 1, 1;
/// dilations 1, 1, 1, 2, 4. `ResNet101` is `BasicResNet<64, 3, 4, 23, 3>`; `ResNetMini`, a
/// scaled-down one with the same parameter names, is what tests and fixtures use.
template <std::int64_t Width, int U2, int U3, int U4, int U5>
struct BasicResNet {
  static_assert(Width >= 1 && U2 >= 1 && U3 >= 1 && U4 >= 1 && U5 >= 1,
                "nddr::BasicResNet: the width and every stage's unit count must be positive");
  static constexpr bool is_resnet101 = Width == 64 && U2 == 3 && U3 == 4 && U4 == 23 && U5 == 3;
  static constexpr const char* name = is_resnet101 ? "resnet101" : "resnet";
  static constexpr std::int64_t input_channels = 3;

  /// conv1 (7x7/2) + BN + ReLU, pool1 (max 3x3/2).
  struct Stage1 {
    static constexpr const char* name = "conv1";
    static constexpr std::int64_t in_channels = 3, out_channels = Width, stride = 4;
    template <class T, class D>
    static Sequential<T, D> build() {
      Sequential<T, D> seq;
      backbones::detail::add_conv_bn_relu(seq, "conv1", in_channels, out_channels, 7,
                                          Conv2dOptions{}.stride(2));
      seq.add("pool1", MaxPool2d<T, D>(Pool2dOptions{}.kernel(3).stride(2).same()));
      return seq;
    }
  };
  using Stage2 = resnet101::detail::ResStage<2, U2, Width, Width, 1, 1>;
  using Stage3 = resnet101::detail::ResStage<3, U3, 4 * Width, 2 * Width, 2, 1>;
  using Stage4 = resnet101::detail::ResStage<4, U4, 8 * Width, 4 * Width, 1, 2>;
  using Stage5 = resnet101::detail::ResStage<5, U5, 16 * Width, 8 * Width, 1, 4>;

  using stages = StageList<Stage1, Stage2, Stage3, Stage4, Stage5>;
  using head = AsppHead;
};

/// Whether backbone `B` is a `BasicResNet` (ResNet101, ResNetMini, ...).
template <class B>
inline constexpr bool is_resnet_v = false;
template <std::int64_t Width, int U2, int U3, int U4, int U5>
inline constexpr bool is_resnet_v<BasicResNet<Width, U2, U3, U4, U5>> = true;

/// DeepLab-v2 ResNet-101: stage channels 64, 256, 512, 1024, 2048; strides 4, 1, 2, 1, 1
/// (41 x 41 outputs for a 321 x 321 input).
using ResNet101 = BasicResNet<64, 3, 4, 23, 3>;

/// ResNet-101's structure and names at test size: width 4 (stage channels 4, 16, 32, 64, 128),
/// units 1, 1, 2, 1 (res4.unit2 has the identity shortcut). CPU/GPU parity tests and the
/// torchvision import fixture use it.
using ResNetMini = BasicResNet<4, 1, 1, 2, 1>;

}  // namespace nddr
