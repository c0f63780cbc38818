#pragma once
/// \file
/// The built-in `nddr::concepts::Task` models: semantic segmentation and surface-normal
/// estimation (NYUv2), age and gender classification (IMDB-WIKI), dense regression (depth is its
/// C = 1 case) and binary dense prediction. Each is a stateless struct whose `loss` is written
/// once for every device with the ops of nddr/ops/task_loss.hpp (the sink applies the task
/// weight; paper-spec §5.1), and whose metric (`metric_type`, `make_metric`, `metric_values`)
/// scores it.

#include <cstdint>
#include <vector>

#include "nddr/concepts/task.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/metrics/classification.hpp"
#include "nddr/metrics/delta.hpp"
#include "nddr/metrics/dense.hpp"
#include "nddr/metrics/normals.hpp"
#include "nddr/metrics/segmentation.hpp"
#include "nddr/ops/task_loss.hpp"

namespace nddr {

namespace detail {

/// Softmax cross-entropy of K-class logits (N, K, H, W) or (N, K) against int32 labels, pixels
/// labelled `ignore_label` skipped; `who` names the task in errors.
template <class T, class D>
void task_cross_entropy(const char* who, std::int64_t classes, std::int32_t ignore_label,
                        LossSink<T, D>& sink, TensorView<const T, D> prediction,
                        TensorView<const std::int32_t, D> target, TensorView<T, D> dprediction) {
  const Shape& p = prediction.shape();
  check<ShapeError>((p.rank() == 4 || p.rank() == 2) && p[1] == classes, who,
                    ": prediction has shape ", p, ", expected ", classes, " channels, (N, ",
                    classes, ", H, W) or (N, ", classes, ")");
  ops::cross_entropy_loss(sink, prediction, target, dprediction,
                          SoftmaxCrossEntropyOptions{}.ignore_label(ignore_label));
}

}  // namespace detail

/// K-class semantic segmentation: logits (N, K, H, W), labels (N, H, W) or (N, 1, H, W) int32;
/// label 255 (`ignore_label`) marks unlabelled pixels. Loss: mean softmax cross-entropy over the
/// labelled pixels of the whole batch (NYUv2: K = 40). Metrics: mIoU and pixel accuracy.
template <std::int64_t K>
struct Segmentation {
  static_assert(K >= 1, "nddr::Segmentation<K>: K must be >= 1");
  static constexpr const char* name = "segmentation";
  static constexpr std::int64_t outputs = K;
  static constexpr std::int32_t ignore_label = 255;
  template <class T>
  using target_t = std::int32_t;

  template <class T, class D>
  static void loss(LossSink<T, D>& sink, TensorView<const T, D> prediction,
                   TensorView<const std::int32_t, D> target, TensorView<T, D> dprediction) {
    detail::task_cross_entropy("nddr::Segmentation::loss", K, ignore_label, sink, prediction,
                               target, dprediction);
  }

  using metric_type = SegmentationMetrics;
  static metric_type make_metric() { return metric_type(K, ignore_label); }
  static std::vector<MetricValue> metric_values(const metric_type& m) {
    return {{"segmentation", "mIoU", 100.0 * m.miou(), true},
            {"segmentation", "PixelAcc", 100.0 * m.pixel_accuracy(), true}};
  }
};

/// Surface normals: prediction (N, 3, H, W), target (N, 3, H, W) of the same element type; a
/// pixel whose target is the zero vector is unlabelled. Both vectors are L2-normalised; the
/// per-pixel loss is `Form` (default kCosine, 1 - p^.g^, the authors' TF code; kL2 = ||p^ - g^||^2
/// is twice that), averaged over the labelled pixels of the batch. Metrics: mean and median
/// angular error, share within 11.25, 22.5 and 30 degrees.
template <NormalLossForm Form = NormalLossForm::kCosine>
struct SurfaceNormalTask {
  static constexpr const char* name = "normal";
  static constexpr std::int64_t outputs = 3;
  static constexpr NormalLossForm form = Form;
  template <class T>
  using target_t = T;

  /// eps = 1e-6 floors the norm as the authors' TF code does (`x / sqrt(max(sum x^2, 1e-12))`,
  /// `tf.nn.l2_normalize`): PyTorch's `F.normalize` floor of 1e-12 would give a pixel whose
  /// prediction is exactly zero (all its features dead after a ReLU, zero bias) a gradient of
  /// 1e12 instead of 1e6, enough to wreck a step.
  static constexpr double kNormFloor = 1e-6;

  template <class T, class D>
  static void loss(LossSink<T, D>& sink, TensorView<const T, D> prediction,
                   TensorView<const T, D> target, TensorView<T, D> dprediction) {
    ops::normal_loss(sink, prediction, target, dprediction,
                     NormalLossOptions{}.form(Form).eps(kNormFloor));
  }

  using metric_type = NormalMetrics;
  static metric_type make_metric() { return metric_type(); }
  static std::vector<MetricValue> metric_values(const metric_type& m) {
    return {{"normals", "Mean", m.mean(), false},
            {"normals", "Median", m.median(), false},
            {"normals", "11.25", 100.0 * m.within(11.25), true},
            {"normals", "22.5", 100.0 * m.within(22.5), true},
            {"normals", "30", 100.0 * m.within(30.0), true}};
  }
};

/// The surface-normal task as the authors coded it (cosine form).
using SurfaceNormal = SurfaceNormalTask<>;

/// K-way age classification (IMDB-WIKI, one class per year: K = 100): logits (N, K) or
/// (N, K, 1, 1), labels (N) int32 in [0, K); label 255 (`ignore_label`) skips a sample.
/// Metrics: mean and median absolute error of the expected age.
template <std::int64_t K = 100>
struct AgeClassification {
  static_assert(K >= 1, "nddr::AgeClassification<K>: K must be >= 1");
  static constexpr const char* name = "age";
  static constexpr std::int64_t outputs = K;
  static constexpr std::int32_t ignore_label = 255;
  template <class T>
  using target_t = std::int32_t;

  template <class T, class D>
  static void loss(LossSink<T, D>& sink, TensorView<const T, D> prediction,
                   TensorView<const std::int32_t, D> target, TensorView<T, D> dprediction) {
    detail::task_cross_entropy("nddr::AgeClassification::loss", K, ignore_label, sink,
                               prediction, target, dprediction);
  }

  using metric_type = AgeMetrics;
  static metric_type make_metric() { return metric_type(); }
  static std::vector<MetricValue> metric_values(const metric_type& m) {
    return {{"age", "MeanAE", m.mean_absolute_error(), false},
            {"age", "MedianAE", m.median_absolute_error(), false}};
  }
};

/// Binary gender classification (IMDB-WIKI) as 2-way softmax cross-entropy: logits (N, 2) or
/// (N, 2, 1, 1), labels (N) int32 in {0, 1}; label 255 (`ignore_label`) skips a sample.
/// Metric: accuracy.
struct Gender {
  static constexpr const char* name = "gender";
  static constexpr std::int64_t outputs = 2;
  static constexpr std::int32_t ignore_label = 255;
  template <class T>
  using target_t = std::int32_t;

  template <class T, class D>
  static void loss(LossSink<T, D>& sink, TensorView<const T, D> prediction,
                   TensorView<const std::int32_t, D> target, TensorView<T, D> dprediction) {
    detail::task_cross_entropy("nddr::Gender::loss", outputs, ignore_label, sink, prediction,
                               target, dprediction);
  }

  using metric_type = AccuracyMetric;
  static metric_type make_metric() { return metric_type(); }
  static std::vector<MetricValue> metric_values(const metric_type& m) {
    return {{"gender", "Accuracy", 100.0 * m.accuracy(), true}};
  }
};

/// C-channel dense regression: prediction and target (N, C, H, W) of the same element type.
/// Loss: `Form` (kL1 = mean |p - g|, kL2 = mean (p - g)^2) over the valid elements of the
/// batch; an element is invalid where its target is NaN and, with `ZeroInvalid`, where it is 0.
/// Metrics: abs. error and RMSE (`Depth` adds the rest of the depth metrics).
template <std::int64_t C, DenseLossForm Form = DenseLossForm::kL1, bool ZeroInvalid = false>
struct DenseRegression {
  static_assert(C >= 1, "nddr::DenseRegression<C>: C must be >= 1");
  static_assert(Form == DenseLossForm::kL1 || Form == DenseLossForm::kL2,
                "nddr::DenseRegression: the loss form is kL1 or kL2");
  static constexpr const char* name = "regression";
  static constexpr std::int64_t outputs = C;
  static constexpr DenseLossForm form = Form;
  static constexpr bool zero_invalid = ZeroInvalid;
  template <class T>
  using target_t = T;

  template <class T, class D>
  static void loss(LossSink<T, D>& sink, TensorView<const T, D> prediction,
                   TensorView<const T, D> target, TensorView<T, D> dprediction) {
    check<ShapeError>(prediction.shape().rank() == 4 && prediction.shape().c() == C,
                      "nddr::DenseRegression::loss: prediction has shape ", prediction.shape(),
                      ", expected (N, ", C, ", H, W)");
    ops::dense_loss(sink, prediction, target, dprediction,
                    DenseLossOptions{}.form(Form).zero_invalid(ZeroInvalid));
  }

  using metric_type = DenseRegressionMetrics;
  static metric_type make_metric() { return metric_type(ZeroInvalid); }
  static std::vector<MetricValue> metric_values(const metric_type& m) {
    return m.values(name, false);
  }
};

/// Monocular depth, the C = 1 case of dense regression as in the NYUv2 three-task literature
/// (formats-spec: L1 loss, depth 0 = no measurement, masked): target (N, 1, H, W) in metres.
/// Metrics: abs. error, abs. rel. error, RMSE, delta < 1.25, 1.25^2, 1.25^3.
template <DenseLossForm Form = DenseLossForm::kL1>
struct DepthTask : DenseRegression<1, Form, true> {
  static constexpr const char* name = "depth";
  using metric_type = DenseRegressionMetrics;
  static std::vector<MetricValue> metric_values(const metric_type& m) {
    return m.values(name, true);
  }
};

/// Depth with the L1 loss.
using Depth = DepthTask<>;

/// Binary dense prediction from one logit per pixel: prediction (N, 1, H, W), target
/// (N, 1, H, W) of the same element type in [0, 1] (>= 0.5 counts as positive), NaN = unlabelled.
/// Loss: binary cross-entropy; with `Balanced` (the default) class-balanced, 0.5 * mean BCE
/// over the positive pixels + 0.5 * mean BCE over the negative ones (each class weighted by
/// n / (2 n_class); a class absent from the batch contributes 0). Metrics: pixel accuracy, IoU
/// and F1 of the positive class.
template <bool Balanced = true>
struct BinarySegmentationTask {
  static constexpr const char* name = "binary";
  static constexpr std::int64_t outputs = 1;
  static constexpr bool balanced = Balanced;
  template <class T>
  using target_t = T;

  template <class T, class D>
  static void loss(LossSink<T, D>& sink, TensorView<const T, D> prediction,
                   TensorView<const T, D> target, TensorView<T, D> dprediction) {
    check<ShapeError>(prediction.shape().rank() == 4 && prediction.shape().c() == 1,
                      "nddr::BinarySegmentation::loss: prediction has shape ",
                      prediction.shape(), ", expected (N, 1, H, W)");
    const auto bce = DenseLossOptions{}.form(DenseLossForm::kBce);
    if constexpr (Balanced) {
      auto half = bce;
      half.scale(0.5);
      ops::dense_loss(sink, prediction, target, dprediction,
                      half.subset(DenseLossSubset::kPositive));
      ops::dense_loss(sink, prediction, target, dprediction,
                      half.subset(DenseLossSubset::kNegative));
    } else {
      ops::dense_loss(sink, prediction, target, dprediction, bce);
    }
  }

  using metric_type = BinaryMetrics;
  static metric_type make_metric() { return metric_type(); }
  static std::vector<MetricValue> metric_values(const metric_type& m) { return m.values(name); }
};

/// Binary dense prediction with the class-balanced BCE.
using BinarySegmentation = BinarySegmentationTask<>;

}  // namespace nddr
