#pragma once
/// \file
/// GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018, Algorithm 1): learnable task
/// weights trained so that the gradient norms of the weighted losses follow the tasks' relative
/// inverse training rates. Formulas and the two parameterisations: docs/weighting.md.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/weighting/loss_weighting.hpp"
#include "nddr/weighting/method.hpp"

namespace nddr::weighting {

/// Options of `GradNorm`.
struct GradNormOptions {
  /// Asymmetry alpha >= 0. Default 1.5 (LibMTL; the paper's NYUv2 value).
  double alpha = 1.5;
  /// true (default, LibMTL): w = K softmax(z) with learnable logits z (init 0), no
  /// renormalisation needed. false (paper): the weights themselves are the parameters (init 1),
  /// renormalised to sum K after each update (`after_parameter_update`), each first clamped to
  /// >= 1e-8 so that none goes negative.
  bool logits = true;
  /// true (default, LibMTL): L_k(0) is the mean loss of epoch 0 (the first `end_epoch`), and
  /// epoch 0 trains with w = 1 without per-task gradients. false (paper, SamsungLabs): L_k(0)
  /// is the loss of the first step.
  bool epoch_initial_loss = true;
  void validate(const char* who) const {
    check<OptionError>(alpha >= 0.0 && std::isfinite(alpha), who,
                       ": GradNormOptions.alpha must be a finite value >= 0, got ", alpha);
  }
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    static constexpr std::string_view kParams[] = {"weights", "logits"};
    static constexpr std::string_view kInitial[] = {"step", "epoch"};
    if (key == "alpha")
      alpha = detail::parse_double(flag, "gradnorm", key, value, 0.0, 1e3);
    else if (key == "param")
      logits = detail::parse_choice(flag, "gradnorm", key, value, kParams) == 1;
    else if (key == "initial")
      epoch_initial_loss = detail::parse_choice(flag, "gradnorm", key, value, kInitial) == 1;
    else
      detail::unknown_key(flag, "gradnorm", key, "alpha, param, initial");
  }
};

/// GradNorm on the per-task gradients g_k given through the Gram matrix (G_k = w_k ||g_k|| with
/// ||g_k|| = sqrt(M_kk)): with Ltilde_k = L_k / L_k(0), r_k = Ltilde_k / mean(Ltilde) and the
/// constant targets t_k = mean(G) r_k^alpha, the method's objective is
/// L_grad = sum_k |G_k - t_k|. `combine` returns the current weights w (detached: the shared
/// update is sum_k w_k g_k, heads weighted by w_k) and sets `parameter_gradient()` to
/// dL_grad/d(parameters); the trainer then steps `parameters()` with its optimiser and calls
/// `after_parameter_update()`. Until L(0) is known, w = 1 and the gradient is zero.
class GradNorm : public MethodBase {
 public:
  using Options = GradNormOptions;
  static constexpr std::string_view kName = "gradnorm";

  explicit GradNorm(std::size_t num_tasks, Options options = {})
      : k_(num_tasks),
        options_(options),
        p_(num_tasks, options.logits ? 0.0 : 1.0),
        grad_(num_tasks, 0.0),
        initial_(num_tasks, 0.0) {
    detail::check_task_count(kName, k_);
    options_.validate("nddr::weighting::gradnorm");
  }
  const Options& options() const { return options_; }
  /// False while L(0) is unknown in the epoch mode (epoch 0 runs plain EW).
  bool needs_gram() const { return has_initial_ || !options_.epoch_initial_loss; }

  /// The current task weights (sum K).
  Eigen::VectorXd weights() const {
    const Eigen::Map<const Eigen::VectorXd> p(p_.data(), static_cast<Eigen::Index>(k_));
    if (options_.logits) return detail::scaled_softmax(p, static_cast<double>(k_));
    return p;
  }

  Combination combine(const StepInput& in) {
    const bool active = needs_gram();
    detail::check_losses(kName, in, k_, active);
    std::fill(grad_.begin(), grad_.end(), 0.0);
    if (!active) return detail::loss_combination(Eigen::VectorXd::Ones(ksize()), in.losses);
    if (!has_initial_) {
      initial_.assign(in.losses.begin(), in.losses.end());
      has_initial_ = true;
    }
    const Eigen::VectorXd w = weights();
    const auto k = ksize();
    Eigen::VectorXd norm(k), g(k), ratio(k);
    for (Eigen::Index i = 0; i < k; ++i) {
      norm[i] = std::sqrt(std::max(0.0, (*in.gram)(i, i)));
      g[i] = std::abs(w[i]) * norm[i];
      const double l0 = initial_[static_cast<std::size_t>(i)];
      ratio[i] = l0 > 0.0 ? in.losses[static_cast<std::size_t>(i)] / l0 : 1.0;
    }
    const Eigen::VectorXd r = ratio / ratio.mean();
    const double gbar = g.mean();
    // dL_grad/dw_k = sign(G_k - t_k) sign(w_k) ||g_k|| (the targets are constants).
    Eigen::VectorXd dw(k);
    for (Eigen::Index i = 0; i < k; ++i) {
      const double diff = g[i] - gbar * std::pow(r[i], options_.alpha);
      dw[i] = sign(diff) * sign(w[i]) * norm[i];
    }
    Eigen::VectorXd dp = dw;
    if (options_.logits) {  // w = K softmax(z): dw_k/dz_j = w_k (delta_kj - w_j / K)
      const double s = dw.dot(w);
      dp = (w.array() * dw.array() - w.array() / static_cast<double>(k_) * s).matrix();
    }
    for (Eigen::Index i = 0; i < k; ++i) grad_[static_cast<std::size_t>(i)] = dp[i];
    return detail::loss_combination(w, in.losses);
  }

  /// In the epoch mode, the first call sets L(0) (the mean losses of epoch 0).
  void end_epoch(std::span<const double> mean_losses) {
    check<ShapeError>(mean_losses.size() == k_, "nddr::weighting::gradnorm::end_epoch: got ",
                      mean_losses.size(), " epoch losses for ", k_, " tasks");
    if (!options_.epoch_initial_loss || has_initial_) return;
    initial_.assign(mean_losses.begin(), mean_losses.end());
    has_initial_ = true;
  }
  std::span<double> parameters() { return p_; }
  std::span<const double> parameter_gradient() const { return grad_; }
  /// Paper form: clamp each weight to >= 1e-8, then renormalise to sum K.
  void after_parameter_update() {
    if (options_.logits) return;
    double sum = 0.0;
    for (double& v : p_) sum += (v = std::max(v, 1e-8));
    for (double& v : p_) v *= static_cast<double>(k_) / sum;
  }
  MethodState state() const {
    MethodState s{p_, {}};
    s.values.push_back(has_initial_ ? 1.0 : 0.0);
    s.values.insert(s.values.end(), initial_.begin(), initial_.end());
    return s;
  }
  void set_state(const MethodState& s) {
    detail::check_state_size(kName, s, 2 * k_ + 1);
    const auto k = static_cast<std::ptrdiff_t>(k_);
    p_.assign(s.values.begin(), s.values.begin() + k);
    has_initial_ = s.values[k_] != 0.0;
    initial_.assign(s.values.begin() + k + 1, s.values.end());
  }
  std::string spec() const {
    return "gradnorm:alpha=" + detail::format_double(options_.alpha) +
           ",param=" + (options_.logits ? "logits" : "weights") +
           ",initial=" + (options_.epoch_initial_loss ? "epoch" : "step");
  }

 private:
  static double sign(double v) { return v > 0.0 ? 1.0 : (v < 0.0 ? -1.0 : 0.0); }
  Eigen::Index ksize() const { return static_cast<Eigen::Index>(k_); }

  std::size_t k_;
  Options options_;
  std::vector<double> p_, grad_, initial_;
  bool has_initial_ = false;
};

}  // namespace nddr::weighting
