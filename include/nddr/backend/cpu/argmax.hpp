#pragma once
/// \file
/// CPU arg-max over channels (front door: nddr/ops/argmax.hpp).

#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/argmax.hpp"

namespace nddr::ops::backend {

template <>
struct Argmax<Cpu> {
  template <class T>
  static void argmax_channels(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                              TensorView<std::int32_t, Cpu> out) {
    const std::int64_t channels = x.shape().c(), plane = x.shape().h() * x.shape().w();
    const T* xp = x.data();
    std::int32_t* op = out.data();
    nddr::detail::parallel_for(ctx, x.shape().n() * plane, [=](std::int64_t p) {
      const std::int64_t n = p / plane, i = p % plane;
      op[p] = argmax_pixel(xp + n * channels * plane + i, channels, plane);
    });
  }
};

}  // namespace nddr::ops::backend
