#pragma once
/// \file
/// L2 normalisation over the channels of every pixel, as PyTorch `F.normalize(x, dim=1)`:
/// y = x / max(||x||_2, eps). Per-pixel bodies shared by every backend: a pixel's C values sit
/// `stride` elements apart (stride = H * W in an (N, C, H, W) tensor).

#include <cmath>
#include <cstdint>

#include "nddr/core/macros.hpp"
#include "nddr/core/shape.hpp"

namespace nddr {

/// Options of the L2 normalisation.
struct L2NormalizeOptions {
  /// Lower bound of the divisor, > 0 (default 1e-12, as PyTorch).
  L2NormalizeOptions& eps(double e) {
    eps_ = e;
    return *this;
  }
  double eps() const { return eps_; }

 private:
  double eps_ = 1e-12;
};

namespace ops {

/// Flat offset of channel 0 of pixel `p` (p = n * plane + h * W + w) in an (N, C, H, W)
/// tensor with `channels` = C and `plane` = H * W; its channels follow `plane` elements apart.
NDDR_HOST_DEVICE constexpr std::int64_t pixel_offset(std::int64_t p, std::int64_t channels,
                                                     std::int64_t plane) {
  return (p / plane) * channels * plane + p % plane;
}

/// ||x||_2 of one pixel's `channels` values.
template <class T>
NDDR_HOST_DEVICE inline T l2_norm_pixel(const T* x, std::int64_t channels, std::int64_t stride) {
  T s = T(0);
  for (std::int64_t c = 0; c < channels; ++c) s += x[c * stride] * x[c * stride];
  return std::sqrt(s);
}

/// y = x / max(||x||, eps) for one pixel; x and y share the stride (y may alias x).
template <class T>
NDDR_HOST_DEVICE inline void l2_normalize_pixel(const T* x, T* y, std::int64_t channels,
                                                std::int64_t stride, T eps) {
  const T n = l2_norm_pixel(x, channels, stride);
  const T inv = T(1) / (n >= eps ? n : eps);
  for (std::int64_t c = 0; c < channels; ++c) y[c * stride] = x[c * stride] * inv;
}

/// dx += coeff * (dy/dx)^T gy for one pixel of y = x / max(||x||, eps), where gy is the
/// gradient with respect to y (its own stride `gy_stride`; dx shares the stride of x):
/// (gy - y (y . gy)) / ||x|| when ||x|| >= eps, gy / eps below (the clamp passes no gradient
/// to the norm, as in PyTorch).
template <class T>
NDDR_HOST_DEVICE inline void l2_normalize_backward_pixel(const T* x, const T* gy,
                                                         std::int64_t gy_stride, T* dx,
                                                         std::int64_t channels, std::int64_t stride,
                                                         T eps, T coeff = T(1)) {
  const T n = l2_norm_pixel(x, channels, stride);
  if (n < eps) {
    for (std::int64_t c = 0; c < channels; ++c) dx[c * stride] += coeff * gy[c * gy_stride] / eps;
    return;
  }
  const T inv = T(1) / n;
  T dot = T(0);  // y . gy
  for (std::int64_t c = 0; c < channels; ++c) dot += x[c * stride] * inv * gy[c * gy_stride];
  for (std::int64_t c = 0; c < channels; ++c)
    dx[c * stride] += coeff * (gy[c * gy_stride] - x[c * stride] * inv * dot) * inv;
}

/// (C, H * W) of an (N, C, H, W) or (N, C) tensor (a rank-2 tensor is one pixel per item);
/// the front door has checked the rank.
inline void l2_channels_and_plane(const Shape& s, std::int64_t& channels, std::int64_t& plane) {
  channels = s[1];
  plane = s.rank() == 4 ? s.h() * s.w() : 1;
}

}  // namespace ops
}  // namespace nddr
