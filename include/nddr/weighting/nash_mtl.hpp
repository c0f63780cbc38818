#pragma once
/// \file
/// Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022): the Nash
/// bargaining weights alpha > 0 with alpha_k (M alpha)_k = 1, from the Gram matrix.
///
/// The references reach that fixed point with a sequence of at most 20 convex problems solved by
/// cvxpy/ECOS (concave-convex procedure). nddr solves it directly: it is the unique minimiser of
/// the strictly convex f(a) = 0.5 a^T M a - sum_k log a_k over a > 0 (grad f = M a - 1/a), found
/// by damped Newton steps (Hessian M + diag(1/a^2), always positive definite) that keep a > 0.
/// Agreement with the references is therefore to their solver tolerance; where they stop early
/// nddr's answer is the exact fixed point.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/weighting/loss_weighting.hpp"
#include "nddr/weighting/method.hpp"
#include "nddr/weighting/small_linalg.hpp"

namespace nddr::weighting {

/// The positive solution of alpha_k (M alpha)_k = 1 by damped Newton on
/// f(a) = 0.5 a^T M a - sum log a from `start` (> 0), or nothing if the iteration does not reach
/// max_k |a_k (M a)_k - 1| <= tol within `max_iter` steps (f is unbounded below when a
/// non-negative direction has M v = 0, e.g. a zero gradient: no Nash solution exists).
inline std::optional<Eigen::VectorXd> nash_solution(const Eigen::MatrixXd& m, Eigen::VectorXd start,
                                                    int max_iter = 200, double tol = 1e-12) {
  Eigen::VectorXd a = std::move(start);
  const auto f = [&](const Eigen::VectorXd& x) {
    return 0.5 * x.dot(linalg::mat_vec(m, x)) - x.array().log().sum();
  };
  for (int it = 0; it <= max_iter; ++it) {
    const Eigen::VectorXd ma = linalg::mat_vec(m, a);
    if ((a.cwiseProduct(ma).array() - 1.0).abs().maxCoeff() <= tol) return a;
    if (it == max_iter) break;
    const Eigen::VectorXd g = ma - a.cwiseInverse();
    Eigen::MatrixXd h = m;
    h.diagonal() += a.cwiseInverse().cwiseAbs2();
    const linalg::Ldlt ldlt(h);  // Eigen::LDLT semantics: ok() == (info() == Success)
    if (!ldlt.ok()) return std::nullopt;
    const Eigen::VectorXd step = -ldlt.solve(g);
    if (!step.allFinite()) return std::nullopt;
    double t = 1.0;  // fraction to the boundary, then Armijo backtracking
    for (Eigen::Index i = 0; i < a.size(); ++i)
      if (step[i] < 0.0) t = std::min(t, -0.99 * a[i] / step[i]);
    // Near the solution the decrease of f is below its rounding error: there the full Newton
    // step is taken (quadratic convergence), elsewhere Armijo backtracking guards it.
    const double f0 = f(a), slope = g.dot(step);
    if (-slope > 1e-10 * (1.0 + std::abs(f0))) {
      while (t > 1e-20 && !(f(a + t * step) <= f0 + 1e-4 * t * slope)) t *= 0.5;
      if (t <= 1e-20) return std::nullopt;
    }
    a += t * step;
  }
  return std::nullopt;
}

/// Options of `NashMtl`.
struct NashMtlOptions {
  /// > 0: clip the shared gradient to this L2 norm (`Combination::max_shared_norm`); 0: off.
  /// Default 1 (both references).
  double max_norm = 1.0;
  /// Solve every this many steps, reuse the last weights in between (1: every step; default).
  std::uint64_t update_every = 1;
  void validate(const char* who) const {
    check<OptionError>(max_norm >= 0.0 && std::isfinite(max_norm), who,
                       ": NashMtlOptions.max_norm must be a finite value >= 0, got ", max_norm);
    check<OptionError>(update_every >= 1, who, ": NashMtlOptions.update_every must be >= 1");
  }
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    if (key == "max_norm")
      max_norm = detail::parse_double(flag, "nash", key, value, 0.0, 1e300);
    else if (key == "update_every")
      update_every = detail::parse_uint(flag, "nash", key, value, 1);
    else
      detail::unknown_key(flag, "nash", key, "max_norm, update_every");
  }
};

/// Nash-MTL: on update steps (step % update_every == 0) alpha = `nash_solution(M)`, warm-started
/// from the previous alpha (init 1); if no solution is found the previous alpha is kept (as the
/// references do when the solver fails). The weights apply to the losses (heads weighted too),
/// and the shared gradient is clipped to `max_norm`. State: the step counter and alpha.
class NashMtl : public MethodBase {
 public:
  using Options = NashMtlOptions;
  static constexpr std::string_view kName = "nash";

  explicit NashMtl(std::size_t num_tasks, Options options = {})
      : k_(num_tasks),
        options_(options),
        alpha_(Eigen::VectorXd::Ones(static_cast<Eigen::Index>(num_tasks))) {
    detail::check_task_count(kName, k_);
    options_.validate("nddr::weighting::nash");
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return step_ % options_.update_every == 0; }
  Combination combine(const StepInput& in) {
    const bool update = needs_gram();
    detail::check_losses(kName, in, k_, update);
    ++step_;
    if (update) {
      if (auto a = nash_solution(*in.gram, alpha_)) alpha_ = *a;
    }
    Combination c = detail::loss_combination(alpha_, in.losses);
    c.max_shared_norm = options_.max_norm;
    return c;
  }
  MethodState state() const {
    MethodState s;
    s.values.push_back(static_cast<double>(step_));
    s.values.insert(s.values.end(), alpha_.data(), alpha_.data() + alpha_.size());
    return s;
  }
  void set_state(const MethodState& s) {
    detail::check_state_size(kName, s, 1 + k_);
    step_ = static_cast<std::uint64_t>(s.values[0]);
    alpha_ = Eigen::Map<const Eigen::VectorXd>(s.values.data() + 1, static_cast<Eigen::Index>(k_));
  }
  std::string spec() const {
    return "nash:max_norm=" + detail::format_double(options_.max_norm) +
           ",update_every=" + std::to_string(options_.update_every);
  }

 private:
  std::size_t k_;
  Options options_;
  std::uint64_t step_ = 0;
  Eigen::VectorXd alpha_;
};

}  // namespace nddr::weighting
