#pragma once
/// \file
/// CPU L2 normalisation over channels (front door: nddr/ops/l2_normalize.hpp).

#include <cmath>
#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/l2_normalize.hpp"

namespace nddr::ops::backend {

template <>
struct L2Normalize<Cpu> {
  template <class T>
  static void l2_normalize_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                                   TensorView<T, Cpu> y, const L2NormalizeOptions& opt) {
    std::int64_t channels = 0, plane = 0;
    l2_channels_and_plane(x.shape(), channels, plane);
    const T* xp = x.data();
    T* yp = y.data();
    const T eps = static_cast<T>(opt.eps());
    const std::int64_t pixels = channels == 0 ? 0 : x.numel() / channels;
    nddr::detail::parallel_for(ctx, pixels, [=](std::int64_t p) {
      const std::int64_t o = pixel_offset(p, channels, plane);
      l2_normalize_pixel(xp + o, yp + o, channels, plane, eps);
    });
  }

  template <class T>
  static void l2_normalize_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                                    TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx,
                                    const L2NormalizeOptions& opt) {
    std::int64_t channels = 0, plane = 0;
    l2_channels_and_plane(x.shape(), channels, plane);
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
};

}  // namespace nddr::ops::backend
