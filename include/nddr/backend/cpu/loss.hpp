#pragma once
/// \file
/// CPU losses: softmax cross-entropy with an ignore label, surface-normal loss. Both are the
/// mean over the valid pixels of the whole batch, times the loss weight `scale`; with no valid
/// pixel the loss is 0 and the gradient is 0 (PyTorch returns NaN there).

#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/loss.hpp"

namespace nddr::ops {

namespace detail {

/// Number of pixels whose label is not ignored; throws ValueError naming the first label out
/// of [0, K) and its position. `logits` is the rank-4 (N, K, H, W) view of the logits.
inline std::int64_t count_valid_labels(const char* who, const Shape& logits,
                                       const std::int32_t* labels, std::int32_t ignore_label) {
  const std::int64_t plane = logits.h() * logits.w();
  const std::int64_t pixels = logits.n() * plane;
  std::int64_t valid = 0;
  for (std::int64_t p = 0; p < pixels; ++p) {
    const LabelKind kind = classify_label(labels[p], logits.c(), ignore_label);
    if (kind == LabelKind::kOutOfRange)
      throw ValueError(nddr::detail::concat(
          who, ": label ", labels[p], " at (n, h, w) = (", p / plane, ", ",
          (p % plane) / logits.w(), ", ", p % logits.w(), ") is out of range for K = ", logits.c(),
          " classes (valid 0..", logits.c() - 1, ", ignore_label ", ignore_label, ")"));
    valid += kind == LabelKind::kValid;
  }
  return valid;
}

/// Sums `pixel_loss(p)` over the pixels [0, rows * cols), one partial sum per row in a fixed
/// order, so the result does not depend on the thread count.
template <class F>
double deterministic_pixel_sum(Context<Cpu>& ctx, std::int64_t rows, std::int64_t cols,
                               F&& pixel_loss) {
  double* partial = ctx.workspace<double>(static_cast<std::size_t>(rows));
  nddr::detail::parallel_for(ctx, rows, [&](std::int64_t r) {
    double s = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) s += pixel_loss(r * cols + c);
    partial[r] = s;
  });
  double total = 0.0;
  for (std::int64_t r = 0; r < rows; ++r) total += partial[r];
  return total;
}

}  // namespace detail

namespace detail {

/// Number of pixels of g (N, 3, H, W) whose vector is not zero.
template <class T>
std::int64_t count_valid_normals(Context<Cpu>& ctx, const Shape& s, const T* g) {
  const std::int64_t plane = s.h() * s.w();
  return static_cast<std::int64_t>(
      deterministic_pixel_sum(ctx, s.n() * s.h(), s.w(), [=](std::int64_t p) {
        return normal_pixel_valid(g + pixel_offset(p, 3, plane), plane) ? 1.0 : 0.0;
      }));
}

}  // namespace detail

namespace backend {

/// The losses on the CPU (front door: nddr/ops/loss.hpp). `s` is the rank-4 (N, K, H, W) view of
/// the logits' shape. Out-of-range labels are found here, reading the labels once.
template <>
struct Loss<Cpu> {
  template <class T>
  static T softmax_cross_entropy_forward(Context<Cpu>& ctx, const Shape& s,
                                         TensorView<const T, Cpu> logits,
                                         TensorView<const std::int32_t, Cpu> labels,
                                         const SoftmaxCrossEntropyOptions& opt) {
    constexpr const char* kWho = "nddr::ops::softmax_cross_entropy_forward";
    const std::int32_t* lp = labels.data();
    const std::int64_t valid = detail::count_valid_labels(kWho, s, lp, opt.ignore_label());
    if (valid == 0) return T(0);
    const T* xp = logits.data();
    const std::int64_t classes = s.c(), plane = s.h() * s.w();
    const std::int32_t ignore = opt.ignore_label();
    const double total =
        detail::deterministic_pixel_sum(ctx, s.n() * s.h(), s.w(), [=](std::int64_t p) {
          if (lp[p] == ignore) return 0.0;
          return static_cast<double>(softmax_cross_entropy_pixel(
              xp + pixel_offset(p, classes, plane), classes, plane, lp[p]));
        });
    return static_cast<T>(opt.scale() * total / static_cast<double>(valid));
  }

  template <class T>
  static void softmax_cross_entropy_backward(Context<Cpu>& ctx, const Shape& s,
                                             TensorView<const T, Cpu> logits,
                                             TensorView<const std::int32_t, Cpu> labels,
                                             TensorView<T, Cpu> dlogits,
                                             const SoftmaxCrossEntropyOptions& opt) {
    constexpr const char* kWho = "nddr::ops::softmax_cross_entropy_backward";
    const std::int32_t* lp = labels.data();
    const std::int64_t valid = detail::count_valid_labels(kWho, s, lp, opt.ignore_label());
    if (valid == 0) return;
    const T* xp = logits.data();
    T* dp = dlogits.data();
    const std::int64_t classes = s.c(), plane = s.h() * s.w();
    const std::int32_t ignore = opt.ignore_label();
    const T coeff = static_cast<T>(opt.scale() / static_cast<double>(valid));
    nddr::detail::parallel_for(ctx, s.n() * plane, [=](std::int64_t p) {
      if (lp[p] == ignore) return;
      const std::int64_t o = pixel_offset(p, classes, plane);
      softmax_cross_entropy_backward_pixel(xp + o, classes, plane, lp[p], coeff, dp + o);
    });
  }

  template <class T>
  static T normal_loss_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> p,
                               TensorView<const T, Cpu> g, const NormalLossOptions& opt) {
    const Shape& s = p.shape();
    const std::int64_t plane = s.h() * s.w();
    const T* pp = p.data();
    const T* gp = g.data();
    const NormalLossForm form = opt.form();
    const T eps = static_cast<T>(opt.eps());
    const std::int64_t valid = detail::count_valid_normals(ctx, s, gp);
    if (valid == 0) return T(0);
    const double total =
        detail::deterministic_pixel_sum(ctx, s.n() * s.h(), s.w(), [=](std::int64_t i) {
          const std::int64_t o = pixel_offset(i, 3, plane);
          if (!normal_pixel_valid(gp + o, plane)) return 0.0;
          return static_cast<double>(normal_loss_pixel(pp + o, gp + o, plane, form, eps));
        });
    return static_cast<T>(opt.scale() * total / static_cast<double>(valid));
  }

  template <class T>
  static void normal_loss_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> p,
                                   TensorView<const T, Cpu> g, TensorView<T, Cpu> dp,
                                   const NormalLossOptions& opt) {
    const Shape& s = p.shape();
    const T* gp = g.data();
    const std::int64_t valid = detail::count_valid_normals(ctx, s, gp);
    if (valid == 0) return;
    const std::int64_t plane = s.h() * s.w();
    const T* pp = p.data();
    T* dpp = dp.data();
    const NormalLossForm form = opt.form();
    const T eps = static_cast<T>(opt.eps());
    const T coeff = static_cast<T>(opt.scale() / static_cast<double>(valid));
    nddr::detail::parallel_for(ctx, s.n() * plane, [=](std::int64_t i) {
      const std::int64_t o = pixel_offset(i, 3, plane);
      if (normal_pixel_valid(gp + o, plane))
        normal_loss_backward_pixel(pp + o, gp + o, plane, form, eps, coeff, dpp + o);
    });
  }
};

}  // namespace backend
}  // namespace nddr::ops
