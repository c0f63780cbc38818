#pragma once
/// \file
/// The losses, the front door: softmax cross-entropy with an ignore label, and the surface-normal
/// loss (options, shape checks and per-pixel bodies: nddr/ops/math/loss.hpp). Validates shapes
/// and options once, then runs `backend::Loss<D>`, which also reports out-of-range labels (it
/// reads the labels anyway).

#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/loss.hpp"

namespace nddr::ops {

/// scale * mean over pixels with label != ignore_label of -log softmax(logits)[label].
/// logits (N, K, H, W) or (N, K); labels (N, H, W), (N, 1, H, W), or (N) for H = W = 1.
/// Throws ValueError for a label outside [0, K) that is not ignore_label. No valid pixel: 0.
/// On the GPU it waits for the device.
template <class T, class D>
T softmax_cross_entropy_forward(Context<D>& ctx, ViewOn<const T, D> logits,
                                ViewOn<const std::int32_t, D> labels,
                                const SoftmaxCrossEntropyOptions& opt = {}) {
  constexpr const char* kWho = "nddr::ops::softmax_cross_entropy_forward";
  const Shape s = detail::check_cross_entropy_shapes(kWho, logits.shape(), labels.shape());
  detail::check_loss_scale(kWho, opt.scale());
  return backend::Loss<D>::softmax_cross_entropy_forward(ctx, s, logits, labels, opt);
}

/// dlogits += scale * (softmax(logits) - onehot(label)) / valid_count at valid pixels (0 at
/// ignored ones, and everywhere when no pixel is valid). An empty dlogits is skipped.
template <class T, class D>
void softmax_cross_entropy_backward(Context<D>& ctx, ViewOn<const T, D> logits,
                                    ViewOn<const std::int32_t, D> labels, ViewOn<T, D> dlogits,
                                    const SoftmaxCrossEntropyOptions& opt = {}) {
  if (dlogits.empty()) return;
  constexpr const char* kWho = "nddr::ops::softmax_cross_entropy_backward";
  const Shape s = detail::check_cross_entropy_shapes(kWho, logits.shape(), labels.shape());
  check_shape(kWho, "dlogits", dlogits.shape(), logits.shape());
  detail::check_loss_scale(kWho, opt.scale());
  backend::Loss<D>::softmax_cross_entropy_backward(ctx, s, logits, labels, dlogits, opt);
}

/// scale * mean over valid pixels of ||p^ - g^||^2 (kL2) or 1 - p^ . g^ (kCosine), where
/// x^ = x / max(||x||, eps) over the 3 channels. p and g are (N, 3, H, W); a pixel is valid iff
/// g is not the zero vector there. No valid pixel: 0.
template <class T, class D>
T normal_loss_forward(Context<D>& ctx, ViewOn<const T, D> p, ViewOn<const T, D> g,
                      const NormalLossOptions& opt = {}) {
  detail::check_normal_loss_args("nddr::ops::normal_loss_forward", p.shape(), g.shape(), opt);
  return backend::Loss<D>::normal_loss_forward(ctx, p, g, opt);
}

/// dp += scale * d(loss)/dp / valid_count at valid pixels (0 elsewhere, and everywhere when no
/// pixel is valid). An empty dp is skipped.
template <class T, class D>
void normal_loss_backward(Context<D>& ctx, ViewOn<const T, D> p, ViewOn<const T, D> g,
                          ViewOn<T, D> dp, const NormalLossOptions& opt = {}) {
  if (dp.empty()) return;
  constexpr const char* kWho = "nddr::ops::normal_loss_backward";
  detail::check_normal_loss_args(kWho, p.shape(), g.shape(), opt);
  check_shape(kWho, "dp", dp.shape(), p.shape());
  backend::Loss<D>::normal_loss_backward(ctx, p, g, dp, opt);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/loss.hpp"
