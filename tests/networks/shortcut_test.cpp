// ShortcutModule: finite-difference gradients (inputs and parameters), dx accumulation,
// the VGG16 parameter count of paper-spec §9.2, naming, groups and errors.
#include <catch2/catch.hpp>
#include <cstdint>
#include <nddr/fusion/shortcut.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <span>
#include <string>
#include <vector>

namespace {

using nddr::Shape;

nddr::Tensor<double> copy_of(nddr::TensorView<const double> v) {
  nddr::Tensor<double> t(v.shape());
  for (std::int64_t i = 0; i < v.numel(); ++i) t[i] = v[i];
  return t;
}

void fill_uniform(nddr::TensorView<double> t, nddr::Rng& rng) {
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(-1.0, 1.0);
}

/// A small three-stage module with inputs, a fixed random upstream gradient r and the loss
/// sum(y * r), so dy = r.
struct Fixture {
  std::vector<Shape> shapes{Shape::nchw(2, 3, 9, 9), Shape::nchw(2, 4, 5, 5),
                            Shape::nchw(2, 5, 3, 3)};
  nddr::ShortcutModule<double> module{{3, 4, 5}, 6};
  nddr::ParameterStore<double> store;
  nddr::Context<nddr::Cpu> ctx{1};
  std::vector<nddr::Tensor<double>> xs;
  nddr::Tensor<double> y, r;

  Fixture() {
    module.declare(store, "shortcut.task0");
    store.allocate();
    nddr::Rng rng(11);
    module.initialize(rng);
    for (const auto& s : shapes) {
      xs.emplace_back(s);
      fill_uniform(xs.back().view(), rng);
    }
    const Shape out = module.output_shape(shapes);
    y = nddr::Tensor<double>(out);
    r = nddr::Tensor<double>(out);
    fill_uniform(r.view(), rng);
    // Non-trivial BN affine parameters, so their gradients are exercised generically.
    for (const char* name : {"shortcut.task0.bn.weight", "shortcut.task0.bn.bias"}) {
      auto v = store.value(*store.find(name));
      for (std::int64_t i = 0; i < v.numel(); ++i) v[i] = rng.uniform(0.5, 1.5);
    }
  }

  std::vector<nddr::TensorView<const double>> inputs() const {
    std::vector<nddr::TensorView<const double>> v;
    for (const auto& x : xs) v.push_back(x.cview());
    return v;
  }

  double loss() {
    const auto in = inputs();
    module.forward(ctx, in, y.view());
    double l = 0.0;
    for (std::int64_t i = 0; i < y.numel(); ++i) l += y[i] * r[i];
    return l;
  }

  /// forward + backward into `dxs` (accumulated), parameter gradients into the store.
  void backward(std::vector<nddr::Tensor<double>>& dxs) {
    loss();
    std::vector<nddr::TensorView<double>> d;
    for (auto& dx : dxs) d.push_back(dx.view());
    module.backward(ctx, inputs(), y.cview(), r.cview(), d);
  }
};

}  // namespace

TEST_CASE("ShortcutModule: output shape, parameter names and group", "[networks][shortcut]") {
  Fixture f;
  CHECK(f.module.output_shape(f.shapes) == Shape::nchw(2, 6, 3, 3));
  CHECK(f.module.concat_channels() == 12);
  CHECK(f.store.value(*f.store.find("shortcut.task0.conv.weight")).shape() ==
        Shape::nchw(6, 12, 1, 1));
  CHECK(f.store.find("shortcut.task0.bn.weight").has_value());
  CHECK(f.store.find("shortcut.task0.bn.bias").has_value());
  CHECK(f.store.find_buffer("shortcut.task0.bn.running_mean").has_value());
  CHECK(f.store.find_buffer("shortcut.task0.bn.running_var").has_value());
  CHECK_FALSE(f.store.find("shortcut.task0.conv.bias").has_value());
  // The module declares into the store's current group (Network chooses it, see
  // multitask_test.cpp): "default" here, the group of an enclosing GroupScope otherwise.
  for (const auto& e : f.store.parameters()) {
    INFO(e.name);
    CHECK(f.store.groups()[e.group].name == "default");
  }
  nddr::ParameterStore<double> scoped;
  {
    nddr::ParameterStore<double>::GroupScope group(scoped, "nddr");
    f.module.declare(scoped, "shortcut.task1");
  }
  REQUIRE(scoped.parameters().size() == 3);
  for (const auto& e : scoped.parameters()) {
    INFO(e.name);
    CHECK(scoped.groups()[e.group].name == "nddr");
  }
  CHECK(f.module.options().batch_norm_options.eps() == Approx(1e-3));
  CHECK(f.module.training());
  f.module.set_training(false);
  CHECK_FALSE(f.module.training());
}

TEST_CASE("ShortcutModule: finite-difference gradients of inputs and parameters",
          "[networks][shortcut]") {
  Fixture f;
  std::vector<nddr::Tensor<double>> dxs;
  for (const auto& s : f.shapes) dxs.emplace_back(s);
  f.backward(dxs);
  // loss() re-runs forward only, so the store's gradients stay those of the unperturbed point.
  const nddr::Tensor<double> grads = copy_of(f.store.grads());
  const nddr::testing::GradCheckOptions opt{1e-6, 1e-5, 1e-7, 1000, 3};
  for (std::size_t s = 0; s < f.xs.size(); ++s) {
    auto res = nddr::testing::check_gradient(
        std::string("x").append(std::to_string(s)), f.xs[s].data(), f.xs[s].numel(), dxs[s].data(),
        [&] { return f.loss(); }, opt);
    INFO(res.report);
    CHECK(res.ok);
    CHECK(res.checked == f.xs[s].numel());
  }
  for (const auto& e : f.store.parameters()) {
    const auto id = *f.store.find(e.name);
    auto res = nddr::testing::check_gradient(
        e.name, f.store.value(id).data(), e.shape.numel(), grads.data() + e.offset,
        [&] { return f.loss(); }, opt);
    INFO(res.report);
    CHECK(res.ok);
  }
}

TEST_CASE("ShortcutModule: inference mode gradients and skipped inputs", "[networks][shortcut]") {
  Fixture f;
  f.module.set_training(false);
  auto mean = f.store.buffer(*f.store.find_buffer("shortcut.task0.bn.running_mean"));
  auto var = f.store.buffer(*f.store.find_buffer("shortcut.task0.bn.running_var"));
  for (std::int64_t i = 0; i < mean.numel(); ++i) {
    mean[i] = 0.1 * static_cast<double>(i);
    var[i] = 0.5 + 0.2 * static_cast<double>(i);
  }
  // Stage 1 needs no gradient (empty view carrying nothing but null data).
  std::vector<nddr::Tensor<double>> dxs;
  for (const auto& s : f.shapes) dxs.emplace_back(s);
  f.loss();
  const auto in = f.inputs();
  std::vector<nddr::TensorView<double>> d{dxs[0].view(), nddr::TensorView<double>{}, dxs[2].view()};
  f.module.backward(f.ctx, in, f.y.cview(), f.r.cview(), d);
  for (std::size_t s : {std::size_t{0}, std::size_t{2}}) {
    auto res =
        nddr::testing::check_gradient(std::string("x").append(std::to_string(s)), f.xs[s].data(),
                                      f.xs[s].numel(), dxs[s].data(), [&] { return f.loss(); });
    INFO(res.report);
    CHECK(res.ok);
  }
}

TEST_CASE("ShortcutModule: dx accumulates, parameter gradients are assigned",
          "[networks][shortcut]") {
  Fixture f;
  std::vector<nddr::Tensor<double>> once, twice;
  for (const auto& s : f.shapes) {
    once.emplace_back(s);
    twice.emplace_back(s);
  }
  f.backward(once);
  const nddr::Tensor<double> grads_once = copy_of(f.store.grads());
  f.backward(twice);
  f.backward(twice);
  for (std::size_t s = 0; s < f.shapes.size(); ++s)
    for (std::int64_t i = 0; i < once[s].numel(); ++i)
      REQUIRE(twice[s][i] == Approx(2.0 * once[s][i]).margin(1e-14));
  const auto grads = f.store.grads();
  for (std::int64_t i = 0; i < grads.numel(); ++i)
    REQUIRE(grads[i] == Approx(grads_once[i]).margin(1e-14));
}

TEST_CASE("ShortcutModule: VGG16 shortcut parameter count (paper-spec 9.2)",
          "[networks][shortcut]") {
  nddr::ShortcutModule<float> m({64, 128, 256, 512, 512});
  nddr::ParameterStore<float> store;
  m.declare(store, "shortcut.task0");
  store.allocate();
  CHECK(m.concat_channels() == 1472);
  CHECK(m.out_channels() == 512);
  CHECK(store.value(*store.find("shortcut.task0.conv.weight")).numel() == 753664);
  CHECK(store.parameter_count() == 753664 + 1024);
  CHECK(store.buffer_count() == 1024);
  // Training sizes of paper-spec §3.2: pool1 161x161, pool2 81x81, pool3..pool5 41x41.
  const std::vector<Shape> in{Shape::nchw(1, 64, 161, 161), Shape::nchw(1, 128, 81, 81),
                              Shape::nchw(1, 256, 41, 41), Shape::nchw(1, 512, 41, 41),
                              Shape::nchw(1, 512, 41, 41)};
  CHECK(m.output_shape(in) == Shape::nchw(1, 512, 41, 41));
}

TEST_CASE("ShortcutModule: errors", "[networks][shortcut]") {
  CHECK_THROWS_AS(nddr::ShortcutModule<double>(std::vector<std::int64_t>{}), nddr::OptionError);
  CHECK_THROWS_WITH(nddr::ShortcutModule<double>({3, 0}), Catch::Contains("stage_channels[1]"));
  Fixture f;
  const std::vector<Shape> two{f.shapes[0], f.shapes[1]};
  CHECK_THROWS_WITH(f.module.output_shape(two), Catch::Contains("expected 3 stage outputs, got 2"));
  std::vector<Shape> bad = f.shapes;
  bad[1] = Shape::nchw(2, 7, 5, 5);
  CHECK_THROWS_WITH(f.module.output_shape(bad),
                    Catch::Contains("stage 1 output has shape (2, 7, 5, 5)") &&
                        Catch::Contains("expected (N, 4, H, W)"));
  bad = f.shapes;
  bad[0] = Shape::nchw(3, 3, 9, 9);
  CHECK_THROWS_WITH(f.module.output_shape(bad), Catch::Contains("stage 0"));
  CHECK_THROWS_AS(f.module.output_shape(bad), nddr::ShapeError);

  const auto in = f.inputs();
  nddr::Tensor<double> wrong_y(Shape::nchw(2, 6, 5, 5));
  CHECK_THROWS_WITH(f.module.forward(f.ctx, in, wrong_y.view()), Catch::Contains("(2, 6, 3, 3)"));
  const std::vector<nddr::TensorView<const double>> short_in(in.begin(), in.begin() + 2);
  CHECK_THROWS_WITH(f.module.forward(f.ctx, short_in, f.y.view()),
                    Catch::Contains("expected 3 stage outputs, got 2"));

  nddr::ShortcutModule<double> fresh({3, 4, 5}, 6);
  std::vector<nddr::TensorView<double>> none(3);
  CHECK_THROWS_WITH(fresh.backward(f.ctx, in, f.y.cview(), f.r.cview(), none),
                    Catch::Contains("call forward first"));
  f.loss();
  std::vector<nddr::TensorView<double>> two_dx(2);
  CHECK_THROWS_WITH(f.module.backward(f.ctx, in, f.y.cview(), f.r.cview(), two_dx),
                    Catch::Contains("3 inputs but 2 input gradients"));
}
