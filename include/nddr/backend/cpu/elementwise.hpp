#pragma once
/// \file
/// CPU element-wise sums (front door: nddr/ops/elementwise.hpp).

#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/elementwise.hpp"

namespace nddr::ops::backend {

template <>
struct Elementwise<Cpu> {
  template <class T>
  static void accumulate(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y) {
    const T* xp = x.data();
    T* yp = y.data();
    nddr::detail::parallel_for(ctx, y.numel(), [=](std::int64_t i) { yp[i] += xp[i]; });
  }

  template <class T>
  static void add_relu(Context<Cpu>& ctx, TensorView<const T, Cpu> a, TensorView<const T, Cpu> b,
                       TensorView<T, Cpu> y) {
    const T* ap = a.data();
    const T* bp = b.data();
    T* yp = y.data();
    nddr::detail::parallel_for(ctx, y.numel(),
                               [=](std::int64_t i) { yp[i] = add_relu_element(ap[i], bp[i]); });
  }
};

}  // namespace nddr::ops::backend
