// Resize (TF legacy bilinear/nearest, half-pixel, align-corners): hand-computed values,
// PyTorch reference values (tests/data/pool_resize.safetensors, tools/reference/pool_resize.py),
// integer label maps, gradient checks of the op, the layer laws and bad input.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <nddr/ops/resize.hpp>
#include <nddr/core/random.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/layers/resize.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <nddr/testing/layer_laws.hpp>
#include <string>
#include <vector>

namespace {

using nddr::ResizeMode;
using nddr::ResizeOptions;
using nddr::Shape;
using nddr::Tensor;

const char* const kRefFile = NDDR_TEST_DATA_DIR "/pool_resize.safetensors";

constexpr ResizeMode kAllModes[] = {ResizeMode::kBilinearTfLegacy, ResizeMode::kBilinearHalfPixel,
                                    ResizeMode::kBilinearAlignCorners,
                                    ResizeMode::kNearestTfLegacy};

/// Largest |actual - expected| / (1 + |expected|); -1 on a size mismatch.
double max_rel_error(const Tensor<double>& actual, const std::vector<double>& expected) {
  if (static_cast<std::size_t>(actual.numel()) != expected.size()) return -1.0;
  double worst = 0.0;
  for (std::size_t i = 0; i < expected.size(); ++i)
    worst = std::max(worst, std::abs(actual[static_cast<std::int64_t>(i)] - expected[i]) /
                                (1.0 + std::abs(expected[i])));
  return worst;
}

ResizeOptions options_from(const std::vector<double>& p) {
  return ResizeOptions{}
      .size(static_cast<std::int64_t>(p[1]), static_cast<std::int64_t>(p[2]))
      .mode(kAllModes[static_cast<int>(p[0])]);
}

/// Resizes the integer label map "<prefix>x" and compares with "<prefix>y" exactly.
template <class L>
void check_label_case(const nddr::io::SafetensorsFile& f, const std::string& prefix) {
  nddr::Context<nddr::Cpu> ctx(2);
  const Tensor<L> x = f.tensor<L>(prefix + "x");
  const auto expected = f.values<L>(prefix + "y");
  const ResizeOptions opt = options_from(f.values<double>(prefix + "params"));
  Tensor<L> y(nddr::resize_output_shape("t", x.shape(), opt));
  nddr::ops::resize_forward(ctx, x.cview(), y.view(), opt);
  REQUIRE(static_cast<std::size_t>(y.numel()) == expected.size());
  std::int64_t mismatches = 0;
  for (std::int64_t i = 0; i < y.numel(); ++i)
    mismatches += y[i] != expected[static_cast<std::size_t>(i)] ? 1 : 0;
  CHECK(mismatches == 0);
}

}  // namespace

TEST_CASE("Resize: hand-computed 2x2 -> 4x4", "[ops][resize]") {
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> x(Shape::nchw(1, 1, 2, 2));
  x[0] = 1;
  x[1] = 2;
  x[2] = 3;
  x[3] = 4;
  Tensor<double> y(Shape::nchw(1, 1, 4, 4));
  // TF legacy: per axis f = d / 2 -> (i0, i1, w) = (0,1,0), (0,1,.5), (1,1,0), (1,1,.5).
  nddr::ops::resize_forward(ctx, x.cview(), y.view(), ResizeOptions{}.size(4, 4));
  const double bilinear[] = {1, 1.5, 2, 2, 2, 2.5, 3, 3, 3, 3.5, 4, 4, 3, 3.5, 4, 4};
  for (int i = 0; i < 16; ++i) CHECK(y[i] == bilinear[i]);
  // Backward of dy = 1: per-axis weight sums are (1.5, 2.5), dx is their outer product.
  Tensor<double> dy(y.shape(), 1.0), dx(x.shape(), 1.0);
  nddr::ops::resize_backward(ctx, x.cview(), dy.cview(), dx.view(), ResizeOptions{}.size(4, 4));
  CHECK(dx[0] == 1 + 2.25);
  CHECK(dx[1] == 1 + 3.75);
  CHECK(dx[2] == 1 + 3.75);
  CHECK(dx[3] == 1 + 6.25);

  const auto nearest = ResizeOptions{}.size(4, 4).mode(ResizeMode::kNearestTfLegacy);
  nddr::ops::resize_forward(ctx, x.cview(), y.view(), nearest);
  const double near[] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
  for (int i = 0; i < 16; ++i) CHECK(y[i] == near[i]);

  // Align corners 2 -> 3: the middle sample is the mean of both ends.
  Tensor<double> y3(Shape::nchw(1, 1, 3, 3));
  nddr::ops::resize_forward(ctx, x.cview(), y3.view(),
                            ResizeOptions{}.size(3, 3).mode(ResizeMode::kBilinearAlignCorners));
  CHECK(y3[4] == 2.5);
  CHECK(y3[8] == 4.0);
}

TEST_CASE("Resize: source taps", "[ops][resize]") {
  // 321 -> 41 TF legacy nearest (label down-sampling): src = floor(d * 321 / 41).
  const auto t = nddr::ops::resize_tap<float>(ResizeMode::kNearestTfLegacy, 40, 321, 41);
  CHECK(t.i0 == 313);
  CHECK(t.i1 == 313);
  // 480 -> 60 TF legacy bilinear picks every 8th pixel exactly.
  const auto b = nddr::ops::resize_tap<double>(ResizeMode::kBilinearTfLegacy, 7, 480, 60);
  CHECK(b.i0 == 56);
  CHECK(b.w == 0.0);
  // Half-pixel clamps negative sources to 0.
  const auto h = nddr::ops::resize_tap<double>(ResizeMode::kBilinearHalfPixel, 0, 4, 8);
  CHECK(h.i0 == 0);
  CHECK(h.i1 == 1);
  CHECK(h.w == 0.0);
  // The last sample of an up-sampled axis never reads past the end.
  const auto e = nddr::ops::resize_tap<double>(ResizeMode::kBilinearTfLegacy, 7, 4, 8);
  CHECK(e.i0 == 3);
  CHECK(e.i1 == 3);
}

TEST_CASE("Resize: PyTorch reference values, forward and dx", "[ops][resize]") {
  nddr::Context<nddr::Cpu> ctx(2);
  const auto f = nddr::io::SafetensorsFile::read(kRefFile);
  int cases = 0;
  for (int i = 0; f.contains("resize" + std::to_string(i) + ".x"); ++i, ++cases) {
    const std::string p = "resize" + std::to_string(i) + ".";
    const ResizeOptions opt = options_from(f.values<double>(p + "params"));
    const Tensor<double> x = f.tensor<double>(p + "x");
    const Tensor<double> dy = f.tensor<double>(p + "dy");
    auto dx_ref = f.values<double>(p + "dx");
    for (double& d : dx_ref) d -= 0.5;  // dx starts at -0.5: backward must accumulate
    INFO("case " << p << " mode " << nddr::resize_mode_name(opt.resize_mode) << " x "
                 << x.shape().str() << " -> " << dy.shape().str());
    Tensor<double> y(dy.shape()), dx(x.shape(), -0.5);
    nddr::ops::resize_forward(ctx, x.cview(), y.view(), opt);
    nddr::ops::resize_backward(ctx, x.cview(), dy.cview(), dx.view(), opt);
    CHECK(max_rel_error(y, f.values<double>(p + "y")) == Approx(0.0).margin(1e-10));
    CHECK(max_rel_error(dx, dx_ref) == Approx(0.0).margin(1e-10));
  }
  CHECK(cases == 11);
}

TEST_CASE("Resize: nearest on integer label maps", "[ops][resize]") {
  const auto f = nddr::io::SafetensorsFile::read(kRefFile);
  for (const std::string p : {"label0.", "label1."}) {
    INFO("case " << p);
    check_label_case<std::int64_t>(f, p);
    check_label_case<std::int32_t>(f, p);
    check_label_case<std::uint8_t>(f, p);
  }
  // The float path picks the same sources as the integer path.
  nddr::Context<nddr::Cpu> ctx(1);
  const Tensor<double> x = f.tensor<double>("label0.x");
  const ResizeOptions opt = options_from(f.values<double>("label0.params"));
  Tensor<double> y(nddr::resize_output_shape("t", x.shape(), opt));
  nddr::ops::resize_forward(ctx, x.cview(), y.view(), opt);
  CHECK(max_rel_error(y, f.values<double>("label0.y")) == 0.0);
}

TEST_CASE("Resize: float matches double", "[ops][resize]") {
  nddr::Context<nddr::Cpu> ctx(2);
  Tensor<double> xd(Shape::nchw(2, 3, 7, 9));
  Tensor<float> xf(xd.shape());
  nddr::Rng rng(11);
  for (std::int64_t i = 0; i < xd.numel(); ++i) {
    xd[i] = rng.uniform(-1.0, 1.0);
    xf[i] = static_cast<float>(xd[i]);
  }
  for (ResizeMode mode : kAllModes) {
    const auto opt = ResizeOptions{}.size(13, 5).mode(mode);
    const Shape out = nddr::resize_output_shape("t", xd.shape(), opt);
    Tensor<double> yd(out), dxd(xd.shape());
    Tensor<float> yf(out), dxf(xf.shape());
    nddr::ops::resize_forward(ctx, xd.cview(), yd.view(), opt);
    nddr::ops::resize_forward(ctx, xf.cview(), yf.view(), opt);
    nddr::ops::resize_backward(ctx, xd.cview(), yd.cview(), dxd.view(), opt);
    nddr::ops::resize_backward(ctx, xf.cview(), yf.cview(), dxf.view(), opt);
    double worst = 0.0;
    for (std::int64_t i = 0; i < yd.numel(); ++i) worst = std::max(worst, std::abs(yf[i] - yd[i]));
    for (std::int64_t i = 0; i < dxd.numel(); ++i)
      worst = std::max(worst, std::abs(dxf[i] - dxd[i]));
    INFO(nddr::resize_mode_name(mode));
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("Resize: finite-difference gradients of the op and layer laws", "[ops][resize]") {
  for (ResizeMode mode : kAllModes) {
    for (const auto& size : {std::pair<std::int64_t, std::int64_t>{8, 3}, {3, 11}}) {
      const auto opt = ResizeOptions{}.size(size.first, size.second).mode(mode);
      INFO(nddr::resize_mode_name(mode) << " -> " << size.first << "x" << size.second);
      nddr::Context<nddr::Cpu> ctx(1);
      nddr::Rng rng(5);
      Tensor<double> x(Shape::nchw(2, 2, 5, 7));
      for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0);
      const Shape out = nddr::resize_output_shape("t", x.shape(), opt);
      Tensor<double> y(out), r(out), dx(x.shape());
      for (std::int64_t i = 0; i < r.numel(); ++i) r[i] = rng.uniform(-1.0, 1.0);
      nddr::ops::resize_backward(ctx, x.cview(), r.cview(), dx.view(), opt);
      auto loss = [&] {
        nddr::ops::resize_forward(ctx, x.cview(), y.view(), opt);
        double s = 0.0;
        for (std::int64_t i = 0; i < y.numel(); ++i) s += y[i] * r[i];
        return s;
      };
      const auto g = nddr::testing::check_gradient("dx", x.data(), x.numel(), dx.data(), loss);
      INFO(g.report);
      CHECK(g.ok);

      nddr::Resize<double> layer(opt);
      const auto laws = nddr::testing::check_layer_laws(layer, Shape::nchw(2, 3, 6, 4));
      INFO(laws.report);
      CHECK(laws.ok);
    }
  }
}

TEST_CASE("Resize: bad input", "[ops][resize]") {
  using Catch::Contains;
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> x(Shape::nchw(1, 2, 3, 3));
  Tensor<double> y(Shape::nchw(1, 2, 4, 4));
  CHECK_THROWS_AS(nddr::ops::resize_forward(ctx, x.cview(), y.view(), ResizeOptions{}.size(0, 4)),
                  nddr::OptionError);
  CHECK_THROWS_WITH(nddr::ops::resize_forward(ctx, x.cview(), y.view(), ResizeOptions{}.size(4, 0)),
                    Contains("resize_forward") && Contains("out_w") && Contains("got 0"));
  CHECK_THROWS_WITH(nddr::Resize<double>(ResizeOptions{}).output_shape(x.shape()),
                    Contains("nddr::Resize") && Contains("out_h"));
  CHECK_THROWS_WITH(nddr::ops::resize_forward(ctx, x.cview(), y.view(), ResizeOptions{}.size(5, 4)),
                    Contains("y has shape (1, 2, 4, 4)") && Contains("expected (1, 2, 5, 4)"));
  Tensor<double> dx(Shape::nchw(1, 2, 3, 2));
  CHECK_THROWS_WITH(
      nddr::ops::resize_backward(ctx, x.cview(), y.cview(), dx.view(), ResizeOptions{}.size(4, 4)),
      Contains("resize_backward") && Contains("(1, 2, 3, 2)"));
  Tensor<double> empty(Shape::nchw(1, 2, 0, 3));
  CHECK_THROWS_AS(
      nddr::ops::resize_forward(ctx, empty.cview(), y.view(), ResizeOptions{}.size(4, 4)),
      nddr::ShapeError);
  Tensor<std::int32_t> labels(Shape::nchw(1, 1, 3, 3), 7), out(Shape::nchw(1, 1, 4, 4));
  CHECK_THROWS_WITH(
      nddr::ops::resize_forward(ctx, labels.cview(), out.view(), ResizeOptions{}.size(4, 4)),
      Contains("integer") && Contains("kBilinearTfLegacy"));
  nddr::ops::resize_forward(ctx, labels.cview(), out.view(),
                            ResizeOptions{}.size(4, 4).mode(ResizeMode::kNearestTfLegacy));
  CHECK(out[15] == 7);
}
