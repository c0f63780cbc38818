#pragma once
/// \file
/// Concept `Task`: the compile-time description of one task of a multi-task network — how many
/// channels its head predicts, what its ground truth is and how it is scored.
///
/// What it represents: a stateless struct `X` naming a loss l(prediction, target) over a batch
/// and the metrics that score it.
///
/// Minimal complete definition:
///  - `static constexpr const char* name`: a short identifier ("segmentation", "normal", ...),
///    used in logs and file names;
///  - `static constexpr std::int64_t outputs` (>= 1): the head's output channels;
///  - `template <class T> using target_t = ...`: element type of the target tensor for
///    predictions of element type T (`std::int32_t` labels for classification and
///    segmentation, `T` itself for regression targets such as surface normals);
///  - the loss, once for every device: `template <class T, class D> static void loss(
///    LossSink<T, D>& sink, TensorView<const T, D> prediction, TensorView<const target_t<T>, D>
///    target, TensorView<T, D> dprediction)` adding its terms with the device-generic ops of
///    nddr/ops/task_loss.hpp (`ops::cross_entropy_loss`, `ops::normal_loss`, `ops::dense_loss`):
///    the sink applies the task weight, sums the terms' values (on a GPU they stay on the device
///    until the step is read back) and each term accumulates its gradient into `dprediction` (an
///    empty one is skipped). A task whose `loss` takes only `LossSink<T, Cpu>` trains on the CPU
///    only. Shape and label errors are the ops' ShapeError / ValueError;
///  - the metric: `using metric_type = ...` (a streaming accumulator with
///    `update(TensorView<const T> output, TensorView<const target_t<T>> target)` for host tensors,
///    the output up-sampled to the target's size for dense tasks), `static metric_type
///    make_metric()` and `static std::vector<MetricValue> metric_values(const metric_type&)`
///    (for tables and Delta_m).
///
/// Models: `Segmentation<K>`, `SurfaceNormal`, `AgeClassification<K>`, `Gender`,
/// `DenseRegression<C>` (`Depth`), `BinarySegmentation` (nddr/tasks/tasks.hpp). Diagnose a
/// failing type with `nddr::concepts::require_task<X>()`.

#include <concepts>
#include <cstdint>

#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/metrics/delta.hpp"
#include "nddr/ops/task_loss.hpp"

namespace nddr::concepts {

namespace detail {

template <class X>
concept HasTaskName = requires {
  { X::name } -> std::convertible_to<const char*>;
};

template <class X>
concept HasTaskOutputs = requires {
  { X::outputs } -> std::convertible_to<std::int64_t>;
  requires X::outputs >= 1;
};

template <class X>
concept HasTaskTarget = requires {
  typename X::template target_t<float>;
  typename X::template target_t<double>;
};

template <class X, class T>
concept HasTaskLoss = requires(LossSink<T, Cpu>& sink, TensorView<const T> p,
                               TensorView<const typename X::template target_t<T>> target,
                               TensorView<T> dp) {
  X::loss(sink, p, target, dp);
};

template <class X>
concept HasTaskMetric = requires {
  typename X::metric_type;
  { X::make_metric() } -> std::same_as<typename X::metric_type>;
} && requires(typename X::metric_type& m, const typename X::metric_type& cm,
              TensorView<const double> out,
              TensorView<const typename X::template target_t<double>> target) {
  m.update(out, target);
  { X::metric_values(cm) } -> std::convertible_to<std::vector<MetricValue>>;
};

}  // namespace detail

template <class X>
concept Task = detail::HasTaskName<X> && detail::HasTaskOutputs<X> && detail::HasTaskTarget<X> &&
    detail::HasTaskLoss<X, float> && detail::HasTaskLoss<X, double> && detail::HasTaskMetric<X>;

/// Diagnoses, requirement by requirement, why `X` is not a `Task`. The compiler's
/// "required from" line names `X`; the message names the missing member.
template <class X>
constexpr bool require_task() {
  static_assert(detail::HasTaskName<X>,
                "nddr::Task: missing `static constexpr const char* name = \"...\";`");
  static_assert(detail::HasTaskOutputs<X>,
                "nddr::Task: missing `static constexpr std::int64_t outputs` (>= 1, the head's "
                "output channels)");
  static_assert(detail::HasTaskTarget<X>,
                "nddr::Task: missing `template <class T> using target_t = ...;` (the target's "
                "element type, e.g. std::int32_t labels)");
  if constexpr (detail::HasTaskTarget<X>) {
    static_assert(detail::HasTaskLoss<X, float> && detail::HasTaskLoss<X, double>,
                  "nddr::Task: missing `template <class T, class D> static void loss("
                  "LossSink<T, D>&, TensorView<const T, D> prediction, "
                  "TensorView<const target_t<T>, D> target, TensorView<T, D> dprediction)` "
                  "callable for T = float and double on the CPU");
    static_assert(detail::HasTaskMetric<X>,
                  "nddr::Task: missing the metric: `using metric_type = ...;` (with "
                  "update(output, target)), `static metric_type make_metric()` and "
                  "`static std::vector<MetricValue> metric_values(const metric_type&)`");
  }
  return Task<X>;
}

}  // namespace nddr::concepts
