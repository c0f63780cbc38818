#pragma once
/// \file
/// Task losses on any device. A task writes its loss once, as a template over the device:
///
///     template <class T, class D>
///     static void loss(LossSink<T, D>& sink, TensorView<const T, D> prediction,
///                      TensorView<const target_t<T>, D> target, TensorView<T, D> dprediction);
///
/// and adds one or more terms with the device-generic ops below (`ops::cross_entropy_loss`,
/// `ops::normal_loss`, `ops::dense_loss`). Each term is scale * (mean over its valid elements);
/// the task's loss is the sum of its terms times the task weight the sink carries, and each term
/// **accumulates** weight * scale * dterm/dprediction into `dprediction` (an empty one is
/// skipped). On the CPU (`LossSink<T, Cpu>`, here) every term is computed at once; on the GPU
/// (`LossSink<T, Cuda>`, nddr/backend/cuda/task_loss.hpp) a term's reduction and its gradient are
/// queued on the stream and its value stays on the device until the trainer reads the step's
/// losses back (no host round trip inside a step, and the step can be captured as a CUDA Graph).
/// `task_loss<Task>(ctx, ...)` evaluates a task's loss on the CPU and returns its value.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/loss.hpp"
#include "nddr/ops/math/loss.hpp"

namespace nddr {

/// Where a task's loss terms go on device D (see the file comment).
template <class T, class D>
class LossSink;

namespace ops::detail {

/// A dense loss on the CPU: returns scale * mean over the valid elements of the per-element
/// loss (0 without any) and accumulates its gradient into `dp` (skipped when empty).
template <class T>
T dense_loss_cpu(Context<Cpu>& ctx, TensorView<const T, Cpu> p, TensorView<const T, Cpu> g,
                 TensorView<T, Cpu> dp, const DenseLossOptions& opt) {
  constexpr const char* kWho = "nddr::ops::dense_loss";
  check_dense_loss_args(kWho, p.shape(), g.shape(), opt);
  if (!dp.empty()) check_shape(kWho, "dprediction", dp.shape(), p.shape());
  const Shape& s = p.shape();
  const std::int64_t rows = s[0] * s[1], cols = s.numel() / std::max<std::int64_t>(rows, 1);
  const T* pp = p.data();
  const T* gp = g.data();
  const DenseLossForm form = opt.form();
  const DenseLossSubset subset = opt.subset();
  const bool zero = opt.zero_invalid();
  const double valid = deterministic_pixel_sum(ctx, rows, cols, [=](std::int64_t i) {
    return dense_element_valid(gp[i], zero, subset) ? 1.0 : 0.0;
  });
  if (valid == 0.0) return T(0);
  const double total = deterministic_pixel_sum(ctx, rows, cols, [=](std::int64_t i) {
    if (!dense_element_valid(gp[i], zero, subset)) return 0.0;
    return static_cast<double>(dense_loss_element(pp[i], gp[i], form));
  });
  if (!dp.empty()) {
    T* d = dp.data();
    const T coeff = static_cast<T>(opt.scale() / valid);
    nddr::detail::parallel_for(ctx, s.numel(), [=](std::int64_t i) {
      if (dense_element_valid(gp[i], zero, subset))
        d[i] += coeff * dense_loss_gradient(pp[i], gp[i], form);
    });
  }
  return static_cast<T>(opt.scale() * total / valid);
}

}  // namespace ops::detail

/// The CPU sink: each term is computed when it is added; `value()` is the sum of the terms.
template <class T>
class LossSink<T, Cpu> {
 public:
  /// `weight` multiplies every term and its gradient (the task's loss weight).
  LossSink(Context<Cpu>& ctx, double weight) : ctx_(ctx), weight_(weight) {}

  Context<Cpu>& context() { return ctx_; }
  double weight() const { return weight_; }
  /// The task's weighted loss so far (each term rounded to T, as the op returns it).
  T value() const { return static_cast<T>(value_); }
  /// Adds a term computed by the caller (already weighted): the escape hatch of a CPU-only
  /// task, which then accumulates its own gradient.
  void add(double weighted_value) { value_ += weighted_value; }

  void cross_entropy(TensorView<const T, Cpu> logits, TensorView<const std::int32_t, Cpu> labels,
                     TensorView<T, Cpu> dlogits, SoftmaxCrossEntropyOptions opt) {
    opt.scale(weight_ * opt.scale());
    value_ += static_cast<double>(ops::softmax_cross_entropy_forward(ctx_, logits, labels, opt));
    ops::softmax_cross_entropy_backward(ctx_, logits, labels, dlogits, opt);
  }
  void normal(TensorView<const T, Cpu> p, TensorView<const T, Cpu> g, TensorView<T, Cpu> dp,
              NormalLossOptions opt) {
    opt.scale(weight_ * opt.scale());
    value_ += static_cast<double>(ops::normal_loss_forward(ctx_, p, g, opt));
    ops::normal_loss_backward(ctx_, p, g, dp, opt);
  }
  void dense(TensorView<const T, Cpu> p, TensorView<const T, Cpu> g, TensorView<T, Cpu> dp,
             DenseLossOptions opt) {
    opt.scale(weight_ * opt.scale());
    value_ += static_cast<double>(ops::detail::dense_loss_cpu(ctx_, p, g, dp, opt));
  }

 private:
  Context<Cpu>& ctx_;
  double weight_;
  double value_ = 0.0;
};

namespace ops {

/// Term: scale * mean softmax cross-entropy over the pixels whose label is not ignored (see
/// `softmax_cross_entropy_forward` for shapes and label errors).
template <class T, class D>
void cross_entropy_loss(LossSink<T, D>& sink, ViewOn<const T, D> logits,
                        ViewOn<const std::int32_t, D> labels, ViewOn<T, D> dlogits,
                        const SoftmaxCrossEntropyOptions& opt = {}) {
  sink.cross_entropy(logits, labels, dlogits, opt);
}

/// Term: the surface-normal loss (see `normal_loss_forward`).
template <class T, class D>
void normal_loss(LossSink<T, D>& sink, ViewOn<const T, D> p, ViewOn<const T, D> g,
                 ViewOn<T, D> dp, const NormalLossOptions& opt = {}) {
  sink.normal(p, g, dp, opt);
}

/// Term: scale * mean over the valid elements of |p - g| (kL1), (p - g)^2 (kL2) or the binary
/// cross-entropy of logits p against targets g in [0, 1] (kBce), optionally only over the
/// positives or the negatives (DenseLossOptions). p and g have equal shapes (N, C, ...);
/// NaN targets (and zero ones with `zero_invalid`) are skipped. No valid element: 0.
template <class T, class D>
void dense_loss(LossSink<T, D>& sink, ViewOn<const T, D> p, ViewOn<const T, D> g, ViewOn<T, D> dp,
                const DenseLossOptions& opt = {}) {
  sink.dense(p, g, dp, opt);
}

}  // namespace ops

/// Task `Task`'s loss on the CPU: returns weight * loss and accumulates
/// weight * dloss/dprediction into `dprediction` (skipped when empty).
template <class Task, class T>
T task_loss(Context<Cpu>& ctx, TensorView<const T, Cpu> prediction,
            TensorView<const typename Task::template target_t<T>, Cpu> target,
            TensorView<T, Cpu> dprediction, std::type_identity_t<T> weight = T(1)) {
  LossSink<T, Cpu> sink(ctx, static_cast<double>(weight));
  Task::loss(sink, prediction, target, dprediction);
  return sink.value();
}

}  // namespace nddr
