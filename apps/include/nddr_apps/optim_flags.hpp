#pragma once
/// \file
/// The optimiser and schedule flags of every nddr program (docs/cli.md, docs/optim.md):
/// `--optimizer sgd|adam|adamw`, `--weight-decay`, `--beta1`, `--beta2`, `--eps`, `--amsgrad`,
/// `--schedule poly|cosine|step|constant`, `--warmup N`, `--eta-min`, and the multi-task
/// weighting method, `--weighting NAME[:key=value,...]` with `--weighting-epoch N`
/// (docs/weighting.md). `add_optimizer_flags`
/// declares them, `check_optimizer_flags` checks what one flag cannot (after parsing), and
/// `optimizer_options` / `schedule_from` build what `Trainer` takes: `AnyOptimizerOptions` for
/// an `Experiment<..., AnyOptimizer>` and a schedule callable.

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "nddr/optim/any.hpp"
#include "nddr/optim/schedule.hpp"
#include "nddr/weighting/registry.hpp"
#include "nddr_apps/cli.hpp"

namespace nddr::cli {

/// The values of the optimiser and schedule flags (their defaults are the flags' defaults).
struct OptimizerFlags {
  std::string optimizer = "sgd";
  double weight_decay = -1.0;  ///< < 0: the program's SGD default, 0 for Adam, 1e-2 for AdamW
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  bool amsgrad = false;
  std::string schedule = "poly";
  std::int64_t warmup = 0;  ///< linear warm-up steps before the schedule
  double eta_min = 0.0;     ///< cosine: the final rate (absolute)
  std::string weighting;    ///< TrainerOptions::weighting; empty = the fixed loss weights
  std::int64_t weighting_epoch = 0;  ///< TrainerOptions::steps_per_epoch
};

/// The names `--schedule` takes.
inline std::vector<std::string> schedule_names() { return {"poly", "cosine", "step", "constant"}; }

/// Declares the flags on `p`, bound to `f`; `sgd_decay` describes the SGD default of
/// `--weight-decay` in `--help`.
inline void add_optimizer_flags(ArgParser& p, OptimizerFlags& f, const std::string& sgd_decay) {
  std::vector<std::string> names;
  for (const auto n : kOptimizerNames) names.emplace_back(n);
  p.choice("optimizer", f.optimizer,
           "momentum SGD (0.9, the paper), Adam (L2 decay) or AdamW (decoupled decay), as "
           "torch.optim",
           names)
      .real("weight-decay", f.weight_decay, "weight decay (SGD: L2 on kernels only)",
            RealRange::non_negative())
      .default_text(sgd_decay + "; adam 0; adamw 1e-2")
      .real("beta1", f.beta1, "adam/adamw: first-moment decay, in [0, 1)", RealRange{0.0, 1.0})
      .real("beta2", f.beta2, "adam/adamw: second-moment decay, in [0, 1)", RealRange{0.0, 1.0})
      .real("eps", f.eps, "adam/adamw: added to sqrt(v-hat)", RealRange::positive())
      .flag("amsgrad", f.amsgrad, "adam/adamw: the AMSGrad variant (running maximum of v)")
      .choice("schedule", f.schedule,
              "learning-rate schedule over the training steps: poly (power 0.9, the paper), "
              "cosine (to --eta-min), step (x0.1 every third of the run), constant",
              schedule_names())
      .integer("warmup", f.warmup,
               "linear warm-up steps (from 1/3 of the rate) before the schedule, which then "
               "spans the remaining steps",
               std::int64_t{0})
      .real("eta-min", f.eta_min, "cosine: the final learning rate (absolute)",
            RealRange::non_negative())
      .text("weighting", f.weighting,
            "multi-task loss weighting or gradient method, NAME[:key=value,...] with NAME one "
            "of " + weighting::weighting_names() + " (docs/weighting.md; on a GPU not with "
            "--cuda-graph)",
            "NAME[:key=value,...]", [](const std::string& s) { return !s.empty(); }, "SPEC")
      .default_text("none: the fixed loss weights")
      .integer("weighting-epoch", f.weighting_epoch,
               "steps per epoch for --weighting dwa and gradnorm (epoch mean losses); 0: no "
               "epochs, dwa keeps weights 1",
               std::int64_t{0});
}

/// The trainer options' weighting fields from the flags.
template <class Options>
void set_weighting(Options& topt, const OptimizerFlags& f) {
  topt.weighting = f.weighting;
  topt.steps_per_epoch = f.weighting_epoch;
}

/// What one flag cannot check: beta1 and beta2 below 1, Adam-only flags with Adam, a warm-up
/// shorter than the run. UsageError naming the flag otherwise.
inline void check_optimizer_flags(const ArgParser& p, const OptimizerFlags& f,
                                  std::int64_t steps) {
  for (const auto& [name, v] : {std::pair{"beta1", f.beta1}, std::pair{"beta2", f.beta2}})
    if (!(v < 1.0)) p.fail(name, "a finite number in [0, 1)", std::to_string(v));
  if (f.optimizer == "sgd" && f.amsgrad)
    p.fail("amsgrad", "--optimizer adam or adamw with it", "--optimizer sgd");
  if (f.warmup > 0 && f.warmup >= steps)
    p.fail("warmup", "fewer warm-up steps than --steps (" + std::to_string(steps) + ")",
           std::to_string(f.warmup));
  if (f.weighting.empty()) return;
  const std::string names = weighting::weighting_names();
  try {
    weighting::make_weighting(f.weighting, 2, "--weighting");
  } catch (const OptionError& e) {
    const std::string_view name = std::string_view(f.weighting).substr(0, f.weighting.find(':'));
    if (("," + names + ",").find(", " + std::string(name) + ",") == std::string::npos &&
        !names.starts_with(std::string(name) + ","))
      p.fail("weighting", "NAME[:key=value,...] with NAME one of " + names, f.weighting);
    // The method's own diagnosis (key or value), minus its "--weighting: " prefix, made
    // printable and short enough for one line.
    std::string why = e.what();
    if (why.starts_with("--weighting: ")) why.erase(0, 13);
    p.fail("weighting", "NAME[:key=value,...] (" + echo(why, 150) + ")", f.weighting);
  }
}

/// The options of the chosen optimiser; `sgd` holds the program's SGD defaults (momentum,
/// decay), whose decay `--weight-decay` replaces when given.
inline AnyOptimizerOptions optimizer_options(const OptimizerFlags& f, SgdOptions sgd) {
  const bool decay = f.weight_decay >= 0.0;
  if (f.optimizer == "adam") {
    AdamOptions o = AdamOptions{}.betas(f.beta1, f.beta2).eps(f.eps).amsgrad(f.amsgrad);
    return decay ? o.weight_decay(f.weight_decay) : o;
  }
  if (f.optimizer == "adamw") {
    AdamWOptions o = AdamWOptions{}.betas(f.beta1, f.beta2).eps(f.eps).amsgrad(f.amsgrad);
    return decay ? o.weight_decay(f.weight_decay) : o;
  }
  check<OptionError>(f.optimizer == "sgd", "--optimizer must be sgd, adam or adamw, got '",
                     f.optimizer, "'");
  return decay ? sgd.weight_decay(f.weight_decay) : sgd;
}

/// The schedule of a run of `steps` steps at base rate `lr`: `--warmup` steps of linear
/// warm-up, then `--schedule` over the remaining steps.
inline std::function<double(std::int64_t)> schedule_from(const OptimizerFlags& f, double lr,
                                                         std::int64_t steps) {
  const std::int64_t rest = std::max<std::int64_t>(steps - f.warmup, 1);
  const auto wrap = [&](auto s) -> std::function<double(std::int64_t)> {
    s.validate();
    if (f.warmup == 0) return s;
    return LinearWarmup<decltype(s)>{s, f.warmup};
  };
  if (f.schedule == "cosine") return wrap(CosineSchedule{lr, rest, f.eta_min});
  if (f.schedule == "step") return wrap(StepSchedule{lr, std::max<std::int64_t>(rest / 3, 1), 0.1});
  if (f.schedule == "constant") return wrap(ConstantSchedule{lr});
  check<OptionError>(f.schedule == "poly", "--schedule must be one of poly, cosine, step, "
                     "constant, got '", f.schedule, "'");
  return wrap(PolySchedule{lr, rest, 0.9});
}

}  // namespace nddr::cli
