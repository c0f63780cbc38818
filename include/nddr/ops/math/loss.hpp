#pragma once
/// \file
/// The two dense losses of NDDR-CNN: softmax cross-entropy with an ignore label (segmentation)
/// and the surface-normal loss. Options, shape rules and the per-pixel math, shared by every
/// backend; a pixel's channels sit `stride` (= H * W) elements apart.

#include <cmath>
#include <cstdint>

#include "nddr/core/error.hpp"
#include "nddr/core/macros.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/ops/math/l2_normalize.hpp"

namespace nddr {

/// Options of the softmax cross-entropy.
struct SoftmaxCrossEntropyOptions {
  /// Pixels with this label contribute neither loss nor gradient (default 255).
  SoftmaxCrossEntropyOptions& ignore_label(std::int32_t v) {
    ignore_label_ = v;
    return *this;
  }
  std::int32_t ignore_label() const { return ignore_label_; }

  /// Loss weight multiplying the loss and its gradient (default 1).
  SoftmaxCrossEntropyOptions& scale(double s) {
    scale_ = s;
    return *this;
  }
  double scale() const { return scale_; }

 private:
  std::int32_t ignore_label_ = 255;
  double scale_ = 1.0;
};

/// Per-pixel form of the surface-normal loss, with p^ = p / max(||p||, eps), g^ likewise.
enum class NormalLossForm {
  kL2,      ///< ||p^ - g^||^2, the paper's text ("l2 on unit vectors")
  kCosine,  ///< 1 - p^ . g^, the authors' TF code (exactly half of kL2)
};

/// Options of the surface-normal loss.
struct NormalLossOptions {
  NormalLossOptions& form(NormalLossForm f) {
    form_ = f;
    return *this;
  }
  NormalLossForm form() const { return form_; }

  /// Loss weight multiplying the loss and its gradient (default 1).
  NormalLossOptions& scale(double s) {
    scale_ = s;
    return *this;
  }
  double scale() const { return scale_; }

  /// Lower bound of the normalisation divisor, > 0 (default 1e-12, as PyTorch F.normalize).
  NormalLossOptions& eps(double e) {
    eps_ = e;
    return *this;
  }
  double eps() const { return eps_; }

 private:
  NormalLossForm form_ = NormalLossForm::kL2;
  double scale_ = 1.0;
  double eps_ = 1e-12;
};

/// Per-element form of a dense loss (`ops::dense_loss`).
enum class DenseLossForm {
  kL1,   ///< |p - g| (gradient sign(p - g), 0 where p = g)
  kL2,   ///< (p - g)^2
  kBce,  ///< binary cross-entropy of the logit p against g in [0, 1]:
         ///< max(p, 0) - p g + log(1 + exp(-|p|)), gradient sigmoid(p) - g
};

/// Which valid elements a dense loss averages over: all, or (for class-balanced BCE) only the
/// positives (g >= 0.5) or only the negatives (g < 0.5).
enum class DenseLossSubset { kAll, kPositive, kNegative };

/// Options of a dense loss: the mean of the per-element `form` over the valid elements of the
/// whole batch, times `scale`. An element is invalid (no loss, no gradient) where its target is
/// NaN and, with `zero_invalid` (depth maps: 0 = no measurement), where it is 0.
struct DenseLossOptions {
  DenseLossOptions& form(DenseLossForm f) {
    form_ = f;
    return *this;
  }
  DenseLossForm form() const { return form_; }
  DenseLossOptions& subset(DenseLossSubset s) {
    subset_ = s;
    return *this;
  }
  DenseLossSubset subset() const { return subset_; }
  DenseLossOptions& zero_invalid(bool z) {
    zero_invalid_ = z;
    return *this;
  }
  bool zero_invalid() const { return zero_invalid_; }
  /// Loss weight multiplying the loss and its gradient (default 1).
  DenseLossOptions& scale(double s) {
    scale_ = s;
    return *this;
  }
  double scale() const { return scale_; }

 private:
  DenseLossForm form_ = DenseLossForm::kL1;
  DenseLossSubset subset_ = DenseLossSubset::kAll;
  bool zero_invalid_ = false;
  double scale_ = 1.0;
};

namespace ops {

// ---- softmax cross-entropy, per pixel ---------------------------------------------------------

/// How a label enters the loss.
enum class LabelKind { kValid, kIgnored, kOutOfRange };

NDDR_HOST_DEVICE inline LabelKind classify_label(std::int32_t label, std::int64_t classes,
                                                 std::int32_t ignore_label) {
  if (label == ignore_label) return LabelKind::kIgnored;
  return label >= 0 && label < classes ? LabelKind::kValid : LabelKind::kOutOfRange;
}

/// max_c logits[c] (the shift that keeps exp() finite).
template <class T>
NDDR_HOST_DEVICE inline T max_logit(const T* logits, std::int64_t classes, std::int64_t stride) {
  T m = logits[0];
  for (std::int64_t c = 1; c < classes; ++c) m = logits[c * stride] > m ? logits[c * stride] : m;
  return m;
}

/// -log softmax(logits)[label] = logsumexp(logits) - logits[label] for one valid pixel.
template <class T>
NDDR_HOST_DEVICE inline T softmax_cross_entropy_pixel(const T* logits, std::int64_t classes,
                                                      std::int64_t stride, std::int32_t label) {
  const T m = max_logit(logits, classes, stride);
  T s = T(0);
  for (std::int64_t c = 0; c < classes; ++c) s += std::exp(logits[c * stride] - m);
  return std::log(s) + m - logits[label * stride];
}

/// dlogits[c] += coeff * (softmax(logits)[c] - [c == label]) for one valid pixel.
template <class T>
NDDR_HOST_DEVICE inline void softmax_cross_entropy_backward_pixel(const T* logits,
                                                                  std::int64_t classes,
                                                                  std::int64_t stride,
                                                                  std::int32_t label, T coeff,
                                                                  T* dlogits) {
  const T m = max_logit(logits, classes, stride);
  T s = T(0);
  for (std::int64_t c = 0; c < classes; ++c) s += std::exp(logits[c * stride] - m);
  const T inv = T(1) / s;
  for (std::int64_t c = 0; c < classes; ++c) {
    const T p = std::exp(logits[c * stride] - m) * inv;
    dlogits[c * stride] += coeff * (c == label ? p - T(1) : p);
  }
}

// ---- surface-normal loss, per pixel (3 channels) ----------------------------------------------

/// A pixel is valid iff its ground truth is not the zero vector.
template <class T>
NDDR_HOST_DEVICE inline bool normal_pixel_valid(const T* g, std::int64_t stride) {
  return g[0] != T(0) || g[stride] != T(0) || g[2 * stride] != T(0);
}

/// out = x / max(||x||, eps) for a 3-vector whose components sit `stride` apart.
template <class T>
NDDR_HOST_DEVICE inline void unit_vector3(const T* x, std::int64_t stride, T eps, T* out) {
  const T n = l2_norm_pixel(x, 3, stride);
  const T inv = T(1) / (n >= eps ? n : eps);
  for (int c = 0; c < 3; ++c) out[c] = x[c * stride] * inv;
}

/// Loss of one valid pixel: ||p^ - g^||^2 (kL2) or 1 - p^ . g^ (kCosine).
template <class T>
NDDR_HOST_DEVICE inline T normal_loss_pixel(const T* p, const T* g, std::int64_t stride,
                                            NormalLossForm form, T eps) {
  T ph[3], gh[3];
  unit_vector3(p, stride, eps, ph);
  unit_vector3(g, stride, eps, gh);
  T acc = T(0);
  if (form == NormalLossForm::kL2) {
    for (int c = 0; c < 3; ++c) acc += (ph[c] - gh[c]) * (ph[c] - gh[c]);
    return acc;
  }
  for (int c = 0; c < 3; ++c) acc += ph[c] * gh[c];
  return T(1) - acc;
}

/// dp += coeff * d(normal_loss_pixel)/dp for one valid pixel (g gets no gradient).
template <class T>
NDDR_HOST_DEVICE inline void normal_loss_backward_pixel(const T* p, const T* g, std::int64_t stride,
                                                        NormalLossForm form, T eps, T coeff,
                                                        T* dp) {
  T ph[3], gh[3], gq[3];  // p^, g^ and dloss/dp^
  unit_vector3(p, stride, eps, ph);
  unit_vector3(g, stride, eps, gh);
  for (int c = 0; c < 3; ++c) gq[c] = form == NormalLossForm::kL2 ? T(2) * (ph[c] - gh[c]) : -gh[c];
  l2_normalize_backward_pixel(p, gq, 1, dp, 3, stride, eps, coeff);
}

// ---- dense losses, per element ---------------------------------------------------------------

/// Whether target element `g` enters a dense loss (see DenseLossOptions).
template <class T>
NDDR_HOST_DEVICE inline bool dense_element_valid(T g, bool zero_invalid, DenseLossSubset subset) {
  if (g != g) return false;  // NaN
  if (zero_invalid && g == T(0)) return false;
  if (subset == DenseLossSubset::kPositive) return g >= T(0.5);
  if (subset == DenseLossSubset::kNegative) return g < T(0.5);
  return true;
}

/// The loss of one valid element.
template <class T>
NDDR_HOST_DEVICE inline T dense_loss_element(T p, T g, DenseLossForm form) {
  if (form == DenseLossForm::kL1) return p >= g ? p - g : g - p;
  if (form == DenseLossForm::kL2) return (p - g) * (p - g);
  const T a = p >= T(0) ? p : -p;
  return (p > T(0) ? p : T(0)) - p * g + std::log1p(std::exp(-a));
}

/// d(dense_loss_element)/dp of one valid element.
template <class T>
NDDR_HOST_DEVICE inline T dense_loss_gradient(T p, T g, DenseLossForm form) {
  if (form == DenseLossForm::kL1) return p > g ? T(1) : (p < g ? T(-1) : T(0));
  if (form == DenseLossForm::kL2) return T(2) * (p - g);
  if (p >= T(0)) return T(1) / (T(1) + std::exp(-p)) - g;
  const T e = std::exp(p);
  return e / (T(1) + e) - g;
}

// ---- host-side checks shared by the backends --------------------------------------------------

namespace detail {

/// Checks logits (N, K, H, W) or (N, K) and labels (N, H, W), (N, 1, H, W) or, when
/// H = W = 1, (N). Returns the logits as a rank-4 shape.
inline Shape check_cross_entropy_shapes(const char* who, const Shape& logits, const Shape& labels) {
  check<ShapeError>(logits.rank() == 4 || logits.rank() == 2, who, ": logits have shape ",
                    logits, ", expected (N, K, H, W) or (N, K)");
  const Shape l4 =
      logits.rank() == 4 ? logits : Shape::nchw(logits[0], logits[1], 1, 1);  // (N, K, H, W)
  const bool ok = labels == Shape{l4.n(), l4.h(), l4.w()} ||
                  labels == Shape::nchw(l4.n(), 1, l4.h(), l4.w()) ||
                  (l4.h() == 1 && l4.w() == 1 && labels == Shape{l4.n()});
  check<ShapeError>(
      ok, who, ": labels have shape ", labels, " but logits have shape ", logits,
      "; expected labels (N, H, W) = ", Shape{l4.n(), l4.h(), l4.w()}.str(), " or (N, 1, H, W)");
  check<ShapeError>(l4.c() >= 1, who, ": logits ", logits, " have no classes");
  return l4;
}

inline void check_loss_scale(const char* who, double scale) {
  check<OptionError>(std::isfinite(scale), who, ": scale must be finite, got ", scale);
}

/// Checks p and g (N, 3, H, W) of equal shape and the options.
inline void check_normal_loss_args(const char* who, const Shape& p, const Shape& g,
                                   const NormalLossOptions& opt) {
  check_rank4(who, "prediction", p);
  check<ShapeError>(p.c() == 3, who, ": prediction has shape ", p,
                    ", expected 3 channels (N, 3, H, W)");
  check_shape(who, "ground truth", g, p);
  check_loss_scale(who, opt.scale());
  check<OptionError>(opt.eps() > 0.0 && std::isfinite(opt.eps()), who,
                     ": eps must be positive and finite, got ", opt.eps());
  check<OptionError>(opt.form() == NormalLossForm::kL2 || opt.form() == NormalLossForm::kCosine,
                     who, ": unknown form ", static_cast<int>(opt.form()));
}

/// Checks a dense loss's prediction and target (equal shapes, rank >= 2) and options.
inline void check_dense_loss_args(const char* who, const Shape& p, const Shape& g,
                                  const DenseLossOptions& opt) {
  check<ShapeError>(p.rank() >= 2, who, ": prediction has shape ", p,
                    ", expected (N, C, ...) of rank >= 2");
  check_shape(who, "target", g, p);
  check_loss_scale(who, opt.scale());
  check<OptionError>(opt.form() == DenseLossForm::kL1 || opt.form() == DenseLossForm::kL2 ||
                         opt.form() == DenseLossForm::kBce,
                     who, ": unknown form ", static_cast<int>(opt.form()));
  check<OptionError>(opt.subset() == DenseLossSubset::kAll || opt.form() == DenseLossForm::kBce,
                     who, ": a positive/negative subset needs the BCE form");
}

}  // namespace detail
}  // namespace ops
}  // namespace nddr
