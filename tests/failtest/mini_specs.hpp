// Test-only backbone specs for the MultiTask must-not-compile tests.
#pragma once
#include <nddr/nddr.hpp>
#include <nddr/multitask/multitask.hpp>

template <std::int64_t In, std::int64_t Out, std::int64_t Stride>
struct FtStage {
  static constexpr const char* name = "ft_stage";
  static constexpr std::int64_t in_channels = In;
  static constexpr std::int64_t out_channels = Out;
  static constexpr std::int64_t stride = Stride;
  template <class T, class D>
  static nddr::Sequential<T, D> build() {
    nddr::Sequential<T, D> s;
    s.add("conv", nddr::Conv2d<T, D>(In, Out, 3, nddr::Conv2dOptions{}.padding(1)));
    return s;
  }
};
struct FtHead {
  static constexpr const char* name = "ft_head";
  template <class T, class D>
  static nddr::Sequential<T, D> build(std::int64_t in, std::int64_t outputs) {
    nddr::Sequential<T, D> s;
    s.add("fc8", nddr::Conv2d<T, D>(in, outputs, 1));
    return s;
  }
};
struct ThreeStageNet {
  static constexpr const char* name = "three";
  static constexpr std::int64_t input_channels = 3;
  using stages = nddr::StageList<FtStage<3, 8, 2>, FtStage<8, 16, 2>, FtStage<16, 16, 1>>;
  using head = FtHead;
};
struct TwoStageNet {
  static constexpr const char* name = "two";
  static constexpr std::int64_t input_channels = 3;
  using stages = nddr::StageList<FtStage<3, 8, 2>, FtStage<8, 16, 2>>;
  using head = FtHead;
};
struct WideNet {
  static constexpr const char* name = "wide";
  static constexpr std::int64_t input_channels = 3;
  using stages = nddr::StageList<FtStage<3, 8, 2>, FtStage<8, 32, 2>, FtStage<32, 16, 1>>;
  using head = FtHead;
};
