#pragma once
/// \file
/// Inverted dropout: element i is kept iff random_uniform(seed, first_counter + i) >= p, and a
/// kept element is divided by 1 - p. The mask is a pure function of (seed, counter), so the CPU
/// and a CUDA kernel draw the same one and backward recomputes it instead of storing it.

#include <cstdint>

#include "nddr/core/error.hpp"
#include "nddr/core/macros.hpp"
#include "nddr/core/random.hpp"

namespace nddr {

/// Run-time options of dropout. `p` is the drop probability (PyTorch meaning; TF's keep_prob
/// is 1 - p). Fluent: `DropoutOptions{}.p(0.3)`; read as `opt.p()`.
class DropoutOptions {
 public:
  /// Probability of zeroing an element, in [0, 1). Default 0.5.
  double p() const { return p_; }
  DropoutOptions& p(double v) {
    p_ = v;
    return *this;
  }

  /// Throws OptionError naming `who` and the value unless 0 <= p < 1.
  void validate(const char* who) const { check_p(who, p_); }

  /// Throws OptionError naming `who` and the value unless 0 <= p < 1 (NaN fails).
  static void check_p(const char* who, double p) {
    check<OptionError>(p >= 0.0 && p < 1.0, who, ": dropout p must be in [0, 1), got ", p);
  }

 private:
  double p_ = 0.5;
};

}  // namespace nddr

namespace nddr::ops {

/// Whether the element drawn at `counter` of stream `seed` survives dropout with drop
/// probability `p`.
NDDR_HOST_DEVICE inline bool dropout_keep(std::uint64_t seed, std::uint64_t counter, double p) {
  return random_uniform(seed, counter) >= p;
}

/// Element body of forward and backward: v / keep_prob when kept, else 0. Division (not a
/// multiplication by the reciprocal) makes a kept value exactly x / (1 - p).
template <class T>
NDDR_HOST_DEVICE inline T dropout_element(T v, bool keep, T keep_prob) {
  return keep ? v / keep_prob : T(0);
}

}  // namespace nddr::ops
