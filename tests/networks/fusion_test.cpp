// Fusion layers (NDDR, cross-stitch, sluice, identity): concept conformance, finite-difference
// gradients for K = 1, 2, 3, the accumulate/assign contract, closed forms, parameter counts of
// the paper and errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <nddr/concepts/fusion_layer.hpp>
#include <nddr/fusion/cross_stitch.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/fusion/none.hpp>
#include <nddr/fusion/sluice.hpp>
#include <nddr/testing/fusion_laws.hpp>
#include <string>
#include <vector>

namespace {

using nddr::Cpu;
using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;
using Store = nddr::ParameterStore<double, Cpu>;

static_assert(nddr::concepts::FusionSpec<nddr::NDDR>);
static_assert(nddr::concepts::FusionSpec<nddr::CrossStitch>);
static_assert(nddr::concepts::FusionSpec<nddr::Sluice>);
static_assert(nddr::concepts::FusionSpec<nddr::None>);
static_assert(nddr::concepts::FusionSpec<nddr::Shared<2>>);
static_assert(nddr::concepts::FusionLayer<nddr::NddrLayer<float, Cpu>>);
static_assert(nddr::concepts::FusionLayer<nddr::SluiceLayer<float, Cpu>>);
static_assert(nddr::Shared<3>::shared_stages == 3 && nddr::None::shared_stages == 0);

/// K tensors of one shape with their const and mutable views.
struct Batch {
  std::vector<Tensor<double>> t;
  Batch(std::size_t k, const Shape& s) : t(k, Tensor<double>(s)) {}
  void fill(nddr::Rng& rng) {
    for (auto& x : t)
      for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0);
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

/// Runs `layer` forward on `x` after declare/allocate/initialize; returns the outputs.
template <class F>
Batch run_forward(F& layer, const Batch& x) {
  nddr::Context<Cpu> ctx(1);
  Batch y(layer.tasks(), x.t[0].shape());
  layer.forward(ctx, x.in(), y.out());
  return y;
}

template <class F, class S>
void setup(F& layer, S& store) {
  layer.declare(store, "f");
  store.allocate();
  nddr::Rng rng(1);
  layer.initialize(rng);
}

double max_diff(const Batch& a, const Batch& b) {
  double m = 0.0;
  for (std::size_t k = 0; k < a.t.size(); ++k)
    for (std::int64_t i = 0; i < a.t[k].numel(); ++i)
      m = std::max(m, std::abs(a.t[k][i] - b.t[k][i]));
  return m;
}

const Shape kShape = Shape::nchw(2, 4, 3, 3);

}  // namespace

TEST_CASE("NDDR: gradients and contract for K = 1, 2, 3", "[networks][fusion]") {
  for (std::size_t K : {1u, 2u, 3u}) {
    INFO("K = " << K);
    SECTION("conv + BN + ReLU, K = " + std::to_string(K)) {
      nddr::NddrLayer<double> layer(K, kShape.c());
      const auto r = nddr::testing::check_fusion_laws(layer, kShape);
      INFO(r.report);
      CHECK(r.ok);
    }
    SECTION("conv with bias only, K = " + std::to_string(K)) {
      nddr::NddrLayer<double> layer(K, kShape.c(),
                                    nddr::NddrOptions{}.bias(true).batch_norm(false).relu(false));
      const auto r = nddr::testing::check_fusion_laws(layer, kShape);
      INFO(r.report);
      CHECK(r.ok);
    }
    SECTION("conv + ReLU, K = " + std::to_string(K)) {
      nddr::NddrLayer<double> layer(K, kShape.c(), nddr::NddrOptions{}.batch_norm(false));
      const auto r = nddr::testing::check_fusion_laws(layer, kShape);
      INFO(r.report);
      CHECK(r.ok);
    }
  }
}

TEST_CASE("CrossStitch, Sluice, IdentityFusion: gradients and contract for K = 1, 2, 3",
          "[networks][fusion]") {
  for (std::size_t K : {1u, 2u, 3u}) {
    INFO("K = " << K);
    nddr::CrossStitchLayer<double> cs(K, kShape.c());
    auto r = nddr::testing::check_fusion_laws(cs, kShape);
    INFO(r.report);
    CHECK(r.ok);
    nddr::SluiceLayer<double> sl(K, kShape.c());
    r = nddr::testing::check_fusion_laws(sl, kShape);
    INFO(r.report);
    CHECK(r.ok);
    nddr::SluiceLayer<double> sl4(K, kShape.c(), nddr::SluiceOptions{}.subspace_count(4));
    r = nddr::testing::check_fusion_laws(sl4, kShape);
    INFO(r.report);
    CHECK(r.ok);
    nddr::IdentityFusion<double> id(K, kShape.c());
    r = nddr::testing::check_fusion_laws(id, kShape);
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("NDDR: closed forms", "[networks][fusion]") {
  const auto linear = nddr::NddrOptions{}.batch_norm(false).relu(false);
  nddr::Rng rng(5);
  Batch x(3, kShape);
  x.fill(rng);

  SECTION("diagonal init equals alpha x_own + beta sum(x_others)") {
    nddr::NddrLayer<double> layer(3, kShape.c(), nddr::NddrOptions(linear).diagonal(0.7, 0.2));
    Store store;
    setup(layer, store);
    Batch y = run_forward(layer, x);
    Batch expected(3, kShape);
    for (std::size_t k = 0; k < 3; ++k)
      for (std::int64_t i = 0; i < kShape.numel(); ++i)
        for (std::size_t j = 0; j < 3; ++j) expected.t[k][i] += (j == k ? 0.7 : 0.2) * x.t[j][i];
    CHECK(max_diff(y, expected) < 1e-14);
  }
  SECTION("diagonal (1, 0) is the identity") {
    nddr::NddrLayer<double> layer(3, kShape.c(), nddr::NddrOptions(linear).diagonal(1.0, 0.0));
    Store store;
    setup(layer, store);
    CHECK(max_diff(run_forward(layer, x), x) == 0.0);
  }
  SECTION("scaled identity blocks equal the cross-stitch unit with the same matrix") {
    const double m[3][3] = {{0.3, -1.2, 0.5}, {2.0, 0.1, -0.4}, {0.25, 0.75, 1.5}};
    nddr::NddrLayer<double> layer(3, kShape.c(), linear);
    Store store;
    setup(layer, store);
    const std::int64_t C = kShape.c();
    for (std::size_t k = 0; k < 3; ++k) {
      auto w = layer.weight(k);
      for (std::int64_t i = 0; i < w.numel(); ++i) w[i] = 0.0;
      for (std::int64_t j = 0; j < 3; ++j)
        for (std::int64_t c = 0; c < C; ++c) w[c * 3 * C + j * C + c] = m[k][j];
    }
    nddr::CrossStitchLayer<double> cs(3, C);
    Store cs_store;
    setup(cs, cs_store);
    auto a = cs.alpha();
    for (std::int64_t i = 0; i < 9; ++i) a[i] = m[i / 3][i % 3];
    CHECK(max_diff(run_forward(layer, x), run_forward(cs, x)) < 1e-14);
  }
  SECTION("default options: diagonal (0.9, 0.1) kernels, BN and ReLU") {
    nddr::NddrLayer<double> layer(2, kShape.c());
    Store store;
    setup(layer, store);
    auto w = layer.weight(1);  // (C, 2C, 1, 1)
    CHECK(w.shape() == Shape::nchw(4, 8, 1, 1));
    CHECK(w[0 * 8 + 0] == 0.1);
    CHECK(w[0 * 8 + 4] == 0.9);
    CHECK(w[0 * 8 + 1] == 0.0);
    CHECK(w[3 * 8 + 7] == 0.9);
    CHECK(layer.batch_norm(0).options().eps() == 1e-3);
    CHECK(layer.batch_norm(0).options().momentum() == 0.05);
    CHECK_FALSE(store.find("f.task0.conv.bias").has_value());
    Batch x2(2, kShape);
    x2.fill(rng);
    Batch y = run_forward(layer, x2);
    for (const auto& t : y.t)
      for (std::int64_t i = 0; i < t.numel(); ++i) CHECK(t[i] >= 0.0);
    layer.set_training(false);
    CHECK_FALSE(layer.training());
    CHECK_FALSE(layer.batch_norm(1).training());
  }
  SECTION("xavier: Glorot uniform over the whole kernel") {
    nddr::NddrLayer<double> layer(3, 16, nddr::NddrOptions{}.xavier());
    Store store;
    setup(layer, store);
    const double limit = std::sqrt(6.0 / (48.0 + 16.0));
    auto w = layer.weight(2);
    double max_abs = 0.0;
    for (std::int64_t i = 0; i < w.numel(); ++i) max_abs = std::max(max_abs, std::abs(w[i]));
    CHECK(max_abs <= limit);
    CHECK(max_abs > 0.9 * limit);
    CHECK(w[1] != 0.0);  // off the diagonal: not the diagonal init
  }
}

TEST_CASE("CrossStitch and Sluice: init and closed forms", "[networks][fusion]") {
  nddr::Rng rng(9);
  Batch x(3, kShape);
  x.fill(rng);

  nddr::CrossStitchLayer<double> cs(3, kShape.c());
  Store cs_store;
  setup(cs, cs_store);
  CHECK(cs_store.find("f.alpha").has_value());
  CHECK(cs_store.parameters()[0].shape == Shape({3, 3}));
  CHECK(cs_store.groups()[cs_store.parameters()[0].group].name == "nddr");
  CHECK(cs.alpha()[0] == 0.9);
  CHECK(cs.alpha()[1] == 0.1);
  CHECK(cs.alpha()[4] == 0.9);

  SECTION("cross-stitch: out_k = sum_j A[k][j] x_j") {
    for (std::int64_t i = 0; i < 9; ++i) cs.alpha()[i] = rng.uniform(-1.0, 1.0);
    Batch y = run_forward(cs, x);
    Batch expected(3, kShape);
    for (std::size_t k = 0; k < 3; ++k)
      for (std::int64_t i = 0; i < kShape.numel(); ++i)
        for (std::size_t j = 0; j < 3; ++j)
          expected.t[k][i] += cs.alpha()[static_cast<std::int64_t>(3 * k + j)] * x.t[j][i];
    CHECK(max_diff(y, expected) < 1e-14);
  }
  SECTION("sluice with S = 1 equals cross-stitch") {
    nddr::SluiceLayer<double> sl(3, kShape.c(), nddr::SluiceOptions{}.subspace_count(1));
    Store store;
    setup(sl, store);
    for (std::int64_t i = 0; i < 9; ++i) sl.alpha()[i] = cs.alpha()[i] = rng.uniform(-1.0, 1.0);
    CHECK(max_diff(run_forward(sl, x), run_forward(cs, x)) == 0.0);
  }
  SECTION("sluice init and subspace mixing, K = 2, S = 2") {
    nddr::SluiceLayer<double> sl(2, kShape.c());
    Store store;
    setup(sl, store);
    auto a = sl.alpha();
    CHECK(a.shape() == Shape({4, 4}));
    CHECK(a[0] == 0.9);
    CHECK(a[5] == 0.9);
    CHECK(a[1] == Approx(0.1 / 3.0));
    CHECK(a[15] == 0.9);
    for (std::int64_t i = 0; i < 16; ++i) a[i] = rng.uniform(-1.0, 1.0);
    Batch x2(2, kShape);
    x2.fill(rng);
    Batch y = run_forward(sl, x2);
    // Subspace p = 2 k + s holds channels [2 s, 2 s + 2) of task k.
    Batch expected(2, kShape);
    for (std::int64_t n = 0; n < 2; ++n)
      for (std::int64_t p = 0; p < 4; ++p)
        for (std::int64_t c = 0; c < 2; ++c)
          for (std::int64_t h = 0; h < 3; ++h)
            for (std::int64_t w = 0; w < 3; ++w)
              for (std::int64_t q = 0; q < 4; ++q)
                expected.t[static_cast<std::size_t>(p / 2)](n, (p % 2) * 2 + c, h, w) +=
                    a[p * 4 + q] * x2.t[static_cast<std::size_t>(q / 2)](n, (q % 2) * 2 + c, h, w);
    CHECK(max_diff(y, expected) < 1e-14);
  }
}

TEST_CASE("NDDR: parameter counts of the paper (two tasks, pool1..pool5)", "[networks][fusion]") {
  nddr::ParameterStore<float, Cpu> store;
  const std::int64_t channels[] = {64, 128, 256, 512, 512};
  std::vector<nddr::NddrLayer<float>> layers;
  for (std::int64_t c : channels) layers.emplace_back(2, c);
  for (std::size_t s = 0; s < layers.size(); ++s)
    layers[s].declare(store, "fusion.stage" + std::to_string(s + 1));
  std::int64_t kernels = 0, bn = 0;
  for (const auto& e : store.parameters()) {
    CHECK(store.groups()[e.group].name == "nddr");
    if (e.shape.rank() == 4)
      kernels += e.shape.numel();
    else
      bn += e.shape.numel();
  }
  CHECK(kernels == 2441216);
  CHECK(kernels / 2 == 1220608);
  CHECK(bn == 5888);
  CHECK(store.buffer_count() == 5888);
  CHECK(store.parameter_count() == 2447104);
  CHECK(store.find("fusion.stage1.task0.conv.weight").has_value());
  CHECK(store.find("fusion.stage5.task1.bn.weight").has_value());
  CHECK(store.find("fusion.stage5.task1.bn.bias").has_value());
  CHECK(store.find_buffer("fusion.stage3.task1.bn.running_mean").has_value());
  CHECK(store.find_buffer("fusion.stage3.task0.bn.running_var").has_value());
}

TEST_CASE("Fusion layers: errors", "[networks][fusion]") {
  using Catch::Contains;
  nddr::NddrLayer<double> nddr_layer(2, 4);
  const std::vector<Shape> mismatched{Shape::nchw(2, 4, 3, 3), Shape::nchw(2, 4, 5, 3)};
  CHECK_THROWS_AS(nddr_layer.output_shapes(mismatched), nddr::ShapeError);
  CHECK_THROWS_WITH(nddr_layer.output_shapes(mismatched),
                    Contains("NddrLayer") && Contains("task 1") && Contains("(2, 4, 5, 3)") &&
                        Contains("(2, 4, 3, 3)"));
  const std::vector<Shape> wrong_c{Shape::nchw(2, 6, 3, 3), Shape::nchw(2, 6, 3, 3)};
  CHECK_THROWS_WITH(nddr_layer.output_shapes(wrong_c),
                    Contains("task 0") && Contains("(2, 6, 3, 3)") && Contains("4 channels"));
  const std::vector<Shape> three(3, Shape::nchw(2, 4, 3, 3));
  CHECK_THROWS_WITH(nddr_layer.output_shapes(three), Contains("expected 2 inputs, got 3"));
  CHECK(nddr_layer.output_shapes(std::vector<Shape>(2, Shape::nchw(2, 4, 3, 3))).size() == 2);

  nddr::CrossStitchLayer<double> cs(2, 4);
  CHECK_THROWS_WITH(cs.output_shapes(mismatched),
                    Contains("CrossStitchLayer") && Contains("task 1"));
  nddr::IdentityFusion<double> id(2, 4);
  CHECK_THROWS_WITH(id.output_shapes(mismatched), Contains("IdentityFusion") && Contains("task 1"));

  CHECK_THROWS_AS(nddr::NddrLayer<double>(0, 4), nddr::OptionError);
  CHECK_THROWS_WITH(nddr::CrossStitchLayer<double>(0, 4), Contains("tasks must be >= 1, got 0"));
  CHECK_THROWS_AS(nddr::SluiceLayer<double>(0, 4), nddr::OptionError);
  CHECK_THROWS_AS(nddr::IdentityFusion<double>(0, 4), nddr::OptionError);
  CHECK_THROWS_WITH(nddr::NddrLayer<double>(2, 0), Contains("channels must be >= 1, got 0"));
  CHECK_THROWS_WITH(nddr::SluiceLayer<double>(2, 6, nddr::SluiceOptions{}.subspace_count(4)),
                    Contains("SluiceLayer") && Contains("channels 6") &&
                        Contains("not divisible by SluiceOptions.subspaces 4"));
  CHECK_THROWS_AS(nddr::SluiceLayer<double>(2, 6, nddr::SluiceOptions{}.subspace_count(0)),
                  nddr::OptionError);
  CHECK_THROWS_WITH(nddr::NddrLayer<double>(
                        2, 4, nddr::NddrOptions{}.batch_norm(nddr::BatchNormOptions{}.eps(0))),
                    Contains("NddrLayer") && Contains("eps"));

  // forward checks the views too.
  Store store;
  setup(cs, store);
  nddr::Context<Cpu> ctx(1);
  Batch x(2, Shape::nchw(1, 4, 2, 2)), y(2, Shape::nchw(1, 4, 2, 3));
  CHECK_THROWS_WITH(cs.forward(ctx, x.in(), y.out()),
                    Contains("output of task 0") && Contains("(1, 4, 2, 3)"));
}

namespace {

/// Runs the float and double instantiations of `Layer` on the same data: outputs and input
/// gradients agree to float precision.
template <template <class, class> class Layer, class Options>
double float_vs_double(const Options& opt) {
  const Shape s = Shape::nchw(2, 4, 3, 3);
  Layer<double, Cpu> ld(2, 4, opt);
  Layer<float, Cpu> lf(2, 4, opt);
  Store sd;
  nddr::ParameterStore<float, Cpu> sf;
  setup(ld, sd);
  setup(lf, sf);
  nddr::Context<Cpu> ctx(2);
  std::vector<Tensor<double>> xd(2, Tensor<double>(s)), yd = xd, dxd = xd;
  std::vector<Tensor<float>> xf(2, Tensor<float>(s)), yf = xf, dxf = xf;
  nddr::Rng rng(3);
  for (std::size_t k = 0; k < 2; ++k)
    for (std::int64_t i = 0; i < s.numel(); ++i)
      xf[k][i] = static_cast<float>(xd[k][i] = rng.uniform(-1.0, 1.0));
  std::vector<TensorView<const double>> xdv{xd[0].cview(), xd[1].cview()},
      ydc{yd[0].cview(), yd[1].cview()};
  std::vector<TensorView<double>> ydv{yd[0].view(), yd[1].view()},
      dxdv{dxd[0].view(), dxd[1].view()};
  std::vector<TensorView<const float>> xfv{xf[0].cview(), xf[1].cview()},
      yfc{yf[0].cview(), yf[1].cview()};
  std::vector<TensorView<float>> yfv{yf[0].view(), yf[1].view()},
      dxfv{dxf[0].view(), dxf[1].view()};
  ld.forward(ctx, xdv, ydv);
  lf.forward(ctx, xfv, yfv);
  ld.backward(ctx, xdv, ydc, xdv, dxdv);  // dy = x
  lf.backward(ctx, xfv, yfc, xfv, dxfv);
  double m = 0.0;
  for (std::size_t k = 0; k < 2; ++k)
    for (std::int64_t i = 0; i < s.numel(); ++i)
      m = std::max({m, std::abs(yd[k][i] - yf[k][i]), std::abs(dxd[k][i] - dxf[k][i])});
  return m;
}

}  // namespace

TEST_CASE("Fusion layers: float agrees with double", "[networks][fusion]") {
  CHECK(float_vs_double<nddr::NddrLayer>(nddr::NddrOptions{}) < 1e-4);
  CHECK(float_vs_double<nddr::CrossStitchLayer>(nddr::CrossStitchOptions{}) < 1e-5);
  CHECK(float_vs_double<nddr::SluiceLayer>(nddr::SluiceOptions{}) < 1e-5);
}
