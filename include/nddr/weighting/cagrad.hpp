#pragma once
/// \file
/// CAGrad (Liu, Liu, Jin, Stone, Liu, NeurIPS 2021): conflict-averse gradient descent, from the
/// Gram matrix. The dual problem over the simplex is solved by nddr's own small solver
/// (`cagrad_dual`): accelerated projected gradient with backtracking and restarts until the
/// Frank-Wolfe duality gap is negligible, then Newton polishing on the detected face. The
/// references use SciPy's SLSQP, which stops at about 1e-6 on w; this solver is tighter.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/weighting/loss_weighting.hpp"
#include "nddr/weighting/method.hpp"
#include "nddr/weighting/mgda.hpp"
#include "nddr/weighting/small_linalg.hpp"

namespace nddr::weighting {

/// The CAGrad dual F(w) = w^T M 1/K + phi sqrt(w^T M w + 1e-8) (both references' objective).
struct CaGradDual {
  const Eigen::MatrixXd& m;
  Eigen::VectorXd b;  // M 1 / K
  double phi;

  CaGradDual(const Eigen::MatrixXd& gram, double phi_)
      : m(gram), b(gram.rowwise().mean()), phi(phi_) {}
  double value(const Eigen::VectorXd& w) const {
    return b.dot(w) + phi * std::sqrt(std::max(0.0, w.dot(linalg::mat_vec(m, w))) + 1e-8);
  }
  Eigen::VectorXd gradient(const Eigen::VectorXd& w) const {
    const Eigen::VectorXd mw = linalg::mat_vec(m, w);
    return b + phi * mw / std::sqrt(std::max(0.0, w.dot(mw)) + 1e-8);
  }
  /// Frank-Wolfe gap grad.w - min_i grad_i >= F(w) - min F (convexity).
  double gap(const Eigen::VectorXd& w) const {
    const Eigen::VectorXd g = gradient(w);
    return g.dot(w) - g.minCoeff();
  }
};

namespace detail {

/// Newton's method for F on the face {w_i = 0 for i not in the support of w, sum w = 1};
/// returns w unchanged unless the Newton point is strictly inside the face and has a smaller
/// Frank-Wolfe gap.
inline Eigen::VectorXd polish_on_face(const CaGradDual& f, const Eigen::VectorXd& w0,
                                      double support_tol) {
  std::vector<Eigen::Index> s;
  for (Eigen::Index i = 0; i < w0.size(); ++i)
    if (w0[i] > support_tol) s.push_back(i);
  const auto n = static_cast<Eigen::Index>(s.size());
  if (n < 2) return w0;
  Eigen::VectorXd w = Eigen::VectorXd::Zero(w0.size());
  for (Eigen::Index a = 0; a < n; ++a) w[s[a]] = w0[s[a]];
  w /= w.sum();
  for (int it = 0; it < 30; ++it) {
    const Eigen::VectorXd mw = linalg::mat_vec(f.m, w);
    const double q = std::max(0.0, w.dot(mw)) + 1e-8;
    const double r = std::sqrt(q);
    const Eigen::VectorXd g = f.b + f.phi * mw / r;
    // KKT system of the face: [H 1; 1^T 0] [dw; nu] = [-g; 0], H = phi (M / r - Mw Mw^T / r^3).
    Eigen::MatrixXd kkt = Eigen::MatrixXd::Zero(n + 1, n + 1);
    Eigen::VectorXd rhs = Eigen::VectorXd::Zero(n + 1);
    for (Eigen::Index a = 0; a < n; ++a) {
      for (Eigen::Index c = 0; c < n; ++c)
        kkt(a, c) = f.phi * (f.m(s[a], s[c]) / r - mw[s[a]] * mw[s[c]] / (q * r));
      kkt(a, n) = kkt(n, a) = 1.0;
      rhs[a] = -g[s[a]];
    }
    const linalg::FullPivLu lu(kkt);
    if (!lu.is_invertible()) return w0;
    const Eigen::VectorXd step = lu.solve(rhs);
    if (!step.allFinite()) return w0;
    Eigen::VectorXd next = w;
    for (Eigen::Index a = 0; a < n; ++a) next[s[a]] += step[a];
    if ((next.array() < 0.0).any()) return w0;  // the optimum is not inside this face
    const double change = (next - w).cwiseAbs().sum();
    w = next;
    if (change < 1e-15) break;
  }
  return f.gap(w) <= f.gap(w0) ? w : w0;
}

}  // namespace detail

/// argmin over the simplex of `f` from w = 1/K: accelerated projected gradient (FISTA with
/// backtracking on the Lipschitz estimate and a restart whenever F increases), at most
/// `max_iter` iterations, stopping when the Frank-Wolfe gap is below
/// tol * max(|F(1/K)|, max_k M_kk); then
/// `polish_on_face`. Deterministic.
inline Eigen::VectorXd cagrad_dual(const CaGradDual& f, int max_iter = 20000, double tol = 1e-14) {
  const Eigen::Index k = f.m.rows();
  Eigen::VectorXd w = Eigen::VectorXd::Constant(k, 1.0 / static_cast<double>(k));
  if (k == 1) return w;
  Eigen::VectorXd y = w;
  double t = 1.0;
  double lip = std::max(1e-300, f.phi * f.m.diagonal().maxCoeff() / std::sqrt(f.value(w) + 1e-8));
  double fw = f.value(w);
  // F is homogeneous of degree 2 in the gradients (up to the 1e-8 terms): a relative tolerance
  const double scale = std::max(std::abs(fw), f.m.diagonal().cwiseAbs().maxCoeff());
  for (int it = 0; it < max_iter; ++it) {
    if (f.gap(w) <= tol * scale) break;
    const Eigen::VectorXd gy = f.gradient(y);
    const double fy = f.value(y);
    Eigen::VectorXd z;
    for (int bt = 0; bt < 200; ++bt) {
      z = detail::project_to_simplex(y - gy / lip);
      const Eigen::VectorXd dz = z - y;
      if (f.value(z) <= fy + gy.dot(dz) + 0.5 * lip * dz.squaredNorm() + 1e-300) break;
      lip *= 2.0;
    }
    const double fz = f.value(z);
    if (fz > fw) {  // restart the momentum from the last iterate
      y = w;
      t = 1.0;
      continue;
    }
    const double t_next = 0.5 * (1.0 + std::sqrt(1.0 + 4.0 * t * t));
    y = z + ((t - 1.0) / t_next) * (z - w);
    w = z;
    fw = fz;
    t = t_next;
    lip *= 0.9;
  }
  return detail::polish_on_face(f, w, 1e-9);
}

/// Options of `CaGrad`.
struct CaGradOptions {
  /// Trust-region radius c >= 0 (c = 0: plain averaging). Default 0.5 (LibMTL, the function
  /// default); the NYUv2 scripts use 0.4.
  double c = 0.5;
  /// 0: d; 1: d / (1 + c^2) (default); 2: d / (1 + c).
  int rescale = 1;
  void validate(const char* who) const {
    check<OptionError>(c >= 0.0 && std::isfinite(c), who,
                       ": CaGradOptions.c must be a finite value >= 0, got ", c);
    check<OptionError>(rescale >= 0 && rescale <= 2, who,
                       ": CaGradOptions.rescale must be 0, 1 or 2, got ", rescale);
  }
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    static constexpr std::string_view kRescales[] = {"0", "1", "2"};
    if (key == "c")
      c = detail::parse_double(flag, "cagrad", key, value, 0.0, 1e3);
    else if (key == "rescale")
      rescale = detail::parse_choice(flag, "cagrad", key, value, kRescales);
    else
      detail::unknown_key(flag, "cagrad", key, "c, rescale");
  }
};

/// CAGrad: g0 = mean_k g_k, ||g0|| = sqrt(mean(M) + 1e-8), phi = c ||g0|| + 1e-8;
/// w* = argmin_{simplex} F (see `CaGradDual`), g_w = sum_k w*_k g_k,
/// lambda = phi / (||g_w|| + 1e-8), d = g0 + lambda g_w, then the rescale. As weights on the
/// original gradients: (1/K + lambda w*_k) / rescale factor. Heads unweighted (LibMTL); the
/// original code's extra factor K ("to match the sum loss") is a learning-rate change and is
/// not applied. No state.
class CaGrad : public MethodBase {
 public:
  using Options = CaGradOptions;
  static constexpr std::string_view kName = "cagrad";

  explicit CaGrad(std::size_t num_tasks, Options options = {}) : k_(num_tasks), options_(options) {
    detail::check_task_count(kName, k_);
    options_.validate("nddr::weighting::cagrad");
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return true; }
  Combination combine(const StepInput& in) {
    detail::check_losses(kName, in, k_, true);
    const Eigen::MatrixXd& m = *in.gram;
    const double g0_norm = std::sqrt(std::max(0.0, m.mean()) + 1e-8);
    const double phi = options_.c * g0_norm + 1e-8;
    const CaGradDual f(m, phi);
    const Eigen::VectorXd w = cagrad_dual(f);
    const double lambda = phi / (combined_norm(m, w) + 1e-8);
    const double kRescale[] = {1.0, 1.0 + options_.c * options_.c, 1.0 + options_.c};
    const Eigen::VectorXd weights =
        (Eigen::VectorXd::Constant(w.size(), 1.0 / static_cast<double>(k_)) + lambda * w) /
        kRescale[options_.rescale];
    return detail::gradient_combination(weights, in.losses);
  }
  MethodState state() const { return {}; }
  void set_state(const MethodState& s) { detail::check_state_size(kName, s, 0); }
  std::string spec() const {
    return "cagrad:c=" + detail::format_double(options_.c) +
           ",rescale=" + std::to_string(options_.rescale);
  }

 private:
  std::size_t k_;
  Options options_;
};

}  // namespace nddr::weighting
