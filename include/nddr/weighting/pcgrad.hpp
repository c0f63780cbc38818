#pragma once
/// \file
/// PCGrad (Yu, Kumar, Gupta, Levine, Hausman, Finn, NeurIPS 2020, Algorithm 1), expressed as
/// weights on the original gradients and computed from the Gram matrix alone.

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/random.hpp"
#include "nddr/weighting/loss_weighting.hpp"
#include "nddr/weighting/method.hpp"

namespace nddr::weighting {

/// Options of `PcGrad`.
struct PcGradOptions {
  /// Added to ||g_j||^2 in the projection's denominator (LibMTL: 1e-8), >= 0.
  double eps = 1e-8;
  /// true: d = mean of the projected gradients (Pytorch-PCGrad); false (default): sum (paper,
  /// LibMTL).
  bool mean = false;
  /// Seed of the random task orders (same on every rank). Default 0.
  std::uint64_t seed = 0;
  void validate(const char* who) const {
    check<OptionError>(eps >= 0.0 && std::isfinite(eps), who,
                       ": PcGradOptions.eps must be a finite value >= 0, got ", eps);
  }
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    static constexpr std::string_view kReductions[] = {"sum", "mean"};
    if (key == "eps")
      eps = detail::parse_double(flag, "pcgrad", key, value, 0.0, 1.0);
    else if (key == "reduction")
      mean = detail::parse_choice(flag, "pcgrad", key, value, kReductions) == 1;
    else if (key == "seed")
      seed = detail::parse_uint(flag, "pcgrad", key, value);
    else
      detail::unknown_key(flag, "pcgrad", key, "eps, reduction, seed");
  }
};

/// For each task i, gpc_i starts at g_i and, for every task j in a fresh random order of all K
/// tasks (LibMTL: j = i included), loses its component along g_j when gpc_i . g_j < 0:
/// gpc_i -= (gpc_i . g_j) / (||g_j||^2 + eps) g_j (projection against the *original* g_j).
/// With gpc_i = sum_j C_ij g_j, gpc_i . g_j = (C M)_ij, so only M is needed; the weights are
/// the column sums of C (sum) or those over K (mean). Heads unweighted. The order of task i is
/// a Fisher-Yates shuffle of (0..K-1) drawn with `Rng::below` (for n = K-1 down to 1: swap
/// n with below(n + 1)); state: the random stream.
class PcGrad : public MethodBase {
 public:
  using Options = PcGradOptions;
  static constexpr std::string_view kName = "pcgrad";

  explicit PcGrad(std::size_t num_tasks, Options options = {})
      : k_(num_tasks), options_(options), rng_(options.seed) {
    detail::check_task_count(kName, k_);
    options_.validate("nddr::weighting::pcgrad");
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return true; }

  /// The task order used for task i: K indices; advances the random stream by K - 1 draws.
  std::vector<std::size_t> draw_order() {
    std::vector<std::size_t> order(k_);
    std::iota(order.begin(), order.end(), std::size_t{0});
    for (std::size_t n = k_ - 1; n > 0; --n) std::swap(order[n], order[rng_.below(n + 1)]);
    return order;
  }

  Combination combine(const StepInput& in) {
    detail::check_losses(kName, in, k_, true);
    const Eigen::MatrixXd& m = *in.gram;
    const auto k = static_cast<Eigen::Index>(k_);
    Eigen::VectorXd w = Eigen::VectorXd::Zero(k);
    for (Eigen::Index i = 0; i < k; ++i) {
      Eigen::VectorXd c = Eigen::VectorXd::Unit(k, i);  // gpc_i = sum_j c_j g_j
      for (const std::size_t jj : draw_order()) {
        const auto j = static_cast<Eigen::Index>(jj);
        const double dot = c.dot(m.col(j));
        if (dot < 0.0) c[j] -= dot / (m(j, j) + options_.eps);
      }
      w += c;
    }
    if (options_.mean) w /= static_cast<double>(k_);
    return detail::gradient_combination(w, in.losses);
  }
  MethodState state() const { return {{}, rng_.state()}; }
  void set_state(const MethodState& s) {
    detail::check_state_size(kName, s, 0);
    rng_.set_state(s.rng);
  }
  std::string spec() const {
    return "pcgrad:eps=" + detail::format_double(options_.eps) +
           ",reduction=" + (options_.mean ? "mean" : "sum") +
           ",seed=" + std::to_string(options_.seed);
  }

 private:
  std::size_t k_;
  Options options_;
  Rng rng_;
};

}  // namespace nddr::weighting
