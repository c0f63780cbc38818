#pragma once
/// \file
/// Laws kits for the compile-time network concepts, so that your own stages, heads, backbones
/// and tasks can be tested like the library's. All run in double precision on the CPU and
/// return a `LayerLawsResult` ({ok, report}); the report names the module and the broken law.
///  - `check_stage_laws<S>(in)`: the built stage maps (N, in_channels, H, W) to
///    (N, out_channels, ceil(H / stride), ceil(W / stride)) for `in` and an odd-sized variant,
///    and obeys the `Layer` laws;
///  - `check_head_laws<H>(in_channels, outputs, in)`: the built head has `outputs` channels and
///    obeys the `Layer` laws;
///  - `check_backbone_laws<B>(in)`: every stage on the shape flowing through the column, then the
///    head;
///  - `check_task_laws<X>(prediction_shape, target)`: the loss gradient through the `Task`
///    interface matches finite differences, scales with the weight and accumulates.

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/concepts/backbone.hpp"
#include "nddr/concepts/head.hpp"
#include "nddr/concepts/stage.hpp"
#include "nddr/concepts/task.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/layers/sequential.hpp"
#include "nddr/testing/gradient_check.hpp"
#include "nddr/testing/layer_laws.hpp"

namespace nddr::testing {

/// Options of `check_stage_laws` and `check_head_laws`.
struct ModuleLawsOptions {
  LayerLawsOptions layer{};  ///< passed to check_layer_laws (e.g. grad.max_checks for big stages)
  /// Mode the module runs in. Training: BN uses batch statistics; a module with dropout then
  /// needs `layer.check_gradients = false`, or run it with training off (dropout is the identity).
  bool training = true;
};

/// Options of `check_backbone_laws`.
struct BackboneLawsOptions {
  ModuleLawsOptions stages{};
  ModuleLawsOptions head{.layer = {}, .training = false};  ///< inference: dropout off
  std::int64_t outputs = 3;                                ///< head outputs to build
};

/// Options of `check_task_laws`.
struct TaskLawsOptions {
  GradCheckOptions grad{};
  std::uint64_t seed = 42;
  double prediction_scale = 2.0;  ///< predictions ~ U(-scale, scale)
  double weight = 0.7;            ///< the task weight the laws use (and twice it)
};

namespace detail {

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

/// A different spatial size with odd H and W: exercises the ceil in TF 'SAME' down-sampling.
inline Shape odd_variant(const Shape& in) {
  auto odd = [](std::int64_t v) { return v % 2 != 0 ? v + 2 : v + 1; };
  return Shape::nchw(in.n(), in.c(), odd(in.h()), odd(in.w()));
}

/// Builds `module`, runs `check_layer_laws` on it in the requested mode and appends failures,
/// prefixed by `who`, to `os`. Exceptions (e.g. shape errors in forward) are failures too.
inline bool module_layer_laws(Sequential<double, Cpu>& module, const Shape& in,
                              const ModuleLawsOptions& opt, const std::string& who,
                              std::ostringstream& os) {
  module.set_training(opt.training);
  try {
    auto r = check_layer_laws(module, in, opt.layer);
    if (!r.ok) os << who << ": Layer laws fail for input " << in.str() << ":\n" << r.report;
    return r.ok;
  } catch (const std::exception& e) {
    os << who << ": throws for input " << in.str() << ": " << e.what() << "\n";
    return false;
  }
}

inline bool task_close(double a, double b, double rtol) {
  return std::abs(a - b) <= rtol * (1.0 + std::abs(a));
}

inline LayerLawsResult finish(bool ok, const std::ostringstream& os) {
  return LayerLawsResult{ok, os.str()};
}

/// The body of `check_stage_laws` once `S` is known to be a `Stage`.
template <class S>
LayerLawsResult stage_laws_impl(const Shape& in, const ModuleLawsOptions& opt) {
  std::ostringstream os;
  const std::string who = std::string("stage ") + S::name;
  if (in.rank() != 4 || in.c() != S::in_channels) {
    os << who << ": input " << in.str() << " must be (N, " << S::in_channels
       << " = in_channels, H, W)\n";
    return detail::finish(false, os);
  }
  if (S::stride < 1) {
    os << who << ": stride must be >= 1, got " << S::stride << "\n";
    return detail::finish(false, os);
  }
  bool ok = true;
  for (const Shape& s : {in, detail::odd_variant(in)}) {
    auto module = S::template build<double, Cpu>();
    const Shape expected = Shape::nchw(s.n(), S::out_channels, detail::ceil_div(s.h(), S::stride),
                                       detail::ceil_div(s.w(), S::stride));
    try {
      const Shape got = module.output_shape(s);
      if (got != expected) {
        ok = false;
        os << who << ": output shape for input " << s.str() << " is " << got.str()
           << ", but out_channels " << S::out_channels << " and stride " << S::stride << " declare "
           << expected.str() << " (ceil(H / stride), ceil(W / stride))\n";
        continue;
      }
      if (s != in) {  // the laws below run `in`; the variant must at least run forward
        ParameterStore<double, Cpu> store;
        module.declare(store, "stage");
        store.allocate();
        Rng rng(opt.layer.seed);
        module.initialize(rng);
        module.set_training(opt.training);
        Context<Cpu> ctx(1);
        Tensor<double> x(s), y(expected);
        for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0);
        module.forward(ctx, x.cview(), y.view());
      }
    } catch (const std::exception& e) {
      ok = false;
      os << who << ": throws for input " << s.str() << ": " << e.what() << "\n";
    }
  }
  auto module = S::template build<double, Cpu>();
  ok = detail::module_layer_laws(module, in, opt, who, os) && ok;
  return detail::finish(ok, os);
}

}  // namespace detail

/// Checks stage spec `S` (a `Stage`) for input shape `in` (rank 4, `S::in_channels` channels):
/// declared geometry against the built layers, for `in` and an odd-sized variant (which must
/// also run forward), then the `Layer` laws at `in`.
template <class S>
LayerLawsResult check_stage_laws(const Shape& in, const ModuleLawsOptions& opt = {}) {
  static_assert(concepts::require_stage<S>());
  if constexpr (concepts::Stage<S>)
    return detail::stage_laws_impl<S>(in, opt);
  else
    return {};  // the static_assert above says why
}

namespace detail {

/// The body of `check_head_laws` once `H` is known to be a `Head`.
template <class H>
LayerLawsResult head_laws_impl(std::int64_t in_channels, std::int64_t outputs, const Shape& in,
                               const ModuleLawsOptions& opt) {
  std::ostringstream os;
  const std::string who = std::string("head ") + H::name;
  if (in.rank() != 4 || in.c() != in_channels) {
    os << who << ": input " << in.str() << " must be (N, " << in_channels << ", H, W)\n";
    return detail::finish(false, os);
  }
  bool ok = true;
  try {
    auto module = H::template build<double, Cpu>(in_channels, outputs);
    const Shape got = module.output_shape(in);
    if (got.rank() != 4 || got.n() != in.n() || got.c() != outputs) {
      os << who << ": output shape for input " << in.str() << " is " << got.str() << ", expected ("
         << in.n() << ", " << outputs << " = outputs, h, w)\n";
      return detail::finish(false, os);
    }
    ok = detail::module_layer_laws(module, in, opt, who, os);
  } catch (const std::exception& e) {
    os << who << ": throws for in_channels " << in_channels << ", outputs " << outputs << ", input "
       << in.str() << ": " << e.what() << "\n";
    ok = false;
  }
  return detail::finish(ok, os);
}

}  // namespace detail

/// Checks head spec `H` built as `H::build(in_channels, outputs)` for input `in`: rank-4 output
/// with `outputs` channels and the batch size kept, then the `Layer` laws. Heads usually hold
/// dropout, so pass `opt.training = false` (or turn gradient checks off) for them.
template <class H>
LayerLawsResult check_head_laws(std::int64_t in_channels, std::int64_t outputs, const Shape& in,
                                const ModuleLawsOptions& opt = {}) {
  static_assert(
      requires {
        { H::name } -> std::convertible_to<const char*>;
      },
      "nddr::testing::check_head_laws: nddr::Head: missing `static constexpr const "
      "char* name`");
  static_assert(
      requires(std::int64_t c, std::int64_t o) {
        { H::template build<double, Cpu>(c, o) } -> std::same_as<Sequential<double, Cpu>>;
      },
      "nddr::testing::check_head_laws: nddr::Head: missing `template <class T, class D> static "
      "Sequential<T, D> build(std::int64_t in_channels, std::int64_t outputs)`");
  if constexpr (concepts::Head<H>)
    return detail::head_laws_impl<H>(in_channels, outputs, in, opt);
  else
    return {};  // the static_assert above says why
}

/// Checks backbone spec `B` for input `in` (N, input_channels, H, W): every stage with
/// `check_stage_laws` on the shape reaching it, then the head with `check_head_laws`. Cost grows
/// with every stage's size: use a small input (e.g. 2 x 8 x 8) and `grad.max_checks`.
template <class B>
LayerLawsResult check_backbone_laws(const Shape& in, const BackboneLawsOptions& opt = {}) {
  static_assert(concepts::require_backbone<B>());
  std::ostringstream os;
  if (in.rank() != 4 || in.c() != B::input_channels) {
    os << "backbone " << B::name << ": input " << in.str() << " must be (N, " << B::input_channels
       << " = input_channels, H, W)\n";
    return detail::finish(false, os);
  }
  bool ok = true;
  Shape s = in;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    auto one = [&]<class S>(std::size_t i) {
      auto r = check_stage_laws<S>(s, opt.stages);
      if (!r.ok) {
        ok = false;
        os << "backbone " << B::name << ", stage " << i + 1 << " of " << sizeof...(I) << ":\n"
           << r.report;
      }
      s = Shape::nchw(s.n(), S::out_channels, detail::ceil_div(s.h(), S::stride),
                      detail::ceil_div(s.w(), S::stride));
    };
    (one.template operator()<stage_t<B, I>>(I), ...);
  }
  (std::make_index_sequence<stage_count_v<B>>{});
  auto r = check_head_laws<typename B::head>(s.c(), opt.outputs, s, opt.head);
  if (!r.ok) {
    ok = false;
    os << "backbone " << B::name << ", head:\n" << r.report;
  }
  return detail::finish(ok, os);
}

/// Checks task spec `X` (a `Task`) on a random prediction of `prediction_shape` (channel
/// dimension `X::outputs`) against `target`: the value is finite and the same with and without
/// a gradient; dprediction matches finite differences of the returned value; twice the weight
/// gives twice the value and gradient; a second call accumulates into dprediction.
template <class X>
LayerLawsResult check_task_laws(const Shape& prediction_shape,
                                const Tensor<typename X::template target_t<double>>& target,
                                const TaskLawsOptions& opt = {}) {
  static_assert(concepts::require_task<X>());
  std::ostringstream os;
  const std::string who = std::string("task ") + X::name;
  if (prediction_shape.rank() < 2 || prediction_shape[1] != X::outputs) {
    os << who << ": prediction shape " << prediction_shape.str() << " must have " << X::outputs
       << " = outputs channels in dimension 1\n";
    return detail::finish(false, os);
  }
  bool ok = true;
  auto fail = [&](const std::string& msg) {
    ok = false;
    os << who << ": " << msg << "\n";
  };
  try {
    Context<Cpu> ctx(1);
    Rng rng(opt.seed);
    Tensor<double> p(prediction_shape), g(prediction_shape), g2(prediction_shape);
    for (std::int64_t i = 0; i < p.numel(); ++i)
      p[i] = rng.uniform(-1.0, 1.0) * opt.prediction_scale;
    const double w = opt.weight;
    auto value = [&](TensorView<double> d, double weight) {
      return nddr::task_loss<X>(ctx, p.cview(), target.cview(), d, weight);
    };
    const double v1 = value(g.view(), w);
    if (!std::isfinite(v1)) fail("loss is not finite: " + std::to_string(v1));
    const double v0 = value(TensorView<double>{}, w);
    if (v0 != v1) {
      std::ostringstream m;
      m << "loss differs without dprediction: " << v0 << " vs " << v1;
      fail(m.str());
    }
    auto gr = check_gradient(
        "dprediction", p.data(), p.numel(), g.data(),
        [&] { return value(TensorView<double>{}, w); }, opt.grad);
    if (!gr.ok) fail("gradient mismatch against finite differences of the loss:\n" + gr.report);

    const double v2 = value(g2.view(), 2.0 * w);
    if (!detail::task_close(v2, 2.0 * v1, 1e-12)) {
      std::ostringstream m;
      m << "twice the weight gives value " << v2 << ", expected twice " << v1;
      fail(m.str());
    }
    for (std::int64_t i = 0; i < g.numel(); ++i)
      if (!detail::task_close(g2[i], 2.0 * g[i], 1e-12)) {
        fail("twice the weight does not give twice the gradient (element " + std::to_string(i) +
             ")");
        break;
      }
    value(g2.view(), w);  // g2 = 2 g + g
    for (std::int64_t i = 0; i < g.numel(); ++i)
      if (!detail::task_close(g2[i], 3.0 * g[i], 1e-12)) {
        fail("a second call does not accumulate into dprediction (element " + std::to_string(i) +
             ")");
        break;
      }
  } catch (const std::exception& e) {
    fail(std::string("throws for prediction ") + prediction_shape.str() + ", target " +
         target.shape().str() + ": " + e.what());
  }
  return detail::finish(ok, os);
}

}  // namespace nddr::testing
