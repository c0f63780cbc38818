#pragma once
/// \file
/// Loss-weighting methods: EW, DWA, UW and RLW. Each maps the K unweighted losses (and its own
/// state) to weights applied to the losses, so one backward pass of sum_k w_k L_k suffices and
/// heads are weighted like the shared parameters (`Combination::shared == heads`). Formulas,
/// defaults and sources: docs/weighting.md.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/random.hpp"
#include "nddr/weighting/method.hpp"

namespace nddr::weighting {

namespace detail {

/// K * softmax(x) (max-subtracted), or softmax(x) when scale is 1.
inline Eigen::VectorXd scaled_softmax(const Eigen::VectorXd& x, double scale) {
  const Eigen::VectorXd e = (x.array() - x.maxCoeff()).exp().matrix();
  return scale * e / e.sum();
}

inline void check_task_count(std::string_view who, std::size_t num_tasks) {
  check<OptionError>(num_tasks >= 1, "nddr::weighting::", who, ": needs at least one task");
}

inline void check_losses(std::string_view who, const StepInput& in, std::size_t k, bool need_gram) {
  const std::size_t got = check_step(who, in, need_gram);
  check<ShapeError>(got == k, "nddr::weighting::", who, ": got ", got,
                    " task losses, the method was made for ", k);
}

}  // namespace detail

// ---- EW ---------------------------------------------------------------------------------------

/// Options of `Ew`.
struct EwOptions {
  /// true: w_k = 1/K (mean of the losses); false: w_k = 1 (sum; LibMTL). Default false.
  bool mean = false;
  void validate(const char* /*who*/) const {}
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    static constexpr std::string_view kReductions[] = {"sum", "mean"};
    if (key != "reduction") detail::unknown_key(flag, "ew", key, "reduction");
    mean = detail::parse_choice(flag, "ew", key, value, kReductions) == 1;
  }
};

/// Equal weighting: w_k = 1 (or 1/K). No state.
class Ew : public MethodBase {
 public:
  using Options = EwOptions;
  static constexpr std::string_view kName = "ew";

  explicit Ew(std::size_t num_tasks, Options options = {}) : k_(num_tasks), options_(options) {
    detail::check_task_count(kName, k_);
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return false; }
  Combination combine(const StepInput& in) {
    detail::check_losses(kName, in, k_, false);
    const double w = options_.mean ? 1.0 / static_cast<double>(k_) : 1.0;
    return detail::loss_combination(Eigen::VectorXd::Constant(static_cast<Eigen::Index>(k_), w),
                                    in.losses);
  }
  MethodState state() const { return {}; }
  void set_state(const MethodState& s) { detail::check_state_size(kName, s, 0); }
  std::string spec() const {
    return std::string("ew:reduction=") + (options_.mean ? "mean" : "sum");
  }

 private:
  std::size_t k_;
  Options options_;
};

// ---- DWA --------------------------------------------------------------------------------------

/// Options of `Dwa`.
struct DwaOptions {
  /// Softmax temperature T > 0. Default 2 (paper, MTAN, LibMTL).
  double temperature = 2.0;
  void validate(const char* who) const {
    check<OptionError>(temperature > 0.0 && std::isfinite(temperature), who,
                       ": DwaOptions.temperature must be a finite value > 0, got ", temperature);
  }
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    if (key != "T") detail::unknown_key(flag, "dwa", key, "T");
    temperature = detail::parse_double(flag, "dwa", key, value, 1e-300, 1e300);
  }
};

/// Dynamic Weight Average (Liu, Johns, Davison, CVPR 2019), epoch form (MTAN, LibMTL):
/// weights 1 in epochs 0 and 1; then r_k = Lbar_k(t-1) / Lbar_k(t-2) from the mean unweighted
/// epoch losses given to `end_epoch`, and w = K softmax(r / T). Guard (not in the references,
/// which divide by zero): a task whose Lbar(t-2) is <= 0 or whose ratio is not finite gets
/// r_k = 1. State: the number of epochs seen and the last two epoch means.
class Dwa : public MethodBase {
 public:
  using Options = DwaOptions;
  static constexpr std::string_view kName = "dwa";

  explicit Dwa(std::size_t num_tasks, Options options = {})
      : k_(num_tasks), options_(options), older_(num_tasks, 0.0), newer_(num_tasks, 0.0) {
    detail::check_task_count(kName, k_);
    options_.validate("nddr::weighting::dwa");
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return false; }

  /// The weights of the current epoch (constant within it).
  Eigen::VectorXd weights() const {
    const auto k = static_cast<Eigen::Index>(k_);
    if (epochs_ < 2) return Eigen::VectorXd::Ones(k);
    Eigen::VectorXd r(k);
    for (Eigen::Index i = 0; i < k; ++i) {
      const double ratio =
          newer_[static_cast<std::size_t>(i)] / older_[static_cast<std::size_t>(i)];
      r[i] = older_[static_cast<std::size_t>(i)] > 0.0 && std::isfinite(ratio) ? ratio : 1.0;
    }
    return detail::scaled_softmax(r / options_.temperature, static_cast<double>(k_));
  }
  Combination combine(const StepInput& in) {
    detail::check_losses(kName, in, k_, false);
    return detail::loss_combination(weights(), in.losses);
  }
  /// Records the mean unweighted training loss of each task over the epoch just finished.
  void end_epoch(std::span<const double> mean_losses) {
    check<ShapeError>(mean_losses.size() == k_, "nddr::weighting::dwa::end_epoch: got ",
                      mean_losses.size(), " epoch losses for ", k_, " tasks");
    older_ = newer_;
    newer_.assign(mean_losses.begin(), mean_losses.end());
    ++epochs_;
  }
  MethodState state() const {
    MethodState s;
    s.values.push_back(static_cast<double>(epochs_));
    s.values.insert(s.values.end(), older_.begin(), older_.end());
    s.values.insert(s.values.end(), newer_.begin(), newer_.end());
    return s;
  }
  void set_state(const MethodState& s) {
    detail::check_state_size(kName, s, 1 + 2 * k_);
    epochs_ = static_cast<std::size_t>(s.values[0]);
    older_.assign(s.values.begin() + 1, s.values.begin() + 1 + static_cast<std::ptrdiff_t>(k_));
    newer_.assign(s.values.begin() + 1 + static_cast<std::ptrdiff_t>(k_), s.values.end());
  }
  std::string spec() const { return "dwa:T=" + detail::format_double(options_.temperature); }

 private:
  std::size_t k_;
  Options options_;
  std::size_t epochs_ = 0;
  std::vector<double> older_, newer_;  // Lbar(t-2), Lbar(t-1)
};

// ---- UW ---------------------------------------------------------------------------------------

/// Options of `Uw`.
struct UwOptions {
  /// Initial log-variance s_k = log sigma_k^2. Default -0.5 (MTAN, LibMTL; Nash uses 0).
  double init = -0.5;
  /// false: regression form 0.5 exp(-s) L + 0.5 s on every task (MTAN, LibMTL; default);
  /// true: classification form exp(-s) L + 0.5 s on every task.
  bool classification = false;
  void validate(const char* who) const {
    check<OptionError>(std::isfinite(init), who, ": UwOptions.init must be finite, got ", init);
  }
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    static constexpr std::string_view kForms[] = {"regression", "classification"};
    if (key == "init")
      init = detail::parse_double(flag, "uw", key, value, -1e3, 1e3);
    else if (key == "form")
      classification = detail::parse_choice(flag, "uw", key, value, kForms) == 1;
    else
      detail::unknown_key(flag, "uw", key, "init, form");
  }
};

/// Uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018) with learnable s_k = log sigma_k^2:
/// objective sum_k (a exp(-s_k) L_k + 0.5 s_k), a = 0.5 (regression form) or 1
/// (classification form); weight w_k = a exp(-s_k); d/ds_k = 0.5 - a exp(-s_k) L_k.
/// `parameters()` are the s_k; the trainer optimises them with `parameter_gradient()`.
class Uw : public MethodBase {
 public:
  using Options = UwOptions;
  static constexpr std::string_view kName = "uw";

  explicit Uw(std::size_t num_tasks, Options options = {})
      : k_(num_tasks), options_(options), s_(num_tasks, options.init), grad_(num_tasks, 0.0) {
    detail::check_task_count(kName, k_);
    options_.validate("nddr::weighting::uw");
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return false; }
  Combination combine(const StepInput& in) {
    detail::check_losses(kName, in, k_, false);
    const double a = options_.classification ? 1.0 : 0.5;
    Eigen::VectorXd w(static_cast<Eigen::Index>(k_));
    double reg = 0.0;
    for (std::size_t i = 0; i < k_; ++i) {
      w[static_cast<Eigen::Index>(i)] = a * std::exp(-s_[i]);
      grad_[i] = 0.5 - a * std::exp(-s_[i]) * in.losses[i];
      reg += 0.5 * s_[i];
    }
    return detail::loss_combination(w, in.losses, reg);
  }
  std::span<double> parameters() { return s_; }
  std::span<const double> parameter_gradient() const { return grad_; }
  MethodState state() const { return {s_, {}}; }
  void set_state(const MethodState& s) {
    detail::check_state_size(kName, s, k_);
    s_ = s.values;
  }
  std::string spec() const {
    return "uw:init=" + detail::format_double(options_.init) +
           ",form=" + (options_.classification ? "classification" : "regression");
  }

 private:
  std::size_t k_;
  Options options_;
  std::vector<double> s_, grad_;
};

// ---- RLW --------------------------------------------------------------------------------------

/// Options of `Rlw`.
struct RlwOptions {
  /// Seed of the method's random stream (same on every rank). Default 0.
  std::uint64_t seed = 0;
  void validate(const char* /*who*/) const {}
  void set(std::string_view flag, std::string_view key, std::string_view value) {
    if (key != "seed") detail::unknown_key(flag, "rlw", key, "seed");
    seed = detail::parse_uint(flag, "rlw", key, value);
  }
};

/// Random loss weighting (Lin et al., TMLR 2022), LibMTL's default distribution: every step
/// w = softmax(eps), eps_k ~ N(0, 1) drawn in task order from `Rng::normal` (two counters per
/// draw). State: the random stream.
class Rlw : public MethodBase {
 public:
  using Options = RlwOptions;
  static constexpr std::string_view kName = "rlw";

  explicit Rlw(std::size_t num_tasks, Options options = {})
      : k_(num_tasks), options_(options), rng_(options.seed) {
    detail::check_task_count(kName, k_);
  }
  const Options& options() const { return options_; }
  bool needs_gram() const { return false; }
  Combination combine(const StepInput& in) {
    detail::check_losses(kName, in, k_, false);
    Eigen::VectorXd eps(static_cast<Eigen::Index>(k_));
    for (Eigen::Index i = 0; i < eps.size(); ++i) eps[i] = rng_.normal();
    return detail::loss_combination(detail::scaled_softmax(eps, 1.0), in.losses);
  }
  MethodState state() const { return {{}, rng_.state()}; }
  void set_state(const MethodState& s) {
    detail::check_state_size(kName, s, 0);
    rng_.set_state(s.rng);
  }
  std::string spec() const { return "rlw:seed=" + std::to_string(options_.seed); }

 private:
  std::size_t k_;
  Options options_;
  Rng rng_;
};

}  // namespace nddr::weighting
