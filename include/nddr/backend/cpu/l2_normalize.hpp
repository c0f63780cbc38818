#pragma once
/// \file
/// CPU L2 normalisation over channels: y = x / max(||x||_2, eps) per pixel.

#include <cmath>
#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/l2_normalize.hpp"

namespace nddr::ops {

namespace detail {

/// (C, H * W) of an (N, C, H, W) or (N, C) tensor (a rank-2 tensor is one pixel per item).
inline void channels_and_plane(const char* who, const Shape& s, std::int64_t& channels,
                               std::int64_t& plane) {
  check<ShapeError>(s.rank() == 2 || s.rank() == 4, who, ": x has shape ", s,
                    ", expected rank 4 (N, C, H, W) or rank 2 (N, C)");
  channels = s[1];
  plane = s.rank() == 4 ? s.h() * s.w() : 1;
}

inline void check_l2_normalize_options(const char* who, const L2NormalizeOptions& opt) {
  check<OptionError>(opt.eps() > 0.0 && std::isfinite(opt.eps()), who,
                     ": eps must be positive and finite, got ", opt.eps());
}

}  // namespace detail

/// y = x / max(||x||_2, eps) over the channels of every pixel. x is (N, C, H, W) or (N, C);
/// y has the shape of x and may alias it.
template <class T>
void l2_normalize_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y,
                          const L2NormalizeOptions& opt = {}) {
  constexpr const char* kWho = "nddr::ops::l2_normalize_forward";
  detail::check_l2_normalize_options(kWho, opt);
  std::int64_t channels = 0, plane = 0;
  detail::channels_and_plane(kWho, x.shape(), channels, plane);
  check_shape(kWho, "y", y.shape(), x.shape());
  const T* xp = x.data();
  T* yp = y.data();
  const T eps = static_cast<T>(opt.eps());
  const std::int64_t pixels = channels == 0 ? 0 : x.numel() / channels;
  nddr::detail::parallel_for(ctx, pixels, [=](std::int64_t p) {
    const std::int64_t o = pixel_offset(p, channels, plane);
    l2_normalize_pixel(xp + o, yp + o, channels, plane, eps);
  });
}

/// dx += (dy/dx)^T dy for y = l2_normalize(x) (see l2_normalize_backward_pixel). An empty dx
/// is skipped.
template <class T>
void l2_normalize_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                           TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx,
                           const L2NormalizeOptions& opt = {}) {
  if (dx.empty()) return;
  constexpr const char* kWho = "nddr::ops::l2_normalize_backward";
  detail::check_l2_normalize_options(kWho, opt);
  std::int64_t channels = 0, plane = 0;
  detail::channels_and_plane(kWho, x.shape(), channels, plane);
  check_shape(kWho, "dy", dy.shape(), x.shape());
  check_shape(kWho, "dx", dx.shape(), x.shape());
  const T* xp = x.data();
  const T* dyp = dy.data();
  T* dxp = dx.data();
  const T eps = static_cast<T>(opt.eps());
  const std::int64_t pixels = channels == 0 ? 0 : x.numel() / channels;
  nddr::detail::parallel_for(ctx, pixels, [=](std::int64_t p) {
    const std::int64_t o = pixel_offset(p, channels, plane);
    l2_normalize_backward_pixel(xp + o, dyp + o, plane, dxp + o, channels, plane, eps);
  });
}

}  // namespace nddr::ops
