#pragma once
/// \file
/// Subspace mixing, the op of the cross-stitch and sluice layers, the front door (layout:
/// nddr/ops/math/subspace_mix.hpp): y_p = sum_q A[p][q] x_q over the P = K S subspace tensors.
/// Validates once, then runs `backend::SubspaceMix<D>`.

#include <cstddef>
#include <span>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/subspace_mix.hpp"

namespace nddr::ops {

namespace detail {

/// Checks that there is one view per task of the layout.
template <class V>
void check_subspace_views(const char* who, const char* what, const nddr::detail::SubspaceLayout& l,
                          std::span<const V> views) {
  const auto tasks = static_cast<std::size_t>(l.count / l.subspaces);
  check<ShapeError>(views.size() == tasks, who, ": expected ", tasks, " ", what, " views, got ",
                    views.size());
}

}  // namespace detail

/// y_p = sum_q A[p][q] x_q over the P subspace tensors; A is (P, P), row-major, on the device.
/// Assigned; ys must not alias xs.
template <class T, class D>
void subspace_mix_forward(Context<D>& ctx, const nddr::detail::SubspaceLayout& l,
                          std::span<const ViewOn<const T, D>> xs, const T* a,
                          std::span<const ViewOn<T, D>> ys) {
  constexpr const char* kWho = "nddr::ops::subspace_mix_forward";
  detail::check_subspace_views(kWho, "x", l, xs);
  detail::check_subspace_views(kWho, "y", l, ys);
  backend::SubspaceMix<D>::template subspace_mix_forward<T>(ctx, l, xs, a, ys);
}

/// dA[p][q] = <dy_p, x_q> (assigned, summed in double), dx_q += sum_p A[p][q] dy_p for every
/// non-empty dx. `a` and `da` are (P, P) on the device.
template <class T, class D>
void subspace_mix_backward(Context<D>& ctx, const nddr::detail::SubspaceLayout& l,
                           std::span<const ViewOn<const T, D>> xs,
                           std::span<const ViewOn<const T, D>> dys, const T* a, T* da,
                           std::span<const ViewOn<T, D>> dxs) {
  constexpr const char* kWho = "nddr::ops::subspace_mix_backward";
  detail::check_subspace_views(kWho, "x", l, xs);
  detail::check_subspace_views(kWho, "dy", l, dys);
  detail::check_subspace_views(kWho, "dx", l, dxs);
  backend::SubspaceMix<D>::template subspace_mix_backward<T>(ctx, l, xs, dys, a, da, dxs);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/subspace_mix.hpp"
