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

/// Cosine annealing (PyTorch `CosineAnnealingLR`, closed form):
/// eta_min + (base_lr - eta_min) * (1 + cos(pi * t / t_max)) / 2. `eta_min` is an absolute rate
/// (as torch's), not a multiplier: the optimiser still multiplies the whole value by each
/// group's lr_mult, so groups keep their ratio to the end. No restarts: past t_max the cosine
/// goes on and the rate rises again (period 2 t_max), as torch's does.
struct CosineSchedule {
  double base_lr = 1e-3;
  std::int64_t t_max = 1;
  double eta_min = 0.0;

  double operator()(std::int64_t step) const {
    validate();
    detail::check_schedule_step("nddr::CosineSchedule", step);
    constexpr double kPi = 3.14159265358979323846;
    const double phase = kPi * static_cast<double>(step) / static_cast<double>(t_max);
    return eta_min + (base_lr - eta_min) * (1.0 + std::cos(phase)) / 2.0;
  }
  /// Throws OptionError naming the field unless base_lr >= 0, t_max > 0, eta_min >= 0.
  void validate() const {
    detail::check_base_lr("nddr::CosineSchedule", base_lr);
    check<OptionError>(t_max > 0, "nddr::CosineSchedule: t_max must be > 0, got ", t_max);
    check<OptionError>(eta_min >= 0.0 && std::isfinite(eta_min),
                       "nddr::CosineSchedule: eta_min must be a finite value >= 0, got ",
                       eta_min);
  }
};

/// A constant rate.
struct ConstantSchedule {
  double base_lr = 1e-3;

  double operator()(std::int64_t step) const {
    validate();
    detail::check_schedule_step("nddr::ConstantSchedule", step);
    return base_lr;
  }
  /// Throws OptionError unless base_lr >= 0.
  void validate() const { detail::check_base_lr("nddr::ConstantSchedule", base_lr); }
};

/// Linear warm-up before any schedule (PyTorch `SequentialLR([LinearLR(start_factor,
/// end_factor = 1, total_iters = warmup_steps), S], milestones = [warmup_steps])`): for
/// t < warmup_steps the rate is schedule(0) * (start_factor + (1 - start_factor) * t /
/// warmup_steps); from then on schedule(t - warmup_steps), the wrapped schedule's counter
/// restarting at the milestone. So a cosine after the warm-up takes t_max = total - warmup.
/// `LinearWarmup{CosineSchedule{1e-3, 9000}, 1000}`; warmup_steps = 0 is the schedule itself.
template <concepts::LrSchedule S>
struct LinearWarmup {
  S schedule{};
  std::int64_t warmup_steps = 0;
  double start_factor = 1.0 / 3.0;  ///< torch's LinearLR default

  double operator()(std::int64_t step) const {
    validate();
    detail::check_schedule_step("nddr::LinearWarmup", step);
    if (step >= warmup_steps) return static_cast<double>(schedule(step - warmup_steps));
    const double ramp = start_factor + (1.0 - start_factor) * static_cast<double>(step) /
                                           static_cast<double>(warmup_steps);
    return static_cast<double>(schedule(0)) * ramp;
  }
  /// Throws OptionError naming the field unless warmup_steps >= 0 and start_factor is in (0, 1]
  /// (torch's bounds).
  void validate() const {
    check<OptionError>(warmup_steps >= 0, "nddr::LinearWarmup: warmup_steps must be >= 0, got ",
                       warmup_steps);
    check<OptionError>(start_factor > 0.0 && start_factor <= 1.0,
                       "nddr::LinearWarmup: start_factor must be in (0, 1], got ", start_factor);
  }
};

static_assert(concepts::LrSchedule<PolySchedule>);
static_assert(concepts::LrSchedule<StepSchedule>);
static_assert(concepts::LrSchedule<MultiStepSchedule>);
static_assert(concepts::LrSchedule<ConstantSchedule>);
static_assert(concepts::LrSchedule<CosineSchedule>);
static_assert(concepts::LrSchedule<LinearWarmup<CosineSchedule>>);

}  // namespace nddr
