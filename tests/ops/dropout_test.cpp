// Dropout op and layer: op gradient check at a fixed (seed, counter), laws (no finite
// differences: the layer is stochastic), mask statistics and reproducibility, inverted scaling,
// inference and p = 0 identity, errors. No PyTorch reference: its RNG draws other masks.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nddr/layers/dropout.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <nddr/testing/layer_laws.hpp>

namespace {

using nddr::Shape;
using TensorD = nddr::Tensor<double>;

TensorD random_tensor(std::uint64_t seed, Shape s) {
  nddr::Rng rng(seed);
  TensorD t(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(0.5, 1.5);  // never zero
  return t;
}

}  // namespace

TEST_CASE("dropout op: finite-difference gradient at a fixed (seed, counter)", "[ops][dropout]") {
  nddr::Context<nddr::Cpu> ctx(2);
  const Shape s = Shape::nchw(2, 3, 4, 5);
  TensorD x = random_tensor(1, s), r = random_tensor(2, s), y(s), dx(s, 0.25);
  const double p = 0.3;
  const std::uint64_t seed = 77, first = 1000;
  auto loss = [&] {
    nddr::ops::dropout_forward(ctx, x, y.view(), p, seed, first);
    double l = 0.0;
    for (std::int64_t i = 0; i < y.numel(); ++i) l += y[i] * r[i];
    return l;
  };
  nddr::ops::dropout_backward(ctx, r, dx.view(), p, seed, first);
  for (std::int64_t i = 0; i < dx.numel(); ++i) dx[i] -= 0.25;  // accumulated onto 0.25
  auto g = nddr::testing::check_gradient("dx", x.data(), x.numel(), dx.data(), loss);
  INFO(g.report);
  CHECK(g.ok);
  CHECK_NOTHROW(nddr::ops::dropout_backward(ctx, r, nddr::TensorView<double>{}, p, seed, first));
}

TEST_CASE("Dropout layer: laws without finite differences", "[ops][dropout]") {
  nddr::Dropout<double> layer(nddr::DropoutOptions{}.p(0.4));
  nddr::testing::LayerLawsOptions opt;
  opt.check_gradients = false;
  auto r = nddr::testing::check_layer_laws(layer, Shape::nchw(2, 3, 4, 4), opt);
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("dropout op: kept fraction and inverted scaling", "[ops][dropout]") {
  nddr::Context<nddr::Cpu> ctx(2);
  const std::int64_t n = 100000;
  for (double p : {0.5, 0.3, 0.9}) {
    INFO("p = " << p);
    TensorD x = random_tensor(3, Shape{n}), y(x.shape());
    nddr::ops::dropout_forward(ctx, x, y.view(), p, 12345, 0);
    std::int64_t kept = 0, wrong = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      if (y[i] == 0.0) continue;
      ++kept;
      if (y[i] != x[i] / (1.0 - p)) ++wrong;
    }
    const double sigma = std::sqrt(static_cast<double>(n) * p * (1.0 - p));
    CHECK(std::abs(static_cast<double>(kept) - static_cast<double>(n) * (1.0 - p)) < 4.0 * sigma);
    CHECK(wrong == 0);
  }
  // float: a kept value is exactly x / float(1 - p).
  nddr::Tensor<float> xf(Shape{1000}), yf(xf.shape());
  for (std::int64_t i = 0; i < xf.numel(); ++i) xf[i] = 0.001f * static_cast<float>(i + 1);
  nddr::ops::dropout_forward(ctx, xf, yf.view(), 0.3, 9, 0);
  std::int64_t wrong = 0, kept = 0;
  for (std::int64_t i = 0; i < xf.numel(); ++i)
    if (yf[i] != 0.f) {
      ++kept;
      if (yf[i] != xf[i] / static_cast<float>(1.0 - 0.3)) ++wrong;
    }
  CHECK(kept > 0);
  CHECK(wrong == 0);
}

TEST_CASE("dropout op: the mask is a function of (seed, counter)", "[ops][dropout]") {
  nddr::Context<nddr::Cpu> ctx(2);
  const Shape s{4096};
  TensorD x = random_tensor(4, s), a(s), b(s), c(s), d(s);
  nddr::ops::dropout_forward(ctx, x, a.view(), 0.5, 42, 100);
  nddr::ops::dropout_forward(ctx, x, b.view(), 0.5, 42, 100);
  nddr::ops::dropout_forward(ctx, x, c.view(), 0.5, 42, 100 + s.numel());
  nddr::ops::dropout_forward(ctx, x, d.view(), 0.5, 43, 100);
  std::int64_t same_ab = 0, diff_ac = 0, diff_ad = 0;
  for (std::int64_t i = 0; i < s.numel(); ++i) {
    same_ab += a[i] == b[i];
    diff_ac += (a[i] == 0.0) != (c[i] == 0.0);
    diff_ad += (a[i] == 0.0) != (d[i] == 0.0);
  }
  CHECK(same_ab == s.numel());
  CHECK(diff_ac > s.numel() / 4);  // independent masks disagree on about half the elements
  CHECK(diff_ad > s.numel() / 4);
  // Element i draws counter first + i: a tensor starting 10 counters later is a shifted mask,
  // which is what lets a CUDA kernel reproduce the CPU mask element by element.
  TensorD e(s);
  nddr::ops::dropout_forward(ctx, x, e.view(), 0.5, 42, 110);
  std::int64_t shifted_mismatch = 0;
  for (std::int64_t i = 0; i + 10 < s.numel(); ++i)
    shifted_mismatch += (e[i] == 0.0) != (a[i + 10] == 0.0);
  CHECK(shifted_mismatch == 0);
  CHECK(nddr::ops::dropout_keep(42, 100, 0.5) == (a[0] != 0.0));
}

TEST_CASE("Dropout layer: fresh mask per step, exact checkpoint, backward uses last mask",
          "[ops][dropout]") {
  nddr::Context<nddr::Cpu> ctx(2);
  const Shape s = Shape::nchw(2, 2, 8, 8);
  TensorD x = random_tensor(5, s), y1(s), y2(s), y3(s), dy(s, 1.0), dx(s);
  nddr::Dropout<double> layer;
  nddr::Rng master(2024);
  layer.initialize(master);
  CHECK(master.state().counter == 1);
  CHECK(layer.rng().seed() == nddr::Rng(2024).next_bits());

  const nddr::Rng::State before = layer.state();
  layer.forward(ctx, x, y1.view());
  CHECK(layer.state().counter == before.counter + static_cast<std::uint64_t>(s.numel()));
  layer.forward(ctx, x, y2.view());
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < s.numel(); ++i) differ += (y1[i] == 0.0) != (y2[i] == 0.0);
  CHECK(differ > 0);

  // Backward follows the mask of the last forward (y2), not y1's.
  layer.backward(ctx, x, y2, dy, dx.view());
  std::int64_t mismatch = 0;
  for (std::int64_t i = 0; i < s.numel(); ++i)
    mismatch += (dx[i] != 0.0) != (y2[i] != 0.0) || (dx[i] != 0.0 && dx[i] != 2.0);
  CHECK(mismatch == 0);

  layer.set_state(before);
  layer.forward(ctx, x, y3.view());
  std::int64_t replay_mismatch = 0;
  for (std::int64_t i = 0; i < s.numel(); ++i) replay_mismatch += y3[i] != y1[i];
  CHECK(replay_mismatch == 0);
}

TEST_CASE("dropout: inference and p = 0 are the identity", "[ops][dropout]") {
  nddr::Context<nddr::Cpu> ctx(2);
  const Shape s = Shape::nchw(1, 3, 5, 5);
  TensorD x = random_tensor(6, s), y(s), dy = random_tensor(7, s), dx(s, 1.0);

  nddr::Dropout<double> eval;
  eval.set_training(false);
  const auto before = eval.state();
  eval.forward(ctx, x, y.view());
  eval.backward(ctx, x, y, dy, dx.view());
  CHECK(eval.state().counter == before.counter);
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < s.numel(); ++i) bad += y[i] != x[i] || dx[i] != 1.0 + dy[i];
  CHECK(bad == 0);

  nddr::Dropout<double> none(nddr::DropoutOptions{}.p(0.0));
  dx = TensorD(s, 1.0);
  none.forward(ctx, x, y.view());
  none.backward(ctx, x, y, dy, dx.view());
  bad = 0;
  for (std::int64_t i = 0; i < s.numel(); ++i) bad += y[i] != x[i] || dx[i] != 1.0 + dy[i];
  CHECK(bad == 0);
}

TEST_CASE("dropout: errors", "[ops][dropout]") {
  nddr::Context<nddr::Cpu> ctx(1);
  const Shape s{8};
  TensorD x(s), y(s), bad_y(Shape{9});
  CHECK_THROWS_WITH(
      nddr::ops::dropout_forward(ctx, x, y.view(), 1.0, 0, 0),
      Catch::Contains("dropout_forward") && Catch::Contains("p") && Catch::Contains("got 1"));
  CHECK_THROWS_AS(nddr::ops::dropout_forward(ctx, x, y.view(), -0.1, 0, 0), nddr::OptionError);
  CHECK_THROWS_AS(
      nddr::ops::dropout_forward(ctx, x, y.view(), std::numeric_limits<double>::quiet_NaN(), 0, 0),
      nddr::OptionError);
  CHECK_THROWS_AS(nddr::ops::dropout_backward(ctx, x, y.view(), 1.5, 0, 0), nddr::OptionError);
  CHECK_THROWS_WITH(nddr::Dropout<double>(nddr::DropoutOptions{}.p(1.0)),
                    Catch::Contains("nddr::Dropout") && Catch::Contains("got 1"));
  CHECK_THROWS_WITH(
      nddr::ops::dropout_forward(ctx, x, bad_y.view(), 0.5, 0, 0),
      Catch::Contains("dropout_forward") && Catch::Contains("(9)") && Catch::Contains("(8)"));
  CHECK_THROWS_AS(nddr::ops::dropout_backward(ctx, x, bad_y.view(), 0.5, 0, 0), nddr::ShapeError);
}
