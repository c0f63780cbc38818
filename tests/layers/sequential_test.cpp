// Sequential: composition, naming, laws (gradients through a conv-BN-ReLU-pool chain).
#include <catch2/catch.hpp>

#include <nddr/nddr.hpp>
#include <nddr/layers/sequential.hpp>
#include <nddr/testing/layer_laws.hpp>

TEST_CASE("Sequential: conv-bn-relu-pool chain obeys the Layer laws", "[layers][sequential]") {
  nddr::Sequential<double> seq;
  seq.add("conv1", nddr::Conv2d<double>(2, 3, 3, nddr::Conv2dOptions{}.padding(1).bias(false)))
      .add("conv1.bn", nddr::BatchNorm2d<double>(3))
      .add("relu1", nddr::ReLU<double>())
      .add("pool1", nddr::MaxPool2d<double>(nddr::Pool2dOptions{}.kernel(3).stride(2).same()))
      .add("fc", nddr::Conv2d<double>(3, 2, 1));
  static_assert(nddr::concepts::Layer<nddr::Sequential<double>>);
  CHECK(seq.output_shape(nddr::Shape::nchw(2, 2, 7, 7)) == nddr::Shape::nchw(2, 2, 4, 4));
  auto r = nddr::testing::check_layer_laws(seq, nddr::Shape::nchw(2, 2, 7, 7));
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("Sequential: parameter names, child access, errors", "[layers][sequential]") {
  nddr::Sequential<float> seq;
  seq.add("conv1_1", nddr::Conv2d<float>(3, 4, 3, nddr::Conv2dOptions{}.padding(1).bias(false)))
      .add("conv1_1.bn", nddr::BatchNorm2d<float>(4));
  CHECK_THROWS_WITH(seq.add("conv1_1", nddr::ReLU<float>()), Catch::Contains("duplicate child"));
  nddr::ParameterStore<float> store;
  seq.declare(store, "task0.stage1");
  store.allocate();
  CHECK(store.find("task0.stage1.conv1_1.weight").has_value());
  CHECK(store.find("task0.stage1.conv1_1.bn.weight").has_value());
  CHECK(store.find_buffer("task0.stage1.conv1_1.bn.running_var").has_value());
  CHECK(store.parameter_count() == 4 * 3 * 9 + 8);
  CHECK(seq.child<nddr::BatchNorm2d<float>>("conv1_1.bn").channels() == 4);
  CHECK_THROWS_WITH(seq.child<nddr::ReLU<float>>("conv1_1"), Catch::Contains("another type"));
  CHECK_THROWS_WITH(seq.child<nddr::ReLU<float>>("nope"), Catch::Contains("no child named"));
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<float> x(nddr::Shape::nchw(1, 3, 5, 5)), bad(nddr::Shape::nchw(1, 4, 4, 4));
  CHECK_THROWS_WITH(seq.forward(ctx, x.cview(), bad.view()), Catch::Contains("(1, 4, 5, 5)"));
  nddr::Tensor<float> dx(x.shape()), y(nddr::Shape::nchw(1, 4, 5, 5));
  CHECK_THROWS_WITH(seq.backward(ctx, x.cview(), y.cview(), y.cview(), dx.view()),
                    Catch::Contains("call forward"));
}

TEST_CASE("Sequential: collects the random streams of its dropout layers", "[layers][sequential]") {
  nddr::Sequential<float> inner;
  inner.add("drop", nddr::Dropout<float>());
  nddr::Sequential<float> seq;
  seq.add("relu", nddr::ReLU<float>()).add("drop6", nddr::Dropout<float>()).add("inner", std::move(inner));
  std::vector<nddr::Rng*> rngs;
  seq.collect_rngs(rngs);
  REQUIRE(rngs.size() == 2);
  CHECK(rngs[0] == &seq.child<nddr::Dropout<float>>("drop6").rng());
}
