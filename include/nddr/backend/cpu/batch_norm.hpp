#pragma once
/// \file
/// CPU batch normalisation over (N, H, W) per channel, parallel over channels.
///
/// Per-channel vectors (gamma, beta, running and saved statistics) have shape (C). With
/// `affine()` off, gamma and beta are ignored (gamma = 1, beta = 0) and so are dgamma, dbeta.
/// Inputs are taken as const views of `T`, where `T` is deduced from the output view.
///
/// The `_sync` variants are synchronized (cross-replica) batch normalisation for data-parallel
/// training: each replica holds a slice of the global batch, and the per-channel sums are added
/// over every replica by a caller-supplied `BatchNormAllReduce` before they are used.

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
#include "nddr/ops/batch_norm.hpp"

namespace nddr {

/// Adds host per-channel statistics over every replica of a data-parallel run, in place (e.g. an
/// MPI all-reduce sum). The identity on a single replica.
using BatchNormAllReduce = std::function<void(std::span<double>)>;

}  // namespace nddr

namespace nddr::detail {

/// The (N, C, H, W) extents as the BN loops use them.
struct BatchNormLayout {
  std::int64_t items;     // N
  std::int64_t channels;  // C
  std::int64_t plane;     // H * W
  std::int64_t stride() const { return channels * plane; }
  std::int64_t count() const { return items * plane; }
};

/// Validates the options, x (N, C, H, W), the tensor of x's shape named `out` (y or dy) and the
/// two per-channel statistics; returns the layout of x.
inline BatchNormLayout batch_norm_check(const char* who, const BatchNormOptions& opt,
                                        const Shape& x, const char* out, const Shape& out_shape,
                                        const char* mean, const Shape& mean_shape, const char* var,
                                        const Shape& var_shape) {
  opt.validate(who);
  check_rank4(who, "x", x);
  check_shape(who, out, out_shape, x);
  check_shape(who, mean, mean_shape, Shape{x.c()});
  check_shape(who, var, var_shape, Shape{x.c()});
  return BatchNormLayout{x.n(), x.c(), x.h() * x.w()};
}

/// Checks a per-channel vector (gamma, beta, dgamma, dbeta) that the op will use.
inline void batch_norm_check_vector(const char* who, const char* what, bool used, const Shape& s,
                                    std::int64_t channels) {
  if (used) check_shape(who, what, s, Shape{channels});
}

inline void batch_norm_check_training_count(const char* who, const Shape& x,
                                            const BatchNormLayout& L) {
  check<ShapeError>(L.count() > 1, who, ": x has shape ", x,
                    "; training needs more than one value per channel (N*H*W > 1)");
}

/// With the fused ReLU (BatchNormOptions::relu), the backward ops read its mask from forward's
/// output y: it must have x's shape. Without it y is not used.
inline void batch_norm_check_relu_output(const char* who, const BatchNormOptions& opt,
                                         const Shape& y, const Shape& x) {
  if (opt.relu()) check_shape(who, "y (forward's output; BatchNormOptions.relu reads its mask)", y, x);
}

/// The checks shared by both forward passes: options, x, y, the running statistics and, with
/// `affine()`, gamma and beta. Returns the layout of x.
inline BatchNormLayout batch_norm_check_forward(const char* who, const BatchNormOptions& opt,
                                                const Shape& x, const Shape& y,
                                                const Shape& running_mean,
                                                const Shape& running_var, const Shape& gamma,
                                                const Shape& beta) {
  const BatchNormLayout L = batch_norm_check(who, opt, x, "y", y, "running_mean", running_mean,
                                             "running_var", running_var);
  batch_norm_check_vector(who, "gamma", opt.affine(), gamma, L.channels);
  batch_norm_check_vector(who, "beta", opt.affine(), beta, L.channels);
  return L;
}

/// The checks shared by every backward pass (both modes, synchronized or not, on any device D):
/// options, x, dy, the two statistics (named `a_name`, `b_name`), gamma and the gradients that
/// will be written. Returns the layout of x.
template <class T, class D>
BatchNormLayout batch_norm_check_backward(const char* who, const BatchNormOptions& opt,
                                          TensorView<const T, D> x, TensorView<const T, D> dy,
                                          TensorView<const T, D> gamma, const char* a_name,
                                          TensorView<const T, D> a, const char* b_name,
                                          TensorView<const T, D> b, TensorView<T, D> dx,
                                          TensorView<T, D> dgamma, TensorView<T, D> dbeta) {
  const BatchNormLayout L =
      batch_norm_check(who, opt, x.shape(), "dy", dy.shape(), a_name, a.shape(), b_name, b.shape());
  const bool affine = opt.affine();
  batch_norm_check_vector(who, "gamma", affine, gamma.shape(), L.channels);
  batch_norm_check_vector(who, "dgamma", affine && !dgamma.empty(), dgamma.shape(), L.channels);
  batch_norm_check_vector(who, "dbeta", affine && !dbeta.empty(), dbeta.shape(), L.channels);
  if (!dx.empty()) check_shape(who, "dx", dx.shape(), x.shape());
  return L;
}

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

/// Training forward: normalises x (N, C, H, W) with the batch mean and biased variance of
/// each channel, writes y, saves mean and 1/sqrt(var + eps) for backward into `save_mean` and
/// `save_inv_std` (C), and updates `running_mean` / `running_var` (C) in place.
/// Throws ShapeError when N*H*W == 1 (the variance is undefined, as in PyTorch).
template <class T>
void batch_norm_forward_training(Context<Cpu>& ctx,
                                 std::type_identity_t<TensorView<const T, Cpu>> x,
                                 std::type_identity_t<TensorView<const T, Cpu>> gamma,
                                 std::type_identity_t<TensorView<const T, Cpu>> beta,
                                 TensorView<T, Cpu> running_mean, TensorView<T, Cpu> running_var,
                                 TensorView<T, Cpu> y, TensorView<T, Cpu> save_mean,
                                 TensorView<T, Cpu> save_inv_std, const BatchNormOptions& opt) {
  constexpr const char* who = "nddr::ops::batch_norm_forward_training";
  const auto L = nddr::detail::batch_norm_check_forward(who, opt, x.shape(), y.shape(),
                                                        running_mean.shape(), running_var.shape(),
                                                        gamma.shape(), beta.shape());
  nddr::detail::batch_norm_check_vector(who, "save_mean", true, save_mean.shape(), L.channels);
  nddr::detail::batch_norm_check_vector(who, "save_inv_std", true, save_inv_std.shape(),
                                        L.channels);
  nddr::detail::batch_norm_check_training_count(who, x.shape(), L);
  const T* xp = x.data();
  detail::batch_norm_apply_training<T>(
      ctx, L, x, gamma, beta, running_mean, running_var, y, save_mean, save_inv_std, opt,
      L.count(), [xp, &L](std::int64_t c) {
        return batch_norm_channel_moments(xp + c * L.plane, L.items, L.plane, L.stride());
      });
}

/// Inference forward: normalises x (N, C, H, W) with the running statistics (C).
template <class T>
void batch_norm_forward_inference(Context<Cpu>& ctx,
                                  std::type_identity_t<TensorView<const T, Cpu>> x,
                                  std::type_identity_t<TensorView<const T, Cpu>> gamma,
                                  std::type_identity_t<TensorView<const T, Cpu>> beta,
                                  std::type_identity_t<TensorView<const T, Cpu>> running_mean,
                                  std::type_identity_t<TensorView<const T, Cpu>> running_var,
                                  TensorView<T, Cpu> y, const BatchNormOptions& opt) {
  constexpr const char* who = "nddr::ops::batch_norm_forward_inference";
  const auto L = nddr::detail::batch_norm_check_forward(who, opt, x.shape(), y.shape(),
                                                        running_mean.shape(), running_var.shape(),
                                                        gamma.shape(), beta.shape());
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

/// Training backward, through the batch statistics: dx += dL/dx (skipped when dx is empty);
/// dgamma = sum(dy * xhat) and dbeta = sum(dy) are assigned (each skipped when empty).
/// `save_mean` and `save_inv_std` are what batch_norm_forward_training saved for this x. With
/// `opt.relu()`, `y` is forward's output (the fused ReLU's mask) and dy the gradient w.r.t. it.
template <class T>
void batch_norm_backward_training(Context<Cpu>& ctx,
                                  std::type_identity_t<TensorView<const T, Cpu>> x,
                                  std::type_identity_t<TensorView<const T, Cpu>> dy,
                                  std::type_identity_t<TensorView<const T, Cpu>> gamma,
                                  std::type_identity_t<TensorView<const T, Cpu>> save_mean,
                                  std::type_identity_t<TensorView<const T, Cpu>> save_inv_std,
                                  TensorView<T, Cpu> dx, TensorView<T, Cpu> dgamma,
                                  TensorView<T, Cpu> dbeta, const BatchNormOptions& opt,
                                  std::type_identity_t<TensorView<const T, Cpu>> y = {}) {
  constexpr const char* who = "nddr::ops::batch_norm_backward_training";
  const auto L = nddr::detail::batch_norm_check_backward(who, opt, x, dy, gamma, "save_mean",
                                                         save_mean, "save_inv_std", save_inv_std,
                                                         dx, dgamma, dbeta);
  nddr::detail::batch_norm_check_relu_output(who, opt, y.shape(), x.shape());
  nddr::detail::batch_norm_check_training_count(who, x.shape(), L);
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

/// Inference backward, with the running statistics as constants: dx += dy * gamma * inv_std
/// (skipped when dx is empty); dgamma = sum(dy * xhat) and dbeta = sum(dy) are assigned. With
/// `opt.relu()`, `y` is forward's output (the fused ReLU's mask).
template <class T>
void batch_norm_backward_inference(Context<Cpu>& ctx,
                                   std::type_identity_t<TensorView<const T, Cpu>> x,
                                   std::type_identity_t<TensorView<const T, Cpu>> dy,
                                   std::type_identity_t<TensorView<const T, Cpu>> gamma,
                                   std::type_identity_t<TensorView<const T, Cpu>> running_mean,
                                   std::type_identity_t<TensorView<const T, Cpu>> running_var,
                                   TensorView<T, Cpu> dx, TensorView<T, Cpu> dgamma,
                                   TensorView<T, Cpu> dbeta, const BatchNormOptions& opt,
                                   std::type_identity_t<TensorView<const T, Cpu>> y = {}) {
  constexpr const char* who = "nddr::ops::batch_norm_backward_inference";
  const auto L = nddr::detail::batch_norm_check_backward(who, opt, x, dy, gamma, "running_mean",
                                                         running_mean, "running_var", running_var,
                                                         dx, dgamma, dbeta);
  nddr::detail::batch_norm_check_relu_output(who, opt, y.shape(), x.shape());
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

/// Synchronized training forward: as batch_norm_forward_training, but the mean and the biased
/// variance of each channel are those of the global batch (x of every replica), summed by
/// `all_reduce`: the per-channel sums and the element count, then the per-channel sums of squared
/// deviations from the global mean (two passes, as the local op, so float inputs keep their
/// variance). The running statistics move towards the global ones. Every replica must call it
/// with the same C; N, H and W may differ. With the identity `all_reduce` it equals the local op
/// bit for bit. Throws ShapeError when the global count N*H*W is 1.
template <class T>
void batch_norm_forward_training_sync(Context<Cpu>& ctx,
                                      std::type_identity_t<TensorView<const T, Cpu>> x,
                                      std::type_identity_t<TensorView<const T, Cpu>> gamma,
                                      std::type_identity_t<TensorView<const T, Cpu>> beta,
                                      TensorView<T, Cpu> running_mean,
                                      TensorView<T, Cpu> running_var, TensorView<T, Cpu> y,
                                      TensorView<T, Cpu> save_mean,
                                      TensorView<T, Cpu> save_inv_std, const BatchNormOptions& opt,
                                      const BatchNormAllReduce& all_reduce) {
  constexpr const char* who = "nddr::ops::batch_norm_forward_training_sync";
  const auto L = nddr::detail::batch_norm_check_forward(who, opt, x.shape(), y.shape(),
                                                        running_mean.shape(), running_var.shape(),
                                                        gamma.shape(), beta.shape());
  nddr::detail::batch_norm_check_vector(who, "save_mean", true, save_mean.shape(), L.channels);
  nddr::detail::batch_norm_check_vector(who, "save_inv_std", true, save_inv_std.shape(),
                                        L.channels);
  check<OptionError>(static_cast<bool>(all_reduce), who, ": all_reduce is empty");
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
      static_cast<std::int64_t>(count),
      [mp, qp, count](std::int64_t c) { return BatchNormMoments{mp[c], qp[c] / count}; });
}

/// Synchronized training backward, through the global batch statistics saved by
/// batch_norm_forward_training_sync: sum(dy) and sum(dy * (x - mean)) per channel are summed over
/// every replica by `all_reduce` for dx (dx += ..., skipped when empty). dgamma and dbeta are
/// this replica's own sums (assigned): averaging them over the replicas, as the gradients of
/// every other parameter are, gives the gradient of the mean of the replicas' losses.
template <class T>
void batch_norm_backward_training_sync(Context<Cpu>& ctx,
                                       std::type_identity_t<TensorView<const T, Cpu>> x,
                                       std::type_identity_t<TensorView<const T, Cpu>> dy,
                                       std::type_identity_t<TensorView<const T, Cpu>> gamma,
                                       std::type_identity_t<TensorView<const T, Cpu>> save_mean,
                                       std::type_identity_t<TensorView<const T, Cpu>> save_inv_std,
                                       TensorView<T, Cpu> dx, TensorView<T, Cpu> dgamma,
                                       TensorView<T, Cpu> dbeta, const BatchNormOptions& opt,
                                       const BatchNormAllReduce& all_reduce,
                                       std::type_identity_t<TensorView<const T, Cpu>> y = {}) {
  constexpr const char* who = "nddr::ops::batch_norm_backward_training_sync";
  const auto L = nddr::detail::batch_norm_check_backward(who, opt, x, dy, gamma, "save_mean",
                                                         save_mean, "save_inv_std", save_inv_std,
                                                         dx, dgamma, dbeta);
  nddr::detail::batch_norm_check_relu_output(who, opt, y.shape(), x.shape());
  check<OptionError>(static_cast<bool>(all_reduce), who, ": all_reduce is empty");
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
    nddr::detail::batch_norm_backward_channel(L, c, xp, dyp, gp, mean, inv_std, t.a, t.b, dxp, yp);
  });
}

}  // namespace nddr::ops
