#pragma once
/// \file
/// Aligned-MTL (Senushkin, Patakin, Kuznetsov, Konushin, CVPR 2023): align the task gradients
/// into orthogonal components of equal norm, from the eigen-decomposition of the Gram matrix.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/weighting/loss_weighting.hpp"
#include "nddr/weighting/method.hpp"
#include "nddr/weighting/small_linalg.hpp"

namespace nddr::weighting {

/// Options of `AlignedMtl`.
struct AlignedMtlOptions {
  /// Scale s of the aligned gradients: kMin (smallest kept eigenvalue; default, the only one in
  /// LibMTL), kMedian (lower median of the kept eigenvalues), kRmse (their mean).
  enum class Scale { kMin, kMedian, kRmse };
  Scale scale = Scale::kMin;
  void validate(const char* /*who*/) const {}
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    static constexpr std::string_view kScales[] = {"min", "median", "rmse"};
    if (key != "scale") detail::unknown_key(flag, "aligned", key, "scale");
    scale = static_cast<Scale>(detail::parse_choice(flag, "aligned", key, value, kScales));
  }
};

/// Aligned-MTL: M = V diag(lambda) V^T; keep the eigenpairs with
/// lambda > max(lambda) K eps_float32 (the references' rank rule), R of them, sorted
/// descending; W = sqrt(s) V_R diag(lambda_R^-1/2) V_R^T; weights alpha = W 1 (so that
/// G^T W has orthogonal columns of norm sqrt(s) and d = G^T alpha). Heads unweighted (the
/// references' default). All-zero gradients give zero weights. No state.
class AlignedMtl : public MethodBase {
 public:
  using Options = AlignedMtlOptions;
  static constexpr std::string_view kName = "aligned";

  explicit AlignedMtl(std::size_t num_tasks, Options options = {})
      : k_(num_tasks), options_(options) {
    detail::check_task_count(kName, k_);
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return true; }
  Combination combine(const StepInput& in) {
    detail::check_losses(kName, in, k_, true);
    const auto k = static_cast<Eigen::Index>(k_);
    const linalg::SymmetricEigen eig = linalg::symmetric_eigen(*in.gram);
    check<ValueError>(eig.converged,
                      "nddr::weighting::aligned: eigen-decomposition of the Gram matrix failed");
    const Eigen::VectorXd& lambda = eig.values;  // ascending
    const double tol = lambda.maxCoeff() * static_cast<double>(k) *
                       static_cast<double>(std::numeric_limits<float>::epsilon());
    std::vector<Eigen::Index> kept;  // descending eigenvalues
    for (Eigen::Index i = k - 1; i >= 0; --i)
      if (lambda[i] > tol && lambda[i] > 0.0) kept.push_back(i);
    if (kept.empty()) return detail::gradient_combination(Eigen::VectorXd::Zero(k), in.losses);
    const double s = scale(lambda, kept);
    Eigen::VectorXd alpha = Eigen::VectorXd::Zero(k);
    for (const Eigen::Index i : kept) {
      double vsum = 0.0;
      for (Eigen::Index j = 0; j < k; ++j) vsum += eig.vectors(j, i);
      const double f = std::sqrt(s / lambda[i]) * vsum;
      for (Eigen::Index j = 0; j < k; ++j) alpha[j] += f * eig.vectors(j, i);
    }
    return detail::gradient_combination(alpha, in.losses);
  }
  MethodState state() const { return {}; }
  void set_state(const MethodState& s) { detail::check_state_size(kName, s, 0); }
  std::string spec() const {
    static constexpr const char* kScales[] = {"min", "median", "rmse"};
    return std::string("aligned:scale=") + kScales[static_cast<int>(options_.scale)];
  }

 private:
  double scale(const Eigen::VectorXd& lambda, const std::vector<Eigen::Index>& kept) const {
    using S = Options::Scale;
    if (options_.scale == S::kMin) return lambda[kept.back()];
    if (options_.scale == S::kMedian) return lambda[kept[kept.size() / 2]];  // lower median
    double sum = 0.0;
    for (const Eigen::Index i : kept) sum += lambda[i];
    return sum / static_cast<double>(kept.size());
  }

  std::size_t k_;
  Options options_;
};

}  // namespace nddr::weighting
