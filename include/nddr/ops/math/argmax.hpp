#pragma once
/// \file
/// Arg-max over the channels of every pixel: the segmentation prediction of the paper's
/// evaluation (paper-spec §7.1), as NumPy/TF `argmax(axis=1)`. The per-pixel body is shared by
/// every backend: a pixel's C values sit `stride` elements apart (stride = H * W).

#include <cstdint>

#include "nddr/core/macros.hpp"

namespace nddr::ops {

/// The index of the largest of one pixel's `channels` (>= 1) values; the first on ties. A NaN
/// never replaces the running maximum (every comparison with it is false), so a NaN channel 0
/// wins and other NaN channels never do, as in the CPU metric's sweep.
template <class T>
NDDR_HOST_DEVICE inline std::int32_t argmax_pixel(const T* x, std::int64_t channels,
                                                  std::int64_t stride) {
  T best = x[0];
  std::int32_t arg = 0;
  for (std::int64_t c = 1; c < channels; ++c) {
    const T v = x[c * stride];
    if (v > best) {
      best = v;
      arg = static_cast<std::int32_t>(c);
    }
  }
  return arg;
}

}  // namespace nddr::ops
