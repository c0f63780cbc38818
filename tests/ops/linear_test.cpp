// Linear op and layer: laws kit (rank 4, rank 2, no bias), F.linear reference values and
// gradients, Glorot initialisation, parameter names, shape and option errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <nddr/ops/linear.hpp>
#include <nddr/core/parameter_store.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/layers/linear.hpp>
#include <nddr/testing/layer_laws.hpp>
#include <vector>

namespace {

using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;

void require_close(const Tensor<double>& actual, const Tensor<double>& expected,
                   double offset = 0.0) {
  REQUIRE(actual.shape() == expected.shape());
  for (std::int64_t i = 0; i < actual.numel(); ++i) {
    INFO("element " << i);
    REQUIRE(actual[i] - offset == Approx(expected[i]).epsilon(1e-9).margin(1e-12));
  }
}

nddr::io::SafetensorsFile reference() {
  return nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/misc_ops.safetensors");
}

}  // namespace

TEST_CASE("Linear: layer laws for rank-4 and rank-2 inputs, with and without bias",
          "[ops][linear]") {
  SECTION("rank 4 with bias") {
    nddr::Linear<double> layer(12, 5);
    auto r = nddr::testing::check_layer_laws(layer, Shape::nchw(3, 2, 2, 3));
    INFO(r.report);
    CHECK(r.ok);
  }
  SECTION("rank 2 with bias") {
    nddr::Linear<double> layer(6, 4);
    auto r = nddr::testing::check_layer_laws(layer, Shape{5, 6});
    INFO(r.report);
    CHECK(r.ok);
  }
  SECTION("rank 4 without bias") {
    nddr::Linear<double> layer(8, 3, nddr::LinearOptions{}.bias(false));
    auto r = nddr::testing::check_layer_laws(layer, Shape::nchw(2, 8, 1, 1));
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("linear ops: match F.linear forward and gradients", "[ops][linear]") {
  const auto f = reference();
  nddr::Context<nddr::Cpu> ctx(2);

  SECTION("rank 4 input, with bias") {
    const auto x = f.tensor<double>("linear4.x"), w = f.tensor<double>("linear4.w"),
               b = f.tensor<double>("linear4.b"), dy = f.tensor<double>("linear4.dy");
    Tensor<double> y(Shape::nchw(3, 5, 1, 1));
    nddr::ops::linear_forward(ctx, x.cview(), w.cview(), b.cview(), y.view());
    require_close(y, f.tensor<double>("linear4.y"));

    Tensor<double> dx(x.shape(), 2.0), dw(w.shape(), 9.0), db(b.shape(), 9.0);
    nddr::ops::linear_backward(ctx, x.cview(), w.cview(), dy.cview(), dx.view(), dw.view(),
                               db.view());
    require_close(dx, f.tensor<double>("linear4.dx"), 2.0);  // accumulated
    require_close(dw, f.tensor<double>("linear4.dw"));       // assigned
    require_close(db, f.tensor<double>("linear4.db"));
  }
  SECTION("rank 2 input, no bias (empty b and db)") {
    const auto x = f.tensor<double>("linear2.x"), w = f.tensor<double>("linear2.w"),
               dy = f.tensor<double>("linear2.dy");
    Tensor<double> y(Shape{4, 3});
    nddr::ops::linear_forward(ctx, x.cview(), w.cview(), TensorView<const double>{}, y.view());
    require_close(y, f.tensor<double>("linear2.y"));
    Tensor<double> dx(x.shape()), dw(w.shape());
    nddr::ops::linear_backward(ctx, x.cview(), w.cview(), dy.cview(), dx.view(), dw.view(),
                               TensorView<double>{});
    require_close(dx, f.tensor<double>("linear2.dx"));
    require_close(dw, f.tensor<double>("linear2.dw"));
  }
}

TEST_CASE("Linear: parameter names, store round trip, float", "[ops][linear]") {
  const auto f = reference();
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::ParameterStore<double> store;
  nddr::Linear<double> layer(12, 5,
                             nddr::LinearOptions{}.weight_group("fc8_w").bias_group("fc8_b"));
  layer.declare(store, "head.fc");
  store.allocate();
  const auto wid = store.find("head.fc.weight");
  const auto bid = store.find("head.fc.bias");
  REQUIRE(wid);
  REQUIRE(bid);
  CHECK(store.value(*wid).shape() == Shape({5, 12}));
  CHECK(store.groups()[store.parameters()[wid->index].group].name == "fc8_w");
  CHECK(store.groups()[store.parameters()[bid->index].group].name == "fc8_b");
  const auto w = f.tensor<double>("linear4.w"), b = f.tensor<double>("linear4.b");
  std::copy(w.data(), w.data() + w.numel(), store.value(*wid).data());
  std::copy(b.data(), b.data() + b.numel(), store.value(*bid).data());
  const auto x = f.tensor<double>("linear4.x");
  Tensor<double> y(layer.output_shape(x.shape()));
  layer.forward(ctx, x.cview(), y.view());
  require_close(y, f.tensor<double>("linear4.y"));

  nddr::ParameterStore<float> fstore;
  nddr::Linear<float> flayer(4, 2);
  flayer.declare(fstore, "fc");
  fstore.allocate();
  nddr::Rng rng(1);
  flayer.initialize(rng);
  Tensor<float> fx(Shape{3, 4}, 1.f), fy(Shape{3, 2}), fdx(fx.shape());
  flayer.forward(ctx, fx.cview(), fy.view());
  flayer.backward(ctx, fx.cview(), fy.cview(), fy.cview(), fdx.view());
  const auto fw = fstore.value(*fstore.find("fc.weight"));
  CHECK(fy[0] == Approx(fw[0] + fw[1] + fw[2] + fw[3]).epsilon(1e-6));
}

TEST_CASE("Linear: Glorot-uniform weights, zero bias", "[ops][linear]") {
  nddr::ParameterStore<double> store;
  nddr::Linear<double> layer(40, 10);
  layer.declare(store, "fc");
  store.allocate();
  store.values()[0] = 5.0;  // initialize must overwrite
  nddr::Rng rng(3);
  layer.initialize(rng);
  const double a = std::sqrt(6.0 / 50.0);
  const auto w = layer.weight();
  double max_abs = 0.0, mean = 0.0;
  for (std::int64_t i = 0; i < w.numel(); ++i) {
    REQUIRE(std::abs(w[i]) <= a);
    max_abs = std::max(max_abs, std::abs(w[i]));
    mean += w[i] / static_cast<double>(w.numel());
  }
  CHECK(max_abs > 0.9 * a);
  CHECK(std::abs(mean) < 0.1 * a);
  const auto b = layer.bias();
  for (std::int64_t i = 0; i < b.numel(); ++i) CHECK(b[i] == 0.0);
}

TEST_CASE("Linear: shape and option errors", "[ops][linear]") {
  nddr::Linear<double> layer(12, 5);
  CHECK(layer.output_shape(Shape::nchw(3, 3, 2, 2)) == Shape::nchw(3, 5, 1, 1));
  CHECK(layer.output_shape(Shape{7, 12}) == Shape({7, 5}));
  CHECK_THROWS_AS(layer.output_shape(Shape::nchw(3, 2, 2, 2)), nddr::ShapeError);
  CHECK_THROWS_WITH(layer.output_shape(Shape::nchw(3, 2, 2, 2)),
                    Catch::Contains("nddr::Linear") && Catch::Contains("(3, 2, 2, 2)") &&
                        Catch::Contains("8 features") && Catch::Contains("expected 12"));
  CHECK_THROWS_WITH(layer.output_shape(Shape{3, 4, 1}), Catch::Contains("rank 2"));
  CHECK_THROWS_AS(nddr::Linear<double>(0, 5), nddr::OptionError);
  CHECK_THROWS_WITH(nddr::Linear<double>(4, -1), Catch::Contains("out_features"));

  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> x(Shape{2, 6}), w(Shape{3, 5}), y(Shape{2, 3});
  CHECK_THROWS_WITH(
      nddr::ops::linear_forward(ctx, x.cview(), w.cview(), TensorView<const double>{}, y.view()),
      Catch::Contains("linear_forward") && Catch::Contains("(3, 5)") &&
          Catch::Contains("6 features"));
  Tensor<double> w2(Shape{3, 6}), bad_y(Shape::nchw(2, 3, 1, 1)), bad_b(Shape{4});
  CHECK_THROWS_WITH(nddr::ops::linear_forward(ctx, x.cview(), w2.cview(),
                                              TensorView<const double>{}, bad_y.view()),
                    Catch::Contains("(2, 3, 1, 1)") && Catch::Contains("expected (2, 3)"));
  CHECK_THROWS_WITH(nddr::ops::linear_forward(ctx, x.cview(), w2.cview(), bad_b.cview(), y.view()),
                    Catch::Contains("bias") && Catch::Contains("(4)"));
}
