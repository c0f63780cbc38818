#pragma once
// The CUDA tests' skip check and the BF16 setting guard, shared by every file in tests/cuda.
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

}  // namespace nddr_test
