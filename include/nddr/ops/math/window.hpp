#pragma once
/// \file
/// Sliding-window geometry shared by convolution and pooling: TensorFlow's 'SAME' padding rule.

#include <cstdint>

namespace nddr::detail {

/// One axis of a 'SAME'-padded window.
struct SameAxis {
  std::int64_t out;     ///< ceil(in / stride)
  std::int64_t before;  ///< padding cells before the input
  std::int64_t after;   ///< padding cells after it (one more than before when the total is odd)
};

/// TensorFlow 'SAME' padding of an axis of `in` (> 0) cells, a window spanning `extent` cells
/// (kernel size, or (k - 1) * dilation + 1) and `stride` (>= 1): out = ceil(in / stride) and
/// the total padding max((out - 1) * stride + extent - in, 0), its odd cell after.
inline SameAxis same_axis(std::int64_t in, std::int64_t extent, std::int64_t stride) {
  const std::int64_t out = (in + stride - 1) / stride;
  const std::int64_t total = (out - 1) * stride + extent - in;
  const std::int64_t before = total > 0 ? total / 2 : 0;
  return {out, before, total > 0 ? total - before : 0};
}

}  // namespace nddr::detail
