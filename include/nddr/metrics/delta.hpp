#pragma once
/// \file
/// Delta_m, the multi-task performance relative to a baseline (peer-notes §3). Two balancings are
/// in use in the literature and give different numbers for the same results; `describe` returns
/// the one-line statement of the convention, to be printed next to every Delta_m.

#include <cstddef>
#include <string>
#include <vector>

#include "nddr/core/error.hpp"

namespace nddr {

/// One scalar result: metric `name` of task `task` (e.g. "segmentation", "mIoU").
struct MetricValue {
  std::string task;
  std::string name;
  double value = 0.0;
  bool higher_is_better = true;
};

/// How the per-metric relative improvements are averaged.
enum class DeltaBalancing {
  kTask,    ///< mean within each task, then over tasks (Maninis et al. 2019, LibMTL, SV, AutoL)
  kMetric,  ///< mean over all metrics (Nash-MTL / CAGrad / FAMO delta_fn)
};

/// Options of `delta_m`: `DeltaOptions{}.balancing(DeltaBalancing::kMetric).percent(false)`.
struct DeltaOptions {
  DeltaBalancing balance = DeltaBalancing::kTask;
  bool as_percent = true;  ///< multiply by 100

  DeltaOptions& balancing(DeltaBalancing b) {
    balance = b;
    return *this;
  }
  DeltaOptions& percent(bool p) {
    as_percent = p;
    return *this;
  }
};

/// Delta_m of `multi_task` against `baseline`: each metric contributes
/// s * (M - B) / B with s = +1 if higher is better, -1 otherwise, so a positive Delta_m means
/// better than the baseline. Metrics are matched by (task, name); baseline entries without a
/// multi-task counterpart are ignored. Throws ValueError when `multi_task` is empty, a metric is
/// repeated or missing from the baseline, a baseline value is 0, or the two disagree on
/// `higher_is_better`.
inline double delta_m(const std::vector<MetricValue>& multi_task,
                      const std::vector<MetricValue>& baseline, const DeltaOptions& options = {}) {
  constexpr const char* who = "nddr::delta_m";
  check<ValueError>(!multi_task.empty(), who, ": no multi-task metrics given");
  std::vector<std::string> tasks;        // in order of first appearance
  std::vector<double> task_sum, task_n;  // per task
  double metric_sum = 0.0;
  for (std::size_t i = 0; i < multi_task.size(); ++i) {
    const MetricValue& m = multi_task[i];
    for (std::size_t j = 0; j < i; ++j)
      check<ValueError>(multi_task[j].task != m.task || multi_task[j].name != m.name, who,
                        ": metric '", m.task, "/", m.name, "' given twice");
    const MetricValue* b = nullptr;
    for (const MetricValue& c : baseline)
      if (c.task == m.task && c.name == m.name) b = &c;
    check<ValueError>(b != nullptr, who, ": metric '", m.task, "/", m.name,
                      "' is missing from the baseline");
    check<ValueError>(b->value != 0.0, who, ": baseline value of '", m.task, "/", m.name,
                      "' is 0; the relative change is undefined");
    check<ValueError>(b->higher_is_better == m.higher_is_better, who, ": '", m.task, "/", m.name,
                      "' is higher-is-better in one list and lower-is-better in the other");
    const double sign = m.higher_is_better ? 1.0 : -1.0;
    const double r = sign * (m.value - b->value) / b->value;
    metric_sum += r;
    std::size_t t = 0;
    while (t < tasks.size() && tasks[t] != m.task) ++t;
    if (t == tasks.size()) {
      tasks.push_back(m.task);
      task_sum.push_back(0.0);
      task_n.push_back(0.0);
    }
    task_sum[t] += r;
    task_n[t] += 1.0;
  }
  double d = 0.0;
  if (options.balance == DeltaBalancing::kTask) {
    for (std::size_t t = 0; t < tasks.size(); ++t) d += task_sum[t] / task_n[t];
    d /= static_cast<double>(tasks.size());
  } else {
    d = metric_sum / static_cast<double>(multi_task.size());
  }
  return options.as_percent ? 100.0 * d : d;
}

/// One-line statement of the Delta_m convention selected by `options`.
inline std::string describe(const DeltaOptions& options) {
  std::string s = "Delta_m";
  s += options.as_percent ? " (%)" : " (fraction)";
  if (options.balance == DeltaBalancing::kTask)
    s += ", task-balanced (Maninis et al. 2019 / LibMTL): mean over tasks of the mean over each "
         "task's metrics of s*(M-B)/B";
  else
    s += ", metric-balanced (Nash-MTL / CAGrad style): mean over all metrics of s*(M-B)/B";
  s += ", s = +1 if higher is better else -1; positive = better than the baseline";
  return s;
}

}  // namespace nddr
