#pragma once
/// \file
/// Streaming surface-normal metrics (paper-spec §7.1): angular error in degrees between predicted
/// and ground-truth normals, pooled over every valid pixel of every evaluated image; plus the
/// decoder of the NYUv2 normal PNG encoding that documents the paper's raw-triplet convention.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

namespace detail {

/// NumPy median of `v` (mean of the two middle values for an even count; NaN when empty).
/// Reorders `v`; O(n) with nth_element rather than a sort, since v may hold 2e8 angles.
template <class U>
double median_in_place(std::vector<U>& v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  const double upper = static_cast<double>(*mid);
  if (v.size() % 2 == 1) return upper;
  const double lower = static_cast<double>(*std::max_element(v.begin(), mid));
  return 0.5 * (lower + upper);
}

}  // namespace detail

/// How a normal PNG triplet is turned into a vector.
enum class NormalEncoding {
  kRawPaper,  ///< the raw uint8 triplet as float, as NDDR-TF/MTLNAS/AdaShare do (paper numbers)
  kCentered,  ///< decoded to [-1, 1]: (v - 127.5) / 127.5, the true normal direction
};

/// A decoded normal-map pixel; `v` is the zero vector when the pixel is invalid.
template <class T = float>
struct DecodedNormal {
  std::array<T, 3> v{};
  bool valid = false;
};

/// Decodes one pixel of a NYUv2 normal PNG (stored as (n + 1) * 127.5). A pixel is invalid iff all
/// three channels are 255 (the paper code's mask); invalid pixels decode to the zero vector, which
/// `NormalMetrics` skips.
template <class T = float>
DecodedNormal<T> decode_normal_png(std::uint8_t r, std::uint8_t g, std::uint8_t b,
                                   NormalEncoding encoding) {
  DecodedNormal<T> out;
  if (r == 255 && g == 255 && b == 255) return out;
  out.valid = true;
  const std::array<std::uint8_t, 3> raw{r, g, b};
  for (std::size_t i = 0; i < 3; ++i) {
    const double x = static_cast<double>(raw[i]);
    out.v[i] = static_cast<T>(encoding == NormalEncoding::kRawPaper ? x : (x - 127.5) / 127.5);
  }
  return out;
}

/// Angular-error accumulator. Keeps every angle (as float, for the median) and double running
/// sums for mean and RMSE.
class NormalMetrics {
 public:
  /// Standard thresholds of the NYUv2 tables, in degrees.
  static constexpr std::array<double, 3> kThresholds{11.25, 22.5, 30.0};

  /// Accumulates prediction (N, 3, H, W) against target (N, 3, H, W). A pixel is valid iff its
  /// target is not the zero vector. Both vectors are L2-normalised as x / sqrt(max(|x|^2, 1e-12))
  /// (TF `l2_normalize`, so a zero prediction gives 90 degrees); cos is clipped to [-1, 1].
  template <class T>
  void update(TensorView<const T> prediction, TensorView<const T> target) {
    constexpr const char* who = "nddr::NormalMetrics::update";
    check_rank4(who, "prediction", prediction.shape());
    const Shape& s = prediction.shape();
    check<ShapeError>(s.c() == 3, who, ": prediction has shape ", s, ", expected 3 channels");
    check_shape(who, "target", target.shape(), s);
    const std::int64_t hw = s.h() * s.w();
    for (std::int64_t n = 0; n < s.n(); ++n) {
      const T* p = prediction.data() + n * 3 * hw;
      const T* g = target.data() + n * 3 * hw;
      for (std::int64_t i = 0; i < hw; ++i) {
        const double g0 = g[i], g1 = g[hw + i], g2 = g[2 * hw + i];
        if (g0 == 0.0 && g1 == 0.0 && g2 == 0.0) continue;
        const double p0 = p[i], p1 = p[hw + i], p2 = p[2 * hw + i];
        const double gn = std::sqrt(std::max(g0 * g0 + g1 * g1 + g2 * g2, 1e-12));
        const double pn = std::sqrt(std::max(p0 * p0 + p1 * p1 + p2 * p2, 1e-12));
        const double cos = std::clamp((p0 * g0 + p1 * g1 + p2 * g2) / (gn * pn), -1.0, 1.0);
        add_angle(std::acos(cos) * (180.0 / kPi));
      }
    }
  }

  /// Adds one angular error in degrees computed elsewhere (e.g. by a device kernel).
  void add_angle(double degrees) {
    angles_.push_back(static_cast<float>(degrees));
    sum_ += degrees;
    sum_sq_ += degrees * degrees;
  }

  /// Appends another accumulator's angles and sums (data-parallel evaluation).
  void merge(const NormalMetrics& other) {
    angles_.insert(angles_.end(), other.angles_.begin(), other.angles_.end());
    sum_ += other.sum_;
    sum_sq_ += other.sum_sq_;
  }

  void reset() {
    angles_.clear();
    sum_ = 0.0;
    sum_sq_ = 0.0;
  }

  /// Number of valid pixels seen.
  std::int64_t count() const { return static_cast<std::int64_t>(angles_.size()); }

  /// Mean angle in degrees (NaN when empty).
  double mean() const { return count() == 0 ? nan() : sum_ / static_cast<double>(count()); }

  /// Median angle in degrees, NumPy convention (NaN when empty). Reorders the stored angles.
  double median() const { return detail::median_in_place(angles_); }

  /// Root mean squared angle in degrees (NaN when empty).
  double rmse() const {
    return count() == 0 ? nan() : std::sqrt(sum_sq_ / static_cast<double>(count()));
  }

  /// Fraction (not percent) of angles <= `threshold_deg`, inclusive (NaN when empty).
  double within(double threshold_deg) const {
    if (count() == 0) return nan();
    std::int64_t hits = 0;
    for (float a : angles_) hits += static_cast<double>(a) <= threshold_deg ? 1 : 0;
    return static_cast<double>(hits) / static_cast<double>(count());
  }

  /// The stored angles in degrees, in unspecified order.
  const std::vector<float>& angles() const { return angles_; }

 private:
  static constexpr double kPi = 3.14159265358979323846;
  static double nan() { return std::numeric_limits<double>::quiet_NaN(); }

  mutable std::vector<float> angles_;  // order is irrelevant, so median() may reorder in place
  double sum_ = 0.0;
  double sum_sq_ = 0.0;
};

}  // namespace nddr
