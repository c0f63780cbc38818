#pragma once
/// \file
/// CPU subspace mixing of the cross-stitch and sluice layers (front door:
/// nddr/ops/subspace_mix.hpp): plain loops, parallel over (item, subspace) pairs.

#include <cstdint>
#include <span>

#include "nddr/core/context.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/subspace_mix.hpp"

namespace nddr::ops::backend {

template <>
struct SubspaceMix<Cpu> {
  /// y_p = sum_q A[p][q] x_q over the P subspace tensors; A is (P, P), row-major. Assigned.
  template <class T>
  static void subspace_mix_forward(Context<Cpu>& ctx, const nddr::detail::SubspaceLayout& l,
                                   std::span<const TensorView<const T, Cpu>> xs, const T* a,
                                   std::span<const TensorView<T, Cpu>> ys) {
    const std::int64_t P = l.count;
    nddr::detail::parallel_for(ctx, l.batch * P, [&](std::int64_t job) {
      const std::int64_t n = job / P, p = job % P;
      T* y = ys[l.task(p)].data() + l.offset(p, n);
      for (std::int64_t r = 0; r < l.size; ++r) y[r] = T(0);
      for (std::int64_t q = 0; q < P; ++q) {
        const T w = a[p * P + q];
        const T* x = xs[l.task(q)].data() + l.offset(q, n);
        for (std::int64_t r = 0; r < l.size; ++r) y[r] += w * x[r];
      }
    });
  }

  /// dA[p][q] = <dy_p, x_q> (assigned), dx_q += sum_p A[p][q] dy_p for every non-empty dx.
  template <class T>
  static void subspace_mix_backward(Context<Cpu>& ctx, const nddr::detail::SubspaceLayout& l,
                                    std::span<const TensorView<const T, Cpu>> xs,
                                    std::span<const TensorView<const T, Cpu>> dys, const T* a,
                                    T* da, std::span<const TensorView<T, Cpu>> dxs) {
    const std::int64_t P = l.count;
    // Accumulated in double: each entry sums N * (C / S) * H * W products.
    nddr::detail::parallel_for(ctx, P * P, [&](std::int64_t pq) {
      const std::int64_t p = pq / P, q = pq % P;
      double s = 0.0;
      for (std::int64_t n = 0; n < l.batch; ++n) {
        const T* dy = dys[l.task(p)].data() + l.offset(p, n);
        const T* x = xs[l.task(q)].data() + l.offset(q, n);
        for (std::int64_t r = 0; r < l.size; ++r)
          s += static_cast<double>(dy[r]) * static_cast<double>(x[r]);
      }
      da[pq] = static_cast<T>(s);
    });
    nddr::detail::parallel_for(ctx, l.batch * P, [&](std::int64_t job) {
      const std::int64_t n = job / P, q = job % P;
      if (dxs[l.task(q)].empty()) return;
      T* dx = dxs[l.task(q)].data() + l.offset(q, n);
      for (std::int64_t p = 0; p < P; ++p) {
        const T w = a[p * P + q];
        const T* dy = dys[l.task(p)].data() + l.offset(p, n);
        for (std::int64_t r = 0; r < l.size; ++r) dx[r] += w * dy[r];
      }
    });
  }
};

}  // namespace nddr::ops::backend
