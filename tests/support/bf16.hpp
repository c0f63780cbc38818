#pragma once
// BF16 test helpers shared by the CPU and CUDA tests: a guard for a context's `conv_bf16`
// setting, a bfloat16-rounded copy of a host tensor, and the mean loss of a stretch of a
// trainer's history.
#include <nddr/core/bfloat16.hpp>
#include <nddr/core/settings.hpp>
#include <nddr/core/tensor.hpp>
#include <nddr/ops/conv2d.hpp>

#include <cstddef>

namespace nddr_test {

/// Turns `ctx`'s BF16 convolutions on or off while alive and restores its previous settings.
template <class Ctx>
struct ConvBf16Setting {
  ConvBf16Setting(Ctx& ctx, bool on)
      : scope(ctx, nddr::NumericSettings(ctx.settings()).conv_bf16(on)) {}
  nddr::ScopedSettings<Ctx> scope;
};

/// `t` with every element rounded to bfloat16.
inline nddr::Tensor<float> rounded_bf16(const nddr::Tensor<float>& t) {
  nddr::Tensor<float> r(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) r[i] = nddr::round_to_bfloat16(t[i]);
  return r;
}

/// Mean of the total loss over steps [from, to) of a trainer's history.
template <class Trainer>
double mean_total_loss(const Trainer& t, std::size_t from, std::size_t to) {
  double s = 0.0;
  for (std::size_t i = from; i < to; ++i) s += t.history()[i].total;
  return s / static_cast<double>(to - from);
}

}  // namespace nddr_test
