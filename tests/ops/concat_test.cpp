// Channel concat and split: torch.cat reference, gradient checks (K = 2 and 3, unequal
// channels), accumulate contract, skipped parts, shape errors.
#include <catch2/catch.hpp>
#include <cstdint>
#include <nddr/ops/concat.hpp>
#include <nddr/core/random.hpp>
#include <nddr/core/tensor.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <vector>

namespace {

using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;

Tensor<double> random_tensor(Shape s, nddr::Rng& rng) {
  Tensor<double> t(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(-1.0, 1.0);
  return t;
}

std::vector<Tensor<double>> random_parts(const std::vector<std::int64_t>& channels,
                                         nddr::Rng& rng) {
  std::vector<Tensor<double>> xs;
  for (std::int64_t c : channels) xs.push_back(random_tensor(Shape::nchw(2, c, 3, 2), rng));
  return xs;
}

std::vector<TensorView<const double>> cviews(const std::vector<Tensor<double>>& ts) {
  std::vector<TensorView<const double>> v;
  for (const auto& t : ts) v.push_back(t.cview());
  return v;
}

std::vector<TensorView<double>> views(std::vector<Tensor<double>>& ts) {
  std::vector<TensorView<double>> v;
  for (auto& t : ts) v.push_back(t.view());
  return v;
}

std::int64_t total_channels(const std::vector<std::int64_t>& channels) {
  std::int64_t c = 0;
  for (std::int64_t k : channels) c += k;
  return c;
}

}  // namespace

TEST_CASE("concat_channels: matches torch.cat, split inverts it", "[ops][concat]") {
  auto f = nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/misc_ops.safetensors");
  std::vector<Tensor<double>> xs;
  for (int k = 0; k < 3; ++k) xs.push_back(f.tensor<double>("concat.x" + std::to_string(k)));
  const Tensor<double> expected = f.tensor<double>("concat.y");
  nddr::Context<nddr::Cpu> ctx(2);

  Tensor<double> y(expected.shape());
  nddr::ops::concat_channels_forward(ctx, cviews(xs), y.view());
  for (std::int64_t i = 0; i < y.numel(); ++i) REQUIRE(y[i] == expected[i]);

  std::vector<Tensor<double>> parts;
  for (const auto& x : xs) parts.emplace_back(x.shape(), -7.0);
  nddr::ops::split_channels_forward(ctx, expected.cview(), views(parts));
  for (std::size_t k = 0; k < xs.size(); ++k)
    for (std::int64_t i = 0; i < xs[k].numel(); ++i) REQUIRE(parts[k][i] == xs[k][i]);
}

TEST_CASE("concat_channels: gradient check and accumulate, K = 2 and 3", "[ops][concat]") {
  const auto channels =
      GENERATE(std::vector<std::int64_t>{3, 2}, std::vector<std::int64_t>{2, 3, 1});
  nddr::Rng rng(11);
  nddr::Context<nddr::Cpu> ctx(2);
  auto xs = random_parts(channels, rng);
  const Shape ys = Shape::nchw(2, total_channels(channels), 3, 2);
  const Tensor<double> r = random_tensor(ys, rng);
  Tensor<double> y(ys);
  auto loss = [&] {
    nddr::ops::concat_channels_forward(ctx, cviews(xs), y.view());
    double s = 0.0;
    for (std::int64_t i = 0; i < y.numel(); ++i) s += y[i] * r[i];
    return s;
  };

  std::vector<Tensor<double>> dxs;
  for (const auto& x : xs) dxs.emplace_back(x.shape(), 0.5);
  nddr::ops::concat_channels_backward(ctx, r.cview(), views(dxs));
  for (std::size_t k = 0; k < xs.size(); ++k) {
    std::vector<double> analytic(static_cast<std::size_t>(dxs[k].numel()));
    for (std::int64_t i = 0; i < dxs[k].numel(); ++i)
      analytic[static_cast<std::size_t>(i)] = dxs[k][i] - 0.5;  // accumulated onto 0.5
    auto res = nddr::testing::check_gradient("dx" + std::to_string(k), xs[k].data(), xs[k].numel(),
                                             analytic.data(), loss);
    INFO(res.report);
    CHECK(res.ok);
  }
}

TEST_CASE("split_channels: gradient check and accumulate, K = 2 and 3", "[ops][concat]") {
  const auto channels =
      GENERATE(std::vector<std::int64_t>{1, 4}, std::vector<std::int64_t>{2, 1, 3});
  nddr::Rng rng(12);
  nddr::Context<nddr::Cpu> ctx(2);
  Tensor<double> x = random_tensor(Shape::nchw(2, total_channels(channels), 3, 2), rng);
  const auto rs = random_parts(channels, rng);
  auto ys = random_parts(channels, rng);
  auto loss = [&] {
    nddr::ops::split_channels_forward(ctx, x.cview(), views(ys));
    double s = 0.0;
    for (std::size_t k = 0; k < ys.size(); ++k)
      for (std::int64_t i = 0; i < ys[k].numel(); ++i) s += ys[k][i] * rs[k][i];
    return s;
  };
  Tensor<double> dx(x.shape(), -1.0);
  nddr::ops::split_channels_backward(ctx, cviews(rs), dx.view());
  std::vector<double> analytic(static_cast<std::size_t>(dx.numel()));
  for (std::int64_t i = 0; i < dx.numel(); ++i)
    analytic[static_cast<std::size_t>(i)] = dx[i] + 1.0;  // accumulated onto -1
  auto res = nddr::testing::check_gradient("dx", x.data(), x.numel(), analytic.data(), loss);
  INFO(res.report);
  CHECK(res.ok);
}

TEST_CASE("concat_channels: empty parts are skipped, float works", "[ops][concat]") {
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<float> dy(Shape::nchw(1, 3, 1, 2));
  for (std::int64_t i = 0; i < dy.numel(); ++i) dy[i] = static_cast<float>(i + 1);
  Tensor<float> dx0(Shape::nchw(1, 1, 1, 2)), dx2(Shape::nchw(1, 1, 1, 2));
  // Part 1 is skipped but carries its shape, so part 2 still reads channel 2.
  std::vector<TensorView<float>> dxs{
      dx0.view(), TensorView<float>(nullptr, Shape::nchw(1, 1, 1, 2)), dx2.view()};
  nddr::ops::concat_channels_backward(ctx, dy.cview(), dxs);
  CHECK(dx0[0] == 1.f);
  CHECK(dx0[1] == 2.f);
  CHECK(dx2[0] == 5.f);
  CHECK(dx2[1] == 6.f);

  // An empty dy part counts as zero in the split's backward.
  Tensor<float> dx(dy.shape(), 1.f);
  std::vector<TensorView<const float>> dys{
      dx0.cview(), TensorView<const float>(nullptr, Shape::nchw(1, 2, 1, 2))};
  nddr::ops::split_channels_backward(ctx, dys, dx.view());
  CHECK(dx[0] == 2.f);
  CHECK(dx[1] == 3.f);
  CHECK(dx[2] == 1.f);
  CHECK(dx[5] == 1.f);
}

TEST_CASE("concat_channels: shape errors name the input index and both shapes", "[ops][concat]") {
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> a(Shape::nchw(2, 2, 3, 4)), b(Shape::nchw(2, 3, 4, 4));
  Tensor<double> y(Shape::nchw(2, 5, 3, 4));
  std::vector<TensorView<const double>> xs{a.cview(), b.cview()};
  CHECK_THROWS_AS(nddr::ops::concat_channels_forward(ctx, xs, y.view()), nddr::ShapeError);
  CHECK_THROWS_WITH(nddr::ops::concat_channels_forward(ctx, xs, y.view()),
                    Catch::Contains("concat_channels_forward") && Catch::Contains("input 1") &&
                        Catch::Contains("(2, 3, 4, 4)") && Catch::Contains("(2, 5, 3, 4)"));

  Tensor<double> c(Shape::nchw(2, 2, 3, 4));
  std::vector<TensorView<const double>> short_xs{a.cview(), c.cview()};
  CHECK_THROWS_WITH(nddr::ops::concat_channels_forward(ctx, short_xs, y.view()),
                    Catch::Contains("sum to 4") && Catch::Contains("(2, 5, 3, 4)"));

  std::vector<TensorView<const double>> none;
  CHECK_THROWS_AS(nddr::ops::concat_channels_forward(ctx, none, y.view()), nddr::ShapeError);

  std::vector<TensorView<double>> dxs{a.view(), TensorView<double>{}};
  CHECK_THROWS_WITH(nddr::ops::concat_channels_backward(ctx, y.cview(), dxs),
                    Catch::Contains("dx 1") && Catch::Contains("must still carry its shape"));
}
