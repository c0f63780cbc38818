#pragma once
/// \file
/// The tasks of the NDDR-CNN experiments as `nddr::concepts::Task` models: semantic
/// segmentation and surface-normal estimation (NYUv2), age and gender classification
/// (IMDB-WIKI). Each is a stateless struct; `loss` returns weight * loss and accumulates
/// weight * dloss/dprediction (paper-spec §5.1). `loss_options(weight)` describes the same loss
/// as the options of a library op: a task that has it trains on the GPU too (`Trainer<E, Cuda>`
/// runs the op there without a host round trip); one without it trains on the CPU.

#include <cstdint>

#include "nddr/ops/loss.hpp"
#include "nddr/concepts/task.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

namespace detail {

/// Softmax cross-entropy of K-class logits (N, K, H, W) or (N, K) against int32 labels, pixels
/// labelled `ignore_label` skipped; `who` names the task in errors.
template <class T>
T task_cross_entropy(const char* who, std::int64_t classes, std::int32_t ignore_label,
                     Context<Cpu>& ctx, TensorView<const T> prediction,
                     TensorView<const std::int32_t> target, TensorView<T> dprediction, T weight) {
  const Shape& p = prediction.shape();
  check<ShapeError>((p.rank() == 4 || p.rank() == 2) && p[1] == classes, who,
                    ": prediction has shape ", p, ", expected ", classes, " channels, (N, ",
                    classes, ", H, W) or (N, ", classes, ")");
  const auto opt = SoftmaxCrossEntropyOptions{}.ignore_label(ignore_label).scale(weight);
  const T value = ops::softmax_cross_entropy_forward(ctx, prediction, target, opt);
  ops::softmax_cross_entropy_backward(ctx, prediction, target, dprediction, opt);
  return value;
}

}  // namespace detail

/// K-class semantic segmentation: logits (N, K, H, W), labels (N, H, W) or (N, 1, H, W) int32;
/// label 255 (`ignore_label`) marks unlabelled pixels. Loss: mean softmax cross-entropy over the
/// labelled pixels of the whole batch (NYUv2: K = 40).
template <std::int64_t K>
struct Segmentation {
  static_assert(K >= 1, "nddr::Segmentation<K>: K must be >= 1");
  static constexpr const char* name = "segmentation";
  static constexpr std::int64_t outputs = K;
  static constexpr std::int32_t ignore_label = 255;
  template <class T>
  using target_t = std::int32_t;

  template <class T>
  static T loss(Context<Cpu>& ctx, TensorView<const T> prediction,
                TensorView<const std::int32_t> target, TensorView<T> dprediction, T weight) {
    return detail::task_cross_entropy("nddr::Segmentation::loss", K, ignore_label, ctx, prediction,
                                      target, dprediction, weight);
  }
  /// The loss as options of a library op, so that the trainer can run it on any device.
  static SoftmaxCrossEntropyOptions loss_options(double weight) {
    return SoftmaxCrossEntropyOptions{}.ignore_label(ignore_label).scale(weight);
  }
};

/// Surface normals: prediction (N, 3, H, W), target (N, 3, H, W) of the same element type; a
/// pixel whose target is the zero vector is unlabelled. Both vectors are L2-normalised; the
/// per-pixel loss is `Form` (default kCosine, 1 - p^.g^, the authors' TF code; kL2 = ||p^ - g^||^2
/// is twice that), averaged over the labelled pixels of the batch.
template <NormalLossForm Form = NormalLossForm::kCosine>
struct SurfaceNormalTask {
  static constexpr const char* name = "normal";
  static constexpr std::int64_t outputs = 3;
  static constexpr NormalLossForm form = Form;
  template <class T>
  using target_t = T;

  template <class T>
  static T loss(Context<Cpu>& ctx, TensorView<const T> prediction, TensorView<const T> target,
                TensorView<T> dprediction, T weight) {
    const auto opt = loss_options(weight);
    const T value = ops::normal_loss_forward(ctx, prediction, target, opt);
    ops::normal_loss_backward(ctx, prediction, target, dprediction, opt);
    return value;
  }
  /// The loss as options of a library op, so that the trainer can run it on any device.
  /// eps = 1e-6 floors the norm as the authors' TF code does (`x / sqrt(max(sum x^2, 1e-12))`,
  /// `tf.nn.l2_normalize`): PyTorch's `F.normalize` floor of 1e-12 would give a pixel whose
  /// prediction is exactly zero (all its features dead after a ReLU, zero bias) a gradient of
  /// 1e12 instead of 1e6, enough to wreck a step.
  static NormalLossOptions loss_options(double weight) {
    return NormalLossOptions{}.form(Form).scale(weight).eps(kNormFloor);
  }
  static constexpr double kNormFloor = 1e-6;
};

/// The surface-normal task as the authors coded it (cosine form).
using SurfaceNormal = SurfaceNormalTask<>;

/// K-way age classification (IMDB-WIKI, one class per year: K = 100): logits (N, K) or
/// (N, K, 1, 1), labels (N) int32 in [0, K); label 255 (`ignore_label`) skips a sample.
template <std::int64_t K = 100>
struct AgeClassification {
  static_assert(K >= 1, "nddr::AgeClassification<K>: K must be >= 1");
  static constexpr const char* name = "age";
  static constexpr std::int64_t outputs = K;
  static constexpr std::int32_t ignore_label = 255;
  template <class T>
  using target_t = std::int32_t;

  template <class T>
  static T loss(Context<Cpu>& ctx, TensorView<const T> prediction,
                TensorView<const std::int32_t> target, TensorView<T> dprediction, T weight) {
    return detail::task_cross_entropy("nddr::AgeClassification::loss", K, ignore_label, ctx,
                                      prediction, target, dprediction, weight);
  }
  /// The loss as options of a library op, so that the trainer can run it on any device.
  static SoftmaxCrossEntropyOptions loss_options(double weight) {
    return SoftmaxCrossEntropyOptions{}.ignore_label(ignore_label).scale(weight);
  }
};

/// Binary gender classification (IMDB-WIKI) as 2-way softmax cross-entropy: logits (N, 2) or
/// (N, 2, 1, 1), labels (N) int32 in {0, 1}; label 255 (`ignore_label`) skips a sample.
struct Gender {
  static constexpr const char* name = "gender";
  static constexpr std::int64_t outputs = 2;
  static constexpr std::int32_t ignore_label = 255;
  template <class T>
  using target_t = std::int32_t;

  template <class T>
  static T loss(Context<Cpu>& ctx, TensorView<const T> prediction,
                TensorView<const std::int32_t> target, TensorView<T> dprediction, T weight) {
    return detail::task_cross_entropy("nddr::Gender::loss", outputs, ignore_label, ctx, prediction,
                                      target, dprediction, weight);
  }
  /// The loss as options of a library op, so that the trainer can run it on any device.
  static SoftmaxCrossEntropyOptions loss_options(double weight) {
    return SoftmaxCrossEntropyOptions{}.ignore_label(ignore_label).scale(weight);
  }
};

}  // namespace nddr
