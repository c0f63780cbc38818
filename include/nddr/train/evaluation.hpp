#pragma once
/// \file
/// Which streaming metric evaluates which task, and the evaluation protocol of the paper
/// (paper-spec.md §7.1): dense outputs are up-sampled to the label size with TF-legacy bilinear
/// resizing, BN in inference mode, dropout off, statistics pooled over all pixels.

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/ops/argmax.hpp"
#include "nddr/ops/resize.hpp"
#include "nddr/metrics/delta.hpp"
#include "nddr/metrics/segmentation.hpp"
#include "nddr/tasks/tasks.hpp"

namespace nddr {

/// `MetricFor<Task>::type` accumulates a task's evaluation metrics; `make()` builds one and
/// `values(m)` lists them as `MetricValue`s (for tables and Delta_m). A thin view of the task's
/// own metric members (`metric_type`, `make_metric`, `metric_values`: the `Task` concept).
template <class Task>
struct MetricFor {
  using type = typename Task::metric_type;
  static type make() { return Task::make_metric(); }
  static std::vector<MetricValue> values(const type& m) { return Task::metric_values(m); }
};

namespace detail {

/// Up-samples a dense (N, C, h, w) output to the target's (H, W) with TF-legacy bilinear,
/// as the paper's evaluation does; returns the input unchanged when sizes already match or the
/// output is not dense. The output and `scratch` live on device D (the target's shape only is
/// read, wherever it lives).
template <class T, class U, class D, class DT>
TensorView<const T, D> resize_to_target(Context<D>& ctx, TensorView<const T, D> out,
                                        TensorView<const U, DT> target, Tensor<T, D>& scratch) {
  const Shape& os = out.shape();
  const Shape& ts = target.shape();
  if (os.rank() != 4 || (ts.rank() != 3 && ts.rank() != 4)) return out;
  const std::int64_t th = ts.rank() == 3 ? ts[1] : ts[2];
  const std::int64_t tw = ts.rank() == 3 ? ts[2] : ts[3];
  if (os.h() * os.w() == 1 || (th == os.h() && tw == os.w())) return out;
  scratch.resize(Shape::nchw(os.n(), os.c(), th, tw));
  ops::resize_forward(ctx, out, scratch.view(),
                      ResizeOptions{}.size(th, tw).mode(ResizeMode::kBilinearTfLegacy));
  return scratch.cview();
}

}  // namespace detail

/// Updates `metric` of `Task` with one batch's output and target, following the paper's protocol.
template <class Task, class T, class U>
void update_metric(Context<Cpu>& ctx, typename MetricFor<Task>::type& metric,
                   TensorView<const T> out, TensorView<const U> target) {
  Tensor<T> scratch;
  auto o = detail::resize_to_target(ctx, out, target, scratch);
  metric.update(o, target);
}

/// Updates `metric` of `Task` with one batch's output on the GPU (or any device D) and its host
/// target: the dense output is resized to the label size on the device; segmentation takes the
/// arg-max there too, so only the (N, H, W) predictions are downloaded (1/C of the logits);
/// other tasks download the resized output. Same results as downloading first, up to the
/// device's rounding.
template <class Task, class T, class U, class D>
void update_metric_on_device(Context<D>& ctx, Context<Cpu>& host,
                             typename MetricFor<Task>::type& metric, TensorView<const T, D> out,
                             TensorView<const U> target) {
  Tensor<T, D> scratch;
  const TensorView<const T, D> o = detail::resize_to_target(ctx, out, target, scratch);
  if constexpr (std::is_same_v<typename MetricFor<Task>::type, SegmentationMetrics> &&
                std::is_same_v<U, std::int32_t>) {
    const Shape& s = o.shape();
    if (s.rank() == 4 && s.c() == metric.num_classes()) {
      Tensor<std::int32_t, D> pred(Shape{s.n(), s.h(), s.w()});
      ops::argmax_channels(ctx, o, pred.view());
      Tensor<std::int32_t> h(pred.shape());
      Storage<D>::download(h.data(), pred.data(), h.bytes());
      metric.update_predictions(h.cview(), target);
      return;
    }
  }
  Tensor<T> h(o.shape());
  Storage<D>::download(h.data(), o.data(), h.bytes());
  update_metric<Task>(host, metric, h.cview(), target);
}

}  // namespace nddr
