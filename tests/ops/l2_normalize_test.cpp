// L2 normalisation over channels: F.normalize reference (zero pixel, norm below eps),
// gradient check (rank 4 and rank 2), accumulate, in-place forward, errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <nddr/ops/l2_normalize.hpp>
#include <nddr/core/random.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <vector>

namespace {

using nddr::Shape;
using nddr::Tensor;

Tensor<double> random_tensor(Shape s, nddr::Rng& rng) {
  Tensor<double> t(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(-1.0, 1.0);
  return t;
}

void check_gradient_for(Shape s) {
  nddr::Rng rng(5);
  nddr::Context<nddr::Cpu> ctx(2);
  Tensor<double> x = random_tensor(s, rng);
  const Tensor<double> r = random_tensor(s, rng);
  Tensor<double> y(s);
  auto loss = [&] {
    nddr::ops::l2_normalize_forward(ctx, x.cview(), y.view());
    double acc = 0.0;
    for (std::int64_t i = 0; i < y.numel(); ++i) acc += y[i] * r[i];
    return acc;
  };
  Tensor<double> dx(s, 0.25);
  nddr::ops::l2_normalize_backward(ctx, x.cview(), r.cview(), dx.view());
  std::vector<double> analytic(static_cast<std::size_t>(dx.numel()));
  for (std::int64_t i = 0; i < dx.numel(); ++i)
    analytic[static_cast<std::size_t>(i)] = dx[i] - 0.25;  // accumulated onto 0.25
  auto res = nddr::testing::check_gradient("dx", x.data(), x.numel(), analytic.data(), loss);
  INFO(res.report);
  CHECK(res.ok);
}

}  // namespace

TEST_CASE("l2_normalize: matches F.normalize(dim=1) forward and gradient", "[ops][l2_normalize]") {
  auto f = nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/misc_ops.safetensors");
  const auto x = f.tensor<double>("l2n.x"), dy = f.tensor<double>("l2n.dy");
  const auto y_ref = f.tensor<double>("l2n.y"), dx_ref = f.tensor<double>("l2n.dx");
  nddr::Context<nddr::Cpu> ctx(2);
  Tensor<double> y(x.shape());
  nddr::ops::l2_normalize_forward(ctx, x.cview(), y.view());
  Tensor<double> dx(x.shape(), 1.0);
  nddr::ops::l2_normalize_backward(ctx, x.cview(), dy.cview(), dx.view());
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    INFO("element " << i);
    REQUIRE(y[i] == Approx(y_ref[i]).epsilon(1e-9).margin(1e-12));
    REQUIRE(dx[i] - 1.0 == Approx(dx_ref[i]).epsilon(1e-9).margin(1e-9));
  }
  // The pixel whose norm is below eps: y = x / eps, dx = dy / eps.
  CHECK(y(1, 0, 2, 0) == Approx(1e-13 / 1e-12));
  CHECK(dx(1, 1, 2, 0) - 1.0 == Approx(dy(1, 1, 2, 0) / 1e-12));
  // The zero pixel stays zero.
  CHECK(y(0, 2, 1, 1) == 0.0);
}

TEST_CASE("l2_normalize: gradient check, unit norm, in place", "[ops][l2_normalize]") {
  check_gradient_for(Shape::nchw(2, 4, 3, 3));
  check_gradient_for(Shape{5, 3});

  nddr::Rng rng(9);
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> x = random_tensor(Shape::nchw(1, 5, 2, 2), rng);
  const Tensor<double> x0 = x;
  nddr::ops::l2_normalize_forward(ctx, x.cview(), x.view());  // aliasing is allowed
  for (std::int64_t p = 0; p < 4; ++p) {
    double n2 = 0.0, n2_0 = 0.0;
    for (std::int64_t c = 0; c < 5; ++c) {
      n2 += x[c * 4 + p] * x[c * 4 + p];
      n2_0 += x0[c * 4 + p] * x0[c * 4 + p];
    }
    CHECK(n2 == Approx(1.0));
    CHECK(x[p] == Approx(x0[p] / std::sqrt(n2_0)));
  }

  Tensor<float> xf(Shape::nchw(1, 2, 1, 1));
  xf[0] = 3.f;
  xf[1] = 4.f;
  nddr::ops::l2_normalize_forward(ctx, xf.cview(), xf.view());
  CHECK(xf[0] == Approx(0.6f));
  CHECK(xf[1] == Approx(0.8f));
}

TEST_CASE("l2_normalize: errors", "[ops][l2_normalize]") {
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> x(Shape::nchw(1, 3, 2, 2)), y(Shape::nchw(1, 3, 2, 1)), z(Shape{1, 3, 4});
  CHECK_THROWS_WITH(nddr::ops::l2_normalize_forward(ctx, x.cview(), y.view()),
                    Catch::Contains("l2_normalize_forward") && Catch::Contains("(1, 3, 2, 1)"));
  CHECK_THROWS_AS(nddr::ops::l2_normalize_forward(ctx, z.cview(), z.view()), nddr::ShapeError);
  CHECK_THROWS_AS(
      nddr::ops::l2_normalize_forward(ctx, x.cview(), x.view(), nddr::L2NormalizeOptions{}.eps(0)),
      nddr::OptionError);
  CHECK_THROWS_WITH(nddr::ops::l2_normalize_backward(ctx, x.cview(), x.cview(), x.view(),
                                                     nddr::L2NormalizeOptions{}.eps(-1)),
                    Catch::Contains("eps") && Catch::Contains("-1"));
}
