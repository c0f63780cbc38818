#pragma once
/// \file
/// CPU ReLU (front door: nddr/ops/activation.hpp).

#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/activation.hpp"

namespace nddr::ops::backend {

template <>
struct Activation<Cpu> {
  template <class T>
  static void relu_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y) {
    const T* xp = x.data();
    T* yp = y.data();
    nddr::detail::parallel_for(ctx, x.numel(),
                               [=](std::int64_t i) { yp[i] = relu_element(xp[i]); });
  }

  template <class T>
  static void relu_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                            TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx) {
    const T* xp = x.data();
    const T* dyp = dy.data();
    T* dxp = dx.data();
    nddr::detail::parallel_for(
        ctx, x.numel(), [=](std::int64_t i) { relu_backward_element(xp[i], dyp[i], dxp[i]); });
  }

  template <class T>
  static void relu_gradient(Context<Cpu>& ctx, TensorView<const T, Cpu> y,
                            TensorView<const T, Cpu> dy, TensorView<T, Cpu> g) {
    const T* yp = y.data();
    const T* dyp = dy.data();
    T* gp = g.data();
    nddr::detail::parallel_for(ctx, y.numel(),
                               [=](std::int64_t i) { gp[i] = ops::relu_pass(yp[i], dyp[i]); });
  }
};

}  // namespace nddr::ops::backend
