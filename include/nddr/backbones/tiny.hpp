#pragma once
/// \file
/// `nddr::BasicTinyNet<InChannels>`: a five-stage column shaped like `VGG16` (strides 2, 2, 2,
/// 1, 1) with few channels (8, 16, 32, 32, 32), for tests and demos. Aliases: `TinyNet` (RGB)
/// and `TinyNet1` (one channel, e.g. Fashion-MNIST).
///
/// Stage s has `conv{s}_1` (3x3 SAME, no bias), `conv{s}_1.bn` (ReLU fused), `pool{s}`
/// (max 3x3 SAME). The head is `TinyHead`.

#include <cstdint>
#include <string>

#include "nddr/backbones/heads.hpp"
#include "nddr/ops/pool.hpp"
#include "nddr/concepts/backbone.hpp"
#include "nddr/layers/pool.hpp"
#include "nddr/layers/sequential.hpp"

namespace nddr {

namespace tiny::detail {

/// One TinyNet stage: conv{S}_1 (+ bn, relu) and pool{S}.
template <int S, std::int64_t In, std::int64_t Out, std::int64_t Stride>
struct TinyStage {
  static constexpr const char* name = S == 1   ? "stage1"
                                      : S == 2 ? "stage2"
                                      : S == 3 ? "stage3"
                                      : S == 4 ? "stage4"
                                               : "stage5";
  static constexpr std::int64_t in_channels = In, out_channels = Out, stride = Stride;

  template <class T, class D>
  static Sequential<T, D> build() {
    Sequential<T, D> seq;
    const std::string n = std::to_string(S);
    backbones::detail::add_conv_bn_relu(seq, "conv" + n + "_1", In, Out, 3);
    seq.add("pool" + n, MaxPool2d<T, D>(Pool2dOptions{}.kernel(3).stride(Stride).same()));
    return seq;
  }
};

}  // namespace tiny::detail

/// A tiny VGG16-like column taking `InChannels` input channels.
template <std::int64_t InChannels>
struct BasicTinyNet {
  static_assert(InChannels >= 1, "nddr::BasicTinyNet: InChannels must be >= 1");
  static constexpr const char* name = "tiny";
  static constexpr std::int64_t input_channels = InChannels;

  using Stage1 = tiny::detail::TinyStage<1, InChannels, 8, 2>;
  using Stage2 = tiny::detail::TinyStage<2, 8, 16, 2>;
  using Stage3 = tiny::detail::TinyStage<3, 16, 32, 2>;
  using Stage4 = tiny::detail::TinyStage<4, 32, 32, 1>;
  using Stage5 = tiny::detail::TinyStage<5, 32, 32, 1>;

  using stages = StageList<Stage1, Stage2, Stage3, Stage4, Stage5>;
  using head = TinyHead;
};

/// TinyNet for RGB inputs.
using TinyNet = BasicTinyNet<3>;
/// TinyNet for one-channel inputs (Fashion-MNIST).
using TinyNet1 = BasicTinyNet<1>;

/// The demo's head: fc6 (3x3, dilation 2, 64 channels) + BN + ReLU and fc8, without dropout.
/// Dropout on a narrow head zeroes every channel of some pixels (p = 0.75^16 = 1% with TinyHead's
/// 16), giving exactly-zero predictions whose normalised (surface-normal) loss has an unbounded
/// gradient; at the paper's 1024 channels that never happens.
struct FashionHead {
  static constexpr const char* name = "fashion";
  static constexpr std::int64_t hidden_channels = 64;

  template <class T, class D>
  static Sequential<T, D> build(std::int64_t in_channels, std::int64_t outputs) {
    Sequential<T, D> s;
    backbones::detail::add_conv_bn_relu(s, "fc6", in_channels, hidden_channels, 3,
                                        Conv2dOptions{}.dilation(2));
    s.add("fc8", OutputConv2d<T, D>(hidden_channels, outputs, 1));
    return s;
  }
};

/// The demo's dense backbone: TinyNet's layers with output stride 4 (strides 2, 2, 1, 1, 1) and
/// channels 16, 32, 32, 32, 32, on one-channel images, so that a 48 x 48 Fashion canvas keeps a
/// 12 x 12 output map (TinyNet's stride 8 leaves 6 x 6, too coarse for per-pixel tasks).
struct FashionNet {
  static constexpr const char* name = "fashion";
  static constexpr std::int64_t input_channels = 1;
  using Stage1 = tiny::detail::TinyStage<1, 1, 16, 2>;
  using Stage2 = tiny::detail::TinyStage<2, 16, 32, 2>;
  using Stage3 = tiny::detail::TinyStage<3, 32, 32, 1>;
  using Stage4 = tiny::detail::TinyStage<4, 32, 32, 1>;
  using Stage5 = tiny::detail::TinyStage<5, 32, 32, 1>;
  using stages = StageList<Stage1, Stage2, Stage3, Stage4, Stage5>;
  using head = FashionHead;
};

}  // namespace nddr
