// Sequential: composition, naming, laws (gradients through a conv-BN-ReLU-pool chain).
#include <catch2/catch.hpp>

#include <nddr/nddr.hpp>
#include <nddr/layers/sequential.hpp>
#include <nddr/testing/layer_laws.hpp>

#include <cmath>
#include <string>

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

namespace {

// ReLU out of place: the reference that the in-place one must match bit for bit.
template <class T>
struct OutOfPlaceReLU : nddr::ReLU<T> {
  static constexpr bool runs_in_place = false;
};

// conv-bn-relu-conv-bn-relu-pool-conv, or ending at the second ReLU (which then runs in place
// on the caller's y).
template <template <class> class Relu>
nddr::Sequential<float> conv_chain(bool to_the_end) {
  nddr::Sequential<float> seq;
  const auto same = nddr::Conv2dOptions{}.padding(1).bias(false);
  seq.add("conv1", nddr::Conv2d<float>(3, 8, 3, same))
      .add("conv1.bn", nddr::BatchNorm2d<float>(8))
      .add("conv1.relu", Relu<float>())
      .add("conv2", nddr::Conv2d<float>(8, 6, 3, same))
      .add("conv2.bn", nddr::BatchNorm2d<float>(6))
      .add("conv2.relu", Relu<float>());
  if (to_the_end)
    seq.add("pool", nddr::MaxPool2d<float>(nddr::Pool2dOptions{}.kernel(3).stride(2).same()))
        .add("fc", nddr::Conv2d<float>(6, 4, 1));
  return seq;
}

nddr::Tensor<float> uniform(const nddr::Shape& s, std::uint64_t seed) {
  nddr::Rng rng(seed);
  nddr::Tensor<float> t(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  return t;
}

// y = exp(x); its backward reads its output (dx += dy * y).
struct ExpLayer {
  using value_type = double;
  using device_type = nddr::Cpu;
  nddr::Shape output_shape(const nddr::Shape& in) const { return in; }
  void declare(nddr::ParameterStore<double>&, const std::string&) {}
  void initialize(nddr::Rng&) {}
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }
  void forward(nddr::Context<nddr::Cpu>&, nddr::TensorView<const double> x,
               nddr::TensorView<double> y) {
    for (std::int64_t i = 0; i < x.numel(); ++i) y[i] = std::exp(x[i]);
  }
  void backward(nddr::Context<nddr::Cpu>&, nddr::TensorView<const double>,
                nddr::TensorView<const double> y, nddr::TensorView<const double> dy,
                nddr::TensorView<double> dx) {
    if (dx.empty()) return;
    for (std::int64_t i = 0; i < y.numel(); ++i) dx[i] += dy[i] * y[i];
  }
  bool training_ = true;
};

// y = 2 x, in place; its backward reads neither x nor y.
struct DoubleInPlace : ExpLayer {
  static constexpr bool runs_in_place = true;
  void forward(nddr::Context<nddr::Cpu>&, nddr::TensorView<const double> x,
               nddr::TensorView<double> y) {
    for (std::int64_t i = 0; i < x.numel(); ++i) y[i] = 2.0 * x[i];
  }
  void backward(nddr::Context<nddr::Cpu>&, nddr::TensorView<const double>,
                nddr::TensorView<const double>, nddr::TensorView<const double> dy,
                nddr::TensorView<double> dx) {
    if (dx.empty()) return;
    for (std::int64_t i = 0; i < dy.numel(); ++i) dx[i] += 2.0 * dy[i];
  }
};

}  // namespace

TEST_CASE("Sequential: in-place ReLU matches out-of-place bit for bit, in fewer buffers",
          "[layers][sequential][in_place]") {
  static_assert(nddr::runs_in_place_v<nddr::ReLU<float>>);
  static_assert(!nddr::runs_in_place_v<OutOfPlaceReLU<float>>);
  static_assert(!nddr::runs_in_place_v<nddr::Conv2d<float>>);
  // BatchNorm2d reads its output in backward only with the fused ReLU (a runtime option).
  CHECK_FALSE(nddr::reads_output_in_backward(nddr::BatchNorm2d<float>(3)));
  CHECK(nddr::reads_output_in_backward(nddr::BatchNorm2d<float>(3, nddr::BatchNormOptions{}.relu(true))));
  static_assert(nddr::backward_reads_output_v<nddr::ReLU<float>>);
  for (bool to_the_end : {true, false}) {
    INFO("to_the_end " << to_the_end);
    auto in_place = conv_chain<nddr::ReLU>(to_the_end);
    auto copying = conv_chain<OutOfPlaceReLU>(to_the_end);
    nddr::ParameterStore<float> s1, s2;
    in_place.declare(s1, "net");
    copying.declare(s2, "net");
    s1.allocate();
    s2.allocate();
    nddr::Rng r1(7), r2(7);
    in_place.initialize(r1);
    copying.initialize(r2);
    const auto in = nddr::Shape::nchw(2, 3, 9, 9);
    const auto x = uniform(in, 1);
    const auto out = in_place.output_shape(in);
    const auto dy = uniform(out, 2);
    nddr::Context<nddr::Cpu> ctx(2);
    nddr::Tensor<float> y1(out), y2(out), dx1(in), dx2(in);
    // Two steps: the second one runs on buffers already planned.
    for (int step = 0; step < 2; ++step) {
      in_place.forward(ctx, x.cview(), y1.view());
      copying.forward(ctx, x.cview(), y2.view());
      in_place.backward(ctx, x.cview(), y1.cview(), dy.cview(), dx1.view());
      copying.backward(ctx, x.cview(), y2.cview(), dy.cview(), dx2.view());
    }
    for (std::int64_t i = 0; i < y1.numel(); ++i) REQUIRE(y1[i] == y2[i]);
    for (std::int64_t i = 0; i < dx1.numel(); ++i) REQUIRE(dx1[i] == dx2[i]);
    const auto g1 = s1.grads(), g2 = s2.grads();
    for (std::int64_t i = 0; i < g1.numel(); ++i) REQUIRE(g1[i] == g2[i]);
    const auto b1 = s1.buffer_values(), b2 = s2.buffer_values();
    for (std::int64_t i = 0; i < b1.numel(); ++i) REQUIRE(b1[i] == b2[i]);
    // Each ReLU writes over its BatchNorm's output: one conv-sized buffer less per block (the
    // last block's BN and ReLU write into y when they end the chain).
    const std::int64_t conv1 = 2 * 8 * 9 * 9, conv2 = 2 * 6 * 9 * 9, pool = 2 * 6 * 5 * 5;
    if (to_the_end) {
      CHECK(copying.activation_elements() == 3 * conv1 + 3 * conv2 + pool);
      CHECK(in_place.activation_elements() == 2 * conv1 + 2 * conv2 + pool);
    } else {
      CHECK(copying.activation_elements() == 3 * conv1 + 2 * conv2);
      CHECK(in_place.activation_elements() == 2 * conv1 + conv2);
    }
  }
}

TEST_CASE("Sequential: in-place runs obey the Layer laws in both modes",
          "[layers][sequential][in_place]") {
  // ReLU after ReLU must not share (the first one's backward reads its output); ReLU after
  // max pooling may; a ReLU last writes the caller's y in place.
  const auto make = [] {
    nddr::Sequential<double> seq;
    seq.add("conv1", nddr::Conv2d<double>(2, 3, 3, nddr::Conv2dOptions{}.padding(1).bias(false)))
        .add("conv1.bn", nddr::BatchNorm2d<double>(3))
        .add("relu1", nddr::ReLU<double>())
        .add("relu1b", nddr::ReLU<double>())
        .add("pool1", nddr::MaxPool2d<double>(nddr::Pool2dOptions{}.kernel(3).stride(2).same()))
        .add("relu2", nddr::ReLU<double>())
        .add("fc", nddr::Conv2d<double>(3, 2, 1))
        .add("fc.bn", nddr::BatchNorm2d<double>(2))
        .add("relu3", nddr::ReLU<double>());
    return seq;
  };
  for (bool training : {true, false}) {
    INFO("training " << training);
    auto seq = make();
    seq.set_training(training);
    auto r = nddr::testing::check_layer_laws(seq, nddr::Shape::nchw(2, 2, 7, 7));
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("Sequential: an in-place layer never overwrites an output that backward reads",
          "[layers][sequential][in_place]") {
  // Training: each doubling gets its own buffer, since ExpLayer's backward reads its output.
  // Inference: they double in place, and the backward first recomputes ExpLayer's outputs.
  for (bool training : {true, false}) {
    INFO("training " << training);
    nddr::Sequential<double> seq;
    seq.add("exp1", ExpLayer()).add("double1", DoubleInPlace()).add("exp2", ExpLayer())
        .add("double2", DoubleInPlace());
    seq.set_training(training);
    auto r = nddr::testing::check_layer_laws(seq, nddr::Shape::nchw(1, 2, 3, 3));
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("Sequential: inference keeps two activation buffers and no gradient buffers",
          "[layers][sequential][in_place]") {
  auto seq = conv_chain<nddr::ReLU>(true);
  nddr::ParameterStore<float> store;
  seq.declare(store, "net");
  store.allocate();
  nddr::Rng rng(3);
  seq.initialize(rng);
  const auto in = nddr::Shape::nchw(2, 3, 9, 9);
  const auto x = uniform(in, 1);
  const auto out = seq.output_shape(in);
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Tensor<float> y_train(out), y_eval(out), y_again(out), dx(in);
  seq.forward(ctx, x.cview(), y_train.view());  // training mode: updates the running statistics
  seq.set_training(false);
  seq.forward(ctx, x.cview(), y_eval.view());
  CHECK(seq.gradient_elements() == 0);
  CHECK_FALSE(store.gradients_allocated());
  // conv1, bn1 (+relu1), conv2, bn2 (+relu2), pool alternate: two buffers of conv1's size.
  CHECK(seq.activation_elements() == 2 * (2 * 8 * 9 * 9));
  // A backward after an inference forward recomputes what it needs, then keeps everything.
  const auto dy = uniform(out, 2);
  seq.backward(ctx, x.cview(), y_eval.cview(), dy.cview(), dx.view());
  CHECK(seq.gradient_elements() == 2 * (2 * 8 * 9 * 9));
  CHECK(store.gradients_allocated());
  seq.forward(ctx, x.cview(), y_again.view());
  for (std::int64_t i = 0; i < y_eval.numel(); ++i) REQUIRE(y_eval[i] == y_again[i]);
  // The mode may not change between forward and backward.
  seq.set_training(true);
  CHECK_THROWS_WITH(seq.backward(ctx, x.cview(), y_eval.cview(), dy.cview(), dx.view()),
                    Catch::Contains("mode changed"));
}

TEST_CASE("Sequential: chains share an ActivationArena in inference mode",
          "[layers][sequential][in_place]") {
  // Two chains with the same parameters, one with its own buffers, one sharing an arena with a
  // wider chain that runs in between (and grows the arena).
  auto own = conv_chain<nddr::ReLU>(true);
  auto shared = conv_chain<nddr::ReLU>(true);
  nddr::Sequential<float> wide;
  wide.add("conv", nddr::Conv2d<float>(3, 16, 3, nddr::Conv2dOptions{}.padding(1)))
      .add("relu", nddr::ReLU<float>())
      .add("fc", nddr::Conv2d<float>(16, 2, 1));
  nddr::ParameterStore<float> s1, s2, s3;
  own.declare(s1, "net");
  shared.declare(s2, "net");
  wide.declare(s3, "wide");
  s1.allocate();
  s2.allocate();
  s3.allocate();
  nddr::Rng r1(5), r2(5), r3(6);
  own.initialize(r1);
  shared.initialize(r2);
  wide.initialize(r3);
  nddr::ActivationArena<float> arena;
  shared.share_inference_buffers(&arena);
  wide.share_inference_buffers(&arena);
  for (auto* s : {&own, &shared, &wide}) s->set_training(false);
  const auto in = nddr::Shape::nchw(2, 3, 9, 9);
  const auto x = uniform(in, 1);
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Tensor<float> y_own(own.output_shape(in)), y_shared(y_own.shape()),
      y_wide(wide.output_shape(in));
  own.forward(ctx, x.cview(), y_own.view());
  shared.forward(ctx, x.cview(), y_shared.view());
  CHECK(arena.elements() == 2 * (2 * 8 * 9 * 9));
  wide.forward(ctx, x.cview(), y_wide.view());
  CHECK(arena.elements() == 2 * 8 * 9 * 9 + 2 * 16 * 9 * 9);  // conv and relu share one
  shared.forward(ctx, x.cview(), y_shared.view());
  CHECK(shared.activation_elements() == 0);
  CHECK(wide.activation_elements() == 0);
  for (std::int64_t i = 0; i < y_own.numel(); ++i) REQUIRE(y_own[i] == y_shared[i]);
}
