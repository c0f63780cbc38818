#pragma once
/// \file
/// Image-level classification metrics (paper-spec §7.2): DEX-style expected-value age error and
/// argmax accuracy, both from (N, K) or (N, K, 1, 1) logits and int32 labels (N). Host-side.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/metrics/normals.hpp"

namespace nddr {

namespace detail {

/// Checks logits (N, K) or (N, K, 1, 1) and labels (N) or (N, 1[, 1, 1]); returns K.
inline std::int64_t check_classification_shapes(const char* who, const Shape& logits,
                                                const Shape& labels) {
  const bool ok = logits.rank() == 2 ||
                  (logits.rank() == 4 && logits.h() == 1 && logits.w() == 1);
  check<ShapeError>(ok && logits[1] >= 1, who, ": logits have shape ", logits,
                    ", expected (N, K) or (N, K, 1, 1)");
  check<ShapeError>(labels.rank() >= 1 && labels[0] == logits[0] &&
                        labels.numel() == logits[0],
                    who, ": labels have shape ", labels, ", expected (", logits[0], ")");
  return logits[1];
}

/// Throws ValueError unless every label lies in [0, K).
inline void check_class_labels(const char* who, const std::int32_t* labels, std::int64_t n,
                               std::int64_t k) {
  for (std::int64_t i = 0; i < n; ++i)
    check<ValueError>(0 <= labels[i] && labels[i] < k, who, ": label ", labels[i], " at n=", i,
                      " is outside [0, ", k, ")");
}

}  // namespace detail

/// Age estimation as in DEX / paper §5.2: the predicted age of an image is the expected value
/// sum_k k * softmax(logits)_k over the K age classes 0..K-1; errors are |predicted - true|.
class AgeMetrics {
 public:
  /// Accumulates logits (N, K) or (N, K, 1, 1) against true ages (N) in [0, K).
  template <class T>
  void update(TensorView<const T> logits, TensorView<const std::int32_t> labels) {
    constexpr const char* who = "nddr::AgeMetrics::update";
    const std::int64_t k = detail::check_classification_shapes(who, logits.shape(), labels.shape());
    const std::int64_t n = logits.shape()[0];
    detail::check_class_labels(who, labels.data(), n, k);
    for (std::int64_t i = 0; i < n; ++i) {
      const T* x = logits.data() + i * k;
      const double m = static_cast<double>(*std::max_element(x, x + k));
      double z = 0.0, ez = 0.0;
      for (std::int64_t c = 0; c < k; ++c) {
        const double e = std::exp(static_cast<double>(x[c]) - m);
        z += e;
        ez += static_cast<double>(c) * e;
      }
      errors_.push_back(std::abs(ez / z - static_cast<double>(labels.data()[i])));
    }
  }

  void merge(const AgeMetrics& other) {
    errors_.insert(errors_.end(), other.errors_.begin(), other.errors_.end());
  }
  void reset() { errors_.clear(); }

  /// Number of images seen.
  std::int64_t count() const { return static_cast<std::int64_t>(errors_.size()); }

  /// Mean absolute error in years (NaN when empty).
  double mean_absolute_error() const {
    if (errors_.empty()) return std::numeric_limits<double>::quiet_NaN();
    double s = 0.0;
    for (double e : errors_) s += e;
    return s / static_cast<double>(errors_.size());
  }

  /// Median absolute error in years, NumPy convention (NaN when empty).
  double median_absolute_error() const { return detail::median_in_place(errors_); }

  /// The absolute errors, in unspecified order.
  const std::vector<double>& errors() const { return errors_; }

 private:
  mutable std::vector<double> errors_;  // median may reorder in place
};

/// Top-1 accuracy: argmax of the logits (first maximum wins on ties) equals the label.
class AccuracyMetric {
 public:
  /// Accumulates logits (N, K) or (N, K, 1, 1) against labels (N) in [0, K).
  template <class T>
  void update(TensorView<const T> logits, TensorView<const std::int32_t> labels) {
    constexpr const char* who = "nddr::AccuracyMetric::update";
    const std::int64_t k = detail::check_classification_shapes(who, logits.shape(), labels.shape());
    const std::int64_t n = logits.shape()[0];
    detail::check_class_labels(who, labels.data(), n, k);
    for (std::int64_t i = 0; i < n; ++i) {
      const T* x = logits.data() + i * k;
      const std::int64_t arg = std::max_element(x, x + k) - x;  // first maximum
      correct_ += arg == labels.data()[i] ? 1 : 0;
    }
    count_ += n;
  }

  void merge(const AccuracyMetric& other) {
    correct_ += other.correct_;
    count_ += other.count_;
  }
  void reset() { correct_ = count_ = 0; }

  std::int64_t correct() const { return correct_; }
  std::int64_t count() const { return count_; }

  /// Fraction (not percent) of correct images (NaN when empty).
  double accuracy() const {
    if (count_ == 0) return std::numeric_limits<double>::quiet_NaN();
    return static_cast<double>(correct_) / static_cast<double>(count_);
  }

 private:
  std::int64_t correct_ = 0;
  std::int64_t count_ = 0;
};

}  // namespace nddr
