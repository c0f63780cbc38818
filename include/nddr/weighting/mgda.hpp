#pragma once
/// \file
/// MGDA (Sener, Koltun, NeurIPS 2018): the min-norm point of the convex hull of the task
/// gradients, min_{w in simplex} || sum_k w_k g_k ||^2, from the Gram matrix alone. The solvers
/// follow the MOO reference's `MinNormSolver` (two-vector closed form with its 0.999 / 0.001
/// clips; best-pair start; projected gradient with exact line search, or Frank-Wolfe), with the
/// iteration cap that the reference forgets to count. MGDA-UB is the same solve on the Gram
/// matrix of the gradients w.r.t. the shared representation; choosing those is the trainer's.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/weighting/loss_weighting.hpp"
#include "nddr/weighting/method.hpp"

namespace nddr::weighting {

/// Result of a min-norm solve: simplex weights and the squared norm of their combination.
struct MinNorm {
  Eigen::VectorXd weights;
  double cost = 0.0;
};

/// Two vectors with inner products v11, v12, v22: gamma on the first, 1 - gamma on the second,
/// and the squared norm (MOO's closed form: gamma clipped to 0.999 / 0.001 at the ends).
inline MinNorm min_norm_two(double v11, double v12, double v22) {
  double gamma = 0.0, cost = 0.0;
  if (v12 >= v11) {
    gamma = 0.999;
    cost = v11;
  } else if (v12 >= v22) {
    gamma = 0.001;
    cost = v22;
  } else {
    gamma = (v22 - v12) / (v11 + v22 - 2.0 * v12);
    cost = v22 + gamma * (v12 - v22);
  }
  Eigen::VectorXd w(2);
  w << gamma, 1.0 - gamma;
  return {w, cost};
}

namespace detail {

/// Euclidean projection onto the probability simplex (sort-based, as MOO's).
inline Eigen::VectorXd project_to_simplex(const Eigen::VectorXd& y) {
  const Eigen::Index m = y.size();
  std::vector<double> sorted(y.data(), y.data() + m);
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  double tmax = (y.sum() - 1.0) / static_cast<double>(m);
  double partial = 0.0;
  for (Eigen::Index i = 0; i + 1 < m; ++i) {
    partial += sorted[static_cast<std::size_t>(i)];
    const double t = (partial - 1.0) / static_cast<double>(i + 1);
    if (t > sorted[static_cast<std::size_t>(i + 1)]) {
      tmax = t;
      break;
    }
  }
  return (y.array() - tmax).max(0.0).matrix();
}

/// MOO's `_next_point`: centre the descent direction, step to the simplex boundary (smallest
/// ratio above 1e-7, step 1 if none), project.
inline Eigen::VectorXd next_point(const Eigen::VectorXd& w, const Eigen::VectorXd& descent) {
  const Eigen::VectorXd p = descent.array() - descent.mean();
  double t = 1.0;
  bool found = false;
  for (Eigen::Index i = 0; i < w.size(); ++i) {
    double ratio = -1.0;
    if (p[i] < 0.0) ratio = -w[i] / p[i];
    if (p[i] > 0.0) ratio = (1.0 - w[i]) / p[i];
    if (ratio > 1e-7) {
      t = found ? std::min(t, ratio) : ratio;
      found = true;
    }
  }
  return project_to_simplex(w + t * p);
}

}  // namespace detail

/// Which iterative min-norm solver runs for K >= 3.
enum class MinNormSolver {
  kProjectedGradient,  ///< MOO `find_min_norm_element` (what its training script and LibMTL run)
  kFrankWolfe,         ///< MOO `find_min_norm_element_FW` (the paper's Algorithm 2)
};

/// min over the simplex of w^T M w, as MOO's `MinNormSolver` (best pair first; at most
/// `max_iter` iterations; stops when the L1 change of w is below `tol` and returns the point
/// before that change, as the reference does).
inline MinNorm min_norm_element(const Eigen::MatrixXd& m, MinNormSolver solver, int max_iter = 250,
                                double tol = 1e-5) {
  const Eigen::Index k = m.rows();
  if (k == 1) return {Eigen::VectorXd::Ones(1), m(0, 0)};
  MinNorm best{Eigen::VectorXd::Zero(k), 0.0};
  bool first = true;
  for (Eigen::Index i = 0; i < k; ++i)
    for (Eigen::Index j = i + 1; j < k; ++j) {
      const MinNorm pair = min_norm_two(m(i, i), m(i, j), m(j, j));
      if (first || pair.cost < best.cost) {
        best.weights.setZero();
        best.weights[i] = pair.weights[0];
        best.weights[j] = pair.weights[1];
        best.cost = pair.cost;
        first = false;
      }
    }
  if (k == 2) return best;
  Eigen::VectorXd w = best.weights;
  double cost = best.cost;
  for (int it = 0; it < max_iter; ++it) {
    const Eigen::VectorXd mw = linalg::mat_vec(m, w);
    Eigen::VectorXd next;
    MinNorm line;
    if (solver == MinNormSolver::kFrankWolfe) {
      Eigen::Index t = 0;
      mw.minCoeff(&t);
      line = min_norm_two(w.dot(mw), mw[t], m(t, t));
      next = line.weights[0] * w;
      next[t] += line.weights[1];
    } else {
      const Eigen::VectorXd target = detail::next_point(w, -mw);
      line = min_norm_two(w.dot(mw), target.dot(mw), target.dot(linalg::mat_vec(m, target)));
      next = line.weights[0] * w + line.weights[1] * target;
    }
    cost = line.cost;
    if ((next - w).cwiseAbs().sum() < tol) break;
    w = next;
  }
  return {w, cost};
}

/// Options of `Mgda`.
struct MgdaOptions {
  /// Gradient normalisation n_k before the solve: kNone (LibMTL default), kL2 (||g_k||), kLoss
  /// (L_k), kLossPlus (L_k ||g_k||; MOO's sample config).
  enum class Normalization { kNone, kL2, kLoss, kLossPlus };
  Normalization normalization = Normalization::kNone;
  MinNormSolver solver = MinNormSolver::kProjectedGradient;
  void validate(const char* /*who*/) const {}
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    static constexpr std::string_view kNorms[] = {"none", "l2", "loss", "loss+"};
    static constexpr std::string_view kSolvers[] = {"pg", "fw"};
    if (key == "norm")
      normalization =
          static_cast<Normalization>(detail::parse_choice(flag, "mgda", key, value, kNorms));
    else if (key == "solver")
      solver = static_cast<MinNormSolver>(detail::parse_choice(flag, "mgda", key, value, kSolvers));
    else
      detail::unknown_key(flag, "mgda", key, "norm, solver");
  }
};

/// MGDA: solve the min-norm problem on the normalised Gram matrix M_ij / (n_i n_j); LibMTL
/// applies the solution w to the normalised gradients, so the weights on the original gradients
/// are w_k / n_k (a zero n_k counts as 1). Heads unweighted. No state.
class Mgda : public MethodBase {
 public:
  using Options = MgdaOptions;
  static constexpr std::string_view kName = "mgda";

  explicit Mgda(std::size_t num_tasks, Options options = {}) : k_(num_tasks), options_(options) {
    detail::check_task_count(kName, k_);
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return true; }
  Combination combine(const StepInput& in) {
    detail::check_losses(kName, in, k_, true);
    const Eigen::MatrixXd& m = *in.gram;
    const auto k = static_cast<Eigen::Index>(k_);
    Eigen::VectorXd n = Eigen::VectorXd::Ones(k);
    using N = Options::Normalization;
    for (Eigen::Index i = 0; i < k; ++i) {
      const double norm = std::sqrt(std::max(0.0, m(i, i)));
      const double loss = in.losses[static_cast<std::size_t>(i)];
      if (options_.normalization == N::kL2) n[i] = norm;
      if (options_.normalization == N::kLoss) n[i] = loss;
      if (options_.normalization == N::kLossPlus) n[i] = loss * norm;
      if (!(n[i] > 0.0) || !std::isfinite(n[i])) n[i] = 1.0;
    }
    Eigen::MatrixXd normalised(k, k);
    for (Eigen::Index j = 0; j < k; ++j)
      for (Eigen::Index i = 0; i < k; ++i) normalised(i, j) = m(i, j) / (n[i] * n[j]);
    const MinNorm sol = min_norm_element(normalised, options_.solver);
    return detail::gradient_combination(sol.weights.cwiseQuotient(n), in.losses);
  }
  MethodState state() const { return {}; }
  void set_state(const MethodState& s) { detail::check_state_size(kName, s, 0); }
  std::string spec() const {
    static constexpr const char* kNorms[] = {"none", "l2", "loss", "loss+"};
    return std::string("mgda:norm=") + kNorms[static_cast<int>(options_.normalization)] +
           ",solver=" + (options_.solver == MinNormSolver::kFrankWolfe ? "fw" : "pg");
  }

 private:
  std::size_t k_;
  Options options_;
};

}  // namespace nddr::weighting
