#pragma once
// The CUDA tests' skip check and convolution-setting guards (algorithm choice, BF16), shared by every file in tests/cuda.
#include <catch2/catch.hpp>

#include <nddr/cuda.hpp>

#include "../support/bf16.hpp"  // nddr_test::ConvBf16Setting

namespace nddr_test {

/// True (and a Catch2 warning saying so) when this machine has no CUDA device, so the calling
/// test returns early instead of failing: CI and most development machines have none.
inline bool no_device() {
  if (nddr::cuda_device_count() > 0) return false;
  WARN("no CUDA device: skipped");
  return true;
}

/// Sets the process-wide choice of cuDNN convolution algorithms while alive and restores the
/// previous one: `deterministic` (same bits run to run) and `benchmark` (timed choice).
struct ConvAlgoSettings {
  bool deterministic_before = nddr::cuda::conv_deterministic();
  bool benchmark_before = nddr::cuda::conv_benchmark();
  ConvAlgoSettings(bool deterministic, bool benchmark) {
    nddr::cuda::set_conv_deterministic(deterministic);
    nddr::cuda::set_conv_benchmark(benchmark);
  }
  ~ConvAlgoSettings() {
    nddr::cuda::set_conv_deterministic(deterministic_before);
    nddr::cuda::set_conv_benchmark(benchmark_before);
  }
  ConvAlgoSettings(const ConvAlgoSettings&) = delete;
  ConvAlgoSettings& operator=(const ConvAlgoSettings&) = delete;
};

}  // namespace nddr_test
