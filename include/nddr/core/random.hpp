#pragma once
/// \file
/// Seeded, counter-based random numbers: the same (seed, counter) gives the same value on the
/// CPU and inside CUDA kernels, so dropout masks and initialisations are reproducible anywhere.

#include <cmath>
#include <cstdint>

#include "nddr/core/macros.hpp"

namespace nddr {

/// SplitMix64 finaliser: a bijective 64-bit mixer.
NDDR_HOST_DEVICE constexpr std::uint64_t mix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// 64 random bits for position `counter` of stream `seed`.
NDDR_HOST_DEVICE constexpr std::uint64_t random_bits(std::uint64_t seed, std::uint64_t counter) {
  return mix64(mix64(seed) ^ counter);
}

/// Uniform in [0, 1) with 53 random bits.
NDDR_HOST_DEVICE inline double random_uniform(std::uint64_t seed, std::uint64_t counter) {
  return static_cast<double>(random_bits(seed, counter) >> 11) * 0x1.0p-53;
}

/// A reproducible random stream. Its whole state is (seed, counter), so it checkpoints exactly.
class Rng {
 public:
  struct State {
    std::uint64_t seed = 0;
    std::uint64_t counter = 0;
  };

  explicit Rng(std::uint64_t seed = 0) : state_{seed, 0} {}

  State state() const { return state_; }
  void set_state(State s) { state_ = s; }

  std::uint64_t next_bits() { return random_bits(state_.seed, state_.counter++); }
  /// Uniform in [0, 1).
  double uniform() { return random_uniform(state_.seed, state_.counter++); }
  /// Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Standard normal (Box-Muller; consumes two draws).
  double normal() {
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2);
  }
  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next_bits() % n; }

  /// Reserves `count` consecutive counters and returns the first: a kernel that draws
  /// `random_bits(seed, first + i)` for element i matches a CPU loop doing the same.
  std::uint64_t reserve(std::uint64_t count) {
    const std::uint64_t first = state_.counter;
    state_.counter += count;
    return first;
  }
  std::uint64_t seed() const { return state_.seed; }

 private:
  State state_;
};

}  // namespace nddr
