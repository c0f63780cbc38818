#pragma once
/// \file
/// The concat-free NDDR mix, the front door: the K 1x1 convolutions of an NDDR layer over the
/// concatenated task features, z_k = sum_j W_kj x_j [+ b_k], computed without building the
/// concatenation (W_k (C, K C, 1, 1) split into its K (C, C) blocks W_kj). Validates once, then
/// runs `backend::NddrMix<D>`. Implemented on the CPU (backend/cpu/nddr_mix.hpp); other devices
/// run the layer's concatenate + Conv2d formulation.

#include <cstddef>
#include <span>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"

namespace nddr::ops {

namespace detail {

/// Checks K >= 1 task inputs of one shape (N, C, H, W), `what` (K of them, or one when
/// `per_task` is false) of that shape too, and a kernel w (C, K C, 1, 1).
template <class X, class V>
void check_nddr_mix(const char* who, std::span<const X> xs, const char* what,
                    std::span<const V> outs, std::size_t expected_outs) {
  check<ShapeError>(!xs.empty(), who, ": needs at least one task input");
  const Shape& s = xs[0].shape();
  check_rank4(who, "x", s);
  for (std::size_t k = 0; k < xs.size(); ++k) check_shape(who, "x", xs[k].shape(), s);
  check<ShapeError>(outs.size() == expected_outs, who, ": expected ", expected_outs, " ", what,
                    " views, got ", outs.size());
  for (std::size_t k = 0; k < outs.size(); ++k)
    if (!outs[k].empty()) check_shape(who, what, outs[k].shape(), s);
}

inline void check_nddr_kernel(const char* who, const Shape& w, const Shape& x, std::size_t tasks) {
  check_shape(who, "w", w, Shape::nchw(x.c(), static_cast<std::int64_t>(tasks) * x.c(), 1, 1));
}

}  // namespace detail

/// z_k = sum_j W_kj x_j [+ b_k] for every task k (assigned). xs and zs: K views (N, C, H, W);
/// ws: K kernels (C, K C, 1, 1); bs: K biases (C), or K empty views for none.
template <class T, class D>
void nddr_mix_forward(Context<D>& ctx, std::span<const ViewOn<const T, D>> xs,
                      std::span<const ViewOn<const T, D>> ws,
                      std::span<const ViewOn<const T, D>> bs, std::span<const ViewOn<T, D>> zs) {
  constexpr const char* kWho = "nddr::ops::nddr_mix_forward";
  detail::check_nddr_mix(kWho, xs, "z", zs, xs.size());
  check<ShapeError>(ws.size() == xs.size() && bs.size() == xs.size(), kWho, ": expected ",
                    xs.size(), " kernels and biases, got ", ws.size(), " and ", bs.size());
  for (std::size_t k = 0; k < ws.size(); ++k) {
    detail::check_nddr_kernel(kWho, ws[k].shape(), xs[0].shape(), xs.size());
    if (!bs[k].empty()) check_shape(kWho, "b", bs[k].shape(), Shape{xs[0].shape().c()});
  }
  backend::NddrMix<D>::template nddr_mix_forward<T>(ctx, xs, ws, bs, zs);
}

/// Task k's share of the backward pass, for g = dL/dz_k (N, C, H, W): dw = sum_n g_n X_n^T
/// (C, K C, 1, 1) and db = sum of g per channel (C), assigned (db skipped when empty);
/// dx_j += W_kj^T g for every non-empty dx_j.
template <class T, class D>
void nddr_mix_backward(Context<D>& ctx, std::span<const ViewOn<const T, D>> xs,
                       ViewOn<const T, D> w, ViewOn<const T, D> g, ViewOn<T, D> dw, ViewOn<T, D> db,
                       std::span<const ViewOn<T, D>> dxs) {
  constexpr const char* kWho = "nddr::ops::nddr_mix_backward";
  detail::check_nddr_mix(kWho, xs, "dx", dxs, xs.size());
  const Shape& s = xs[0].shape();
  detail::check_nddr_kernel(kWho, w.shape(), s, xs.size());
  check_shape(kWho, "g", g.shape(), s);
  check_shape(kWho, "dw", dw.shape(), w.shape());
  if (!db.empty()) check_shape(kWho, "db", db.shape(), Shape{s.c()});
  backend::NddrMix<D>::template nddr_mix_backward<T>(ctx, xs, w, g, dw, db, dxs);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/nddr_mix.hpp"
