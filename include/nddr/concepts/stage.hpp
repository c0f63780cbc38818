#pragma once
/// \file
/// Concept `Stage`: the compile-time description of one stage of a backbone (e.g. VGG16's
/// conv1_1, conv1_2, pool1), i.e. the unit after which a fusion layer may join K task columns.
///
/// Minimal complete definition (a stateless struct `S`):
///  - `static constexpr const char* name` (e.g. "stage1");
///  - `static constexpr std::int64_t in_channels, out_channels`;
///  - `static constexpr std::int64_t stride`: the spatial down-sampling factor of the stage
///    (TF 'SAME' semantics: out = ceil(in / stride)); fusion needs equal strides across tasks;
///  - `template <class T, class D> static Sequential<T, D> build()`: a fresh instance whose
///    layers map (N, in_channels, H, W) to (N, out_channels, ceil(H / stride), ceil(W / stride)).
/// Models: `VGG16::Stage1` ... in nddr/backbones/.

#include <concepts>
#include <cstdint>

#include "nddr/core/device.hpp"
#include "nddr/layers/sequential.hpp"

namespace nddr::concepts {

template <class S>
concept Stage = requires {
  { S::name } -> std::convertible_to<const char*>;
  { S::in_channels } -> std::convertible_to<std::int64_t>;
  { S::out_channels } -> std::convertible_to<std::int64_t>;
  { S::stride } -> std::convertible_to<std::int64_t>;
  { S::template build<double, Cpu>() } -> std::same_as<Sequential<double, Cpu>>;
};

/// Diagnoses why `S` is not a `Stage`; the compiler's "required from" line names `S`.
template <class S>
constexpr bool require_stage() {
  static_assert(requires { { S::name } -> std::convertible_to<const char*>; },
                "nddr::Stage: missing `static constexpr const char* name`");
  static_assert(requires {
    { S::in_channels } -> std::convertible_to<std::int64_t>;
    { S::out_channels } -> std::convertible_to<std::int64_t>;
  }, "nddr::Stage: missing `static constexpr std::int64_t in_channels, out_channels`");
  static_assert(requires { { S::stride } -> std::convertible_to<std::int64_t>; },
                "nddr::Stage: missing `static constexpr std::int64_t stride` (down-sampling)");
  static_assert(requires { { S::template build<double, Cpu>() } -> std::same_as<Sequential<double, Cpu>>; },
                "nddr::Stage: missing `template <class T, class D> static Sequential<T, D> build()`");
  return Stage<S>;
}

}  // namespace nddr::concepts
