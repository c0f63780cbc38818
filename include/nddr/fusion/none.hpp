#pragma once
/// \file
/// `IdentityFusion<T, D>`: the fusion layer that fuses nothing (out_k = x_k, no parameters),
/// with its specs `None` (K independent single-task columns) and `Shared<S>` (split-style
/// multi-task network whose stages 1..S form one shared trunk, built by the network itself).
/// Also the input checks shared by every fusion layer in nddr/fusion/.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/concat.hpp"

namespace nddr {

namespace detail {

/// Throws OptionError naming `who` unless tasks >= 1 and channels >= 1.
inline void check_fusion_sizes(const char* who, std::size_t tasks, std::int64_t channels) {
  check<OptionError>(tasks >= 1, who, ": tasks must be >= 1, got ", tasks);
  check<OptionError>(channels >= 1, who, ": channels must be >= 1, got ", channels);
}

/// The common `output_shapes` of a fusion layer: K rank-4 inputs of one shape with C = channels,
/// returned unchanged. The ShapeError names `who`, the task index and the shapes.
inline std::vector<Shape> fusion_output_shapes(const char* who, std::size_t tasks,
                                               std::int64_t channels,
                                               std::span<const Shape> inputs) {
  check<ShapeError>(inputs.size() == tasks, who, ": expected ", tasks, " inputs, got ",
                    inputs.size());
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    check_rank4(who, ("input of task " + std::to_string(k)).c_str(), inputs[k]);
    check<ShapeError>(inputs[k] == inputs[0], who, ": input of task ", k, " has shape ",
                      inputs[k], " but task 0 has ", inputs[0],
                      "; every task must have the same shape");
    check<ShapeError>(inputs[k].c() == channels, who, ": input of task ", k, " has shape ",
                      inputs[k], ", expected ", channels, " channels");
  }
  return {inputs.begin(), inputs.end()};
}

/// Checks the views passed to forward/backward: K inputs of the accepted shapes and K outputs
/// of the same shape (an output may be empty when `allow_empty_out`, e.g. a skipped dx).
template <class T, class D, class U>
Shape check_fusion_views(const char* who, std::size_t tasks, std::int64_t channels,
                         std::span<const TensorView<const T, D>> xs,
                         std::span<const TensorView<U, D>> outs, const char* out_name,
                         bool allow_empty_out) {
  std::vector<Shape> shapes;
  shapes.reserve(xs.size());
  for (const auto& x : xs) shapes.push_back(x.shape());
  fusion_output_shapes(who, tasks, channels, shapes);
  check<ShapeError>(outs.size() == tasks, who, ": expected ", tasks, " ", out_name, " views, got ",
                    outs.size());
  for (std::size_t k = 0; k < outs.size(); ++k) {
    if (allow_empty_out && outs[k].empty()) continue;
    check_shape(who, (std::string(out_name) + " of task " + std::to_string(k)).c_str(),
                outs[k].shape(), shapes[0]);
  }
  return shapes[0];
}

}  // namespace detail

/// Options of `IdentityFusion` (none: it has no parameters).
struct IdentityFusionOptions {};

/// out_k = x_k for every task k; backward dx_k += dy_k. No parameters.
template <class T, class D = Cpu>
class IdentityFusion {
 public:
  using value_type = T;
  using device_type = D;
  using Views = std::span<const TensorView<const T, D>>;
  using Outs = std::span<const TensorView<T, D>>;

  /// Joins `tasks` (>= 1) features of `channels` (>= 1) channels; throws OptionError otherwise.
  IdentityFusion(std::size_t tasks, std::int64_t channels, const IdentityFusionOptions& = {})
      : tasks_(tasks), channels_(channels) {
    detail::check_fusion_sizes(kWho, tasks_, channels_);
  }

  std::size_t tasks() const { return tasks_; }
  std::int64_t channels() const { return channels_; }

  std::vector<Shape> output_shapes(std::span<const Shape> inputs) const {
    return detail::fusion_output_shapes(kWho, tasks_, channels_, inputs);
  }

  void declare(ParameterStore<T, D>&, const std::string&) {}
  void initialize(Rng&) {}
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, Views xs, Outs ys) {
    detail::check_fusion_views(kWho, tasks_, channels_, xs, ys, "output", false);
    // y_k = x_k: a one-part channel split, a copy on every device.
    for (std::size_t k = 0; k < tasks_; ++k) {
      const std::array<TensorView<T, D>, 1> parts{ys[k]};
      ops::split_channels_forward<T>(ctx, xs[k], std::span<const TensorView<T, D>>(parts));
    }
  }

  void backward(Context<D>& ctx, Views xs, Views, Views dys, Outs dxs) {
    detail::check_fusion_views(kWho, tasks_, channels_, xs, dys, "dy", false);
    detail::check_fusion_views(kWho, tasks_, channels_, xs, dxs, "dx", true);
    for (std::size_t k = 0; k < tasks_; ++k) {
      if (dxs[k].empty()) continue;
      // dx += dy: the adjoint of a one-part channel concatenation.
      const std::array<TensorView<T, D>, 1> parts{dxs[k]};
      ops::concat_channels_backward<T>(ctx, dys[k], std::span<const TensorView<T, D>>(parts));
    }
  }

 private:
  static constexpr const char* kWho = "nddr::IdentityFusion";
  std::size_t tasks_;
  std::int64_t channels_;
  bool training_ = true;
};

/// FusionSpec of K independent single-task columns (no fusion, no sharing).
struct None {
  static constexpr const char* name = "none";
  using options = IdentityFusionOptions;
  template <class T, class D>
  using layer = IdentityFusion<T, D>;
  static constexpr std::size_t shared_stages = 0;
  static constexpr bool shortcut = false;
};

/// FusionSpec of the split-style multi-task baseline: stages 1..S are one trunk shared by all
/// tasks (the network builds it under `shared.stage{s}.`), the remaining stages are per task
/// and are not fused.
template <std::size_t S>
struct Shared {
  static constexpr const char* name = "shared";
  using options = IdentityFusionOptions;
  template <class T, class D>
  using layer = IdentityFusion<T, D>;
  static constexpr std::size_t shared_stages = S;
  static constexpr bool shortcut = false;
};

}  // namespace nddr
