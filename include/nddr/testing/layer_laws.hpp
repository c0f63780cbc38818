#pragma once
/// \file
/// The `Layer` laws kit: checks any model of `nddr::concepts::Layer` (yours too) against the
/// contract in <nddr/concepts/layer.hpp>, in double precision on the CPU:
///  1. `output_shape` agrees with what forward accepts;
///  2. forward is deterministic;
///  3. backward accumulates into dx (dx += ...) and assigns parameter gradients;
///  4. input and parameter gradients match central finite differences of
///     L = sum(y * r) for a fixed random r.

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "nddr/concepts/layer.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/testing/gradient_check.hpp"

namespace nddr::testing {

struct LayerLawsOptions {
  GradCheckOptions grad{};
  std::uint64_t seed = 42;
  double input_scale = 1.0;          ///< inputs ~ U(-scale, scale)
  bool randomize_parameters = true;  ///< parameters ~ U(-1, 1) after initialize()
  bool check_gradients = true;       ///< off for stochastic layers (check the op instead)
  NumericSettings settings{};        ///< of the context the laws run on (a forced algorithm)
};

struct LayerLawsResult {
  bool ok = true;
  std::string report;
};

/// Runs every law on `layer` for input shape `in`. The layer must have value_type double and
/// device_type Cpu and must not have been declared yet.
template <class L>
LayerLawsResult check_layer_laws(L& layer, const Shape& in, const LayerLawsOptions& opt = {}) {
  static_assert(concepts::require_layer<L>());
  static_assert(std::is_same_v<typename L::value_type, double> &&
                    std::is_same_v<typename L::device_type, Cpu>,
                "nddr::testing::check_layer_laws: instantiate the layer with double on nddr::Cpu");
  LayerLawsResult res;
  std::ostringstream os;
  auto fail = [&](const std::string& msg) {
    res.ok = false;
    os << msg << "\n";
  };

  Context<Cpu> ctx(1);
  ctx.set_settings(opt.settings);
  ParameterStore<double, Cpu> store;
  layer.declare(store, "layer");
  store.allocate();
  Rng rng(opt.seed);
  layer.initialize(rng);
  if (opt.randomize_parameters) {
    auto v = store.values();
    for (std::int64_t i = 0; i < v.numel(); ++i) v[i] = rng.uniform(-1.0, 1.0);
  }

  const Shape out = layer.output_shape(in);
  Tensor<double> x(in), y(out), y2(out), r(out);
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0) * opt.input_scale;
  for (std::int64_t i = 0; i < r.numel(); ++i) r[i] = rng.uniform(-1.0, 1.0);

  layer.forward(ctx, x.cview(), y.view());
  layer.forward(ctx, x.cview(), y2.view());
  if (opt.check_gradients) {
    for (std::int64_t i = 0; i < y.numel(); ++i)
      if (y[i] != y2[i]) {
        fail("forward is not deterministic at output element " + std::to_string(i));
        break;
      }
  }

  // Backward twice: dx must double (accumulate), parameter grads must not (assign).
  Tensor<double> dx(in);
  layer.backward(ctx, x.cview(), y.cview(), r.cview(), dx.view());
  std::vector<double> dx1(dx.data(), dx.data() + dx.numel());
  auto g = store.grads();
  std::vector<double> dw1(g.data(), g.data() + g.numel());
  layer.backward(ctx, x.cview(), y.cview(), r.cview(), dx.view());
  for (std::int64_t i = 0; i < dx.numel(); ++i)
    if (std::abs(dx[i] - 2.0 * dx1[static_cast<std::size_t>(i)]) >
        1e-9 * (1.0 + std::abs(dx[i]))) {
      fail("backward does not accumulate into dx (element " + std::to_string(i) + ")");
      break;
    }
  for (std::int64_t i = 0; i < g.numel(); ++i)
    if (std::abs(g[i] - dw1[static_cast<std::size_t>(i)]) > 1e-9 * (1.0 + std::abs(g[i]))) {
      fail("backward accumulates parameter gradients instead of assigning (element " +
           std::to_string(i) + ")");
      break;
    }
  // A null dx must be accepted (first layer of a network).
  layer.backward(ctx, x.cview(), y.cview(), r.cview(), TensorView<double>{});

  if (opt.check_gradients) {
    auto loss = [&] {
      layer.forward(ctx, x.cview(), y2.view());
      double s = 0.0;
      for (std::int64_t i = 0; i < y2.numel(); ++i) s += y2[i] * r[i];
      return s;
    };
    auto rx = check_gradient("dx", x.data(), x.numel(), dx1.data(), loss, opt.grad);
    if (!rx.ok) fail("input gradient mismatch:\n" + rx.report);
    auto v = store.values();
    for (const auto& e : store.parameters()) {
      auto gr = check_gradient(e.name, v.data() + e.offset, e.shape.numel(),
                               dw1.data() + e.offset, loss, opt.grad);
      if (!gr.ok) fail("parameter gradient mismatch for " + e.name + ":\n" + gr.report);
    }
  }
  res.report = os.str();
  return res;
}

}  // namespace nddr::testing
