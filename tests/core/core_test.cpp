// Core: Shape, Tensor, TensorView, Context, Rng, ParameterStore, concepts.
#include <catch2/catch.hpp>

#include <nddr/nddr.hpp>
#include <nddr/testing/layer_laws.hpp>

#include <cstdint>
#include <set>

using nddr::Shape;

TEST_CASE("Shape: extents, numel, equality, text", "[core][shape]") {
  constexpr Shape s = Shape::nchw(2, 3, 5, 7);
  static_assert(s.numel() == 210 && s.rank() == 4 && s.c() == 3);
  CHECK(s.item_size() == 105);
  CHECK(s.str() == "(2, 3, 5, 7)");
  CHECK(s == Shape{2, 3, 5, 7});
  CHECK_FALSE(s == Shape{2, 3, 5});
  CHECK(Shape{}.numel() == 1);
  CHECK_THROWS_AS((Shape{1, 2, 3, 4, 5}), nddr::ShapeError);
  CHECK_THROWS_WITH(nddr::check_shape("op", "y", Shape{1, 2}, Shape{1, 3}),
                    "op: y has shape (1, 2), expected (1, 3)");
}

namespace {
// Counts how often it is formatted into a message.
struct Streamed {
  int* count;
};
std::ostream& operator<<(std::ostream& os, const Streamed& s) {
  ++*s.count;
  return os << "streamed";
}
}  // namespace

TEST_CASE("check: the message is built only when the check fails", "[core][error]") {
  int count = 0;
  nddr::check<nddr::ShapeError>(true, "op: x ", Shape::nchw(1, 2, 3, 4), " ", Streamed{&count});
  CHECK(count == 0);
  CHECK_THROWS_WITH(
      nddr::check<nddr::ShapeError>(false, "op: x ", Shape::nchw(1, 2, 3, 4), " ", Streamed{&count}),
      "op: x (1, 2, 3, 4) streamed");
  CHECK(count == 1);
  CHECK_THROWS_AS(nddr::check<nddr::OptionError>(false, "bad"), nddr::OptionError);
}

TEST_CASE("Tensor: zeroed, aligned, copy, move, views", "[core][tensor]") {
  nddr::Tensor<float> t(Shape::nchw(2, 3, 4, 5));
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
  for (std::int64_t i = 0; i < t.numel(); ++i) REQUIRE(t[i] == 0.0f);
  t(1, 2, 3, 4) = 7.0f;
  CHECK(t[t.numel() - 1] == 7.0f);
  nddr::Tensor<float> c = t;
  CHECK(c.data() != t.data());
  CHECK(c(1, 2, 3, 4) == 7.0f);
  nddr::Tensor<float> m = std::move(c);
  CHECK(c.data() == nullptr);
  CHECK(m(1, 2, 3, 4) == 7.0f);
  nddr::TensorView<float> v = m;
  nddr::TensorView<const float> cv = v;
  CHECK(cv(1, 2, 3, 4) == 7.0f);
  auto s = v.batch_slice(1, 2);
  CHECK(s.shape() == Shape::nchw(1, 3, 4, 5));
  CHECK(s(0, 2, 3, 4) == 7.0f);
  CHECK_THROWS_AS(v.batch_slice(1, 3), nddr::ShapeError);
  CHECK_THROWS_AS(m.reshape(Shape{7}), nddr::ShapeError);
  m.reshape(Shape{120});
  nddr::Tensor<float> empty;
  CHECK(empty.empty());
  CHECK(empty.numel() == 0);
  empty.zero();  // a no-op, not a write through null
  CHECK(m.shape().rank() == 1);
  static_assert(nddr::concepts::Tensor<nddr::Tensor<double>>);
  static_assert(nddr::concepts::Tensor<nddr::TensorView<const float>>);
  static_assert(!nddr::concepts::Tensor<int>);
  static_assert(nddr::concepts::Device<nddr::Cpu> && nddr::concepts::Device<nddr::Cuda>);
  static_assert(!nddr::concepts::Device<float>);
}

TEST_CASE("Context<Cpu>: threads and workspace", "[core][context]") {
  nddr::Context<nddr::Cpu> ctx(2);
  CHECK(ctx.threads() == 2);
  CHECK_THROWS_AS(ctx.set_threads(0), nddr::OptionError);
  float* w = ctx.workspace<float>(100);
  REQUIRE(w != nullptr);
  CHECK(reinterpret_cast<std::uintptr_t>(w) % 64 == 0);
  CHECK(nddr::Context<nddr::Cpu>().threads() >= 1);
  std::vector<int> hits(1000, 0);
  nddr::detail::parallel_for(ctx, 1000, [&](std::int64_t i) { hits[static_cast<std::size_t>(i)] += 1; });
  for (int h : hits) REQUIRE(h == 1);
}

TEST_CASE("Rng: seeded, reproducible, state round trip, sane moments", "[core][rng]") {
  nddr::Rng a(123), b(123), c(124);
  CHECK(a.next_bits() == b.next_bits());
  CHECK(a.next_bits() != c.next_bits());
  auto st = a.state();
  const double u = a.uniform();
  a.set_state(st);
  CHECK(a.uniform() == u);
  nddr::Rng r(5);
  double sum = 0, sq = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double x = r.normal();
    sum += x;
    sq += x * x;
  }
  CHECK(std::abs(sum / n) < 0.03);
  CHECK(std::abs(sq / n - 1.0) < 0.05);
  for (int i = 0; i < 1000; ++i) {
    const double x = r.uniform();
    REQUIRE((x >= 0.0 && x < 1.0));
  }
  // The counter API matches the stream API draw for draw.
  nddr::Rng s(9);
  const auto first = s.reserve(3);
  CHECK(nddr::random_bits(9, first + 2) == nddr::Rng(9).state().seed * 0 + [] {
    nddr::Rng t(9);
    t.next_bits();
    t.next_bits();
    return t.next_bits();
  }());
}

TEST_CASE("ParameterStore: flat buffers, names, groups, buffers", "[core][params]") {
  nddr::ParameterStore<float> store;
  store.add_group({"nddr", 100.0, 1.0});
  auto w = store.declare("conv.weight", Shape{4, 3, 3, 3});
  auto b = store.declare("conv.bias", Shape{4}, "bias");
  auto f = store.declare("fusion.weight", Shape{2, 4, 1, 1}, "nddr");
  auto rm = store.declare_buffer("bn.running_mean", Shape{4});
  {
    nddr::ParameterStore<float>::GroupScope outer(store, "nddr");
    store.declare("fusion.bn.weight", Shape{4});
    {
      nddr::ParameterStore<float>::GroupScope inner(store, "fc8.bias");
      store.declare("head.fc8.bias", Shape{4});
    }
    store.declare("fusion.bn.bias", Shape{4}, "explicit");
  }
  auto after = store.declare("after.weight", Shape{1});
  CHECK_THROWS_WITH(store.declare("conv.bias", Shape{1}),
                    Catch::Contains("duplicate name 'conv.bias'"));
  CHECK_THROWS_AS(store.value(w), nddr::Error);  // not allocated yet
  store.allocate();
  CHECK_THROWS_WITH(store.declare("late", Shape{1}), Catch::Contains("after allocate"));
  CHECK(store.parameter_count() == 108 + 4 + 8 + 12 + 1);
  auto group_of = [&](const char* n) {
    return store.groups()[store.parameters()[store.find(n)->index].group].name;
  };
  CHECK(group_of("fusion.bn.weight") == "nddr");
  CHECK(group_of("head.fc8.bias") == "fc8.bias");
  CHECK(group_of("fusion.bn.bias") == "explicit");
  CHECK(group_of("after.weight") == "default");
  CHECK(after.valid());
  CHECK(store.buffer_count() == 4);
  auto wv = store.value(w);
  CHECK(wv.shape() == Shape{4, 3, 3, 3});
  CHECK(reinterpret_cast<std::uintptr_t>(store.value(b).data()) % 64 == 0);
  CHECK(store.value(b).data() >= wv.data() + 108);
  wv[0] = 1.5f;
  CHECK(store.values()[0] == 1.5f);
  store.grad(f)[1] = 2.0f;
  store.zero_grad();
  CHECK(store.grad(f)[1] == 0.0f);
  CHECK(store.groups()[store.parameters()[f.index].group].lr_mult == 100.0);
  CHECK(store.groups()[store.parameters()[b.index].group].name == "bias");
  CHECK(store.find("conv.bias").has_value());
  CHECK_FALSE(store.find("bn.running_mean").has_value());
  CHECK(store.find_buffer("bn.running_mean").has_value());
  store.buffer(rm)[0] = 3.0f;
  CHECK(store.buffer_values()[0] == 3.0f);
}

namespace {
// A user-written layer: y = a * x, with one scalar parameter a.
struct ScaleLayer {
  using value_type = double;
  using device_type = nddr::Cpu;
  nddr::ParameterStore<double>* store = nullptr;
  nddr::ParamId a;
  nddr::Shape output_shape(const nddr::Shape& s) const { return s; }
  void declare(nddr::ParameterStore<double>& s, const std::string& p) {
    store = &s;
    a = s.declare(p + ".a", nddr::Shape{1});
  }
  void initialize(nddr::Rng&) { store->value(a)[0] = 2.0; }
  void set_training(bool) {}
  bool training() const { return true; }
  void forward(nddr::Context<nddr::Cpu>&, nddr::TensorView<const double> x,
               nddr::TensorView<double> y) {
    for (std::int64_t i = 0; i < x.numel(); ++i) y[i] = store->value(a)[0] * x[i];
  }
  void backward(nddr::Context<nddr::Cpu>&, nddr::TensorView<const double> x,
                nddr::TensorView<const double>, nddr::TensorView<const double> dy,
                nddr::TensorView<double> dx) {
    double g = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i) g += dy[i] * x[i];
    store->grad(a)[0] = g;
    if (dx.empty()) return;
    for (std::int64_t i = 0; i < x.numel(); ++i) dx[i] += store->value(a)[0] * dy[i];
  }
};
// The same layer with a bug: it assigns dx instead of accumulating.
struct AssigningLayer : ScaleLayer {
  void backward(nddr::Context<nddr::Cpu>& c, nddr::TensorView<const double> x,
                nddr::TensorView<const double> y, nddr::TensorView<const double> dy,
                nddr::TensorView<double> dx) {
    if (!dx.empty())
      for (std::int64_t i = 0; i < dx.numel(); ++i) dx[i] = 0;
    ScaleLayer::backward(c, x, y, dy, dx);
  }
};
// A wrong gradient.
struct WrongGradLayer : ScaleLayer {
  void backward(nddr::Context<nddr::Cpu>& c, nddr::TensorView<const double> x,
                nddr::TensorView<const double> y, nddr::TensorView<const double> dy,
                nddr::TensorView<double> dx) {
    ScaleLayer::backward(c, x, y, dy, dx);
    store->grad(a)[0] *= 1.01;
  }
};
}  // namespace

TEST_CASE("Layer laws kit accepts a correct layer and catches broken ones", "[core][laws]") {
  static_assert(nddr::concepts::Layer<ScaleLayer>);
  static_assert(nddr::concepts::Layer<nddr::ReLU<float>>);
  const Shape in = Shape::nchw(2, 2, 3, 3);
  ScaleLayer good;
  auto r = nddr::testing::check_layer_laws(good, in);
  INFO(r.report);
  CHECK(r.ok);
  AssigningLayer assigning;
  auto r2 = nddr::testing::check_layer_laws(assigning, in);
  CHECK_FALSE(r2.ok);
  CHECK_THAT(r2.report, Catch::Contains("does not accumulate"));
  WrongGradLayer wrong;
  auto r3 = nddr::testing::check_layer_laws(wrong, in);
  CHECK_FALSE(r3.ok);
  CHECK_THAT(r3.report, Catch::Contains("layer.a"));
}

TEST_CASE("ParameterStore: the gradient buffer is allocated on first use", "[core][params]") {
  nddr::ParameterStore<float> store;
  auto w = store.declare("w", Shape{3, 5});
  store.declare("b", Shape{3});
  store.allocate();
  CHECK_FALSE(store.gradients_allocated());
  store.zero_grad();  // nothing to zero yet
  CHECK_FALSE(store.gradients_allocated());
  const auto& cstore = store;
  CHECK(cstore.grad(w).shape() == Shape{3, 5});  // gradients read as zeros, even through const
  CHECK(store.gradients_allocated());
  CHECK(cstore.grad(w)[4] == 0.0f);
  CHECK(store.grads().numel() >= 18);
  store.grad(w)[4] = 2.0f;
  CHECK(store.grads()[4] == 2.0f);
}
