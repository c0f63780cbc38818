// nddr::bfloat16: float -> bfloat16 rounding against PyTorch's conversion (tests/data/
// bfloat16.safetensors from tools/reference/bfloat16.py), the exact way back, and the
// properties the CUDA BF16 convolutions rely on.
#include <catch2/catch.hpp>

#include <nddr/io/safetensors.hpp>
#include <nddr/nddr.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>

namespace {

bool is_bf16_nan(std::uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x007fu) != 0; }

float from_bits32(std::uint32_t u) { return nddr::detail::float_from_bits(u); }

}  // namespace

TEST_CASE("bfloat16: rounding matches PyTorch bit for bit", "[core][bfloat16]") {
  const auto f = nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/bfloat16.safetensors");
  const auto bits = f.values<std::int64_t>("bits");
  const auto rounded = f.values<std::int64_t>("rounded");
  REQUIRE(bits.size() == rounded.size());
  REQUIRE(bits.size() > 8000);
  std::int64_t nans = 0, mismatches = 0;
  for (std::size_t i = 0; i < bits.size(); ++i) {
    const float x = from_bits32(static_cast<std::uint32_t>(bits[i]));
    const std::uint16_t want = static_cast<std::uint16_t>(rounded[i]);
    const std::uint16_t got = nddr::bfloat16_bits(x);
    if (std::isnan(x)) {
      ++nans;
      // PyTorch's vectorised conversion writes 0xFFFF for every NaN, ours 0x7FC0: both NaN.
      CHECK(is_bf16_nan(want));
      CHECK(got == 0x7fc0u);
      continue;
    }
    if (got != want) {
      ++mismatches;
      std::ostringstream s;
      s << std::hex << "input 0x" << static_cast<std::uint32_t>(bits[i]) << ": got 0x" << got
        << ", PyTorch 0x" << want;
      if (mismatches <= 5) FAIL_CHECK(s.str());
    }
  }
  CHECK(mismatches == 0);
  CHECK(nans > 0);  // the edge cases and random bit patterns include NaNs
}

TEST_CASE("bfloat16: edge cases and the exact way back", "[core][bfloat16]") {
  using nddr::bfloat16_bits;
  CHECK(bfloat16_bits(0.0f) == 0x0000u);
  CHECK(bfloat16_bits(-0.0f) == 0x8000u);
  CHECK(bfloat16_bits(1.0f) == 0x3f80u);
  CHECK(bfloat16_bits(std::numeric_limits<float>::infinity()) == 0x7f80u);
  CHECK(bfloat16_bits(-std::numeric_limits<float>::infinity()) == 0xff80u);
  CHECK(bfloat16_bits(std::numeric_limits<float>::max()) == 0x7f80u);  // rounds up to inf
  CHECK(bfloat16_bits(std::numeric_limits<float>::quiet_NaN()) == 0x7fc0u);
  CHECK(bfloat16_bits(from_bits32(0x3f808000u)) == 0x3f80u);  // tie, even kept part: down
  CHECK(bfloat16_bits(from_bits32(0x3f818000u)) == 0x3f82u);  // tie, odd kept part: up
  CHECK(bfloat16_bits(from_bits32(0x3f808001u)) == 0x3f81u);  // above the tie: up
  // Every bfloat16 pattern that is not a NaN survives float and back unchanged.
  for (std::uint32_t b = 0; b <= 0xffffu; ++b) {
    const auto h = static_cast<std::uint16_t>(b);
    if (is_bf16_nan(h)) continue;
    REQUIRE(nddr::bfloat16_bits(nddr::float_from_bfloat16_bits(h)) == h);
  }
  // The struct converts the same way and has cuDNN's layout.
  const nddr::bfloat16 v(3.14159265f);
  CHECK(v.bits == 0x4049u);
  CHECK(static_cast<float>(v) == 3.140625f);
  CHECK(nddr::round_to_bfloat16(3.14159265f) == 3.140625f);
  CHECK(nddr::bfloat16::from_bits(0xc000u).bits == 0xc000u);
  CHECK(static_cast<float>(nddr::bfloat16::from_bits(0xc000u)) == -2.0f);
  // 8 significant bits: the relative rounding error is at most 2^-8 (half an ulp).
  for (float x : {1.0f / 3.0f, 123.456f, -7.77e-20f, 6.5e30f}) {
    const float r = nddr::round_to_bfloat16(x);
    CHECK(std::abs(r - x) <= std::ldexp(std::abs(x), -8));
    CHECK(r != x);
  }
}
