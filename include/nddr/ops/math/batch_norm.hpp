#pragma once
/// \file
/// Batch normalisation per channel over (N, H, W): the options and the per-channel math that
/// every backend runs (CPU loops now, CUDA kernels later).
///
/// Training: y = (x - mean_B) / sqrt(var_B + eps) * gamma + beta with the batch mean and the
/// biased batch variance; running <- (1 - momentum) * running + momentum * batch (PyTorch
/// meaning of momentum). Inference: the same with the running statistics.

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <type_traits>

#include "nddr/core/error.hpp"
#include "nddr/core/macros.hpp"
#include "nddr/ops/math/activation.hpp"

namespace nddr {

/// Adds host per-channel statistics over every replica of a data-parallel run, in place (e.g. an
/// MPI all-reduce sum). The identity on a single replica. The `_sync` ops are synchronized
/// (cross-replica) batch normalisation: each replica holds a slice of the global batch, and the
/// per-channel sums are added over every replica by it before they are used.
using BatchNormAllReduce = std::function<void(std::span<double>)>;

namespace detail {

/// The (N, C, H, W) extents as the BN loops use them.
struct BatchNormLayout {
  std::int64_t items;     // N
  std::int64_t channels;  // C
  std::int64_t plane;     // H * W
  std::int64_t stride() const { return channels * plane; }
  std::int64_t count() const { return items * plane; }
};

}  // namespace detail

/// Run-time options of batch normalisation; defaults are PyTorch's `BatchNorm2d`.
/// Fluent: `BatchNormOptions{}.eps(1e-3).momentum(0.05)`; each field reads as `opt.eps()`.
class BatchNormOptions {
 public:
  /// Added to the variance before the square root (> 0). Default 1e-5.
  double eps() const { return eps_; }
  BatchNormOptions& eps(double v) {
    eps_ = v;
    return *this;
  }
  /// Weight of the batch statistic in the running average, in [0, 1]: running = (1 - momentum)
  /// * running + momentum * batch. Default 0.1. TF's `decay` is 1 - momentum.
  double momentum() const { return momentum_; }
  BatchNormOptions& momentum(double v) {
    momentum_ = v;
    return *this;
  }
  /// Learnable per-channel scale gamma (`.weight`) and shift beta (`.bias`). Default on.
  bool affine() const { return affine_; }
  BatchNormOptions& affine(bool v) {
    affine_ = v;
    return *this;
  }
  /// The running variance averages the unbiased batch variance (times M / (M - 1), M = N*H*W),
  /// as PyTorch and TF's fused kernel do; normalisation always uses the biased one. Default on.
  bool unbiased_running_var() const { return unbiased_running_var_; }
  BatchNormOptions& unbiased_running_var(bool v) {
    unbiased_running_var_ = v;
    return *this;
  }

  /// A ReLU fused after the normalisation: y = max(BN(x), 0) (NaN stays NaN, as ops::relu), one
  /// pass instead of two in each direction. The backward ops then take forward's y as their
  /// last argument and read the ReLU's mask there; dy is the gradient w.r.t. the ReLU's output.
  /// Default off.
  bool relu() const { return relu_; }
  BatchNormOptions& relu(bool v) {
    relu_ = v;
    return *this;
  }

  /// The TF-slim `batch_norm` of the NDDR-CNN code: eps 1e-3, decay 0.95 (momentum 0.05).
  static BatchNormOptions tf_slim() { return BatchNormOptions{}.eps(1e-3).momentum(0.05); }

  /// Throws OptionError naming `who`, the field and the value unless eps > 0 and
  /// 0 <= momentum <= 1 (NaN fails both).
  void validate(const char* who) const {
    check<OptionError>(eps_ > 0.0 && std::isfinite(eps_), who,
                       ": BatchNormOptions.eps must be a finite value > 0, got ", eps_);
    check<OptionError>(momentum_ >= 0.0 && momentum_ <= 1.0, who,
                       ": BatchNormOptions.momentum must be in [0, 1], got ", momentum_);
  }

 private:
  double eps_ = 1e-5;
  double momentum_ = 0.1;
  bool affine_ = true;
  bool unbiased_running_var_ = true;
  bool relu_ = false;
};

}  // namespace nddr

namespace nddr::ops {

/// Mean and biased variance of one channel.
struct BatchNormMoments {
  double mean = 0.0;
  double var = 0.0;
};

/// The two reductions of the training backward pass for one channel.
struct BatchNormGradSums {
  double sum_dy = 0.0;      ///< sum(dy)
  double sum_dy_xmu = 0.0;  ///< sum(dy * (x - mean))
};

/// The terms a and b of the training backward element (batch_norm_backward_element).
struct BatchNormGradTerms {
  double a = 0.0;  ///< sum(dy) / M
  double b = 0.0;  ///< inv_std^2 * sum(dy * (x - mean)) / M
};

/// A channel's a and b from its gradient sums over M = `count` values (of this replica, or of
/// the global batch under synchronized BN); shared by the CPU ops and the CUDA kernels.
NDDR_HOST_DEVICE inline BatchNormGradTerms batch_norm_grad_terms(BatchNormGradSums s,
                                                                 double inv_std, double count) {
  return {s.sum_dy / count, inv_std * inv_std * s.sum_dy_xmu / count};
}

/// The gradient w.r.t. the normalised value: dy, or with the fused ReLU (y non-null, forward's
/// output) dy where y > 0. The GPU kernels use this form (the branch is uniform there).
template <class T>
NDDR_HOST_DEVICE inline T batch_norm_grad_in(const T* y, const T* dy, std::int64_t i) {
  return y ? relu_pass(y[i], dy[i]) : dy[i];
}

/// The same for the CPU loops, with the fused ReLU decided at compile time and the mask applied
/// as a bit mask: the same value as relu_pass (dy, or +0 where y <= 0 or y is NaN), but no
/// branch. GCC compiled relu_pass's select in these scalar double-sum loops into a jump on the
/// sign of y, which random signs mispredict half the time: the fused backward ran 9x slower.
template <bool Relu, class T>
inline T batch_norm_grad_in_static(const T* y, const T* dy, std::int64_t i) {
  if constexpr (Relu) {
    using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    const U keep = U(0) - static_cast<U>(y[i] > T(0));
    return std::bit_cast<T>(static_cast<U>(std::bit_cast<U>(dy[i]) & keep));
  } else {
    return dy[i];
  }
}

/// Sum over one channel of f(i), where i runs over the channel's element offsets: `items`
/// planes of `plane` contiguous elements, `stride` elements apart. Four partial sums break the
/// floating-point dependency chain (the loop cannot be reassociated by the compiler).
template <class F>
NDDR_HOST_DEVICE inline double batch_norm_channel_sum(std::int64_t items, std::int64_t plane,
                                                      std::int64_t stride, F f) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  for (std::int64_t n = 0; n < items; ++n) {
    const std::int64_t base = n * stride;
    std::int64_t i = 0;
    for (; i + 4 <= plane; i += 4) {
      s0 += f(base + i);
      s1 += f(base + i + 1);
      s2 += f(base + i + 2);
      s3 += f(base + i + 3);
    }
    for (; i < plane; ++i) s0 += f(base + i);
  }
  return (s0 + s1) + (s2 + s3);
}

/// Moments of one channel stored as `items` planes of `plane` contiguous elements, `stride`
/// elements apart (for NCHW: items = N, plane = H*W, stride = C*H*W, x at channel c's first
/// element). Two passes in double, so float inputs with a large mean keep their variance.
template <class T>
NDDR_HOST_DEVICE inline BatchNormMoments batch_norm_channel_moments(const T* x, std::int64_t items,
                                                                    std::int64_t plane,
                                                                    std::int64_t stride) {
  const double count = static_cast<double>(items * plane);
  BatchNormMoments m;
  m.mean = batch_norm_channel_sum(items, plane, stride,
                                  [x](std::int64_t i) { return static_cast<double>(x[i]); }) /
           count;
  const double mean = m.mean;
  m.var = batch_norm_channel_sum(items, plane, stride,
                                 [x, mean](std::int64_t i) {
                                   const double d = static_cast<double>(x[i]) - mean;
                                   return d * d;
                                 }) /
          count;
  return m;
}

/// sum(dy) and sum(dy * (x - mean)) over one channel (layout as in batch_norm_channel_moments).
/// With the fused ReLU (`Relu`), `y` (forward's output, same layout) masks dy; unused otherwise.
template <bool Relu = false, class T>
inline BatchNormGradSums batch_norm_channel_grad_sums(const T* x, const T* dy, std::int64_t items,
                                                      std::int64_t plane, std::int64_t stride,
                                                      double mean, const T* y = nullptr) {
  BatchNormGradSums s;
  s.sum_dy = batch_norm_channel_sum(items, plane, stride, [y, dy](std::int64_t i) {
    return static_cast<double>(batch_norm_grad_in_static<Relu>(y, dy, i));
  });
  s.sum_dy_xmu = batch_norm_channel_sum(items, plane, stride, [x, y, dy, mean](std::int64_t i) {
    return static_cast<double>(batch_norm_grad_in_static<Relu>(y, dy, i)) *
           (static_cast<double>(x[i]) - mean);
  });
  return s;
}

/// A share of a per-channel reduction split over many GPU threads: visits the channel offsets
/// n * stride + p (n < items, p < plane) whose flat index j = n * plane + p runs from `first`
/// in steps of `step`, calling f(offset) for each in that order, without a division per
/// element. Offsets are taken four at a time and the four calls made together, so that a GPU
/// thread has four loads in flight instead of one (the reductions are bound by memory
/// latency otherwise). The threads first = 0 .. step - 1 together visit every offset once
/// (tests/ops check this on the CPU).
template <class F>
NDDR_HOST_DEVICE inline void batch_norm_strided_visit(std::int64_t items, std::int64_t plane,
                                                      std::int64_t stride, std::int64_t first,
                                                      std::int64_t step, F f) {
  if (plane <= 0 || first >= items * plane) return;
  std::int64_t n = first / plane, p = first % plane;
  const std::int64_t dn = step / plane, dp = step % plane;
  for (;;) {
    std::int64_t off[4];
    int k = 0;
    for (; k < 4 && n < items; ++k) {
      off[k] = n * stride + p;
      p += dp;
      n += dn;
      if (p >= plane) {
        p -= plane;
        ++n;
      }
    }
    if (k < 4) {
      for (int j = 0; j < k; ++j) f(off[j]);
      return;
    }
    f(off[0]);
    f(off[1]);
    f(off[2]);
    f(off[3]);
  }
}

/// Batch moments of `count` values from sums of the values less a shift: s1 = sum(x - shift),
/// s2 = sum((x - shift)^2), all in double. With a shift near the mean (the GPU uses the
/// channel's first element) the variance keeps its digits however large the mean is; the
/// result is clamped at 0 against rounding.
NDDR_HOST_DEVICE inline BatchNormMoments batch_norm_moments_from_shifted_sums(double count,
                                                                              double shift,
                                                                              double s1,
                                                                              double s2) {
  const double d = s1 / count;
  BatchNormMoments m;
  m.mean = shift + d;
  const double var = s2 / count - d * d;
  m.var = var > 0.0 ? var : 0.0;
  return m;
}

/// Blocks per channel of the GPU's per-channel reductions: about 1024 blocks in all, at least
/// 8 elements per thread of `block` threads, at most 1024. Depends on the sizes only, so a
/// reduction sums in the same order every time.
inline std::int64_t batch_norm_reduce_splits(std::int64_t items, std::int64_t plane,
                                             std::int64_t channels, std::int64_t block) {
  const std::int64_t by_work = items * plane / (block * 8);
  const std::int64_t by_grid = channels > 0 ? (1024 + channels - 1) / channels : 1;
  std::int64_t s = by_work < by_grid ? by_work : by_grid;
  if (s > 1024) s = 1024;
  return s < 1 ? 1 : s;
}

/// Moves the running statistics of one channel towards the batch moments of `count` values.
template <class T>
NDDR_HOST_DEVICE inline void batch_norm_update_running(T& running_mean, T& running_var,
                                                       BatchNormMoments batch, std::int64_t count,
                                                       double momentum, bool unbiased) {
  const double var = unbiased
                         ? batch.var * static_cast<double>(count) / static_cast<double>(count - 1)
                         : batch.var;
  running_mean =
      static_cast<T>((1.0 - momentum) * static_cast<double>(running_mean) + momentum * batch.mean);
  running_var =
      static_cast<T>((1.0 - momentum) * static_cast<double>(running_var) + momentum * var);
}

/// 1 / sqrt(var + eps).
NDDR_HOST_DEVICE inline double batch_norm_inv_std(double var, double eps) {
  return 1.0 / std::sqrt(var + eps);
}

/// Element body of the forward pass; scale = gamma * inv_std, shift = beta.
template <class T>
NDDR_HOST_DEVICE inline T batch_norm_element(T x, T mean, T scale, T shift) {
  return (x - mean) * scale + shift;
}

/// The forward element with the optional fused ReLU (BatchNormOptions::relu).
template <class T>
NDDR_HOST_DEVICE inline T batch_norm_element(T x, T mean, T scale, T shift, bool relu) {
  const T v = batch_norm_element(x, mean, scale, shift);
  return relu ? relu_element(v) : v;
}


/// Element body of the backward pass (accumulates): dx += k * (dy - a - (x - mean) * b) with
/// per-channel k = gamma * inv_std, a = sum(dy) / M, b = inv_std^2 * sum(dy * (x - mean)) / M
/// when the batch statistics depend on x (training), and a = b = 0 when they are constants
/// (inference).
template <class T>
NDDR_HOST_DEVICE inline void batch_norm_backward_element(T x, T dy, T mean, T k, T a, T b, T& dx) {
  dx += k * (dy - a - (x - mean) * b);
}

}  // namespace nddr::ops
