#pragma once
/// \file
/// Concept `Task`: the compile-time description of one task of a multi-task network — how many
/// channels its head predicts, what its ground truth is and how it is scored.
///
/// What it represents: a stateless struct `X` naming a loss l(prediction, target) over a batch.
///
/// Minimal complete definition:
///  - `static constexpr const char* name`: a short identifier ("segmentation", "normal", ...),
///    used in logs and file names;
///  - `static constexpr std::int64_t outputs` (>= 1): the head's output channels;
///  - `template <class T> using target_t = ...`: element type of the target tensor for
///    predictions of element type T (`std::int32_t` labels for classification and
///    segmentation, `T` itself for regression targets such as surface normals);
///  - `template <class T> static T loss(Context<Cpu>& ctx, TensorView<const T> prediction,
///    TensorView<const target_t<T>> target, TensorView<T> dprediction, T weight)`, for T = float
///    and double: returns weight * l(prediction, target) and **accumulates**
///    dprediction += weight * dl/dprediction (the `Layer` contract for data gradients); an
///    empty `dprediction` (null data) is skipped. Throws ShapeError naming the task and the
///    shapes for a prediction or target it does not accept, ValueError for a bad label.
///
/// Models: `Segmentation<K>`, `SurfaceNormal`, `AgeClassification<K>`, `Gender`
/// (nddr/tasks/tasks.hpp). Diagnose a failing type with `nddr::concepts::require_task<X>()`.

#include <concepts>
#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/tensor.hpp"

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
concept HasTaskLoss = requires(Context<Cpu>& ctx, TensorView<const T> p,
                               TensorView<const typename X::template target_t<T>> target,
                               TensorView<T> dp, T w) {
  { X::template loss<T>(ctx, p, target, dp, w) } -> std::same_as<T>;
};

}  // namespace detail

template <class X>
concept Task = detail::HasTaskName<X> && detail::HasTaskOutputs<X> && detail::HasTaskTarget<X> &&
    detail::HasTaskLoss<X, float> && detail::HasTaskLoss<X, double>;

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
                  "nddr::Task: missing `template <class T> static T loss(Context<Cpu>&, "
                  "TensorView<const T> prediction, TensorView<const target_t<T>> target, "
                  "TensorView<T> dprediction, T weight)` for T = float and double");
  }
  return Task<X>;
}

}  // namespace nddr::concepts
