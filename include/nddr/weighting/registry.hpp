#pragma once
/// \file
/// Run-time choice of a weighting method by name: `make_weighting("cagrad:c=0.4", K,
/// "--weighting")` parses `NAME[:key=value,...]` into an `AnyWeighting` (a variant over the method
/// types, each of which can also be used directly for a compile-time choice). Errors are
/// OptionError naming the flag, the bad name / key / value and the valid choices.

#include <Eigen/Core>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/weighting/aligned_mtl.hpp"
#include "nddr/weighting/cagrad.hpp"
#include "nddr/weighting/gradnorm.hpp"
#include "nddr/weighting/imtl.hpp"
#include "nddr/weighting/loss_weighting.hpp"
#include "nddr/weighting/method.hpp"
#include "nddr/weighting/mgda.hpp"
#include "nddr/weighting/nash_mtl.hpp"
#include "nddr/weighting/pcgrad.hpp"

namespace nddr::weighting {

/// Every method, in the order `weighting_names()` lists them.
using AnyWeightingBase =
    std::variant<Ew, Dwa, Uw, GradNorm, Rlw, Mgda, PcGrad, CaGrad, ImtlG, AlignedMtl, NashMtl>;

static_assert(
    []<std::size_t... I>(std::index_sequence<I...>) {
      return (WeightingMethod<std::variant_alternative_t<I, AnyWeightingBase>> && ...);
    }(std::make_index_sequence<std::variant_size_v<AnyWeightingBase>>{}),
    "nddr::weighting: every alternative of AnyWeighting must model WeightingMethod");

/// A method chosen at run time; forwards the `WeightingMethod` interface.
class AnyWeighting {
 public:
  template <WeightingMethod M>
  AnyWeighting(M method) : method_(std::move(method)) {}  // NOLINT: implicit by design

  std::string_view name() const {
    return std::visit([](const auto& m) { return std::string_view(m.kName); }, method_);
  }
  bool needs_gram() const {
    return std::visit([](const auto& m) { return m.needs_gram(); }, method_);
  }
  Combination combine(const StepInput& in) {
    return std::visit([&](auto& m) { return m.combine(in); }, method_);
  }
  void end_epoch(std::span<const double> mean_losses) {
    std::visit([&](auto& m) { m.end_epoch(mean_losses); }, method_);
  }
  std::span<double> parameters() {
    return std::visit([](auto& m) { return m.parameters(); }, method_);
  }
  std::span<const double> parameter_gradient() const {
    return std::visit([](const auto& m) { return m.parameter_gradient(); }, method_);
  }
  void after_parameter_update() {
    std::visit([](auto& m) { m.after_parameter_update(); }, method_);
  }
  MethodState state() const {
    return std::visit([](const auto& m) { return m.state(); }, method_);
  }
  void set_state(const MethodState& s) {
    std::visit([&](auto& m) { m.set_state(s); }, method_);
  }
  std::string spec() const {
    return std::visit([](const auto& m) { return m.spec(); }, method_);
  }
  /// The concrete method (e.g. `std::get_if<CaGrad>(&any.variant())`).
  const AnyWeightingBase& variant() const { return method_; }
  AnyWeightingBase& variant() { return method_; }

 private:
  AnyWeightingBase method_;
};

/// The names `make_weighting` accepts, comma-separated.
inline std::string weighting_names() {
  std::string out;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((out += (I ? ", " : "") + std::string(std::variant_alternative_t<I, AnyWeightingBase>::kName)),
     ...);
  }
  (std::make_index_sequence<std::variant_size_v<AnyWeightingBase>>{});
  return out;
}

namespace detail {

template <class M>
AnyWeighting make_method(std::string_view flag, std::string_view options, std::size_t num_tasks) {
  typename M::Options opt{};
  // `options` is what follows the ':' (absent: no ':'); every item, the last included, is
  // key=value, so "cagrad:", "cagrad:c=0.4," and "cagrad:c=0.4,,rescale=1" are errors.
  for (bool more = options.data() != nullptr; more;) {
    const std::size_t comma = options.find(',');
    const std::string_view item = options.substr(0, comma);
    more = comma != std::string_view::npos;
    if (more) options = options.substr(comma + 1);
    check<OptionError>(!item.empty(), flag, ": ", M::kName, ": an empty key=value item (a ':' or "
                       "',' with nothing after it)");
    const std::size_t eq = item.find('=');
    check<OptionError>(eq != std::string_view::npos && eq > 0, flag, ": ", M::kName, ": '", item,
                       "' is not key=value");
    opt.set(flag, item.substr(0, eq), item.substr(eq + 1));
  }
  const std::string who = std::string(flag) + ": " + std::string(M::kName);
  opt.validate(who.c_str());
  return AnyWeighting(M(num_tasks, opt));
}

}  // namespace detail

/// Parses `NAME[:key=value,...]` (e.g. "cagrad:c=0.4", "mgda:norm=l2,solver=fw") into a method
/// for `num_tasks` tasks. `flag` names the source in errors ("--weighting"). Throws OptionError
/// for an unknown name (listing the valid ones), an unknown key (listing the method's keys) or a
/// bad value (naming it and the valid range or choices).
inline AnyWeighting make_weighting(std::string_view spec, std::size_t num_tasks,
                                   std::string_view flag = "--weighting") {
  const std::size_t colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  // Null without a ':'; empty (not null) after a trailing ':'.
  const std::string_view options = colon == std::string_view::npos
                                       ? std::string_view()
                                       : std::string_view(spec.data() + colon + 1,
                                                          spec.size() - colon - 1);
  check<OptionError>(num_tasks >= 1, flag, ": needs at least one task");
  std::optional<AnyWeighting> out;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (void)((std::variant_alternative_t<I, AnyWeightingBase>::kName == name
                ? (out.emplace(detail::make_method<std::variant_alternative_t<I, AnyWeightingBase>>(
                       flag, options, num_tasks)),
                   true)
                : false) ||
           ...);
  }
  (std::make_index_sequence<std::variant_size_v<AnyWeightingBase>>{});
  if (!out)
    throw OptionError(nddr::detail::concat(flag, ": unknown weighting method '", name,
                                           "'; valid methods: ", weighting_names()));
  return std::move(*out);
}

}  // namespace nddr::weighting
