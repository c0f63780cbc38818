#pragma once
/// \file
/// The contract shared by every multi-task weighting method (docs/weighting.md).
///
/// A method maps what one training step knows about its K tasks (the K unweighted losses and,
/// for gradient methods, the K x K Gram matrix `M = G G^T` of the per-task gradients of the
/// shared parameters, in double precision) to weights:
///
///     shared update = sum_k c.shared[k] * g_k          (g_k = dL_k / dtheta_shared)
///     head k update = c.heads[k] * dL_k / dtheta_head_k
///
/// Everything happens host-side on K-element vectors and a K x K matrix, so the per-parameter
/// work (the Gram matrix and the final combination) stays on whatever device holds the
/// gradients, and data-parallel ranks that hold the same (rank-averaged) Gram matrix, losses
/// and method state compute the same weights.
///
/// Concept `WeightingMethod` (minimal complete definition; `MethodBase` supplies the defaults
/// marked *):
///   - `static constexpr std::string_view kName`: the name used by `--weighting`;
///   - `typename M::Options` with `validate(who)`, held by value and returned by `options()`;
///   - `bool needs_gram() const`: whether the next `combine` needs `StepInput::gram` (if false
///     the trainer may run one backward pass of `sum_k c.heads[k] L_k`, and then
///     `c.shared == c.heads`);
///   - `Combination combine(const StepInput&)`: the weights of one step; may advance state;
///   - `MethodState state() const`, `void set_state(const MethodState&)`: everything that
///     `combine` reads besides its input, for exact resume (the options are not part of it);
///   - `std::string spec() const`: `NAME:key=value,...` with every option, parseable by
///     `make_weighting`;
///   - * `void end_epoch(std::span<const double> mean_losses)`: the mean unweighted training
///     loss of each task over the epoch just finished (DWA, GradNorm's L(0));
///   - * `std::span<double> parameters()`: the method's learnable parameters (UW, GradNorm),
///     updated by the trainer's optimiser between steps; empty by default;
///   - * `std::span<const double> parameter_gradient() const`: d(method objective)/d(parameters)
///     at the last `combine` (same length as `parameters()`);
///   - * `void after_parameter_update()`: called after the trainer changed `parameters()`
///     (GradNorm's renormalisation).
/// Laws: `set_state(m.state())` followed by the same inputs gives the same combinations, bit for
/// bit; `combine` never reads `gram` when `needs_gram()` was false.

#include <Eigen/Core>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/random.hpp"
#include "nddr/weighting/small_linalg.hpp"

namespace nddr::weighting {

/// What one step knows about the K tasks.
struct StepInput {
  /// The K unweighted losses of this step (each already averaged over its batch).
  std::span<const double> losses;
  /// `G G^T` (K x K, symmetric positive semi-definite) of the per-task gradients of the shared
  /// parameters, averaged over data-parallel ranks before the product; required when the
  /// method's `needs_gram()` is true, ignored otherwise.
  const Eigen::MatrixXd* gram = nullptr;
};

/// The weights of one step.
struct Combination {
  /// Shared update = sum_k shared[k] g_k. Loss-weighting methods: equal to `heads`.
  Eigen::VectorXd shared;
  /// Head k's update = heads[k] dL_k/dtheta_head_k. 1 for the gradient methods that leave heads
  /// unweighted (LibMTL's convention), the loss weights otherwise.
  Eigen::VectorXd heads;
  /// > 0: after combining, scale the shared gradient to at most this L2 norm, as
  /// `torch.nn.utils.clip_grad_norm_` does (Nash-MTL's max_norm); 0: no clipping.
  double max_shared_norm = 0.0;
  /// The method's objective for logging: sum_k heads[k] L_k plus the method's own terms
  /// (UW's 0.5 sum_k s_k).
  double loss = 0.0;
};

/// The run-time state of a method, for checkpoints: a flat vector of doubles (integers stored
/// exactly, below 2^53) and one random stream.
struct MethodState {
  std::vector<double> values;
  Rng::State rng;
  friend bool operator==(const MethodState& a, const MethodState& b) {
    return a.values == b.values && a.rng.seed == b.rng.seed && a.rng.counter == b.rng.counter;
  }
};

namespace detail {

/// Shortest decimal text that reads back as `v` exactly.
inline std::string format_double(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

}  // namespace detail

/// `MethodState` as one line of text for checkpoint metadata (`CheckpointState::extra`):
/// "seed counter v_0 v_1 ..." with each double in its shortest exact decimal form, so that
/// `state_from_text(state_to_text(s)) == s` bit for bit.
inline std::string state_to_text(const MethodState& s) {
  std::string out = std::to_string(s.rng.seed) + ' ' + std::to_string(s.rng.counter);
  for (const double v : s.values) {
    out += ' ';
    out += detail::format_double(v);
  }
  return out;
}

/// Parses `state_to_text`'s format; throws ValueError naming the offending token.
inline MethodState state_from_text(std::string_view text) {
  MethodState s;
  std::size_t index = 0;
  while (!text.empty()) {
    const std::size_t space = text.find(' ');
    const std::string_view token = text.substr(0, space);
    text = space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
    const char* first = token.data();
    const char* last = first + token.size();
    std::from_chars_result r{};
    if (index < 2) {
      std::uint64_t u = 0;
      r = std::from_chars(first, last, u);
      (index == 0 ? s.rng.seed : s.rng.counter) = u;
    } else {
      double v = 0.0;
      r = std::from_chars(first, last, v);
      s.values.push_back(v);
    }
    check<ValueError>(!token.empty() && r.ec == std::errc() && r.ptr == last,
                      "nddr::weighting::state_from_text: token ", index, " '", token,
                      "' is not a number");
    ++index;
  }
  check<ValueError>(index >= 2,
                    "nddr::weighting::state_from_text: expected 'seed counter "
                    "values...', got ",
                    index, " tokens");
  return s;
}

/// Defaults of the optional members of `WeightingMethod`.
class MethodBase {
 public:
  void end_epoch(std::span<const double> /*mean_losses*/) {}
  std::span<double> parameters() { return {}; }
  std::span<const double> parameter_gradient() const { return {}; }
  void after_parameter_update() {}
};

template <class M>
concept WeightingMethod = requires(M m, const M cm, const StepInput& in, const MethodState& s,
                                   std::span<const double> v) {
  { M::kName } -> std::convertible_to<std::string_view>;
  typename M::Options;
  { cm.options() } -> std::convertible_to<const typename M::Options&>;
  { cm.needs_gram() } -> std::same_as<bool>;
  { m.combine(in) } -> std::same_as<Combination>;
  { cm.state() } -> std::same_as<MethodState>;
  m.set_state(s);
  { cm.spec() } -> std::same_as<std::string>;
  m.end_epoch(v);
  { m.parameters() } -> std::same_as<std::span<double>>;
  { cm.parameter_gradient() } -> std::same_as<std::span<const double>>;
  m.after_parameter_update();
};

/// `G G^T` in double precision of the K x P matrix `rows` (one task gradient per row). Plain
/// loops (column by column, contiguous in Eigen's column-major storage): an Eigen matrix product
/// here would instantiate its GEMM kernels in every translation unit.
inline Eigen::MatrixXd gram_matrix(const Eigen::MatrixXd& rows) {
  const Eigen::Index k = rows.rows();
  Eigen::MatrixXd g = Eigen::MatrixXd::Zero(k, k);
  for (Eigen::Index p = 0; p < rows.cols(); ++p)
    for (Eigen::Index j = 0; j < k; ++j) {
      const double x = rows(j, p);
      for (Eigen::Index i = j; i < k; ++i) g(i, j) += rows(i, p) * x;
    }
  for (Eigen::Index j = 0; j < k; ++j)
    for (Eigen::Index i = j + 1; i < k; ++i) g(j, i) = g(i, j);
  return g;
}

/// `sqrt(w^T M w)`: the L2 norm of sum_k w_k g_k, from the Gram matrix.
inline double combined_norm(const Eigen::MatrixXd& gram, const Eigen::VectorXd& w) {
  return std::sqrt(std::max(0.0, w.dot(linalg::mat_vec(gram, w))));
}

/// The factor `clip_grad_norm_` would apply: min(1, max_norm / (norm + 1e-6)); 1 if
/// max_norm <= 0.
inline double clip_factor(double norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

namespace detail {

/// Checks the input of `combine`: K losses, all finite, and (if `need_gram`) a K x K Gram
/// matrix with finite entries.
inline std::size_t check_step(std::string_view who, const StepInput& in, bool need_gram) {
  const std::size_t k = in.losses.size();
  check<ValueError>(k >= 1, "nddr::weighting::", who, ": no task losses given");
  for (std::size_t i = 0; i < k; ++i)
    check<ValueError>(std::isfinite(in.losses[i]), "nddr::weighting::", who, ": loss of task ", i,
                      " is ", in.losses[i], " (not finite)");
  if (!need_gram) return k;
  check<ValueError>(in.gram != nullptr, "nddr::weighting::", who,
                    ": this method needs the Gram matrix of the task gradients (StepInput::gram)");
  check<ShapeError>(in.gram->rows() == static_cast<Eigen::Index>(k) &&
                        in.gram->cols() == static_cast<Eigen::Index>(k),
                    "nddr::weighting::", who, ": Gram matrix is ", in.gram->rows(), " x ",
                    in.gram->cols(), " but there are ", k, " task losses");
  check<ValueError>(in.gram->allFinite(), "nddr::weighting::", who,
                    ": Gram matrix has a non-finite entry");
  return k;
}

/// Loss-weighting result: the same weights on heads and shared parameters.
inline Combination loss_combination(const Eigen::VectorXd& w, std::span<const double> losses,
                                    double extra = 0.0) {
  Combination c{w, w, 0.0, extra};
  for (std::size_t i = 0; i < losses.size(); ++i)
    c.loss += w[static_cast<Eigen::Index>(i)] * losses[i];
  return c;
}

/// Gradient-method result: `w` on the shared gradients, heads unweighted.
inline Combination gradient_combination(const Eigen::VectorXd& w, std::span<const double> losses) {
  Combination c{w, Eigen::VectorXd::Ones(w.size()), 0.0, 0.0};
  for (std::size_t i = 0; i < losses.size(); ++i)
    c.loss += w[static_cast<Eigen::Index>(i)] * losses[i];
  return c;
}

/// Checks a restored state's size.
inline void check_state_size(std::string_view who, const MethodState& s, std::size_t expected) {
  check<ValueError>(s.values.size() == expected, "nddr::weighting::", who, ": state has ",
                    s.values.size(), " values, expected ", expected,
                    " (a checkpoint of another method or task count?)");
}

// ---- option parsing (NAME:key=value,...) ------------------------------------------------------

/// Throws OptionError: "<flag>: <method> has no option '<key>'; valid options: <keys>".
[[noreturn]] inline void unknown_key(std::string_view flag, std::string_view method,
                                     std::string_view key, std::string_view keys) {
  throw OptionError(
      nddr::detail::concat(flag, ": ", method, " has no option '", key,
                           "'; valid options: ", keys.empty() ? std::string_view("(none)") : keys));
}

/// Parses a finite double in [lo, hi] or throws OptionError naming flag, method, key and value.
inline double parse_double(std::string_view flag, std::string_view method, std::string_view key,
                           std::string_view value, double lo, double hi) {
  double v = 0.0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  check<OptionError>(ec == std::errc() && end == value.data() + value.size() && std::isfinite(v),
                     flag, ": ", method, ":", key, "=", value, ": '", value,
                     "' is not a finite number");
  check<OptionError>(v >= lo && v <= hi, flag, ": ", method, ":", key, "=", value, ": must be in [",
                     lo, ", ", hi, "]");
  return v;
}

/// Parses an unsigned integer or throws OptionError naming flag, method, key and value.
inline std::uint64_t parse_uint(std::string_view flag, std::string_view method,
                                std::string_view key, std::string_view value,
                                std::uint64_t lo = 0) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  check<OptionError>(ec == std::errc() && end == value.data() + value.size(), flag, ": ", method,
                     ":", key, "=", value, ": '", value, "' is not an unsigned integer");
  check<OptionError>(v >= lo, flag, ": ", method, ":", key, "=", value, ": must be >= ", lo);
  return v;
}

/// Index of `value` in `choices` or OptionError listing them.
template <std::size_t N>
int parse_choice(std::string_view flag, std::string_view method, std::string_view key,
                 std::string_view value, const std::string_view (&choices)[N]) {
  for (std::size_t i = 0; i < N; ++i)
    if (choices[i] == value) return static_cast<int>(i);
  std::string list;
  for (std::size_t i = 0; i < N; ++i) list += (i ? ", " : "") + std::string(choices[i]);
  throw OptionError(nddr::detail::concat(flag, ": ", method, ":", key, "=", value, ": '", value,
                                         "' is not one of ", list));
}

}  // namespace detail
}  // namespace nddr::weighting
