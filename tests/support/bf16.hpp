#pragma once
// BF16 test helpers shared by the CPU and CUDA tests: a guard for the process-wide
// `nddr::set_conv_bf16` switch, a bfloat16-rounded copy of a host tensor, and the mean loss of a
// stretch of a trainer's history.
#include <nddr/core/bfloat16.hpp>
#include <nddr/core/tensor.hpp>
#include <nddr/ops/conv2d.hpp>

#include <cstddef>

namespace nddr_test {

/// Turns the BF16 convolutions on or off while alive and restores the previous setting.
struct ConvBf16Setting {
  bool before = nddr::conv_bf16();
  explicit ConvBf16Setting(bool on) { nddr::set_conv_bf16(on); }
  ~ConvBf16Setting() { nddr::set_conv_bf16(before); }
  ConvBf16Setting(const ConvBf16Setting&) = delete;
  ConvBf16Setting& operator=(const ConvBf16Setting&) = delete;
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
