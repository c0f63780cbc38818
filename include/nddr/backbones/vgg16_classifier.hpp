#pragma once
/// \file
/// `nddr::VGG16Classifier`: the image-level VGG-16 (ImageNet layout) of the IMDB-WIKI
/// experiment (paper-spec §4.6), one column per task. Needs a 224 x 224 input.
///
/// Stages s = 1..5: `conv{s}_{i}` (3x3 SAME, no bias), `conv{s}_{i}.bn` (TF-slim BatchNorm,
/// ReLU fused), `pool{s}` (max 2x2 stride 2 SAME; for even sizes this is torchvision's
/// 2x2/2 pool). BatchNorm and no conv biases as in `VGG16`, so both backbones train alike.
/// Head `VGG16ClassifierHead`: `fc6` (512*7*7 -> 4096, bias), `fc6.relu`, `drop6`, `fc7`
/// (4096 -> 4096, bias), `fc7.relu`, `drop7`, `fc8` (4096 -> outputs, groups "fc8.weight" /
/// "fc8.bias"); outputs (N, outputs, 1, 1).

#include <cstdint>
#include <string>
#include <utility>

#include "nddr/backbones/heads.hpp"
#include "nddr/ops/linear.hpp"
#include "nddr/ops/pool.hpp"
#include "nddr/concepts/backbone.hpp"
#include "nddr/core/error.hpp"
#include "nddr/layers/linear.hpp"
#include "nddr/layers/pool.hpp"
#include "nddr/layers/sequential.hpp"

namespace nddr {

/// A `Linear` layer over (N, C, H, W) inputs of one fixed (C, H, W), whose shape error names
/// that size and the layer using it (e.g. "VGG16Classifier fc6 needs a 224 x 224 image").
template <class T, class D = Cpu>
class SpatialLinear {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward never reads the output (nddr/layers/layer_traits.hpp).
  static constexpr bool backward_reads_output = false;

  /// Maps (N, channels, height, width) to (N, out_features, 1, 1); `requirement` is appended
  /// to the shape error.
  SpatialLinear(std::int64_t channels, std::int64_t height, std::int64_t width,
                std::int64_t out_features, std::string requirement = {},
                LinearOptions opt = {})
      : c_(channels),
        h_(height),
        w_(width),
        requirement_(std::move(requirement)),
        linear_(channels * height * width, out_features, std::move(opt)) {
    check<OptionError>(c_ >= 1 && h_ >= 1 && w_ >= 1,
                       "nddr::SpatialLinear: channels, height, width must be >= 1, got ", c_,
                       ", ", h_, ", ", w_);
  }

  Shape output_shape(const Shape& in) const {
    check<ShapeError>(in.rank() == 4 && in.c() == c_ && in.h() == h_ && in.w() == w_,
                      "nddr::SpatialLinear: input has shape ", in, ", expected (N, ", c_,
                      ", ", h_, ", ", w_, ")", requirement_.empty() ? "" : "; ", requirement_);
    return linear_.output_shape(in);
  }
  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    linear_.declare(store, prefix);
  }
  void initialize(Rng& rng) { linear_.initialize(rng); }
  void set_training(bool on) { linear_.set_training(on); }
  bool training() const { return linear_.training(); }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    output_shape(x.shape());
    linear_.forward(ctx, x, y);
  }
  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D> y,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    linear_.backward(ctx, x, y, dy, dx);
  }

 private:
  std::int64_t c_, h_, w_;
  std::string requirement_;
  Linear<T, D> linear_;
};

namespace vgg16_classifier::detail {

/// VGG-16 stage `s` with 2x2/2 max pooling.
template <class T, class D>
Sequential<T, D> build_stage(int s, int convs, std::int64_t in, std::int64_t out) {
  Sequential<T, D> seq;
  const std::string n = std::to_string(s);
  for (int i = 1; i <= convs; ++i)
    backbones::detail::add_conv_bn_relu(seq, "conv" + n + "_" + std::to_string(i),
                                        i == 1 ? in : out, out, 3);
  seq.add("pool" + n, MaxPool2d<T, D>(Pool2dOptions{}.kernel(2).stride(2).same()));
  return seq;
}

template <int S, int Convs, std::int64_t In, std::int64_t Out>
struct Stage {
  static constexpr const char* name = S == 1   ? "stage1"
                                      : S == 2 ? "stage2"
                                      : S == 3 ? "stage3"
                                      : S == 4 ? "stage4"
                                               : "stage5";
  static constexpr std::int64_t in_channels = In, out_channels = Out, stride = 2;
  template <class T, class D>
  static Sequential<T, D> build() {
    return build_stage<T, D>(S, Convs, In, Out);
  }
};

}  // namespace vgg16_classifier::detail

/// The fully connected head of the ImageNet VGG-16 on a 7 x 7 feature map.
struct VGG16ClassifierHead {
  static constexpr const char* name = "vgg16_classifier";
  static constexpr std::int64_t feature_size = 7;  ///< pool5 size for a 224 x 224 image
  static constexpr std::int64_t hidden = 4096;

  template <class T, class D>
  static Sequential<T, D> build(std::int64_t in_channels, std::int64_t outputs) {
    Sequential<T, D> s;
    s.add("fc6", SpatialLinear<T, D>(in_channels, feature_size, feature_size, hidden,
                                     "nddr::VGG16Classifier needs a 224 x 224 input image"));
    s.add("fc6.relu", ReLU<T, D>());
    s.add("drop6", Dropout<T, D>(DropoutOptions{}.p(0.5)));
    s.add("fc7", Linear<T, D>(hidden, hidden));
    s.add("fc7.relu", ReLU<T, D>());
    s.add("drop7", Dropout<T, D>(DropoutOptions{}.p(0.5)));
    s.add("fc8", Linear<T, D>(hidden, outputs,
                              LinearOptions{}
                                  .weight_group(OutputConv2d<T, D>::weight_group)
                                  .bias_group(OutputConv2d<T, D>::bias_group)));
    return s;
  }
};

/// VGG-16 for image-level tasks (age, gender): stage channels 64, 128, 256, 512, 512, every
/// stage stride 2 (7 x 7 after stage 5 for a 224 x 224 input).
struct VGG16Classifier {
  static constexpr const char* name = "vgg16_classifier";
  static constexpr std::int64_t input_channels = 3;
  static constexpr std::int64_t input_size = 224;

  using Stage1 = vgg16_classifier::detail::Stage<1, 2, 3, 64>;
  using Stage2 = vgg16_classifier::detail::Stage<2, 2, 64, 128>;
  using Stage3 = vgg16_classifier::detail::Stage<3, 3, 128, 256>;
  using Stage4 = vgg16_classifier::detail::Stage<4, 3, 256, 512>;
  using Stage5 = vgg16_classifier::detail::Stage<5, 3, 512, 512>;

  using stages = StageList<Stage1, Stage2, Stage3, Stage4, Stage5>;
  using head = VGG16ClassifierHead;
};

}  // namespace nddr
