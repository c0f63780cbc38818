#pragma once
/// \file
/// The `FusionLayer` laws kit: checks any model of `nddr::concepts::FusionLayer` (yours too)
/// against the contract in <nddr/concepts/fusion_layer.hpp>, in double precision on the CPU,
/// for K = `layer.tasks()` inputs of one shape:
///  1. `output_shapes` returns K shapes and forward accepts outputs of those shapes;
///  2. forward is deterministic;
///  3. backward accumulates into every dxs[k] (dx += ...) and assigns parameter gradients;
///  4. empty dxs are skipped: all empty is accepted, and with task 0's empty the others receive
///     exactly their gradient;
///  5. the gradients of every input and parameter match central finite differences of
///     L = sum_k sum(y_k * r_k) for fixed random r_k.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "nddr/concepts/fusion_layer.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/testing/gradient_check.hpp"
#include "nddr/testing/layer_laws.hpp"

namespace nddr::testing {

namespace detail {

/// K tensors with their const and mutable views, as the FusionLayer interface takes them.
struct TensorSet {
  std::vector<Tensor<double>> t;

  explicit TensorSet(const std::vector<Shape>& shapes) {
    for (const Shape& s : shapes) t.emplace_back(s);
  }
  void fill(Rng& rng, double scale) {
    for (auto& x : t)
      for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0) * scale;
  }
  std::vector<TensorView<const double>> in() const {
    std::vector<TensorView<const double>> v;
    for (const auto& x : t) v.push_back(x.cview());
    return v;
  }
  std::vector<TensorView<double>> out() {
    std::vector<TensorView<double>> v;
    for (auto& x : t) v.push_back(x.view());
    return v;
  }
};

inline bool close(double a, double b, double rtol) {
  return std::abs(a - b) <= rtol * (1.0 + std::abs(a));
}

}  // namespace detail

/// Runs every law on `layer` with every task's input of shape `in`. The layer must have
/// value_type double and device_type Cpu and must not have been declared yet; it runs in the
/// training mode it is in. Options as for `check_layer_laws` (`check_gradients` off skips the
/// determinism and finite-difference laws, for stochastic layers).
template <class F>
LayerLawsResult check_fusion_laws(F& layer, const Shape& in, const LayerLawsOptions& opt = {}) {
  static_assert(concepts::FusionLayer<F>,
                "nddr::testing::check_fusion_laws: the layer does not model "
                "nddr::concepts::FusionLayer (see <nddr/concepts/fusion_layer.hpp>)");
  static_assert(std::is_same_v<typename F::value_type, double> &&
                    std::is_same_v<typename F::device_type, Cpu>,
                "nddr::testing::check_fusion_laws: instantiate the layer with double on nddr::Cpu");
  LayerLawsResult res;
  std::ostringstream os;
  auto fail = [&](const std::string& msg) {
    res.ok = false;
    os << msg << "\n";
  };
  const std::size_t K = layer.tasks();
  if (K == 0) {
    res.ok = false;
    res.report = "tasks() is 0\n";
    return res;
  }

  Context<Cpu> ctx(1);
  ParameterStore<double, Cpu> store;
  layer.declare(store, "fusion");
  store.allocate();
  Rng rng(opt.seed);
  layer.initialize(rng);
  if (opt.randomize_parameters) {
    auto v = store.values();
    for (std::int64_t i = 0; i < v.numel(); ++i) v[i] = rng.uniform(-1.0, 1.0);
  }

  const std::vector<Shape> ins(K, in);
  std::vector<Shape> outs;
  try {
    outs = layer.output_shapes(ins);
  } catch (const std::exception& e) {
    fail(std::string("output_shapes throws for ") + std::to_string(K) + " inputs of shape " +
         in.str() + ": " + e.what());
    res.report = os.str();
    return res;
  }
  if (outs.size() != K) {
    fail("output_shapes returns " + std::to_string(outs.size()) + " shapes for " +
         std::to_string(K) + " inputs");
    res.report = os.str();
    return res;
  }

  detail::TensorSet x(ins), y(outs), y2(outs), r(outs), dx(ins);
  x.fill(rng, opt.input_scale);
  r.fill(rng, 1.0);
  try {
    layer.forward(ctx, x.in(), y.out());
  } catch (const std::exception& e) {
    fail(std::string("forward rejects outputs of the shapes output_shapes returned: ") + e.what());
    res.report = os.str();
    return res;
  }
  layer.forward(ctx, x.in(), y2.out());
  if (opt.check_gradients) {
    for (std::size_t k = 0; k < K; ++k)
      for (std::int64_t i = 0; i < y.t[k].numel(); ++i)
        if (y.t[k][i] != y2.t[k][i]) {
          fail("forward is not deterministic (output of task " + std::to_string(k) + ", element " +
               std::to_string(i) + ")");
          break;
        }
  }

  // Backward twice: every dx must double (accumulate), parameter grads must not (assign).
  layer.backward(ctx, x.in(), y.in(), r.in(), dx.out());
  const detail::TensorSet dx1 = dx;
  auto g = store.grads();
  std::vector<double> dw1(g.data(), g.data() + g.numel());
  layer.backward(ctx, x.in(), y.in(), r.in(), dx.out());
  for (std::size_t k = 0; k < K; ++k)
    for (std::int64_t i = 0; i < dx.t[k].numel(); ++i)
      if (!detail::close(dx.t[k][i], 2.0 * dx1.t[k][i], 1e-9)) {
        fail("backward does not accumulate into dx of task " + std::to_string(k) + " (element " +
             std::to_string(i) + ")");
        break;
      }
  for (std::int64_t i = 0; i < g.numel(); ++i)
    if (!detail::close(g[i], dw1[static_cast<std::size_t>(i)], 1e-9)) {
      fail("backward accumulates parameter gradients instead of assigning (element " +
           std::to_string(i) + ")");
      break;
    }

  // Empty dxs: all skipped (parameter gradients only), then only task 0's skipped.
  layer.backward(ctx, x.in(), y.in(), r.in(),
                 std::vector<TensorView<double>>(K, TensorView<double>{}));
  detail::TensorSet dx3(ins);
  auto partial = dx3.out();
  partial[0] = TensorView<double>{};
  layer.backward(ctx, x.in(), y.in(), r.in(), partial);
  for (std::size_t k = 1; k < K; ++k)
    for (std::int64_t i = 0; i < dx3.t[k].numel(); ++i)
      if (!detail::close(dx3.t[k][i], dx1.t[k][i], 1e-12)) {
        fail("dx of task " + std::to_string(k) + " differs when task 0's dx is empty (element " +
             std::to_string(i) + ")");
        break;
      }

  if (opt.check_gradients) {
    auto loss = [&] {
      layer.forward(ctx, x.in(), y2.out());
      double l = 0.0;
      for (std::size_t k = 0; k < K; ++k)
        for (std::int64_t i = 0; i < y2.t[k].numel(); ++i) l += y2.t[k][i] * r.t[k][i];
      return l;
    };
    for (std::size_t k = 0; k < K; ++k) {
      const std::string name = "dx[task " + std::to_string(k) + "]";
      auto gr =
          check_gradient(name, x.t[k].data(), x.t[k].numel(), dx1.t[k].data(), loss, opt.grad);
      if (!gr.ok) fail("input gradient mismatch for task " + std::to_string(k) + ":\n" + gr.report);
    }
    auto v = store.values();
    for (const auto& e : store.parameters()) {
      auto gr = check_gradient(e.name, v.data() + e.offset, e.shape.numel(), dw1.data() + e.offset,
                               loss, opt.grad);
      if (!gr.ok) fail("parameter gradient mismatch for " + e.name + ":\n" + gr.report);
    }
  }
  res.report = os.str();
  return res;
}

}  // namespace nddr::testing
