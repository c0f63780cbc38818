#pragma once
/// \file
/// Batch normalisation over (N, H, W) per channel, the front door (options and per-channel
/// math: nddr/ops/math/batch_norm.hpp). Validates once and computes the layout of x, then runs
/// `backend::BatchNorm<D>`.
///
/// Per-channel vectors (gamma, beta, running and saved statistics) have shape (C). With
/// `affine()` off, gamma and beta are ignored (gamma = 1, beta = 0) and so are dgamma, dbeta.
/// Inputs are taken as const views of `T`, where `T` is deduced from the output view.
///
/// The `_sync` variants are synchronized (cross-replica) batch normalisation for data-parallel
/// training: each replica holds a slice of the global batch, and the per-channel sums are added
/// over every replica by a caller-supplied `BatchNormAllReduce` before they are used.

#include <cstdint>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/batch_norm.hpp"

namespace nddr::detail {

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
  if (opt.relu())
    check_shape(who, "y (forward's output; BatchNormOptions.relu reads its mask)", y, x);
}

/// The checks shared by both forward passes: options, x, y, the running statistics and, with
/// `affine()`, gamma and beta. Returns the layout of x.
inline BatchNormLayout batch_norm_check_forward(const char* who, const BatchNormOptions& opt,
                                                const Shape& x, const Shape& y,
                                                const Shape& running_mean, const Shape& running_var,
                                                const Shape& gamma, const Shape& beta) {
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

}  // namespace nddr::detail

namespace nddr::ops {

/// Training forward: normalises x (N, C, H, W) with the batch mean and biased variance of
/// each channel, writes y, saves mean and 1/sqrt(var + eps) for backward into `save_mean` and
/// `save_inv_std` (C), and updates `running_mean` / `running_var` (C) in place.
/// Throws ShapeError when N*H*W == 1 (the variance is undefined, as in PyTorch).
template <class T, class D>
void batch_norm_forward_training(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> x,
                                 std::type_identity_t<TensorView<const T, D>> gamma,
                                 std::type_identity_t<TensorView<const T, D>> beta,
                                 ViewOn<T, D> running_mean, ViewOn<T, D> running_var,
                                 ViewOn<T, D> y, ViewOn<T, D> save_mean, ViewOn<T, D> save_inv_std,
                                 const BatchNormOptions& opt) {
  constexpr const char* who = "nddr::ops::batch_norm_forward_training";
  const auto L =
      nddr::detail::batch_norm_check_forward(who, opt, x.shape(), y.shape(), running_mean.shape(),
                                             running_var.shape(), gamma.shape(), beta.shape());
  nddr::detail::batch_norm_check_vector(who, "save_mean", true, save_mean.shape(), L.channels);
  nddr::detail::batch_norm_check_vector(who, "save_inv_std", true, save_inv_std.shape(),
                                        L.channels);
  nddr::detail::batch_norm_check_training_count(who, x.shape(), L);
  backend::BatchNorm<D>::template batch_norm_forward_training<T>(
      ctx, L, x, gamma, beta, running_mean, running_var, y, save_mean, save_inv_std, opt);
}

/// Inference forward: normalises x (N, C, H, W) with the running statistics (C).
template <class T, class D>
void batch_norm_forward_inference(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> x,
                                  std::type_identity_t<TensorView<const T, D>> gamma,
                                  std::type_identity_t<TensorView<const T, D>> beta,
                                  std::type_identity_t<TensorView<const T, D>> running_mean,
                                  std::type_identity_t<TensorView<const T, D>> running_var,
                                  ViewOn<T, D> y, const BatchNormOptions& opt) {
  constexpr const char* who = "nddr::ops::batch_norm_forward_inference";
  const auto L =
      nddr::detail::batch_norm_check_forward(who, opt, x.shape(), y.shape(), running_mean.shape(),
                                             running_var.shape(), gamma.shape(), beta.shape());
  backend::BatchNorm<D>::template batch_norm_forward_inference<T>(
      ctx, L, x, gamma, beta, running_mean, running_var, y, opt);
}

/// Training backward, through the batch statistics: dx += dL/dx (skipped when dx is empty);
/// dgamma = sum(dy * xhat) and dbeta = sum(dy) are assigned (each skipped when empty).
/// `save_mean` and `save_inv_std` are what batch_norm_forward_training saved for this x. With
/// `opt.relu()`, `y` is forward's output (the fused ReLU's mask) and dy the gradient w.r.t. it.
template <class T, class D>
void batch_norm_backward_training(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> x,
                                  std::type_identity_t<TensorView<const T, D>> dy,
                                  std::type_identity_t<TensorView<const T, D>> gamma,
                                  std::type_identity_t<TensorView<const T, D>> save_mean,
                                  std::type_identity_t<TensorView<const T, D>> save_inv_std,
                                  ViewOn<T, D> dx, ViewOn<T, D> dgamma, ViewOn<T, D> dbeta,
                                  const BatchNormOptions& opt,
                                  std::type_identity_t<TensorView<const T, D>> y = {}) {
  constexpr const char* who = "nddr::ops::batch_norm_backward_training";
  const auto L =
      nddr::detail::batch_norm_check_backward(who, opt, x, dy, gamma, "save_mean", save_mean,
                                              "save_inv_std", save_inv_std, dx, dgamma, dbeta);
  nddr::detail::batch_norm_check_relu_output(who, opt, y.shape(), x.shape());
  nddr::detail::batch_norm_check_training_count(who, x.shape(), L);
  backend::BatchNorm<D>::template batch_norm_backward_training<T>(
      ctx, L, x, dy, gamma, save_mean, save_inv_std, dx, dgamma, dbeta, opt, y);
}

/// Inference backward, with the running statistics as constants: dx += dy * gamma * inv_std
/// (skipped when dx is empty); dgamma = sum(dy * xhat) and dbeta = sum(dy) are assigned. With
/// `opt.relu()`, `y` is forward's output (the fused ReLU's mask).
template <class T, class D>
void batch_norm_backward_inference(Context<D>& ctx, std::type_identity_t<TensorView<const T, D>> x,
                                   std::type_identity_t<TensorView<const T, D>> dy,
                                   std::type_identity_t<TensorView<const T, D>> gamma,
                                   std::type_identity_t<TensorView<const T, D>> running_mean,
                                   std::type_identity_t<TensorView<const T, D>> running_var,
                                   ViewOn<T, D> dx, ViewOn<T, D> dgamma, ViewOn<T, D> dbeta,
                                   const BatchNormOptions& opt,
                                   std::type_identity_t<TensorView<const T, D>> y = {}) {
  constexpr const char* who = "nddr::ops::batch_norm_backward_inference";
  const auto L =
      nddr::detail::batch_norm_check_backward(who, opt, x, dy, gamma, "running_mean", running_mean,
                                              "running_var", running_var, dx, dgamma, dbeta);
  nddr::detail::batch_norm_check_relu_output(who, opt, y.shape(), x.shape());
  backend::BatchNorm<D>::template batch_norm_backward_inference<T>(
      ctx, L, x, dy, gamma, running_mean, running_var, dx, dgamma, dbeta, opt, y);
}

/// Synchronized training forward: as batch_norm_forward_training, but the mean and the biased
/// variance of each channel are those of the global batch (x of every replica), summed by
/// `all_reduce`: the per-channel sums and the element count, then the per-channel sums of squared
/// deviations from the global mean (two passes, as the local op, so float inputs keep their
/// variance). The running statistics move towards the global ones. Every replica must call it
/// with the same C; N, H and W may differ. With the identity `all_reduce` it equals the local op
/// bit for bit. Throws ShapeError when the global count N*H*W is 1. On a GPU, each call
/// downloads and uploads 2C doubles and waits for the device twice; GPU and CPU replicas may be
/// mixed.
template <class T, class D>
void batch_norm_forward_training_sync(Context<D>& ctx,
                                      std::type_identity_t<TensorView<const T, D>> x,
                                      std::type_identity_t<TensorView<const T, D>> gamma,
                                      std::type_identity_t<TensorView<const T, D>> beta,
                                      ViewOn<T, D> running_mean, ViewOn<T, D> running_var,
                                      ViewOn<T, D> y, ViewOn<T, D> save_mean,
                                      ViewOn<T, D> save_inv_std, const BatchNormOptions& opt,
                                      const BatchNormAllReduce& all_reduce) {
  constexpr const char* who = "nddr::ops::batch_norm_forward_training_sync";
  const auto L =
      nddr::detail::batch_norm_check_forward(who, opt, x.shape(), y.shape(), running_mean.shape(),
                                             running_var.shape(), gamma.shape(), beta.shape());
  nddr::detail::batch_norm_check_vector(who, "save_mean", true, save_mean.shape(), L.channels);
  nddr::detail::batch_norm_check_vector(who, "save_inv_std", true, save_inv_std.shape(),
                                        L.channels);
  check<OptionError>(static_cast<bool>(all_reduce), who, ": all_reduce is empty");
  backend::BatchNorm<D>::template batch_norm_forward_training_sync<T>(
      ctx, L, x, gamma, beta, running_mean, running_var, y, save_mean, save_inv_std, opt,
      all_reduce);
}

/// Synchronized training backward, through the global batch statistics saved by
/// batch_norm_forward_training_sync: sum(dy) and sum(dy * (x - mean)) per channel are summed over
/// every replica by `all_reduce` for dx (dx += ..., skipped when empty). dgamma and dbeta are
/// this replica's own sums (assigned): averaging them over the replicas, as the gradients of
/// every other parameter are, gives the gradient of the mean of the replicas' losses.
template <class T, class D>
void batch_norm_backward_training_sync(Context<D>& ctx,
                                       std::type_identity_t<TensorView<const T, D>> x,
                                       std::type_identity_t<TensorView<const T, D>> dy,
                                       std::type_identity_t<TensorView<const T, D>> gamma,
                                       std::type_identity_t<TensorView<const T, D>> save_mean,
                                       std::type_identity_t<TensorView<const T, D>> save_inv_std,
                                       ViewOn<T, D> dx, ViewOn<T, D> dgamma, ViewOn<T, D> dbeta,
                                       const BatchNormOptions& opt,
                                       const BatchNormAllReduce& all_reduce,
                                       std::type_identity_t<TensorView<const T, D>> y = {}) {
  constexpr const char* who = "nddr::ops::batch_norm_backward_training_sync";
  const auto L =
      nddr::detail::batch_norm_check_backward(who, opt, x, dy, gamma, "save_mean", save_mean,
                                              "save_inv_std", save_inv_std, dx, dgamma, dbeta);
  nddr::detail::batch_norm_check_relu_output(who, opt, y.shape(), x.shape());
  check<OptionError>(static_cast<bool>(all_reduce), who, ": all_reduce is empty");
  backend::BatchNorm<D>::template batch_norm_backward_training_sync<T>(
      ctx, L, x, dy, gamma, save_mean, save_inv_std, dx, dgamma, dbeta, opt, all_reduce, y);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/batch_norm.hpp"
