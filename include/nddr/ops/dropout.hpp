#pragma once
/// \file
/// Inverted dropout with a counter-based mask, the front door (mask and element bodies:
/// nddr/ops/math/dropout.hpp). Validates once, then runs `backend::Dropout<D>`.

#include <cstdint>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/dropout.hpp"

namespace nddr::ops {

/// y[i] = x[i] / (1 - p) if random_uniform(seed, first_counter + i) >= p, else 0.
/// p = 0 copies x. Throws OptionError unless 0 <= p < 1, ShapeError unless shapes match.
template <class T, class D>
void dropout_forward(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> x,
                     ViewOn<T, D> y, double p, std::uint64_t seed, std::uint64_t first_counter) {
  constexpr const char* who = "nddr::ops::dropout_forward";
  DropoutOptions::check_p(who, p);
  check_shape(who, "y", y.shape(), x.shape());
  backend::Dropout<D>::template dropout_forward<T>(ctx, x, y, p, seed, first_counter);
}

/// dx[i] += dy[i] / (1 - p) where the forward pass with the same (p, seed, first_counter) kept
/// element i (the mask is recomputed). An empty dx is skipped.
template <class T, class D>
void dropout_backward(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> dy,
                      ViewOn<T, D> dx, double p, std::uint64_t seed, std::uint64_t first_counter) {
  constexpr const char* who = "nddr::ops::dropout_backward";
  DropoutOptions::check_p(who, p);
  if (dx.empty()) return;
  check_shape(who, "dx", dx.shape(), dy.shape());
  backend::Dropout<D>::template dropout_backward<T>(ctx, dy, dx, p, seed, first_counter);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/dropout.hpp"
