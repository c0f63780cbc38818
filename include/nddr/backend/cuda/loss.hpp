#pragma once
/// \file
/// CUDA losses (kernels/loss.cuh): softmax cross-entropy with an ignore label and the
/// surface-normal loss, per pixel with the bodies of nddr/ops/loss.hpp. The loss sum, the
/// valid-pixel count and the first out-of-range label are reduced on the device in double with
/// a fixed two-pass block reduction (deterministic for a given size), then the three numbers
/// come to the host: forward and backward wait for the device.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/loss.hpp"

namespace nddr::cuda {

/// Device reduction of a loss: sum of the valid pixels' losses, their count, and the smallest
/// pixel index with an out-of-range label (max value: none).
struct LossStats {
  double sum;
  double count;
  unsigned long long first_bad;
};

}  // namespace nddr::cuda

namespace nddr::cuda::launch {

/// Blocks of the first reduction pass; the workspace holds this many partial stats plus one.
inline constexpr int kLossBlocks = 512;

/// Cross-entropy stats over `pixels` pixels into out[kLossBlocks] (out[0..kLossBlocks) are
/// scratch); the loss sum only when `with_loss`.
template <class T>
void cross_entropy_stats(cudaStream_t stream, const T* logits, const std::int32_t* labels,
                         std::int64_t pixels, std::int64_t classes, std::int64_t plane,
                         std::int32_t ignore_label, bool with_loss, LossStats* out);
/// dlogits += coeff * (softmax - onehot) at the pixels whose label is not ignored.
template <class T>
void cross_entropy_backward(cudaStream_t stream, const T* logits, const std::int32_t* labels,
                            T* dlogits, std::int64_t pixels, std::int64_t classes,
                            std::int64_t plane, std::int32_t ignore_label, T coeff,
                            const LossStats* total = nullptr);
/// Normal-loss stats (no labels, so first_bad stays none).
template <class T>
void normal_loss_stats(cudaStream_t stream, const T* p, const T* g, std::int64_t pixels,
                       std::int64_t plane, NormalLossForm form, T eps, bool with_loss,
                       LossStats* out);
/// dp += coeff * d(loss)/dp at the valid pixels.
template <class T>
void normal_loss_backward(cudaStream_t stream, const T* p, const T* g, T* dp, std::int64_t pixels,
                          std::int64_t plane, NormalLossForm form, T eps, T coeff,
                          const LossStats* total = nullptr);

/// Dense-loss stats over `n` elements (no labels, so first_bad stays none).
template <class T>
void dense_loss_stats(cudaStream_t stream, const T* p, const T* g, std::int64_t n,
                      DenseLossForm form, DenseLossSubset subset, bool zero_invalid,
                      bool with_loss, LossStats* out);
/// dp += coeff * d(loss)/dp at the valid elements.
template <class T>
void dense_loss_backward(cudaStream_t stream, const T* p, const T* g, T* dp, std::int64_t n,
                         DenseLossForm form, DenseLossSubset subset, bool zero_invalid, T coeff,
                         const LossStats* total = nullptr);

}  // namespace nddr::cuda::launch

namespace nddr::cuda::detail {

/// Runs `launch(out)` with the context workspace as reduction scratch and returns the stats.
template <class F>
LossStats loss_stats(Context<Cuda>& ctx, F&& launch) {
  auto* scratch = static_cast<LossStats*>(
      ctx.workspace_bytes((launch::kLossBlocks + 1) * sizeof(LossStats)));
  launch(scratch);
  LossStats s{};
  NDDR_CUDA_CHECK(cudaMemcpyAsync(&s, scratch + launch::kLossBlocks, sizeof s,
                                  cudaMemcpyDeviceToHost, ctx.stream()),
                  "reading the loss reduction");
  ctx.synchronize();
  return s;
}

/// Throws the CPU op's ValueError for the out-of-range label at pixel `p`, if any.
inline void check_first_bad_label(Context<Cuda>& ctx, const char* who, const Shape& logits,
                                  const std::int32_t* labels, const LossStats& s,
                                  std::int32_t ignore_label) {
  if (s.first_bad == std::numeric_limits<unsigned long long>::max()) return;
  const auto p = static_cast<std::int64_t>(s.first_bad);
  std::int32_t label = 0;
  NDDR_CUDA_CHECK(cudaMemcpyAsync(&label, labels + p, sizeof label, cudaMemcpyDeviceToHost,
                                  ctx.stream()),
                  "reading an out-of-range label");
  ctx.synchronize();
  const std::int64_t plane = logits.h() * logits.w();
  throw ValueError(nddr::detail::concat(
      who, ": label ", label, " at (n, h, w) = (", p / plane, ", ", (p % plane) / logits.w(), ", ",
      p % logits.w(), ") is out of range for K = ", logits.c(), " classes (valid 0..",
      logits.c() - 1, ", ignore_label ", ignore_label, ")"));
}

}  // namespace nddr::cuda::detail

namespace nddr::ops::backend {

/// The losses on the GPU (front door: nddr/ops/loss.hpp). `s` is the rank-4 (N, K, H, W) view
/// of the logits' shape. Each call waits for the device; out-of-range labels are found by the
/// reduction and reported with the CPU op's message.
template <>
struct Loss<Cuda> {
  template <class T>
  static T softmax_cross_entropy_forward(Context<Cuda>& ctx, const Shape& s,
                                         TensorView<const T, Cuda> logits,
                                         TensorView<const std::int32_t, Cuda> labels,
                                         const SoftmaxCrossEntropyOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::softmax_cross_entropy_forward: CUDA supports float and double");
    constexpr const char* kWho = "nddr::ops::softmax_cross_entropy_forward";
    const std::int64_t plane = s.h() * s.w();
    const cuda::LossStats st = cuda::detail::loss_stats(ctx, [&](cuda::LossStats* out) {
      cuda::launch::cross_entropy_stats<T>(ctx.stream(), logits.data(), labels.data(),
                                           s.n() * plane, s.c(), plane, opt.ignore_label(), true,
                                           out);
    });
    cuda::detail::check_first_bad_label(ctx, kWho, s, labels.data(), st, opt.ignore_label());
    if (st.count == 0.0) return T(0);
    return static_cast<T>(opt.scale() * st.sum / st.count);
  }

  template <class T>
  static void softmax_cross_entropy_backward(Context<Cuda>& ctx, const Shape& s,
                                             TensorView<const T, Cuda> logits,
                                             TensorView<const std::int32_t, Cuda> labels,
                                             TensorView<T, Cuda> dlogits,
                                             const SoftmaxCrossEntropyOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::softmax_cross_entropy_backward: CUDA supports float and double");
    constexpr const char* kWho = "nddr::ops::softmax_cross_entropy_backward";
    const std::int64_t plane = s.h() * s.w();
    const cuda::LossStats st = cuda::detail::loss_stats(ctx, [&](cuda::LossStats* out) {
      cuda::launch::cross_entropy_stats<T>(ctx.stream(), logits.data(), labels.data(),
                                           s.n() * plane, s.c(), plane, opt.ignore_label(), false,
                                           out);
    });
    cuda::detail::check_first_bad_label(ctx, kWho, s, labels.data(), st, opt.ignore_label());
    if (st.count == 0.0) return;
    const T coeff = static_cast<T>(opt.scale() / st.count);
    cuda::launch::cross_entropy_backward<T>(ctx.stream(), logits.data(), labels.data(),
                                            dlogits.data(), s.n() * plane, s.c(), plane,
                                            opt.ignore_label(), coeff);
  }

  template <class T>
  static T normal_loss_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> p,
                               TensorView<const T, Cuda> g, const NormalLossOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::normal_loss_forward: CUDA supports float and double");
    const Shape& s = p.shape();
    const std::int64_t plane = s.h() * s.w();
    const cuda::LossStats st = cuda::detail::loss_stats(ctx, [&](cuda::LossStats* out) {
      cuda::launch::normal_loss_stats<T>(ctx.stream(), p.data(), g.data(), s.n() * plane, plane,
                                         opt.form(), static_cast<T>(opt.eps()), true, out);
    });
    if (st.count == 0.0) return T(0);
    return static_cast<T>(opt.scale() * st.sum / st.count);
  }

  template <class T>
  static void normal_loss_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> p,
                                   TensorView<const T, Cuda> g, TensorView<T, Cuda> dp,
                                   const NormalLossOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::normal_loss_backward: CUDA supports float and double");
    const Shape& s = p.shape();
    const std::int64_t plane = s.h() * s.w();
    const T eps = static_cast<T>(opt.eps());
    const cuda::LossStats st = cuda::detail::loss_stats(ctx, [&](cuda::LossStats* out) {
      cuda::launch::normal_loss_stats<T>(ctx.stream(), p.data(), g.data(), s.n() * plane, plane,
                                         opt.form(), eps, false, out);
    });
    if (st.count == 0.0) return;
    const T coeff = static_cast<T>(opt.scale() / st.count);
    cuda::launch::normal_loss_backward<T>(ctx.stream(), p.data(), g.data(), dp.data(),
                                          s.n() * plane, plane, opt.form(), eps, coeff);
  }
};

}  // namespace nddr::ops::backend
