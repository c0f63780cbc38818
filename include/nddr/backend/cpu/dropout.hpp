#pragma once
/// \file
/// CPU inverted dropout with a counter-based mask (front door: nddr/ops/dropout.hpp).

#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/dropout.hpp"

namespace nddr::ops::backend {

template <>
struct Dropout<Cpu> {
  template <class T>
  static void dropout_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y,
                              double p, std::uint64_t seed, std::uint64_t first_counter) {
    const T* xp = x.data();
    T* yp = y.data();
    if (p == 0.0) {
      nddr::detail::parallel_for(ctx, x.numel(), [=](std::int64_t i) { yp[i] = xp[i]; });
      return;
    }
    const T keep_prob = static_cast<T>(1.0 - p);
    nddr::detail::parallel_for(ctx, x.numel(), [=](std::int64_t i) {
      const bool keep = dropout_keep(seed, first_counter + static_cast<std::uint64_t>(i), p);
      yp[i] = dropout_element(xp[i], keep, keep_prob);
    });
  }

  template <class T>
  static void dropout_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> dy,
                               TensorView<T, Cpu> dx, double p, std::uint64_t seed,
                               std::uint64_t first_counter) {
    const T* dyp = dy.data();
    T* dxp = dx.data();
    if (p == 0.0) {
      nddr::detail::parallel_for(ctx, dy.numel(), [=](std::int64_t i) { dxp[i] += dyp[i]; });
      return;
    }
    const T keep_prob = static_cast<T>(1.0 - p);
    nddr::detail::parallel_for(ctx, dy.numel(), [=](std::int64_t i) {
      const bool keep = dropout_keep(seed, first_counter + static_cast<std::uint64_t>(i), p);
      dxp[i] += dropout_element(dyp[i], keep, keep_prob);
    });
  }
};

}  // namespace nddr::ops::backend
