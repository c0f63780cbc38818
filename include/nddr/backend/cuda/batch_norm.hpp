#pragma once
/// \file
/// CUDA batch normalisation: our own kernels (kernels/conv_bn.cuh) running the per-channel and
/// element bodies of nddr/ops/batch_norm.hpp, with the CPU op's validation and messages.
/// The per-channel reductions are split over about 1024 blocks (`ops::batch_norm_reduce_splits`
/// blocks per channel), each summing its share in double into the workspace, then one thread
/// per channel adds the partial sums in block order: deterministic, and the whole GPU reads
/// even a 64-channel layer. The forward moments sum x - shift and (x - shift)^2 with the
/// channel's first element as the shift (one pass; `ops::batch_norm_moments_from_shifted_sums`).
/// The element passes then read per-channel constants from the context workspace.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/batch_norm.hpp"

namespace nddr::cuda::launch {

/// Training statistics per channel (`splits` blocks each, partial sums in `partial`, 2 *
/// splits * channels doubles): saves mean and inv_std, writes the element scale
/// gamma * inv_std (gamma = 1 when null) and updates the running statistics.
/// Defined in kernels/conv_bn.cuh.
template <class T>
void batch_norm_stats(cudaStream_t stream, const T* x, const T* gamma, T* rm, T* rv,
                      T* save_mean, T* save_inv_std, T* scale, double* partial,
                      std::int64_t splits, std::int64_t items, std::int64_t channels,
                      std::int64_t plane, double eps, double momentum, bool unbiased);

/// scale[c] = gamma[c] / sqrt(rv[c] + eps) (gamma = 1 when null).
template <class T>
void batch_norm_inference_scale(cudaStream_t stream, const T* gamma, const T* rv, T* scale,
                                std::int64_t channels, double eps);

/// y = (x - mean[c]) * scale[c] + shift[c] (shift = 0 when null), max(y, 0) with `relu`.
template <class T>
void batch_norm_apply(cudaStream_t stream, const T* x, const T* mean, const T* scale,
                      const T* shift, T* y, std::int64_t items, std::int64_t channels,
                      std::int64_t plane, bool relu);

/// Backward reductions per channel (split as batch_norm_stats): dgamma, dbeta (when non-null)
/// and the element constants (mean, k, a, b) into consts (4 * channels). training:
/// stat0/stat1 = saved mean / inv_std; else running mean / running variance. A non-null y
/// (forward's output, fused ReLU) masks dy, here and in batch_norm_backward_apply.
template <class T>
void batch_norm_grad_stats(cudaStream_t stream, const T* x, const T* y, const T* dy,
                           const T* gamma, const T* stat0, const T* stat1, T* dgamma, T* dbeta,
                           T* consts, double* partial, std::int64_t splits, std::int64_t items,
                           std::int64_t channels, std::int64_t plane, double eps, bool training);

/// dx += k * (dy - a - (x - mean) * b) with the constants of batch_norm_grad_stats.
template <class T>
void batch_norm_backward_apply(cudaStream_t stream, const T* x, const T* y, const T* dy,
                               const T* consts, T* dx, std::int64_t items, std::int64_t channels,
                               std::int64_t plane);

/// Synchronized batch norm (defined in kernels/conv_bn.cuh). totals (2 * channels doubles,
/// interleaved: totals[2c], totals[2c + 1]): the per-channel sums of x - center[c] and of its
/// square (center = 0 when null), split as batch_norm_stats.
template <class T>
void batch_norm_centered_sums(cudaStream_t stream, const T* x, const double* center,
                              double* partial, std::int64_t splits, double* totals,
                              std::int64_t items, std::int64_t channels, std::int64_t plane);

/// totals (interleaved): the per-channel sums of dy and dy * (x - mean[c]) (dy masked by a
/// non-null y), the layout of the CPU op's all-reduce.
template <class T>
void batch_norm_grad_sums(cudaStream_t stream, const T* x, const T* y, const T* dy,
                          const T* mean, double* partial, std::int64_t splits, double* totals,
                          std::int64_t items, std::int64_t channels, std::int64_t plane);

/// From the global moments (mean, then biased variance; 2 * channels doubles over `count`
/// values per channel): saved mean / inv_std, the element scale, the running statistics.
template <class T>
void batch_norm_stats_global(cudaStream_t stream, const double* moments, std::int64_t count,
                             const T* gamma, T* rm, T* rv, T* save_mean, T* save_inv_std,
                             T* scale, std::int64_t channels, double eps, double momentum,
                             bool unbiased);

/// dgamma / dbeta from this replica's gradient sums `local`, the element constants
/// (mean, k, a, b) of batch_norm_backward_apply from the global ones.
template <class T>
void batch_norm_grad_consts_global(cudaStream_t stream, const double* local, const double* global,
                                   double count, const T* gamma, const T* save_mean,
                                   const T* save_inv_std, T* dgamma, T* dbeta, T* consts,
                                   std::int64_t channels);

}  // namespace nddr::cuda::launch

namespace nddr::cuda::detail {

/// Threads per block of the split reductions (kernels::kReduceBlock).
inline constexpr std::int64_t kBatchNormReduceBlock = 256;

/// The workspace of one batch-norm call: `count` per-channel values of T, then `doubles`
/// doubles of per-channel sums (synchronized batch norm), then the partial sums of the split
/// reductions (2 doubles per block).
template <class T>
struct BatchNormScratch {
  T* values;
  double* sums;
  double* partial;
  std::int64_t splits;
};

template <class T>
BatchNormScratch<T> batch_norm_scratch(Context<Cuda>& ctx, const nddr::detail::BatchNormLayout& L,
                                       std::int64_t count, std::int64_t doubles = 0) {
  const std::int64_t splits =
      ops::batch_norm_reduce_splits(L.items, L.plane, L.channels, kBatchNormReduceBlock);
  const auto align = [](std::size_t b) { return (b + 255) / 256 * 256; };
  const std::size_t head = align(static_cast<std::size_t>(count) * sizeof(T));
  const std::size_t mid = align(static_cast<std::size_t>(doubles) * sizeof(double));
  char* ws = static_cast<char*>(ctx.workspace_bytes(
      head + mid + static_cast<std::size_t>(2 * splits * L.channels) * sizeof(double)));
  return {reinterpret_cast<T*>(ws), reinterpret_cast<double*>(ws + head),
          reinterpret_cast<double*>(ws + head + mid), splits};
}

/// The backward passes of both modes; checks are done by the caller. y: forward's output with
/// the fused ReLU, else null.
template <class T>
void batch_norm_backward(Context<Cuda>& ctx, const nddr::detail::BatchNormLayout& L, const T* x,
                         const T* y, const T* dy, const T* gamma, const T* stat0, const T* stat1,
                         T* dx, T* dgamma, T* dbeta, double eps, bool training) {
  const auto scratch = batch_norm_scratch<T>(ctx, L, 4 * L.channels);
  T* consts = scratch.values;
  launch::batch_norm_grad_stats<T>(ctx.stream(), x, y, dy, gamma, stat0, stat1, dgamma, dbeta,
                                   consts, scratch.partial, scratch.splits, L.items, L.channels,
                                   L.plane, eps, training);
  if (dx)
    launch::batch_norm_backward_apply<T>(ctx.stream(), x, y, dy, consts, dx, L.items, L.channels,
                                         L.plane);
}

/// Device -> host copy of `n` doubles on the context's stream; waits for it.
inline void download_sums(Context<Cuda>& ctx, const double* src, double* dst, std::size_t n,
                          const char* who) {
  NDDR_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(double), cudaMemcpyDeviceToHost,
                                  ctx.stream()),
                  who, ": downloading ", n, " per-channel sums for the all-reduce");
  ctx.synchronize();
}

/// Host -> device copy of `n` doubles on the context's stream. From pageable memory the runtime
/// stages the host buffer before returning, so it may go away afterwards without a wait.
inline void upload_sums(Context<Cuda>& ctx, const double* src, double* dst, std::size_t n,
                        const char* who) {
  NDDR_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(double), cudaMemcpyHostToDevice,
                                  ctx.stream()),
                  who, ": uploading ", n, " all-reduced per-channel sums");
}

}  // namespace nddr::cuda::detail

namespace nddr::ops::backend {

/// Batch normalisation on the GPU (front door: nddr/ops/batch_norm.hpp, which validates and
/// passes the layout `L` of x). T = float or double.
template <>
struct BatchNorm<Cuda> {
  template <class T>
  static void batch_norm_forward_training(
      Context<Cuda>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cuda> x,
      TensorView<const T, Cuda> gamma, TensorView<const T, Cuda> beta,
      TensorView<T, Cuda> running_mean, TensorView<T, Cuda> running_var, TensorView<T, Cuda> y,
      TensorView<T, Cuda> save_mean, TensorView<T, Cuda> save_inv_std,
      const BatchNormOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::batch_norm_forward_training: CUDA supports float and double");
    const bool affine = opt.affine();
    const auto scratch = cuda::detail::batch_norm_scratch<T>(ctx, L, L.channels);
    T* scale = scratch.values;  // (C)
    cuda::launch::batch_norm_stats<T>(ctx.stream(), x.data(), affine ? gamma.data() : nullptr,
                                      running_mean.data(), running_var.data(), save_mean.data(),
                                      save_inv_std.data(), scale, scratch.partial, scratch.splits,
                                      L.items, L.channels, L.plane, opt.eps(), opt.momentum(),
                                      opt.unbiased_running_var());
    cuda::launch::batch_norm_apply<T>(ctx.stream(), x.data(), save_mean.data(), scale,
                                      affine ? beta.data() : nullptr, y.data(), L.items, L.channels,
                                      L.plane, opt.relu());
  }

  template <class T>
  static void batch_norm_forward_inference(
      Context<Cuda>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cuda> x,
      TensorView<const T, Cuda> gamma, TensorView<const T, Cuda> beta,
      TensorView<const T, Cuda> running_mean, TensorView<const T, Cuda> running_var,
      TensorView<T, Cuda> y, const BatchNormOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::batch_norm_forward_inference: CUDA supports float and double");
    const bool affine = opt.affine();
    T* scale = ctx.workspace<T>(static_cast<std::size_t>(L.channels));  // (C)
    cuda::launch::batch_norm_inference_scale<T>(ctx.stream(), affine ? gamma.data() : nullptr,
                                                running_var.data(), scale, L.channels, opt.eps());
    cuda::launch::batch_norm_apply<T>(ctx.stream(), x.data(), running_mean.data(), scale,
                                      affine ? beta.data() : nullptr, y.data(), L.items, L.channels,
                                      L.plane, opt.relu());
  }

  template <class T>
  static void batch_norm_backward_training(
      Context<Cuda>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cuda> x,
      TensorView<const T, Cuda> dy, TensorView<const T, Cuda> gamma,
      TensorView<const T, Cuda> save_mean, TensorView<const T, Cuda> save_inv_std,
      TensorView<T, Cuda> dx, TensorView<T, Cuda> dgamma, TensorView<T, Cuda> dbeta,
      const BatchNormOptions& opt, TensorView<const T, Cuda> y) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::batch_norm_backward_training: CUDA supports float and double");
    const bool affine = opt.affine();
    cuda::detail::batch_norm_backward<T>(
        ctx, L, x.data(), opt.relu() ? y.data() : nullptr, dy.data(),
        affine ? gamma.data() : nullptr, save_mean.data(), save_inv_std.data(), dx.data(),
        affine ? dgamma.data() : nullptr, affine ? dbeta.data() : nullptr, opt.eps(), true);
  }

  template <class T>
  static void batch_norm_backward_inference(
      Context<Cuda>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cuda> x,
      TensorView<const T, Cuda> dy, TensorView<const T, Cuda> gamma,
      TensorView<const T, Cuda> running_mean, TensorView<const T, Cuda> running_var,
      TensorView<T, Cuda> dx, TensorView<T, Cuda> dgamma, TensorView<T, Cuda> dbeta,
      const BatchNormOptions& opt, TensorView<const T, Cuda> y) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::batch_norm_backward_inference: CUDA supports float and double");
    const bool affine = opt.affine();
    cuda::detail::batch_norm_backward<T>(
        ctx, L, x.data(), opt.relu() ? y.data() : nullptr, dy.data(),
        affine ? gamma.data() : nullptr, running_mean.data(), running_var.data(), dx.data(),
        affine ? dgamma.data() : nullptr, affine ? dbeta.data() : nullptr, opt.eps(), false);
  }

  template <class T>
  static void batch_norm_forward_training_sync(
      Context<Cuda>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cuda> x,
      TensorView<const T, Cuda> gamma, TensorView<const T, Cuda> beta,
      TensorView<T, Cuda> running_mean, TensorView<T, Cuda> running_var, TensorView<T, Cuda> y,
      TensorView<T, Cuda> save_mean, TensorView<T, Cuda> save_inv_std, const BatchNormOptions& opt,
      const BatchNormAllReduce& all_reduce) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::batch_norm_forward_training_sync: CUDA supports float and double");
    constexpr const char* who = "nddr::ops::batch_norm_forward_training_sync";
    const bool affine = opt.affine();
    const std::size_t C = static_cast<std::size_t>(L.channels);
    // values: the element scale (C); sums: the device totals (2C, interleaved per channel),
    // then the moments (mean, then variance; 2C).
    const auto s = cuda::detail::batch_norm_scratch<T>(ctx, L, L.channels, 4 * L.channels);
    double* totals = s.sums;
    double* moments = s.sums + 2 * C;
    // 1. Sums of x per channel, and the element count, over every replica.
    cuda::launch::batch_norm_centered_sums<T>(ctx.stream(), x.data(), nullptr, s.partial, s.splits,
                                              totals, L.items, L.channels, L.plane);
    std::vector<double> device_totals(2 * C), sums(C + 1), host(2 * C);
    cuda::detail::download_sums(ctx, totals, device_totals.data(), 2 * C, who);
    for (std::size_t c = 0; c < C; ++c) sums[c] = device_totals[2 * c];
    sums[C] = static_cast<double>(L.count());
    all_reduce(std::span<double>(sums));
    const double count = sums[C];
    check<ShapeError>(count > 1.0, who, ": x has shape ", x.shape(), " and the global batch ",
                      count, " values per channel; training needs more than one (N*H*W > 1)");
    for (std::size_t c = 0; c < C; ++c) host[c] = sums[c] / count;
    // 2. Squared deviations from the global mean, over every replica.
    cuda::detail::upload_sums(ctx, host.data(), moments, C, who);
    cuda::launch::batch_norm_centered_sums<T>(ctx.stream(), x.data(), moments, s.partial, s.splits,
                                              totals, L.items, L.channels, L.plane);
    std::vector<double> sq(C);
    cuda::detail::download_sums(ctx, totals, device_totals.data(), 2 * C, who);
    for (std::size_t c = 0; c < C; ++c) sq[c] = device_totals[2 * c + 1];
    all_reduce(std::span<double>(sq));
    for (std::size_t c = 0; c < C; ++c) host[C + c] = sq[c] / count;
    // 3. Saved statistics, running statistics and the normalisation, from the global moments.
    cuda::detail::upload_sums(ctx, host.data(), moments, 2 * C, who);
    cuda::launch::batch_norm_stats_global<T>(
        ctx.stream(), moments, static_cast<std::int64_t>(count), affine ? gamma.data() : nullptr,
        running_mean.data(), running_var.data(), save_mean.data(), save_inv_std.data(), s.values,
        L.channels, opt.eps(), opt.momentum(), opt.unbiased_running_var());
    cuda::launch::batch_norm_apply<T>(ctx.stream(), x.data(), save_mean.data(), s.values,
                                      affine ? beta.data() : nullptr, y.data(), L.items, L.channels,
                                      L.plane, opt.relu());
  }

  template <class T>
  static void batch_norm_backward_training_sync(
      Context<Cuda>& ctx, const nddr::detail::BatchNormLayout& L, TensorView<const T, Cuda> x,
      TensorView<const T, Cuda> dy, TensorView<const T, Cuda> gamma,
      TensorView<const T, Cuda> save_mean, TensorView<const T, Cuda> save_inv_std,
      TensorView<T, Cuda> dx, TensorView<T, Cuda> dgamma, TensorView<T, Cuda> dbeta,
      const BatchNormOptions& opt, const BatchNormAllReduce& all_reduce,
      TensorView<const T, Cuda> y) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::batch_norm_backward_training_sync: CUDA supports float and double");
    constexpr const char* who = "nddr::ops::batch_norm_backward_training_sync";
    const bool affine = opt.affine();
    const std::size_t C = static_cast<std::size_t>(L.channels);
    // values: the element constants (4C); sums: this replica's totals (2C), then the global ones.
    const auto s = cuda::detail::batch_norm_scratch<T>(ctx, L, 4 * L.channels, 4 * L.channels);
    double* local = s.sums;
    double* global = s.sums + 2 * C;
    cuda::launch::batch_norm_grad_sums<T>(ctx.stream(), x.data(), opt.relu() ? y.data() : nullptr,
                                          dy.data(), save_mean.data(), s.partial, s.splits, local,
                                          L.items, L.channels, L.plane);
    // The device totals are in the CPU op's layout: sums[2c] = sum(dy), sums[2c + 1] =
    // sum(dy * (x - mean)); sums[2C] = count. Every replica takes part in the reduction, even
    // one whose dx is not wanted.
    std::vector<double> sums(2 * C + 1);
    cuda::detail::download_sums(ctx, local, sums.data(), 2 * C, who);
    sums[2 * C] = static_cast<double>(L.count());
    all_reduce(std::span<double>(sums));
    const double count = sums[2 * C];
    if (!dx.empty())
      check<ShapeError>(count > 1.0, who, ": x has shape ", x.shape(), " and the global batch ",
                        count, " values per channel; training needs more than one (N*H*W > 1)");
    cuda::detail::upload_sums(ctx, sums.data(), global, 2 * C, who);
    cuda::launch::batch_norm_grad_consts_global<T>(
        ctx.stream(), local, global, count, affine ? gamma.data() : nullptr, save_mean.data(),
        save_inv_std.data(), affine && !dgamma.empty() ? dgamma.data() : nullptr,
        affine && !dbeta.empty() ? dbeta.data() : nullptr, s.values, L.channels);
    if (!dx.empty())
      cuda::launch::batch_norm_backward_apply<T>(ctx.stream(), x.data(),
                                                 opt.relu() ? y.data() : nullptr, dy.data(),
                                                 s.values, dx.data(), L.items, L.channels, L.plane);
  }
};

}  // namespace nddr::ops::backend
