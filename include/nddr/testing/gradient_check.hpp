#pragma once
/// \file
/// Finite-difference gradient checking in double precision.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "nddr/core/random.hpp"

namespace nddr::testing {

struct GradCheckOptions {
  double eps = 1e-6;            ///< central-difference step
  double rtol = 1e-5;           ///< relative tolerance
  double atol = 1e-7;           ///< absolute tolerance
  std::int64_t max_checks = 300;  ///< check every element up to this count, else a random subset
  std::uint64_t seed = 7;       ///< picks the subset
};

struct GradCheckResult {
  bool ok = true;
  std::int64_t checked = 0;
  double max_abs_error = 0.0;
  std::string report;  ///< the first mismatches, one per line
};

/// Compares `analytic[i]` with (loss(x + eps e_i) - loss(x - eps e_i)) / (2 eps) for the
/// checked indices of `x` (length `n`). `loss()` reads `x` in place; `x` is restored.
template <class Loss>
GradCheckResult check_gradient(std::string_view what, double* x, std::int64_t n,
                               const double* analytic, Loss&& loss,
                               const GradCheckOptions& opt = {}) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), std::int64_t{0});
  if (n > opt.max_checks) {
    Rng rng(opt.seed);
    for (std::int64_t i = n - 1; i > 0; --i)
      std::swap(idx[static_cast<std::size_t>(i)],
                idx[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i + 1)))]);
    idx.resize(static_cast<std::size_t>(opt.max_checks));
  }
  GradCheckResult r;
  std::ostringstream os;
  int reported = 0;
  for (std::int64_t i : idx) {
    const double saved = x[i];
    x[i] = saved + opt.eps;
    const double up = loss();
    x[i] = saved - opt.eps;
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2.0 * opt.eps);
    const double err = std::abs(numeric - analytic[i]);
    const double allowed = opt.atol + opt.rtol * std::max(std::abs(numeric), std::abs(analytic[i]));
    r.max_abs_error = std::max(r.max_abs_error, err);
    ++r.checked;
    if (err > allowed) {
      r.ok = false;
      if (reported++ < 10)
        os << what << "[" << i << "]: analytic " << analytic[i] << " numeric " << numeric
           << " |diff| " << err << " > " << allowed << "\n";
    }
  }
  r.report = os.str();
  return r;
}

}  // namespace nddr::testing
