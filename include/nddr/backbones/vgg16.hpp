#pragma once
/// \file
/// `nddr::VGG16`: the DeepLab-VGG16-LargeFOV task column as coded for NDDR-CNN (paper-spec
/// §2.1): BatchNorm (TF-slim settings) after every conv except fc8, no conv biases except fc8,
/// TF 'SAME' padding, output stride 8.
///
/// Stage s (a `Sequential`) has, in order, for each conv i: `conv{s}_{i}` (3x3; dilation 2 in
/// stage 5), `conv{s}_{i}.bn` (BatchNorm2d with the ReLU fused); then `pool{s}` (max 3x3 SAME, stride 2 for
/// s = 1..3, stride 1 for s = 4, 5) and, in stage 5 only, `pool5a` (avg 3x3 stride 1 SAME,
/// padding excluded). The head is `LargeFovHead`.

#include <cstdint>
#include <string>

#include "nddr/backbones/heads.hpp"
#include "nddr/ops/pool.hpp"
#include "nddr/concepts/backbone.hpp"
#include "nddr/layers/pool.hpp"
#include "nddr/layers/sequential.hpp"

namespace nddr {

namespace vgg16::detail {

/// Stage `s` of VGG16: `convs` 3x3 convs `in` -> `out` (then `out` -> `out`), then the pools.
template <class T, class D>
Sequential<T, D> build_stage(int s, int convs, std::int64_t in, std::int64_t out,
                             std::int64_t dilation, std::int64_t pool_stride, bool avg_pool) {
  Sequential<T, D> seq;
  const std::string n = std::to_string(s);
  for (int i = 1; i <= convs; ++i)
    backbones::detail::add_conv_bn_relu(seq, "conv" + n + "_" + std::to_string(i),
                                        i == 1 ? in : out, out, 3,
                                        Conv2dOptions{}.dilation(dilation));
  seq.add("pool" + n, MaxPool2d<T, D>(Pool2dOptions{}.kernel(3).stride(pool_stride).same()));
  if (avg_pool) seq.add("pool" + n + "a", AvgPool2d<T, D>(Pool2dOptions{}.kernel(3).same()));
  return seq;
}

/// The stage-spec members of VGG16 stage `S`: `Convs` convs `In` -> `Out` channels with the
/// given dilation, max pooling with stride `Stride` (also the stage's stride), `AvgPool` adds the
/// stride-1 average pool.
template <int S, int Convs, std::int64_t In, std::int64_t Out, std::int64_t Dilation,
          std::int64_t Stride, bool AvgPool>
struct Stage {
  static constexpr const char* name = S == 1   ? "stage1"
                                      : S == 2 ? "stage2"
                                      : S == 3 ? "stage3"
                                      : S == 4 ? "stage4"
                                               : "stage5";
  static constexpr std::int64_t in_channels = In, out_channels = Out, stride = Stride;
  template <class T, class D>
  static Sequential<T, D> build() {
    return build_stage<T, D>(S, Convs, In, Out, Dilation, Stride, AvgPool);
  }
};

}  // namespace vgg16::detail

/// DeepLab-VGG16-LargeFOV (per-task column of NDDR-CNN). Stage channels 64, 128, 256, 512,
/// 512; strides 2, 2, 2, 1, 1 (41 x 41 outputs for a 321 x 321 input).
struct VGG16 {
  static constexpr const char* name = "vgg16";
  static constexpr std::int64_t input_channels = 3;

  /// conv1_1, conv1_2, pool1.
  struct Stage1 : vgg16::detail::Stage<1, 2, 3, 64, 1, 2, false> {};
  /// conv2_1, conv2_2, pool2.
  struct Stage2 : vgg16::detail::Stage<2, 2, 64, 128, 1, 2, false> {};
  /// conv3_1..conv3_3, pool3.
  struct Stage3 : vgg16::detail::Stage<3, 3, 128, 256, 1, 2, false> {};
  /// conv4_1..conv4_3, pool4 (stride 1: output stride 8 is kept from here on).
  struct Stage4 : vgg16::detail::Stage<4, 3, 256, 512, 1, 1, false> {};
  /// conv5_1..conv5_3 (dilation 2), pool5 (max), pool5a (avg).
  struct Stage5 : vgg16::detail::Stage<5, 3, 512, 512, 2, 1, true> {};

  using stages = StageList<Stage1, Stage2, Stage3, Stage4, Stage5>;
  using head = LargeFovHead;
};

}  // namespace nddr
