#pragma once
/// \file
/// Learning-rate schedules: callables `double operator()(std::int64_t step) const` giving the
/// scheduled base rate at step t (0-based). A schedule returns one scalar; the optimiser
/// multiplies it by each group's `lr_mult`, so group multipliers (NDDR x100, fc8 x10/x20) are
/// never overwritten.

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "nddr/core/error.hpp"

namespace nddr {
namespace concepts {

/// A learning-rate schedule: maps a step index to the base learning rate.
template <class S>
concept LrSchedule = requires(const S& s, std::int64_t step) {
  { s(step) } -> std::convertible_to<double>;
};

}  // namespace concepts

namespace detail {

inline void check_schedule_step(const char* who, std::int64_t step) {
  check<ValueError>(step >= 0, who, ": step must be >= 0, got ", step);
}
inline void check_base_lr(const char* who, double base_lr) {
  check<OptionError>(base_lr >= 0.0 && std::isfinite(base_lr), who,
                     ": base_lr must be a finite value >= 0, got ", base_lr);
}

}  // namespace detail

/// The paper's "poly" schedule: base_lr * (1 - t / max_steps)^power, 0 for t >= max_steps.
/// NDDR-CNN: `PolySchedule{1e-3, 20001}` (power 0.9), run for t = 0 ... 20000.
struct PolySchedule {
  double base_lr = 1e-3;
  std::int64_t max_steps = 20001;
  double power = 0.9;

  double operator()(std::int64_t step) const {
    validate();
    detail::check_schedule_step("nddr::PolySchedule", step);
    if (step >= max_steps) return 0.0;
    return base_lr *
           std::pow(1.0 - static_cast<double>(step) / static_cast<double>(max_steps), power);
  }
  /// Throws OptionError naming the field unless base_lr >= 0, max_steps > 0, power >= 0.
  void validate() const {
    detail::check_base_lr("nddr::PolySchedule", base_lr);
    check<OptionError>(max_steps > 0, "nddr::PolySchedule: max_steps must be > 0, got ",
                       max_steps);
    check<OptionError>(power >= 0.0 && std::isfinite(power),
                       "nddr::PolySchedule: power must be a finite value >= 0, got ", power);
  }
};

/// Step decay (PyTorch `StepLR`): base_lr * gamma^floor(t / step_size).
struct StepSchedule {
  double base_lr = 1e-3;
  std::int64_t step_size = 1;
  double gamma = 0.1;

  double operator()(std::int64_t step) const {
    validate();
    detail::check_schedule_step("nddr::StepSchedule", step);
    return base_lr * std::pow(gamma, static_cast<double>(step / step_size));
  }
  /// Throws OptionError naming the field unless base_lr >= 0, step_size > 0, gamma >= 0.
  void validate() const {
    detail::check_base_lr("nddr::StepSchedule", base_lr);
    check<OptionError>(step_size > 0, "nddr::StepSchedule: step_size must be > 0, got ",
                       step_size);
    check<OptionError>(gamma >= 0.0 && std::isfinite(gamma),
                       "nddr::StepSchedule: gamma must be a finite value >= 0, got ", gamma);
  }
};

/// Decay by `gamma` at each milestone (PyTorch `MultiStepLR`): base_lr * gamma^(number of
/// milestones <= t). Milestones must be increasing.
struct MultiStepSchedule {
  double base_lr = 1e-3;
  std::vector<std::int64_t> milestones;
  double gamma = 0.1;

  double operator()(std::int64_t step) const {
    validate();
    detail::check_schedule_step("nddr::MultiStepSchedule", step);
    double lr = base_lr;
    for (std::int64_t m : milestones)
      if (m <= step) lr *= gamma;
    return lr;
  }
  /// Throws OptionError naming the field unless base_lr >= 0, gamma >= 0 and the milestones
  /// are positive and strictly increasing.
  void validate() const {
    detail::check_base_lr("nddr::MultiStepSchedule", base_lr);
    check<OptionError>(gamma >= 0.0 && std::isfinite(gamma),
                       "nddr::MultiStepSchedule: gamma must be a finite value >= 0, got ",
                       gamma);
    for (std::size_t i = 0; i < milestones.size(); ++i)
      check<OptionError>(milestones[i] > 0 && (i == 0 || milestones[i] > milestones[i - 1]),
                         "nddr::MultiStepSchedule: milestones must be positive and strictly "
                         "increasing, got ",
                         milestones[i], " at index ", i);
  }
};

/// A constant rate.
struct ConstantSchedule {
  double base_lr = 1e-3;

  double operator()(std::int64_t step) const {
    detail::check_base_lr("nddr::ConstantSchedule", base_lr);
    detail::check_schedule_step("nddr::ConstantSchedule", step);
    return base_lr;
  }
};

static_assert(concepts::LrSchedule<PolySchedule>);
static_assert(concepts::LrSchedule<StepSchedule>);
static_assert(concepts::LrSchedule<MultiStepSchedule>);
static_assert(concepts::LrSchedule<ConstantSchedule>);

}  // namespace nddr
