#pragma once
/// \file
/// Metrics of dense regression (depth: abs. error, abs. rel. error, RMSE, delta < 1.25^k) and
/// of binary dense prediction (pixel accuracy, IoU and F1 of the positive class), pooled over
/// every valid pixel of the evaluated set. Host-side.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/metrics/delta.hpp"

namespace nddr {

/// Dense regression: over the valid elements (target not NaN, and not 0 with `zero_invalid`,
/// the depth convention: 0 = no measurement) abs. error mean |p - g|, RMSE sqrt(mean (p - g)^2);
/// over the valid elements with g > 0 abs. rel. error mean |p - g| / g and the accuracies
/// delta_k = share of elements with max(p / g, g / p) < 1.25^k (k = 1, 2, 3; p <= 0 fails).
class DenseRegressionMetrics {
 public:
  explicit DenseRegressionMetrics(bool zero_invalid = false) : zero_invalid_(zero_invalid) {}

  /// Accumulates prediction p and target g of equal shapes.
  template <class T>
  void update(TensorView<const T> p, TensorView<const T> g) {
    check_shape("nddr::DenseRegressionMetrics::update", "target", g.shape(), p.shape());
    for (std::int64_t i = 0; i < p.numel(); ++i) {
      const double gi = static_cast<double>(g[i]), pi = static_cast<double>(p[i]);
      if (std::isnan(gi) || (zero_invalid_ && gi == 0.0)) continue;
      const double e = pi - gi;
      ++n_;
      abs_ += std::abs(e);
      sq_ += e * e;
      if (gi <= 0.0) continue;
      ++positive_;
      rel_ += std::abs(e) / gi;
      const double ratio = pi > 0.0 ? std::max(pi / gi, gi / pi) : INFINITY;
      for (int k = 0; k < 3; ++k) within_[k] += ratio < kDelta[k];
    }
  }
  std::int64_t count() const { return n_; }
  double abs_error() const { return n_ ? abs_ / static_cast<double>(n_) : NAN; }
  double rel_error() const { return positive_ ? rel_ / static_cast<double>(positive_) : NAN; }
  double rmse() const { return n_ ? std::sqrt(sq_ / static_cast<double>(n_)) : NAN; }
  /// Share of the elements with g > 0 within 1.25^k (k = 1, 2 or 3).
  double delta(int k) const {
    check<ValueError>(k >= 1 && k <= 3, "nddr::DenseRegressionMetrics::delta: k = ", k,
                      ", expected 1, 2 or 3");
    return positive_ ? static_cast<double>(within_[k - 1]) / static_cast<double>(positive_) : NAN;
  }
  /// The metrics as rows for `task`: all six with `depth`, else abs. error and RMSE.
  std::vector<MetricValue> values(const std::string& task, bool depth) const {
    std::vector<MetricValue> v{{task, "AbsErr", abs_error(), false}};
    if (depth) v.push_back({task, "RelErr", rel_error(), false});
    v.push_back({task, "RMSE", rmse(), false});
    if (depth) {
      v.push_back({task, "delta1", 100.0 * delta(1), true});
      v.push_back({task, "delta2", 100.0 * delta(2), true});
      v.push_back({task, "delta3", 100.0 * delta(3), true});
    }
    return v;
  }

 private:
  static constexpr double kDelta[3] = {1.25, 1.25 * 1.25, 1.25 * 1.25 * 1.25};
  bool zero_invalid_;
  std::int64_t n_ = 0, positive_ = 0;
  double abs_ = 0.0, sq_ = 0.0, rel_ = 0.0;
  std::int64_t within_[3] = {0, 0, 0};
};

/// Binary dense prediction from logits: a pixel is predicted positive where its logit is > 0,
/// is positive where its target is >= 0.5; NaN targets are skipped. Pixel accuracy, and IoU and
/// F1 of the positive class (NaN while undefined: no positive predicted or present).
class BinaryMetrics {
 public:
  template <class T>
  void update(TensorView<const T> logits, TensorView<const T> g) {
    check_shape("nddr::BinaryMetrics::update", "target", g.shape(), logits.shape());
    for (std::int64_t i = 0; i < logits.numel(); ++i) {
      if (std::isnan(static_cast<double>(g[i]))) continue;
      const bool p = logits[i] > T(0), t = g[i] >= T(0.5);
      tp_ += p && t;
      fp_ += p && !t;
      fn_ += !p && t;
      tn_ += !p && !t;
    }
  }
  double accuracy() const {
    const std::int64_t n = tp_ + fp_ + fn_ + tn_;
    return n ? static_cast<double>(tp_ + tn_) / static_cast<double>(n) : NAN;
  }
  double iou() const {
    const std::int64_t u = tp_ + fp_ + fn_;
    return u ? static_cast<double>(tp_) / static_cast<double>(u) : NAN;
  }
  double f1() const {
    const std::int64_t d = 2 * tp_ + fp_ + fn_;
    return d ? 2.0 * static_cast<double>(tp_) / static_cast<double>(d) : NAN;
  }
  std::vector<MetricValue> values(const std::string& task) const {
    return {{task, "PixelAcc", 100.0 * accuracy(), true},
            {task, "IoU", 100.0 * iou(), true},
            {task, "F1", 100.0 * f1(), true}};
  }

 private:
  std::int64_t tp_ = 0, fp_ = 0, fn_ = 0, tn_ = 0;
};

}  // namespace nddr
