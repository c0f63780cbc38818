#pragma once
/// \file
/// CPU batch normalisation over (N, H, W) per channel, parallel over channels (front door:
/// nddr/ops/batch_norm.hpp, which validates and passes the layout `L` of x).

#include <cstdint>
#include <functional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/batch_norm.hpp"

namespace nddr::detail {

/// Writes channel c of y = (x - mean) * gamma * inv_std + beta (then max(., 0) with `relu`),
/// the loop shared by both forward passes. A null gp means gamma = 1, a null bp beta = 0.
template <class T>
void batch_norm_normalize_channel(const BatchNormLayout& L, std::int64_t c, const T* xp,
                                  const T* gp, const T* bp, T mean, double inv_std, T* yp,
                                  bool relu) {
  const std::int64_t off = c * L.plane;
  const T scale = static_cast<T>(gp ? static_cast<double>(gp[c]) * inv_std : inv_std);
  const T shift = bp ? bp[c] : T(0);
  for (std::int64_t n = 0; n < L.items; ++n) {
    const std::int64_t base = n * L.stride() + off;
    for (std::int64_t i = 0; i < L.plane; ++i)
      yp[base + i] = ops::batch_norm_element(xp[base + i], mean, scale, shift, relu);
  }
}

/// dx += k * (dy - a - (x - mean) * b) over channel c, k = gamma * inv_std (gamma = 1 when gp
/// is null): the element loop shared by every backward pass. With `Relu`, yp (forward's
/// output, fused ReLU) masks dy.
template <bool Relu, class T>
void batch_norm_backward_channel_as(const BatchNormLayout& L, std::int64_t c, const T* xp,
                                    const T* dyp, const T* gp, double mean, double inv_std,
                                    double a, double b, T* dxp, const T* yp) {
  const std::int64_t off = c * L.plane;
  const double g = gp ? static_cast<double>(gp[c]) : 1.0;
  const T k = static_cast<T>(g * inv_std), m = static_cast<T>(mean);
  const T ta = static_cast<T>(a), tb = static_cast<T>(b);
  for (std::int64_t n = 0; n < L.items; ++n) {
    const std::int64_t base = n * L.stride() + off;
    for (std::int64_t i = 0; i < L.plane; ++i)
      ops::batch_norm_backward_element(xp[base + i],
                                       ops::batch_norm_grad_in_static<Relu>(yp, dyp, base + i), m,
                                       k, ta, tb, dxp[base + i]);
  }
}

/// batch_norm_backward_channel_as with the fused ReLU's mask when yp (forward's output) is not
/// null: the loop is compiled for each case, so neither tests yp per element.
template <class T>
void batch_norm_backward_channel(const BatchNormLayout& L, std::int64_t c, const T* xp,
                                 const T* dyp, const T* gp, double mean, double inv_std, double a,
                                 double b, T* dxp, const T* yp) {
  if (yp)
    batch_norm_backward_channel_as<true>(L, c, xp, dyp, gp, mean, inv_std, a, b, dxp, yp);
  else
    batch_norm_backward_channel_as<false>(L, c, xp, dyp, gp, mean, inv_std, a, b, dxp, yp);
}

/// sum(dy) and sum(dy * (x - mean)) of channel c, dy masked by a non-null yp (the fused ReLU).
template <class T>
ops::BatchNormGradSums batch_norm_channel_grad_sums(const BatchNormLayout& L, std::int64_t c,
                                                   const T* xp, const T* dyp, const T* yp,
                                                   double mean) {
  const std::int64_t off = c * L.plane;
  return yp ? ops::batch_norm_channel_grad_sums<true>(xp + off, dyp + off, L.items, L.plane,
                                                      L.stride(), mean, yp + off)
            : ops::batch_norm_channel_grad_sums<false>(xp + off, dyp + off, L.items, L.plane,
                                                       L.stride(), mean);
}

/// The loops shared by both backward passes. `stats(c)` gives channel c's (mean, inv_std);
/// `consts(sums, inv_std)` the (a, b) of batch_norm_backward_element. Empty dx is skipped, and
/// without `affine` gamma is 1 and dgamma, dbeta are skipped (as they are when empty). With
/// `relu`, y (forward's output) masks dy.
template <class T, class Stats, class Consts>
void batch_norm_backward_loop(Context<Cpu>& ctx, const BatchNormLayout& L, bool affine, bool relu,
                              TensorView<const T, Cpu> x, TensorView<const T, Cpu> y,
                              TensorView<const T, Cpu> dy, TensorView<const T, Cpu> gamma,
                              TensorView<T, Cpu> dx, TensorView<T, Cpu> dgamma,
                              TensorView<T, Cpu> dbeta, Stats stats, Consts consts) {
  const T* xp = x.data();
  const T* yp = relu ? y.data() : nullptr;
  const T* dyp = dy.data();
  const T* gp = affine ? gamma.data() : nullptr;
  T* dxp = dx.data();
  T* dgp = affine ? dgamma.data() : nullptr;
  T* dbp = affine ? dbeta.data() : nullptr;
  parallel_for(ctx, L.channels, [=](std::int64_t c) {
    const auto [mean, inv_std] = stats(c);
    const ops::BatchNormGradSums s = batch_norm_channel_grad_sums(L, c, xp, dyp, yp, mean);
    if (dgp) dgp[c] = static_cast<T>(s.sum_dy_xmu * inv_std);
    if (dbp) dbp[c] = static_cast<T>(s.sum_dy);
    if (!dxp) return;
    const auto [a, b] = consts(s, inv_std);
    batch_norm_backward_channel(L, c, xp, dyp, gp, mean, inv_std, a, b, dxp, yp);
  });
}

}  // namespace nddr::detail

namespace nddr::ops {

namespace detail {

/// The part of a training forward after the statistics: per channel c with batch moments
/// `moments(c)` (over `count` values per channel), saves mean and 1/std, normalises x into y and
/// moves the running statistics. Shared by the local and the synchronized forward.
template <class T, class Moments>
void batch_norm_apply_training(Context<Cpu>& ctx, const nddr::detail::BatchNormLayout& L,
                               TensorView<const T, Cpu> x, TensorView<const T, Cpu> gamma,
                               TensorView<const T, Cpu> beta, TensorView<T, Cpu> running_mean,
                               TensorView<T, Cpu> running_var, TensorView<T, Cpu> y,
                               TensorView<T, Cpu> save_mean, TensorView<T, Cpu> save_inv_std,
                               const BatchNormOptions& opt, std::int64_t count,
                               const Moments& moments) {
  const bool affine = opt.affine();
  const T* xp = x.data();
  const T* gp = affine ? gamma.data() : nullptr;
  const T* bp = affine ? beta.data() : nullptr;
  T* yp = y.data();
  T* rm = running_mean.data();
  T* rv = running_var.data();
  T* sm = save_mean.data();
  T* si = save_inv_std.data();
  const double eps = opt.eps(), momentum = opt.momentum();
  const bool unbiased = opt.unbiased_running_var();
  const bool relu = opt.relu();
  nddr::detail::parallel_for(ctx, L.channels, [=, &moments](std::int64_t c) {
    const BatchNormMoments m = moments(c);
    const double inv_std = batch_norm_inv_std(m.var, eps);
    sm[c] = static_cast<T>(m.mean);
    si[c] = static_cast<T>(inv_std);
    nddr::detail::batch_norm_normalize_channel(L, c, xp, gp, bp, sm[c], inv_std, yp, relu);
    batch_norm_update_running(rm[c], rv[c], m, count, momentum, unbiased);
  });
}

}  // namespace detail

namespace backend {

template <>
struct BatchNorm<Cpu> {
  template <class T>
  static void batch_norm_forward_training(
      Context<Cpu>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cpu> x,
      TensorView<const T, Cpu> gamma, TensorView<const T, Cpu> beta,
      TensorView<T, Cpu> running_mean, TensorView<T, Cpu> running_var, TensorView<T, Cpu> y,
      TensorView<T, Cpu> save_mean, TensorView<T, Cpu> save_inv_std, const BatchNormOptions& opt) {
    const T* xp = x.data();
    detail::batch_norm_apply_training<T>(
        ctx, L, x, gamma, beta, running_mean, running_var, y, save_mean, save_inv_std, opt,
        L.count(), [xp, &L](std::int64_t c) {
          return batch_norm_channel_moments(xp + c * L.plane, L.items, L.plane, L.stride());
        });
  }

  template <class T>
  static void batch_norm_forward_inference(
      Context<Cpu>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cpu> x,
      TensorView<const T, Cpu> gamma, TensorView<const T, Cpu> beta,
      TensorView<const T, Cpu> running_mean, TensorView<const T, Cpu> running_var,
      TensorView<T, Cpu> y, const BatchNormOptions& opt) {
    const bool affine = opt.affine();
    const T* xp = x.data();
    const T* gp = affine ? gamma.data() : nullptr;
    const T* bp = affine ? beta.data() : nullptr;
    const T* rm = running_mean.data();
    const T* rv = running_var.data();
    T* yp = y.data();
    const double eps = opt.eps();
    const bool relu = opt.relu();
    nddr::detail::parallel_for(ctx, L.channels, [=](std::int64_t c) {
      const double inv_std = batch_norm_inv_std(static_cast<double>(rv[c]), eps);
      nddr::detail::batch_norm_normalize_channel(L, c, xp, gp, bp, rm[c], inv_std, yp, relu);
    });
  }

  template <class T>
  static void batch_norm_backward_training(
      Context<Cpu>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cpu> x,
      TensorView<const T, Cpu> dy, TensorView<const T, Cpu> gamma,
      TensorView<const T, Cpu> save_mean, TensorView<const T, Cpu> save_inv_std,
      TensorView<T, Cpu> dx, TensorView<T, Cpu> dgamma, TensorView<T, Cpu> dbeta,
      const BatchNormOptions& opt, TensorView<const T, Cpu> y) {
    const T* sm = save_mean.data();
    const T* si = save_inv_std.data();
    const double count = static_cast<double>(L.count());
    nddr::detail::batch_norm_backward_loop(
        ctx, L, opt.affine(), opt.relu(), x, y, dy, gamma, dx, dgamma, dbeta,
        [=](std::int64_t c) {
          return std::pair{static_cast<double>(sm[c]), static_cast<double>(si[c])};
        },
        [=](const BatchNormGradSums& s, double inv_std) {
          const BatchNormGradTerms t = batch_norm_grad_terms(s, inv_std, count);
          return std::pair{t.a, t.b};
        });
  }

  template <class T>
  static void batch_norm_backward_inference(
      Context<Cpu>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cpu> x,
      TensorView<const T, Cpu> dy, TensorView<const T, Cpu> gamma,
      TensorView<const T, Cpu> running_mean, TensorView<const T, Cpu> running_var,
      TensorView<T, Cpu> dx, TensorView<T, Cpu> dgamma, TensorView<T, Cpu> dbeta,
      const BatchNormOptions& opt, TensorView<const T, Cpu> y) {
    const T* rm = running_mean.data();
    const T* rv = running_var.data();
    const double eps = opt.eps();
    nddr::detail::batch_norm_backward_loop(
        ctx, L, opt.affine(), opt.relu(), x, y, dy, gamma, dx, dgamma, dbeta,
        [=](std::int64_t c) {
          return std::pair{static_cast<double>(rm[c]),
                           batch_norm_inv_std(static_cast<double>(rv[c]), eps)};
        },
        [](const BatchNormGradSums&, double) {
          return std::pair{0.0, 0.0};
        });
  }

  /// The global count N*H*W (known after the all-reduce) must exceed 1.
  template <class T>
  static void batch_norm_forward_training_sync(
      Context<Cpu>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cpu> x,
      TensorView<const T, Cpu> gamma, TensorView<const T, Cpu> beta,
      TensorView<T, Cpu> running_mean, TensorView<T, Cpu> running_var, TensorView<T, Cpu> y,
      TensorView<T, Cpu> save_mean, TensorView<T, Cpu> save_inv_std, const BatchNormOptions& opt,
      const BatchNormAllReduce& all_reduce) {
    constexpr const char* who = "nddr::ops::batch_norm_forward_training_sync";
    const T* xp = x.data();
    const std::size_t C = static_cast<std::size_t>(L.channels);
    // sums[c] = sum of channel c, sums[C] = element count per channel; then squared deviations.
    std::vector<double> sums(C + 1);
    double* sp = sums.data();
    nddr::detail::parallel_for(ctx, L.channels, [=](std::int64_t c) {
      sp[c] = batch_norm_channel_sum(L.items, L.plane, L.stride(), [xp, c, &L](std::int64_t i) {
        return static_cast<double>(xp[c * L.plane + i]);
      });
    });
    sums[C] = static_cast<double>(L.count());
    all_reduce(std::span<double>(sums));
    const double count = sums[C];
    check<ShapeError>(count > 1.0, who, ": x has shape ", x.shape(), " and the global batch ",
                      count, " values per channel; training needs more than one (N*H*W > 1)");
    std::vector<double> mean(C), sq(C);
    for (std::size_t c = 0; c < C; ++c) mean[c] = sums[c] / count;
    const double* mp = mean.data();
    double* qp = sq.data();
    nddr::detail::parallel_for(ctx, L.channels, [=](std::int64_t c) {
      const double m = mp[c];
      qp[c] = batch_norm_channel_sum(L.items, L.plane, L.stride(), [xp, c, m, &L](std::int64_t i) {
        const double d = static_cast<double>(xp[c * L.plane + i]) - m;
        return d * d;
      });
    });
    all_reduce(std::span<double>(sq));
    detail::batch_norm_apply_training<T>(
        ctx, L, x, gamma, beta, running_mean, running_var, y, save_mean, save_inv_std, opt,
        static_cast<std::int64_t>(count), [mp, qp, count](std::int64_t c) {
          return BatchNormMoments{mp[c], qp[c] / count};
        });
  }

  /// The global count N*H*W (known after the all-reduce) must exceed 1 when dx is wanted.
  template <class T>
  static void batch_norm_backward_training_sync(
      Context<Cpu>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cpu> x,
      TensorView<const T, Cpu> dy, TensorView<const T, Cpu> gamma,
      TensorView<const T, Cpu> save_mean, TensorView<const T, Cpu> save_inv_std,
      TensorView<T, Cpu> dx, TensorView<T, Cpu> dgamma, TensorView<T, Cpu> dbeta,
      const BatchNormOptions& opt, const BatchNormAllReduce& all_reduce,
      TensorView<const T, Cpu> y) {
    constexpr const char* who = "nddr::ops::batch_norm_backward_training_sync";
    const bool affine = opt.affine();
    const T* xp = x.data();
    const T* yp = opt.relu() ? y.data() : nullptr;
    const T* dyp = dy.data();
    const T* gp = affine ? gamma.data() : nullptr;
    const T* sm = save_mean.data();
    const T* si = save_inv_std.data();
    T* dxp = dx.data();
    T* dgp = affine ? dgamma.data() : nullptr;
    T* dbp = affine ? dbeta.data() : nullptr;
    const std::size_t C = static_cast<std::size_t>(L.channels);
    // sums[2c] = sum(dy), sums[2c + 1] = sum(dy * (x - mean)) of channel c, sums[2C] = count.
    std::vector<double> sums(2 * C + 1);
    double* sp = sums.data();
    nddr::detail::parallel_for(ctx, L.channels, [=](std::int64_t c) {
      const double mean = static_cast<double>(sm[c]);
      const BatchNormGradSums s =
          nddr::detail::batch_norm_channel_grad_sums(L, c, xp, dyp, yp, mean);
      if (dgp) dgp[c] = static_cast<T>(s.sum_dy_xmu * static_cast<double>(si[c]));
      if (dbp) dbp[c] = static_cast<T>(s.sum_dy);
      sp[2 * c] = s.sum_dy;
      sp[2 * c + 1] = s.sum_dy_xmu;
    });
    sums[2 * C] = static_cast<double>(L.count());
    // Every replica takes part in the reduction, even one whose dx is not wanted.
    all_reduce(std::span<double>(sums));
    if (!dxp) return;
    const double count = sums[2 * C];
    check<ShapeError>(count > 1.0, who, ": x has shape ", x.shape(), " and the global batch ",
                      count, " values per channel; training needs more than one (N*H*W > 1)");
    nddr::detail::parallel_for(ctx, L.channels, [=](std::int64_t c) {
      const double mean = static_cast<double>(sm[c]);
      const double inv_std = static_cast<double>(si[c]);
      const BatchNormGradTerms t =
          batch_norm_grad_terms(BatchNormGradSums{sp[2 * c], sp[2 * c + 1]}, inv_std, count);
      nddr::detail::batch_norm_backward_channel(L, c, xp, dyp, gp, mean, inv_std, t.a, t.b, dxp,
                                                yp);
    });
  }
};

}  // namespace backend
}  // namespace nddr::ops
