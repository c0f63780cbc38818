#pragma once
/// \file
/// IMTL-G (Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021): the closed-form
/// weights whose combination has equal projections on every task's unit gradient, from the Gram
/// matrix.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>

#include "nddr/core/error.hpp"
#include "nddr/weighting/loss_weighting.hpp"
#include "nddr/weighting/method.hpp"
#include "nddr/weighting/small_linalg.hpp"

namespace nddr::weighting {

/// Options of `ImtlG` (none).
struct ImtlGOptions {
  void validate(const char* /*who*/) const {}
  void set(std::string_view flag, std::string_view key, std::string_view /*value*/) {
    detail::unknown_key(flag, "imtl", key, "");
  }
};

/// IMTL-G: with u_k = g_k / n_k, n_k = max(||g_k||, 1e-15), D the rows g_1 - g_k and U the rows
/// u_1 - u_k (k = 2..K): alpha_{2..K} = (g_1 U^T)(D U^T)^{-1}, alpha_1 = 1 - sum alpha_{2..K}.
/// Every entry is an inner product, so only M is needed:
///   (g_1 U^T)_k = M_11/n_1 - M_1k/n_k,  (D U^T)_ij = M_11/n_1 - M_1j/n_j - M_i1/n_1 + M_ij/n_j.
/// The (K-1) x (K-1) system is solved by full-pivot LU; if it is singular (parallel
/// gradients) it is retried with 1e-8 I added (as the Nash and SamsungLabs code do), and a
/// ValueError is thrown if that fails too. Weights may be negative. Heads unweighted. No state.
class ImtlG : public MethodBase {
 public:
  using Options = ImtlGOptions;
  static constexpr std::string_view kName = "imtl";

  explicit ImtlG(std::size_t num_tasks, Options options = {}) : k_(num_tasks), options_(options) {
    detail::check_task_count(kName, k_);
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return true; }
  Combination combine(const StepInput& in) {
    detail::check_losses(kName, in, k_, true);
    const Eigen::MatrixXd& m = *in.gram;
    const auto k = static_cast<Eigen::Index>(k_);
    if (k == 1) return detail::gradient_combination(Eigen::VectorXd::Ones(1), in.losses);
    Eigen::VectorXd n(k);
    for (Eigen::Index i = 0; i < k; ++i) n[i] = std::max(std::sqrt(std::max(0.0, m(i, i))), 1e-15);
    Eigen::RowVectorXd g1u(k - 1);
    Eigen::MatrixXd du(k - 1, k - 1);
    for (Eigen::Index a = 1; a < k; ++a) {
      g1u[a - 1] = m(0, 0) / n[0] - m(0, a) / n[a];
      for (Eigen::Index b = 1; b < k; ++b)
        du(a - 1, b - 1) = m(0, 0) / n[0] - m(0, b) / n[b] - m(a, 0) / n[0] + m(a, b) / n[b];
    }
    // alpha^T = g1u (D U^T)^{-1}  <=>  (D U^T)^T alpha = g1u^T
    Eigen::MatrixXd dut(k - 1, k - 1);
    for (Eigen::Index a = 0; a < k - 1; ++a)
      for (Eigen::Index b = 0; b < k - 1; ++b) dut(a, b) = du(b, a);
    linalg::FullPivLu lu(dut);
    if (!lu.is_invertible()) {
      for (Eigen::Index a = 0; a < k - 1; ++a) dut(a, a) += 1e-8;
      lu.compute(dut);
      check<ValueError>(lu.is_invertible(),
                        "nddr::weighting::imtl: D U^T is singular even with 1e-8 I added "
                        "(zero or parallel task gradients)");
    }
    const Eigen::VectorXd tail = lu.solve(g1u.transpose().eval());
    Eigen::VectorXd alpha(k);
    alpha[0] = 1.0 - tail.sum();
    alpha.tail(k - 1) = tail;
    check<ValueError>(alpha.allFinite(), "nddr::weighting::imtl: non-finite weights");
    return detail::gradient_combination(alpha, in.losses);
  }
  MethodState state() const { return {}; }
  void set_state(const MethodState& s) { detail::check_state_size(kName, s, 0); }
  std::string spec() const { return "imtl"; }

 private:
  std::size_t k_;
  Options options_;
};

}  // namespace nddr::weighting
