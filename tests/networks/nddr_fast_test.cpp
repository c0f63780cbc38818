// The CPU NddrLayer never concatenates its inputs (K accumulated GEMMs straight from the task
// buffers). These tests compare it with the concatenation formulation written out here with
// ops::concat_channels_* and the layer's own Conv2d / BatchNorm2d sub-layers (same parameters):
// outputs, every parameter gradient and the accumulated input gradients, for K = 2 and 3, odd
// sizes, spatial sizes that span several thread ranges and cache blocks, 1 and 2 threads, in
// double within 1e-12.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nddr/ops/activation.hpp>
#include <nddr/ops/concat.hpp>
#include <nddr/fusion/nddr.hpp>
#include <string>
#include <vector>

namespace {

using nddr::Cpu;
using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;

std::vector<Tensor<double>> random_set(std::size_t k, const Shape& s, nddr::Rng& rng) {
  std::vector<Tensor<double>> v;
  for (std::size_t i = 0; i < k; ++i) {
    v.emplace_back(s);
    for (std::int64_t e = 0; e < s.numel(); ++e) v.back()[e] = rng.uniform(-1.0, 1.0);
  }
  return v;
}

std::vector<TensorView<const double>> in(const std::vector<Tensor<double>>& v) {
  std::vector<TensorView<const double>> r;
  for (const auto& t : v) r.push_back(t.cview());
  return r;
}

std::vector<TensorView<double>> out(std::vector<Tensor<double>>& v) {
  std::vector<TensorView<double>> r;
  for (auto& t : v) r.push_back(t.view());
  return r;
}

// max |a - b| / (1 + max |b|) over two equally shaped sets.
double rel_diff(const std::vector<Tensor<double>>& a, const std::vector<Tensor<double>>& b) {
  double d = 0.0, m = 0.0;
  for (std::size_t k = 0; k < a.size(); ++k)
    for (std::int64_t i = 0; i < a[k].numel(); ++i) {
      d = std::max(d, std::abs(a[k][i] - b[k][i]));
      m = std::max(m, std::abs(b[k][i]));
    }
  return d / (1.0 + m);
}

double rel_diff(TensorView<const double> a, TensorView<const double> b) {
  double d = 0.0, m = 0.0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    d = std::max(d, std::abs(a[i] - b[i]));
    m = std::max(m, std::abs(b[i]));
  }
  return d / (1.0 + m);
}

// The concat formulation: X = [x_1; ...; x_K], y_k = ReLU(BN_k(conv_k(X))), with the layer's own
// sub-layers. Returns y; `backward_reference` then gives the parameter gradients (in the store)
// and dX split into the tasks' dx (accumulated into `dxs`, empty ones skipped).
struct Reference {
  nddr::NddrLayer<double>& layer;
  Shape s;
  Tensor<double> concat;
  std::vector<Tensor<double>> z, b;

  std::vector<Tensor<double>> forward(nddr::Context<Cpu>& ctx,
                                      const std::vector<Tensor<double>>& xs) {
    const auto K = static_cast<std::int64_t>(layer.tasks());
    const auto& opt = layer.options();
    concat = Tensor<double>(Shape::nchw(s.n(), K * s.c(), s.h(), s.w()));
    const auto xv = in(xs);
    nddr::ops::concat_channels_forward<double>(ctx, xv, concat.view());
    std::vector<Tensor<double>> ys;
    z.clear();
    b.clear();
    for (std::size_t k = 0; k < layer.tasks(); ++k) {
      z.emplace_back(s);
      b.emplace_back(s);
      ys.emplace_back(s);
      layer.conv(k).forward(ctx, concat.cview(), z[k].view());
      if (opt.use_batch_norm)
        layer.batch_norm(k).forward(ctx, z[k].cview(), b[k].view());
      else
        b[k] = z[k];
      if (opt.use_relu)
        nddr::ops::relu_forward<double>(ctx, b[k].cview(), ys[k].view());
      else
        ys[k] = b[k];
    }
    return ys;
  }

  void backward(nddr::Context<Cpu>& ctx, const std::vector<Tensor<double>>& dys,
                std::vector<TensorView<double>> dxs) {
    const auto& opt = layer.options();
    Tensor<double> dconcat(concat.shape());
    for (std::size_t k = 0; k < layer.tasks(); ++k) {
      Tensor<double> db(s), dz(s);  // (N, C, H, W)
      if (opt.use_relu)
        nddr::ops::relu_backward<double>(ctx, b[k].cview(), dys[k].cview(), db.view());
      else
        db = dys[k];
      if (opt.use_batch_norm)
        // With ReLU the layer's BN carries it fused (BatchNormOptions::relu): b is then already
        // ReLU(BN(z)), and the separate ReLU passes here are idempotent on top of it.
        layer.batch_norm(k).backward(ctx, z[k].cview(), b[k].cview(), db.cview(), dz.view());
      else
        dz = db;
      layer.conv(k).backward(ctx, concat.cview(), {}, dz.cview(), dconcat.view());
    }
    std::vector<TensorView<double>> parts;
    for (auto& d : dxs) parts.push_back(d.empty() ? TensorView<double>(nullptr, s) : d);
    nddr::ops::concat_channels_backward<double>(ctx, dconcat.cview(), parts);
  }
};

struct Case {
  std::size_t tasks;
  Shape shape;
  nddr::NddrOptions opt;
  const char* name;
};

// Runs the fast layer and the reference on the same parameters and inputs and compares
// everything; `skip` (< tasks) leaves that task's dx empty.
void compare(const Case& c, int threads, bool training, std::size_t skip) {
  CAPTURE(c.name, c.tasks, c.shape.str(), threads, training, skip);
  nddr::NddrLayer<double> layer(c.tasks, c.shape.c(), c.opt);
  nddr::ParameterStore<double, Cpu> store;
  layer.declare(store, "f");
  store.allocate();
  nddr::Rng rng(17);
  layer.initialize(rng);
  // Random kernels (not the diagonal init) so every block of W_k matters; BN's affine too.
  for (std::int64_t i = 0; i < store.values().numel(); ++i) store.values()[i] = rng.uniform(-1.0, 1.0);
  layer.set_training(training);
  nddr::Context<Cpu> ctx(threads);

  const auto xs = random_set(c.tasks, c.shape, rng);
  const auto dys = random_set(c.tasks, c.shape, rng);
  const auto dx0 = random_set(c.tasks, c.shape, rng);  // prior contents: dx is accumulated

  // Fast path.
  std::vector<Tensor<double>> ys(c.tasks, Tensor<double>(c.shape));
  {
    auto yv = out(ys);
    layer.forward(ctx, in(xs), yv);
  }
  auto dx_fast = dx0;
  {
    auto dxv = out(dx_fast);
    if (skip < c.tasks) dxv[skip] = {};
    layer.backward(ctx, in(xs), in(ys), in(dys), dxv);
  }
  Tensor<double> g_fast(store.grads().shape());
  std::copy(store.grads().data(), store.grads().data() + g_fast.numel(), g_fast.data());

  // Concat formulation on the same store.
  store.zero_grad();
  Reference ref{layer, c.shape, {}, {}, {}};
  const auto y_ref = ref.forward(ctx, xs);
  auto dx_ref = dx0;
  {
    auto dxv = out(dx_ref);
    if (skip < c.tasks) dxv[skip] = {};
    ref.backward(ctx, dys, dxv);
  }

  CHECK(rel_diff(ys, y_ref) < 1e-12);
  CHECK(rel_diff(dx_fast, dx_ref) < 1e-12);
  CHECK(rel_diff(g_fast.cview(), store.grads()) < 1e-12);
  if (skip < c.tasks) CHECK(rel_diff(dx_fast[skip].cview(), dx0[skip].cview()) == 0.0);
  // Every gradient is non-trivial, so a path that dropped a block would fail.
  double gmax = 0.0;
  for (std::int64_t i = 0; i < g_fast.numel(); ++i) gmax = std::max(gmax, std::abs(g_fast[i]));
  CHECK(gmax > 1e-3);
}

std::vector<Case> cases() {
  const auto linear = nddr::NddrOptions{}.batch_norm(false).relu(false);
  return {
      {2, Shape::nchw(2, 5, 7, 9), nddr::NddrOptions{}, "BN + ReLU"},
      {3, Shape::nchw(3, 5, 7, 9), nddr::NddrOptions{}, "BN + ReLU"},
      {3, Shape::nchw(2, 3, 1, 1), nddr::NddrOptions{}.bias(true), "bias + BN + ReLU, 1x1"},
      {2, Shape::nchw(2, 3, 5, 3), nddr::NddrOptions(linear).bias(true), "bias only"},
      {3, Shape::nchw(2, 7, 3, 5), nddr::NddrOptions{}.batch_norm(false), "ReLU only"},
      {2, Shape::nchw(2, 7, 3, 5), nddr::NddrOptions{}.relu(false), "BN only"},
      // Several column ranges and cache blocks; K C = 120 splits across tasks for dW.
      {3, Shape::nchw(2, 40, 37, 41), nddr::NddrOptions{}, "BN + ReLU, large"},
      {2, Shape::nchw(1, 48, 45, 47), nddr::NddrOptions(linear).bias(true), "bias only, large"},
  };
}

}  // namespace

TEST_CASE("NDDR fast path equals the concat formulation (training)", "[networks][nddr-fast]") {
  for (const Case& c : cases())
    for (int threads : {1, 2}) compare(c, threads, true, c.tasks);
}

TEST_CASE("NDDR fast path equals the concat formulation (inference BN)", "[networks][nddr-fast]") {
  for (const Case& c : cases()) compare(c, 2, false, c.tasks);
}

TEST_CASE("NDDR fast path: an empty dx is skipped, the others accumulate",
          "[networks][nddr-fast]") {
  for (const Case& c : cases())
    for (std::size_t skip = 0; skip < c.tasks; ++skip) compare(c, 2, true, skip);
}

TEST_CASE("NDDR fast path: thread counts agree", "[networks][nddr-fast]") {
  const Case c{3, Shape::nchw(2, 40, 37, 41), nddr::NddrOptions{}.bias(true), "bias + BN + ReLU"};
  std::vector<Tensor<double>> y[2], dx[2];
  Tensor<double> g[2];
  for (int t = 0; t < 2; ++t) {
    nddr::NddrLayer<double> layer(c.tasks, c.shape.c(), c.opt);
    nddr::ParameterStore<double, Cpu> store;
    layer.declare(store, "f");
    store.allocate();
    nddr::Rng rng(5);
    layer.initialize(rng);
    for (std::int64_t i = 0; i < store.values().numel(); ++i) store.values()[i] = rng.uniform(-1.0, 1.0);
    nddr::Context<Cpu> ctx(t + 1);
    const auto xs = random_set(c.tasks, c.shape, rng);
    const auto dys = random_set(c.tasks, c.shape, rng);
    y[t].assign(c.tasks, Tensor<double>(c.shape));
    dx[t].assign(c.tasks, Tensor<double>(c.shape));
    auto yv = out(y[t]);
    layer.forward(ctx, in(xs), yv);
    auto dxv = out(dx[t]);
    layer.backward(ctx, in(xs), in(y[t]), in(dys), dxv);
    g[t] = Tensor<double>(store.grads().shape());
    std::copy(store.grads().data(), store.grads().data() + g[t].numel(), g[t].data());
  }
  CHECK(rel_diff(y[0], y[1]) < 1e-12);
  CHECK(rel_diff(dx[0], dx[1]) < 1e-12);
  CHECK(rel_diff(g[0].cview(), g[1].cview()) < 1e-12);
}

TEST_CASE("NDDR fast path: backward with ReLU needs forward's outputs", "[networks][nddr-fast]") {
  const Shape s = Shape::nchw(1, 4, 3, 3);
  nddr::NddrLayer<double> layer(2, 4);
  nddr::ParameterStore<double, Cpu> store;
  layer.declare(store, "f");
  store.allocate();
  nddr::Rng rng(3);
  layer.initialize(rng);
  nddr::Context<Cpu> ctx(1);
  auto xs = random_set(2, s, rng);
  std::vector<Tensor<double>> ys(2, Tensor<double>(s)), dxs(2, Tensor<double>(s));
  auto yv = out(ys);
  layer.forward(ctx, in(xs), yv);
  auto dxv = out(dxs);
  const std::vector<TensorView<const double>> none(2);
  CHECK_THROWS_WITH(layer.backward(ctx, in(xs), none, in(xs), dxv),
                    Catch::Contains("NddrLayer") && Catch::Contains("ReLU mask"));
}
