#pragma once
/// \file
/// Concept `Head`: the compile-time description of a task's layers after the last stage
/// (VGG16-LargeFOV: fc6 3x3 dilation 12, dropout, fc7, dropout, fc8; ResNet-101: ASPP;
/// VGG16Classifier: global pooling + fully connected layers).
///
/// Minimal complete definition (a stateless struct `H`):
///  - `static constexpr const char* name`;
///  - `template <class T, class D> static Sequential<T, D> build(std::int64_t in_channels,
///    std::int64_t outputs)`: maps (N, in_channels, h, w) to (N, outputs, h', w') (dense heads
///    keep h, w; classifier heads give 1 x 1). The last layer's parameters are named
///    `fc8.weight` / `fc8.bias` (or `classifier.*`) so optimisers can give them their own group.

#include <concepts>
#include <cstdint>

#include "nddr/core/device.hpp"
#include "nddr/layers/sequential.hpp"

namespace nddr::concepts {

template <class H>
concept Head = requires(std::int64_t in, std::int64_t outputs) {
  { H::name } -> std::convertible_to<const char*>;
  { H::template build<double, Cpu>(in, outputs) } -> std::same_as<Sequential<double, Cpu>>;
};

/// Diagnoses why `H` is not a `Head`; the compiler's "required from" line names `H`.
template <class H>
constexpr bool require_head() {
  static_assert(requires { { H::name } -> std::convertible_to<const char*>; },
                "nddr::Head: missing `static constexpr const char* name`");
  static_assert(requires(std::int64_t in, std::int64_t outputs) {
    { H::template build<double, Cpu>(in, outputs) } -> std::same_as<Sequential<double, Cpu>>;
  }, "nddr::Head: missing `template <class T, class D> static Sequential<T, D> "
     "build(std::int64_t in_channels, std::int64_t outputs)`");
  return Head<H>;
}

}  // namespace nddr::concepts
