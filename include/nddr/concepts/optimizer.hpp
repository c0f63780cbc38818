#pragma once
/// \file
/// Concept `Optimizer`: an update rule bound to one `ParameterStore`, stepped once per training
/// step with the scheduled learning rate, whose whole state a checkpoint can save and restore
/// by name. Models: `Sgd`, `Adam`, `AdamW` (and `AnyOptimizer`, one of them chosen at run
/// time). `Experiment<Spec, Tasks, Optimizer>` takes the template, `Trainer` instantiates it.
///
/// Minimal complete definition (a class template `O<T, D>`; `Store` = ParameterStore<T, D>):
///  - `value_type` (T), `device_type` (D), `options_type` (the hyper-parameters: an options
///    struct with `void validate(const char* who) const`, throwing OptionError that names
///    `who`, the field and the value);
///  - `O(Store&, options_type)`: binds to an allocated store, validates the options;
///  - `const options_type& options() const`;
///  - `void step(const Context<Cpu>&, double lr)`: one update of every parameter from
///    `store.grads()`, at scheduled rate lr (CPU; GPU steps are run by the Trainer's device
///    backend, backend/cuda/training.hpp, which has one fused kernel per library optimiser);
///  - `double group_lr(std::size_t group, double lr) const`;
///  - `OptimizerState<T, D> checkpoint_state()`: writable views of every state tensor and
///    counter, by name (optim/state.hpp).
///
/// Laws (nddr/testing/optimizer_laws.hpp checks each, one check per law; every library model
/// passes in tests/train/optimizer_test.cpp):
///  - group multipliers: for parameters p in group g, step(lr) moves p as the same optimiser
///    without groups stepped at rate lr * g.lr_mult and decay weight_decay * g.weight_decay_mult;
///  - resume: save(checkpoint_state()) after n steps, restore into a fresh optimiser bound to a
///    store with the same values, then k steps == n + k uninterrupted steps, bit for bit;
///  - zero rate: step(0) leaves every parameter unchanged (AdamW's decay is lr * wd).
///
/// Example:
/// \code
///   nddr::AdamW<float> opt(net.parameters(), nddr::AdamWOptions{}.weight_decay(0.05));
///   for (std::int64_t t = 0; t < steps; ++t) {
///     // ... forward, backward ...
///     opt.step(ctx, schedule(t));
///   }
/// \endcode

#include <concepts>
#include <cstddef>

#include "nddr/core/context.hpp"
#include "nddr/core/device.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/optim/state.hpp"

namespace nddr::concepts {

template <class O>
concept Optimizer =
    requires {
      typename O::value_type;
      typename O::device_type;
      typename O::options_type;
    } &&
    std::constructible_from<O, ParameterStore<typename O::value_type, typename O::device_type>&,
                            const typename O::options_type&> &&
    requires(O& o, const O& co, const Context<Cpu>& ctx, double lr, const char* who) {
      { co.options() } -> std::same_as<const typename O::options_type&>;
      co.options().validate(who);
      o.step(ctx, lr);
      { co.group_lr(std::size_t{}, lr) } -> std::convertible_to<double>;
      {
        o.checkpoint_state()
      } -> std::same_as<OptimizerState<typename O::value_type, typename O::device_type>>;
    };

/// Diagnoses why `Opt<T, D>` is not an `Optimizer`; the "required from" line names it.
template <template <class, class> class Opt, class T, class D>
constexpr bool require_optimizer() {
  using O = Opt<T, D>;
  static_assert(requires {
    typename O::value_type;
    typename O::device_type;
    typename O::options_type;
  }, "nddr::Optimizer: missing member types value_type, device_type or options_type");
  static_assert(std::constructible_from<O, ParameterStore<T, D>&, const typename O::options_type&>,
                "nddr::Optimizer: missing constructor O(ParameterStore<T, D>&, options_type)");
  static_assert(requires(const O& co, const char* who) { co.options().validate(who); },
                "nddr::Optimizer: options_type needs `void validate(const char* who) const`");
  static_assert(requires(O& o, const Context<Cpu>& ctx, double lr) { o.step(ctx, lr); },
                "nddr::Optimizer: missing `void step(const Context<Cpu>&, double lr)`");
  static_assert(requires(O& o) {
    { o.checkpoint_state() } -> std::same_as<OptimizerState<T, D>>;
  }, "nddr::Optimizer: missing `OptimizerState<T, D> checkpoint_state()` (the named state a "
     "checkpoint saves)");
  return Optimizer<O>;
}

}  // namespace nddr::concepts
