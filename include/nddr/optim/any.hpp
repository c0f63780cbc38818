#pragma once
/// \file
/// `AnyOptimizer<T, D>`: SGD, Adam or AdamW chosen at run time (the `--optimizer` flag), an
/// `Optimizer` itself, so a program instantiates its Trainer once for all three. Its options,
/// `AnyOptimizerOptions`, convert implicitly from each optimiser's options.

#include <array>
#include <cstddef>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "nddr/concepts/optimizer.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/optim/adam.hpp"
#include "nddr/optim/sgd.hpp"
#include "nddr/optim/state.hpp"

namespace nddr {

/// The names `--optimizer` takes, in the order of `AnyOptimizerOptions`' alternatives.
inline constexpr std::array<std::string_view, 3> kOptimizerNames = {"sgd", "adam", "adamw"};

/// The options of one of SGD, Adam, AdamW; which one decides the optimiser `AnyOptimizer`
/// builds. Default: SgdOptions{}.
class AnyOptimizerOptions {
 public:
  using variant_type = std::variant<SgdOptions, AdamOptions, AdamWOptions>;

  AnyOptimizerOptions() = default;
  AnyOptimizerOptions(SgdOptions o) : options_(o) {}
  AnyOptimizerOptions(AdamOptions o) : options_(o) {}
  AnyOptimizerOptions(AdamWOptions o) : options_(o) {}

  /// The default options of optimiser `name` (one of kOptimizerNames), nullopt otherwise.
  static std::optional<AnyOptimizerOptions> defaults(std::string_view name) {
    if (name == "sgd") return AnyOptimizerOptions(SgdOptions{});
    if (name == "adam") return AnyOptimizerOptions(AdamOptions{});
    if (name == "adamw") return AnyOptimizerOptions(AdamWOptions{});
    return std::nullopt;
  }

  const variant_type& get() const { return options_; }
  variant_type& get() { return options_; }
  /// "sgd", "adam" or "adamw".
  std::string_view name() const { return kOptimizerNames[options_.index()]; }
  void validate(const char* who) const {
    std::visit([who](const auto& o) { o.validate(who); }, options_);
  }

 private:
  variant_type options_;
};

/// SGD, Adam or AdamW, as `AnyOptimizerOptions` says; forwards everything to it.
template <class T, class D = Cpu>
class AnyOptimizer {
 public:
  using value_type = T;
  using device_type = D;
  using options_type = AnyOptimizerOptions;
  using variant_type = std::variant<Sgd<T, D>, Adam<T, D>, AdamW<T, D>>;

  AnyOptimizer(ParameterStore<T, D>& store, AnyOptimizerOptions options = {})
      : options_(options), optimizer_(make(store, options)) {}

  const AnyOptimizerOptions& options() const { return options_; }
  void step(const Context<Cpu>& ctx, double lr) {
    std::visit([&](auto& o) { o.step(ctx, lr); }, optimizer_);
  }
  double group_lr(std::size_t group, double lr) const {
    return std::visit([&](const auto& o) { return o.group_lr(group, lr); }, optimizer_);
  }
  OptimizerState<T, D> checkpoint_state() {
    return std::visit([](auto& o) { return o.checkpoint_state(); }, optimizer_);
  }
  /// The optimiser itself (for the device backends and for tests).
  variant_type& get() { return optimizer_; }
  const variant_type& get() const { return optimizer_; }

 private:
  static variant_type make(ParameterStore<T, D>& store, const AnyOptimizerOptions& options) {
    return std::visit(
        [&](const auto& o) -> variant_type {
          using O = std::decay_t<decltype(o)>;
          if constexpr (std::is_same_v<O, SgdOptions>)
            return variant_type(std::in_place_index<0>, store, o);
          else if constexpr (std::is_same_v<O, AdamOptions>)
            return variant_type(std::in_place_index<1>, store, o);
          else
            return variant_type(std::in_place_index<2>, store, o);
        },
        options.get());
  }

  AnyOptimizerOptions options_;
  variant_type optimizer_;
};

static_assert(concepts::Optimizer<Sgd<float, Cpu>>);
static_assert(concepts::Optimizer<Adam<float, Cpu>>);
static_assert(concepts::Optimizer<AdamW<float, Cpu>>);
static_assert(concepts::Optimizer<AnyOptimizer<float, Cpu>>);

}  // namespace nddr
