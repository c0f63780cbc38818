#pragma once
/// \file
/// `nddr::bfloat16`: the 16-bit brain floating-point storage format (1 sign bit, 8 exponent
/// bits, 7 mantissa bits: float's range with 8 significant bits), used by the CUDA backend's
/// BF16 convolutions (`NumericSettings::conv_bf16`, core/settings.hpp). Only conversions are defined: arithmetic
/// happens in float.
///
/// float -> bfloat16 rounds to nearest, ties to even; values beyond the largest finite
/// bfloat16 become infinities, infinities and signed zeros are kept, subnormals round like
/// any other value, and every NaN becomes the quiet NaN 0x7FC0 (PyTorch's `c10::BFloat16`
/// does the same, so results compare bit for bit; tests/core/bfloat16_test.cpp checks against
/// values PyTorch produced). bfloat16 -> float is exact. The bodies are `NDDR_HOST_DEVICE`, so
/// the CUDA kernels and the CPU run the same code.

#include <cstdint>
#include <cstring>

#include "nddr/core/macros.hpp"

namespace nddr {

namespace detail {

NDDR_HOST_DEVICE inline std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

NDDR_HOST_DEVICE inline float float_from_bits(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

}  // namespace detail

/// The bfloat16 bit pattern nearest to `f` (ties to even; NaN -> 0x7FC0).
NDDR_HOST_DEVICE inline std::uint16_t bfloat16_bits(float f) {
  const std::uint32_t u = detail::float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;  // NaN
  // Adding 0x7fff plus the lowest kept bit carries into the kept bits exactly when the dropped
  // half is above one half ulp, or equal to it with an odd kept part; an overflow of the
  // mantissa carries into the exponent, which is the correct rounding (up to infinity).
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/// The float whose upper half is `bits` (exact).
NDDR_HOST_DEVICE inline float float_from_bfloat16_bits(std::uint16_t bits) {
  return detail::float_from_bits(static_cast<std::uint32_t>(bits) << 16);
}

/// `f` rounded to the nearest bfloat16, as a float (what a round trip through bfloat16 gives).
NDDR_HOST_DEVICE inline float round_to_bfloat16(float f) {
  return float_from_bfloat16_bits(bfloat16_bits(f));
}

/// A bfloat16 value: two bytes, the layout of CUDA's `__nv_bfloat16` and cuDNN's
/// `CUDNN_DATA_BFLOAT16`. Converts explicitly from and to float.
struct bfloat16 {
  std::uint16_t bits;

  bfloat16() = default;
  NDDR_HOST_DEVICE explicit bfloat16(float f) : bits(bfloat16_bits(f)) {}
  NDDR_HOST_DEVICE explicit operator float() const { return float_from_bfloat16_bits(bits); }

  NDDR_HOST_DEVICE static bfloat16 from_bits(std::uint16_t b) {
    bfloat16 v;
    v.bits = b;
    return v;
  }
};

static_assert(sizeof(bfloat16) == 2 && alignof(bfloat16) == 2,
              "nddr::bfloat16 must have the two-byte layout cuDNN expects");

}  // namespace nddr
