#pragma once
/// \file
/// The `Optimizer` laws kit: checks any model of `nddr::concepts::Optimizer` (yours too) against
/// the laws stated in <nddr/concepts/optimizer.hpp>, in double precision on the CPU, on a small
/// store (a rank-4 kernel, a rank-1 bias, a rank-2 matrix of two chunks) with random values and
/// gradients, for options `options`:
///  1. zero rate: step(0) leaves every parameter unchanged;
///  2. group multipliers: a parameter in a group with lr_mult m stepped at rate lr moves as the
///     same parameter in the default group stepped at rate lr * m, bit for bit (decay included:
///     weight_decay_mult 1);
///  3. resume: copying `checkpoint_state()` and the parameter values after n steps into a fresh
///     optimiser and store, then k more steps, equals n + k uninterrupted steps, bit for bit.

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "nddr/concepts/optimizer.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/testing/layer_laws.hpp"

namespace nddr::testing {

/// Options of `check_optimizer_laws`.
struct OptimizerLawsOptions {
  double lr = 0.01;        ///< the scheduled rate of every step
  double lr_mult = 7.0;    ///< the multiplier of law 2
  std::int64_t steps = 3;  ///< n (and k) of law 3
  std::uint64_t seed = 11;
};

namespace detail {

/// The laws' store: three parameters in `group` (lr_mult `lr_mult`; the default group when
/// empty).
inline void declare_law_store(ParameterStore<double>& store, const std::string& group,
                              double lr_mult) {
  if (!group.empty()) store.add_group(ParamGroup{group, lr_mult, 1.0});
  store.declare("conv.weight", Shape::nchw(3, 2, 3, 3), group);
  store.declare("conv.bias", Shape{3}, group);
  store.declare("fc.weight", Shape{7, 11000}, group);  // two CPU chunks
  store.allocate();
}

inline void fill_uniform(TensorView<double> v, Rng& rng) {
  for (std::int64_t i = 0; i < v.numel(); ++i) v[i] = rng.uniform(-1.0, 1.0);
}

inline bool same_values(const ParameterStore<double>& a, const ParameterStore<double>& b) {
  const auto va = a.values(), vb = b.values();
  if (va.numel() != vb.numel()) return false;
  for (std::int64_t i = 0; i < va.numel(); ++i)
    if (!(va[i] == vb[i])) return false;
  return true;
}

}  // namespace detail

/// Runs every law on `Opt<double, Cpu>` built with `options`; the report names each law that
/// fails.
template <template <class, class> class Opt>
LayerLawsResult check_optimizer_laws(const typename Opt<double, Cpu>::options_type& options,
                                     const OptimizerLawsOptions& opt = {}) {
  static_assert(concepts::require_optimizer<Opt, double, Cpu>());
  using O = Opt<double, Cpu>;
  std::ostringstream os;
  bool ok = true;
  auto fail = [&](const std::string& msg) {
    ok = false;
    os << "optimizer laws: " << msg << "\n";
  };
  Context<Cpu> ctx(2);
  const auto grads = [&](ParameterStore<double>& s, std::int64_t step) {
    Rng rng(opt.seed * 1000 + static_cast<std::uint64_t>(step));
    detail::fill_uniform(s.grads(), rng);
  };
  const auto start = [&](ParameterStore<double>& s) {
    Rng rng(opt.seed);
    detail::fill_uniform(s.values(), rng);
  };

  // 1. zero rate
  {
    ParameterStore<double> s;
    detail::declare_law_store(s, "", 1.0);
    start(s);
    ParameterStore<double> before;
    detail::declare_law_store(before, "", 1.0);
    start(before);
    O o(s, options);
    grads(s, 0);
    o.step(ctx, 0.0);
    if (!detail::same_values(s, before)) fail("law 1: step(0) changed a parameter");
  }
  // 2. group multipliers
  {
    ParameterStore<double> grouped, plain;
    detail::declare_law_store(grouped, "scaled", opt.lr_mult);
    detail::declare_law_store(plain, "", 1.0);
    start(grouped);
    start(plain);
    O a(grouped, options), b(plain, options);
    for (std::int64_t t = 0; t < opt.steps; ++t) {
      grads(grouped, t);
      grads(plain, t);
      a.step(ctx, opt.lr);
      b.step(ctx, opt.lr * opt.lr_mult);
    }
    if (!detail::same_values(grouped, plain))
      fail("law 2: a group with lr_mult m at rate lr differs from the default group at lr * m");
  }
  // 3. resume
  {
    ParameterStore<double> straight, first, resumed;
    for (auto* s : {&straight, &first, &resumed}) {
      detail::declare_law_store(*s, "", 1.0);
      start(*s);
    }
    O a(straight, options), b(first, options), c(resumed, options);
    for (std::int64_t t = 0; t < 2 * opt.steps; ++t) {
      grads(straight, t);
      a.step(ctx, opt.lr);
    }
    for (std::int64_t t = 0; t < opt.steps; ++t) {
      grads(first, t);
      b.step(ctx, opt.lr);
    }
    const auto from = b.checkpoint_state();
    const auto to = c.checkpoint_state();
    if (from.tensors.size() != to.tensors.size() || from.counters.size() != to.counters.size()) {
      fail("law 3: two optimisers built with the same options have different state layouts");
    } else {
      for (std::size_t i = 0; i < from.tensors.size(); ++i)
        for (std::int64_t e = 0; e < from.tensors[i].second.numel(); ++e)
          to.tensors[i].second[e] = from.tensors[i].second[e];
      for (std::size_t i = 0; i < from.counters.size(); ++i)
        to.counters[i].second[0] = from.counters[i].second[0];
      for (std::int64_t e = 0; e < first.values().numel(); ++e)
        resumed.values()[e] = first.values()[e];
      for (std::int64_t t = opt.steps; t < 2 * opt.steps; ++t) {
        grads(resumed, t);
        c.step(ctx, opt.lr);
      }
      if (!detail::same_values(straight, resumed))
        fail("law 3: restoring checkpoint_state() after n steps, then k steps, differs from "
             "n + k uninterrupted steps");
    }
  }
  LayerLawsResult r;
  r.ok = ok;
  r.report = os.str();
  return r;
}

}  // namespace nddr::testing
