#pragma once
/// \file
/// CPU inverted dropout with a counter-based mask (see nddr/ops/dropout.hpp).

#include <cstdint>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/dropout.hpp"

namespace nddr::ops {

/// y[i] = x[i] / (1 - p) if random_uniform(seed, first_counter + i) >= p, else 0.
/// p = 0 copies x. Throws OptionError unless 0 <= p < 1, ShapeError unless shapes match.
template <class T>
void dropout_forward(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> x,
                     TensorView<T, Cpu> y, double p, std::uint64_t seed,
                     std::uint64_t first_counter) {
  constexpr const char* who = "nddr::ops::dropout_forward";
  DropoutOptions::check_p(who, p);
  check_shape(who, "y", y.shape(), x.shape());
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

/// dx[i] += dy[i] / (1 - p) where the forward pass with the same (p, seed, first_counter) kept
/// element i (the mask is recomputed). An empty dx is skipped.
template <class T>
void dropout_backward(Context<Cpu>& ctx, std::type_identity_t<TensorView<const T, Cpu>> dy,
                      TensorView<T, Cpu> dx, double p, std::uint64_t seed,
                      std::uint64_t first_counter) {
  constexpr const char* who = "nddr::ops::dropout_backward";
  DropoutOptions::check_p(who, p);
  if (dx.empty()) return;
  check_shape(who, "dx", dx.shape(), dy.shape());
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

}  // namespace nddr::ops
