#pragma once
/// \file
/// Streaming semantic-segmentation metrics (paper-spec §7.1): a K x K confusion matrix pooled over
/// every valid pixel of every evaluated image, from which mIoU (TF `streaming_mean_iou`
/// convention), per-class IoU and global pixel accuracy are read. Host-side (reads CPU views).

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

/// Confusion-matrix accumulator for K-class segmentation. Row = ground truth, column =
/// prediction. A pixel counts iff its label is in [0, K) and differs from `ignore_label`.
class SegmentationMetrics {
 public:
  /// `num_classes` >= 1; `ignore_label` marks unlabelled pixels (255 for NYUv2 PNGs, -1 for the
  /// MTAN .npy labels).
  explicit SegmentationMetrics(std::int64_t num_classes, std::int32_t ignore_label = 255)
      : k_(num_classes), ignore_(ignore_label) {
    check<OptionError>(num_classes >= 1, "nddr::SegmentationMetrics: num_classes = ", num_classes,
                       ", expected >= 1");
    confusion_.assign(static_cast<std::size_t>(k_ * k_), 0);
  }

  /// Accumulates logits (N, K, H, W) against labels (N, H, W) or (N, 1, H, W). The prediction of
  /// a pixel is the argmax over channels; on ties the first (lowest) channel wins, like NumPy/TF
  /// argmax.
  template <class T>
  void update(TensorView<const T> logits, TensorView<const std::int32_t> labels) {
    constexpr const char* who = "nddr::SegmentationMetrics::update";
    check_rank4(who, "logits", logits.shape());
    const Shape& s = logits.shape();
    check<ShapeError>(s.c() == k_, who, ": logits have shape ", s, ", expected ", k_,
                      " channels");
    check_labels_shape(who, labels.shape(), s.n(), s.h(), s.w());
    validate(who, nullptr, labels.data(), s.n(), s.h(), s.w());
    const std::int64_t hw = s.h() * s.w();
    std::vector<T> best(static_cast<std::size_t>(hw));           // (H * W)
    std::vector<std::int32_t> arg(static_cast<std::size_t>(hw));  // (H * W)
    for (std::int64_t n = 0; n < s.n(); ++n) {
      // Channel-outer sweep keeps the reads contiguous; strict > keeps the first maximum.
      const T* x = logits.data() + n * s.c() * hw;
      std::copy(x, x + hw, best.begin());
      std::fill(arg.begin(), arg.end(), 0);
      for (std::int64_t c = 1; c < s.c(); ++c) {
        const T* xc = x + c * hw;
        for (std::int64_t i = 0; i < hw; ++i) {
          if (xc[i] > best[static_cast<std::size_t>(i)]) {
            best[static_cast<std::size_t>(i)] = xc[i];
            arg[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(c);
          }
        }
      }
      accumulate(arg.data(), labels.data() + n * hw, hw);
    }
  }

  /// Accumulates integer predictions against labels, both (N, H, W) or (N, 1, H, W). Predictions
  /// of valid pixels must lie in [0, K).
  void update_predictions(TensorView<const std::int32_t> predictions,
                          TensorView<const std::int32_t> labels) {
    constexpr const char* who = "nddr::SegmentationMetrics::update_predictions";
    const Shape& p = predictions.shape();
    check<ShapeError>(p.rank() == 3 || (p.rank() == 4 && p[1] == 1), who, ": predictions have shape ",
                      p, ", expected (N, H, W) or (N, 1, H, W)");
    const std::int64_t n = p[0], h = p[p.rank() - 2], w = p[p.rank() - 1];
    check_labels_shape(who, labels.shape(), n, h, w);
    validate(who, predictions.data(), labels.data(), n, h, w);
    accumulate(predictions.data(), labels.data(), n * h * w);
  }

  /// Adds another accumulator's counts (e.g. from another data-parallel worker).
  void merge(const SegmentationMetrics& other) {
    check<OptionError>(other.k_ == k_ && other.ignore_ == ignore_,
                       "nddr::SegmentationMetrics::merge: cannot merge ", other.k_,
                       " classes (ignore ", other.ignore_, ") into ", k_, " classes (ignore ",
                       ignore_, ")");
    for (std::size_t i = 0; i < confusion_.size(); ++i) confusion_[i] += other.confusion_[i];
  }

  /// Zeroes the confusion matrix.
  void reset() { std::fill(confusion_.begin(), confusion_.end(), 0); }

  std::int64_t num_classes() const { return k_; }
  std::int32_t ignore_label() const { return ignore_; }

  /// Row-major K x K counts: `confusion()[gt * K + pred]`.
  const std::vector<std::int64_t>& confusion() const { return confusion_; }
  /// Count of pixels with ground truth `gt` predicted as `pred`.
  std::int64_t confusion(std::int64_t gt, std::int64_t pred) const {
    check_class("confusion", gt);
    check_class("confusion", pred);
    return confusion_[static_cast<std::size_t>(gt * k_ + pred)];
  }

  /// Number of valid pixels accumulated so far.
  std::int64_t valid_pixels() const {
    std::int64_t total = 0;
    for (std::int64_t v : confusion_) total += v;
    return total;
  }

  /// IoU_c = M_cc / (row_c + col_c - M_cc); NaN when class c is absent from both ground truth and
  /// prediction (denominator 0).
  double iou(std::int64_t c) const {
    check_class("iou", c);
    const std::int64_t d = denominator(c);
    if (d == 0) return std::numeric_limits<double>::quiet_NaN();
    return static_cast<double>(diag(c)) / static_cast<double>(d);
  }

  /// Mean IoU over the classes with a non-zero denominator (TF `streaming_mean_iou`): classes
  /// absent from both ground truth and prediction are skipped. NaN when nothing was accumulated
  /// (TF would report 0).
  double miou() const {
    double sum = 0.0;
    std::int64_t counted = 0;
    for (std::int64_t c = 0; c < k_; ++c) {
      const std::int64_t d = denominator(c);
      if (d == 0) continue;
      sum += static_cast<double>(diag(c)) / static_cast<double>(d);
      ++counted;
    }
    if (counted == 0) return std::numeric_limits<double>::quiet_NaN();
    return sum / static_cast<double>(counted);
  }

  /// Mean IoU over all K classes with absent classes counted as IoU 0 (MTLNAS: 1e-16 added to the
  /// denominator). Equals `miou()` when every class occurs.
  double miou_all_classes() const {
    double sum = 0.0;
    for (std::int64_t c = 0; c < k_; ++c)
      sum += static_cast<double>(diag(c)) / (static_cast<double>(denominator(c)) + 1e-16);
    return sum / static_cast<double>(k_);
  }

  /// Global pixel accuracy: correct valid pixels / valid pixels, pooled over everything
  /// accumulated. NaN when no valid pixel was seen.
  double pixel_accuracy() const {
    const std::int64_t total = valid_pixels();
    if (total == 0) return std::numeric_limits<double>::quiet_NaN();
    std::int64_t correct = 0;
    for (std::int64_t c = 0; c < k_; ++c) correct += diag(c);
    return static_cast<double>(correct) / static_cast<double>(total);
  }

 private:
  std::int64_t diag(std::int64_t c) const { return confusion_[static_cast<std::size_t>(c * k_ + c)]; }

  std::int64_t denominator(std::int64_t c) const {
    std::int64_t row = 0, col = 0;
    for (std::int64_t j = 0; j < k_; ++j) {
      row += confusion_[static_cast<std::size_t>(c * k_ + j)];
      col += confusion_[static_cast<std::size_t>(j * k_ + c)];
    }
    return row + col - diag(c);
  }

  void check_class(const char* what, std::int64_t c) const {
    check<ValueError>(0 <= c && c < k_, "nddr::SegmentationMetrics::", what, ": class ", c,
                      " outside [0, ", k_, ")");
  }

  static void check_labels_shape(const char* who, const Shape& l, std::int64_t n, std::int64_t h,
                                 std::int64_t w) {
    const bool ok = (l.rank() == 3 && l == Shape{n, h, w}) ||
                    (l.rank() == 4 && l == Shape{n, 1, h, w});
    check<ShapeError>(ok, who, ": labels have shape ", l, ", expected (", n, ", ", h, ", ",
                      w, ") or (", n, ", 1, ", h, ", ", w, ")");
  }

  // Checks the whole batch before anything is counted, so a throwing update leaves the matrix
  // unchanged. `pred` (may be null) and `gt` are (N, H, W).
  void validate(const char* who, const std::int32_t* pred, const std::int32_t* gt, std::int64_t n,
                std::int64_t h, std::int64_t w) const {
    for (std::int64_t i = 0; i < n * h * w; ++i) {
      const std::int32_t g = gt[i];
      if (g == ignore_) continue;
      if (g < 0 || g >= k_)
        throw ValueError(detail::concat(who, ": label ", g, " at (n=", i / (h * w), ", h=",
                                        (i / w) % h, ", w=", i % w, ") is outside [0, ", k_,
                                        ") and is not the ignore label ", ignore_));
      if (pred != nullptr && (pred[i] < 0 || pred[i] >= k_))
        throw ValueError(detail::concat(who, ": prediction ", pred[i], " at (n=", i / (h * w),
                                        ", h=", (i / w) % h, ", w=", i % w, ") is outside [0, ",
                                        k_, ")"));
    }
  }

  // `count` pixels of already validated predictions and labels.
  void accumulate(const std::int32_t* pred, const std::int32_t* gt, std::int64_t count) {
    for (std::int64_t i = 0; i < count; ++i) {
      if (gt[i] == ignore_) continue;
      ++confusion_[static_cast<std::size_t>(gt[i] * k_ + pred[i])];
    }
  }

  std::int64_t k_;
  std::int32_t ignore_;
  std::vector<std::int64_t> confusion_;  // (K, K), row = ground truth
};

}  // namespace nddr
