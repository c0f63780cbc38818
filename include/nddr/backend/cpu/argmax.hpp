#pragma once
/// \file
/// CPU arg-max over channels: out (N, H, W) = the channel index of the largest value of every
/// pixel of x (N, C, H, W), the first on ties (`ops::argmax_pixel`).

#include <cstdint>
#include <limits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/argmax.hpp"

namespace nddr::ops {

namespace detail {

/// Checks x (N, C, H, W) with 1 <= C <= INT32_MAX and out (N, H, W).
inline void check_argmax(const char* who, const Shape& x, const Shape& out) {
  check_rank4(who, "x", x);
  check<ShapeError>(x.c() >= 1 && x.c() <= std::numeric_limits<std::int32_t>::max(), who,
                    ": x has shape ", x, ", expected at least one channel");
  check_shape(who, "out", out, Shape{x.n(), x.h(), x.w()});
}

}  // namespace detail

/// out (N, H, W) = argmax over the channels of x (N, C, H, W), the first channel on ties.
template <class T>
void argmax_channels(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                     TensorView<std::int32_t, Cpu> out) {
  detail::check_argmax("nddr::ops::argmax_channels", x.shape(), out.shape());
  const std::int64_t channels = x.shape().c(), plane = x.shape().h() * x.shape().w();
  const T* xp = x.data();
  std::int32_t* op = out.data();
  nddr::detail::parallel_for(ctx, x.shape().n() * plane, [=](std::int64_t p) {
    const std::int64_t n = p / plane, i = p % plane;
    op[p] = argmax_pixel(xp + n * channels * plane + i, channels, plane);
  });
}

}  // namespace nddr::ops
