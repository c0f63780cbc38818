// Max, average and global average pooling: TF 'SAME' geometry, PyTorch reference values
// (tests/data/pool_resize.safetensors, tools/reference/pool_resize.py), gradient checks of
// the ops, the layer laws and bad input.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nddr/ops/pool.hpp>
#include <nddr/core/random.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/layers/pool.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <nddr/testing/layer_laws.hpp>
#include <string>
#include <utility>
#include <vector>

namespace {

using nddr::Pool2dOptions;
using nddr::Shape;
using nddr::Tensor;

const char* const kRefFile = NDDR_TEST_DATA_DIR "/pool_resize.safetensors";

/// Largest |actual - expected| / (1 + |expected|); -1 on a size mismatch.
double max_rel_error(const Tensor<double>& actual, const std::vector<double>& expected) {
  if (static_cast<std::size_t>(actual.numel()) != expected.size()) return -1.0;
  double worst = 0.0;
  for (std::size_t i = 0; i < expected.size(); ++i)
    worst = std::max(worst, std::abs(actual[static_cast<std::int64_t>(i)] - expected[i]) /
                                (1.0 + std::abs(expected[i])));
  return worst;
}

/// Distinct values spread over [-0.5, 0.5), so max pooling has no ties within a
/// finite-difference step.
void fill_distinct(Tensor<double>& x) {
  const std::int64_t n = x.numel();
  for (std::int64_t i = 0; i < n; ++i)
    x[i] = static_cast<double>((i * 7919) % n) / static_cast<double>(n) - 0.5;
}

/// Checks the dx of `bwd` against central differences of L = sum(fwd(x) * r).
template <class Fwd, class Bwd>
void check_op_gradient(Tensor<double>& x, const Shape& out_shape, Fwd fwd, Bwd bwd) {
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Rng rng(3);
  Tensor<double> y(out_shape), r(out_shape), dx(x.shape());
  for (std::int64_t i = 0; i < r.numel(); ++i) r[i] = rng.uniform(-1.0, 1.0);
  bwd(ctx, x.cview(), r.cview(), dx.view());
  auto loss = [&] {
    fwd(ctx, x.cview(), y.view());
    double s = 0.0;
    for (std::int64_t i = 0; i < y.numel(); ++i) s += y[i] * r[i];
    return s;
  };
  const auto res = nddr::testing::check_gradient("dx", x.data(), x.numel(), dx.data(), loss);
  INFO(res.report);
  CHECK(res.ok);
}

Pool2dOptions options_from(const std::vector<double>& p) {
  auto i = [&](std::size_t k) { return static_cast<std::int64_t>(p[k]); };
  Pool2dOptions opt = Pool2dOptions{}.kernel(i(1), i(2)).stride(i(3), i(4)).padding(i(5), i(6));
  return opt.same(p[7] != 0.0).count_include_pad(p[8] != 0.0);
}

}  // namespace

TEST_CASE("Pool2d: TF SAME and explicit geometry", "[ops][pool]") {
  const auto same2 = Pool2dOptions{}.kernel(3).stride(2).same();
  const auto g321 = nddr::pool2d_geometry("t", Shape::nchw(1, 1, 321, 321), same2);
  CHECK(g321.out_h == 161);
  CHECK(g321.pad_top == 1);
  CHECK(g321.pad_bottom == 1);
  const auto g480 = nddr::pool2d_geometry("t", Shape::nchw(1, 1, 480, 640), same2);
  CHECK(g480.out_h == 240);
  CHECK(g480.out_w == 320);
  CHECK(g480.pad_top == 0);
  CHECK(g480.pad_bottom == 1);
  CHECK(g480.pad_left == 0);
  CHECK(g480.pad_right == 1);
  const auto g41 =
      nddr::pool2d_geometry("t", Shape::nchw(1, 1, 41, 41), Pool2dOptions{}.kernel(3).same());
  CHECK(g41.out_h == 41);
  CHECK(g41.pad_top == 1);
  CHECK(g41.pad_bottom == 1);
  // Explicit padding uses floor mode: floor((7 + 2 - 3) / 2) + 1 = 4.
  CHECK(nddr::pool2d_output_shape("t", Shape::nchw(2, 3, 7, 8),
                                  Pool2dOptions{}.kernel(3).stride(2).padding(1)) ==
        Shape::nchw(2, 3, 4, 4));
  CHECK(nddr::MaxPool2d<float>(same2).output_shape(Shape::nchw(2, 64, 321, 321)) ==
        Shape::nchw(2, 64, 161, 161));
}

TEST_CASE("Pool2d: hand-computed max, argmax ties and average with padding", "[ops][pool]") {
  nddr::Context<nddr::Cpu> ctx(2);
  // 1x1x3x4 plane; SAME 2x2 stride 2 -> 2x2 output, pad only after (bottom 1, right 0).
  Tensor<double> x(Shape::nchw(1, 1, 3, 4));
  const double v[] = {1,  5, 5, 2,  //
                      5,  0, 3, 3,  //
                      -1, 4, 7, 9};
  for (int i = 0; i < 12; ++i) x[i] = v[i];
  const auto opt = Pool2dOptions{}.kernel(2).stride(2).same();
  Tensor<double> y(Shape::nchw(1, 1, 2, 2));
  Tensor<std::int64_t> arg(y.shape());
  nddr::ops::max_pool2d_forward(ctx, x.cview(), y.view(), arg.view(), opt);
  CHECK(y[0] == 5.0);
  CHECK(arg[0] == 1);  // first of the three 5s in row-major window order
  CHECK(y[1] == 5.0);
  CHECK(arg[1] == 2);
  CHECK(y[2] == 4.0);
  CHECK(arg[2] == 9);
  CHECK(y[3] == 9.0);
  CHECK(arg[3] == 11);

  Tensor<double> dy(y.shape(), 1.0), dx1(x.shape(), 0.5), dx2(x.shape(), 0.5);
  dy[1] = 2.0;
  nddr::ops::max_pool2d_backward(ctx, x.cview(), dy.cview(), dx1.view(), opt);
  nddr::ops::max_pool2d_backward(ctx, arg.cview(), dy.cview(), dx2.view());
  CHECK(dx1[1] == 1.5);
  CHECK(dx1[2] == 2.5);
  CHECK(dx1[4] == 0.5);
  for (int i = 0; i < 12; ++i) CHECK(dx1[i] == dx2[i]);

  // Average: the bottom windows hold one in-bounds row, so they divide by 2, not 4.
  nddr::ops::avg_pool2d_forward(ctx, x.cview(), y.view(), opt);
  CHECK(y[0] == Approx(11.0 / 4));
  CHECK(y[2] == Approx(3.0 / 2));
  CHECK(y[3] == Approx(16.0 / 2));
  nddr::ops::avg_pool2d_forward(ctx, x.cview(), y.view(), Pool2dOptions(opt).count_include_pad());
  CHECK(y[2] == Approx(3.0 / 4));
}

TEST_CASE("Pool2d: PyTorch reference values, forward and dx", "[ops][pool]") {
  nddr::Context<nddr::Cpu> ctx(2);
  const auto f = nddr::io::SafetensorsFile::read(kRefFile);
  int cases = 0;
  for (int i = 0; f.contains("pool" + std::to_string(i) + ".x"); ++i, ++cases) {
    const std::string p = "pool" + std::to_string(i) + ".";
    const auto params = f.values<double>(p + "params");
    const Pool2dOptions opt = options_from(params);
    const bool is_max = params[0] == 0.0;
    const Tensor<double> x = f.tensor<double>(p + "x");
    const Tensor<double> dy = f.tensor<double>(p + "dy");
    const auto y_ref = f.values<double>(p + "y");
    auto dx_ref = f.values<double>(p + "dx");
    for (double& d : dx_ref) d += 1.0;  // dx starts at 1: backward must accumulate
    INFO("case " << p << " x " << x.shape().str());

    Tensor<double> y(dy.shape()), dx(x.shape(), 1.0);
    if (is_max) {
      nddr::ops::max_pool2d_forward(ctx, x.cview(), y.view(), opt);
      nddr::ops::max_pool2d_backward(ctx, x.cview(), dy.cview(), dx.view(), opt);
    } else {
      nddr::ops::avg_pool2d_forward(ctx, x.cview(), y.view(), opt);
      nddr::ops::avg_pool2d_backward(ctx, x.cview(), dy.cview(), dx.view(), opt);
    }
    CHECK(max_rel_error(y, y_ref) == Approx(0.0).margin(1e-10));
    CHECK(max_rel_error(dx, dx_ref) == Approx(0.0).margin(1e-10));

    if (is_max) {
      Tensor<double> y2(dy.shape()), dx2(x.shape(), 1.0);
      Tensor<std::int32_t> arg(dy.shape());
      nddr::ops::max_pool2d_forward(ctx, x.cview(), y2.view(), arg.view(), opt);
      nddr::ops::max_pool2d_backward(ctx, arg.cview(), dy.cview(), dx2.view());
      CHECK(max_rel_error(y2, y_ref) == Approx(0.0).margin(1e-10));
      CHECK(max_rel_error(dx2, dx_ref) == Approx(0.0).margin(1e-10));
    }
  }
  CHECK(cases == 10);

  const Tensor<double> x = f.tensor<double>("gap.x");
  const Tensor<double> dy = f.tensor<double>("gap.dy");
  Tensor<double> y(dy.shape()), dx(x.shape());
  nddr::ops::global_avg_pool_forward(ctx, x.cview(), y.view());
  nddr::ops::global_avg_pool_backward(ctx, x.cview(), dy.cview(), dx.view());
  CHECK(max_rel_error(y, f.values<double>("gap.y")) == Approx(0.0).margin(1e-10));
  CHECK(max_rel_error(dx, f.values<double>("gap.dx")) == Approx(0.0).margin(1e-10));
}

TEST_CASE("Pool2d: float matches double", "[ops][pool]") {
  nddr::Context<nddr::Cpu> ctx(2);
  const auto opt = Pool2dOptions{}.kernel(3).stride(2).same();
  Tensor<double> xd(Shape::nchw(2, 3, 9, 8));
  fill_distinct(xd);
  Tensor<float> xf(xd.shape());
  for (std::int64_t i = 0; i < xd.numel(); ++i) xf[i] = static_cast<float>(xd[i]);
  const Shape out = nddr::pool2d_output_shape("t", xd.shape(), opt);
  Tensor<double> yd(out), dyd(out, 0.25), dxd(xd.shape());
  Tensor<float> yf(out), dyf(out, 0.25f), dxf(xf.shape());
  nddr::ops::avg_pool2d_forward(ctx, xd.cview(), yd.view(), opt);
  nddr::ops::avg_pool2d_forward(ctx, xf.cview(), yf.view(), opt);
  nddr::ops::avg_pool2d_backward(ctx, xd.cview(), dyd.cview(), dxd.view(), opt);
  nddr::ops::avg_pool2d_backward(ctx, xf.cview(), dyf.cview(), dxf.view(), opt);
  nddr::ops::max_pool2d_forward(ctx, xf.cview(), yf.view(), opt);
  nddr::ops::max_pool2d_backward(ctx, xf.cview(), dyf.cview(), dxf.view(), opt);
  nddr::ops::max_pool2d_forward(ctx, xd.cview(), yd.view(), opt);
  nddr::ops::max_pool2d_backward(ctx, xd.cview(), dyd.cview(), dxd.view(), opt);
  for (std::int64_t i = 0; i < yd.numel(); ++i) CHECK(yf[i] == Approx(yd[i]).margin(1e-6));
  for (std::int64_t i = 0; i < dxd.numel(); ++i) CHECK(dxf[i] == Approx(dxd[i]).margin(1e-6));
  Tensor<float> gf(Shape::nchw(2, 3, 1, 1));
  nddr::ops::global_avg_pool_forward(ctx, xf.cview(), gf.view());
  nddr::ops::global_avg_pool_backward(ctx, xf.cview(), gf.cview(), dxf.view());
  CHECK(std::isfinite(gf[0]));
}

TEST_CASE("Pool2d: finite-difference gradients of the ops", "[ops][pool]") {
  const std::vector<Pool2dOptions> opts = {
      Pool2dOptions{}.kernel(3).stride(2).same(),
      Pool2dOptions{}.kernel(3).same(),
      Pool2dOptions{}.kernel(3, 2).stride(2, 1).padding(1, 1),
      Pool2dOptions{}.kernel(3).stride(2).same().count_include_pad(),
      Pool2dOptions{}.kernel(3, 2).stride(2, 1).padding(1, 1).count_include_pad(),
  };
  for (const auto& opt : opts) {
    Tensor<double> x(Shape::nchw(2, 2, 7, 6));
    fill_distinct(x);
    const Shape out = nddr::pool2d_output_shape("t", x.shape(), opt);
    check_op_gradient(
        x, out,
        [&](auto& ctx, auto xv, auto yv) { nddr::ops::max_pool2d_forward(ctx, xv, yv, opt); },
        [&](auto& ctx, auto xv, auto dyv, auto dxv) {
          nddr::ops::max_pool2d_backward(ctx, xv, dyv, dxv, opt);
        });
    check_op_gradient(
        x, out,
        [&](auto& ctx, auto xv, auto yv) { nddr::ops::avg_pool2d_forward(ctx, xv, yv, opt); },
        [&](auto& ctx, auto xv, auto dyv, auto dxv) {
          nddr::ops::avg_pool2d_backward(ctx, xv, dyv, dxv, opt);
        });
  }
  Tensor<double> x(Shape::nchw(2, 3, 4, 5));
  fill_distinct(x);
  check_op_gradient(
      x, Shape::nchw(2, 3, 1, 1),
      [](auto& ctx, auto xv, auto yv) { nddr::ops::global_avg_pool_forward(ctx, xv, yv); },
      [](auto& ctx, auto xv, auto dyv, auto dxv) {
        nddr::ops::global_avg_pool_backward(ctx, xv, dyv, dxv);
      });
}

TEST_CASE("Pool2d: layer laws", "[ops][pool]") {
  const Shape in = Shape::nchw(2, 3, 9, 8);
  {
    nddr::MaxPool2d<double> layer(Pool2dOptions{}.kernel(3).stride(2).same());
    const auto r = nddr::testing::check_layer_laws(layer, in);
    INFO(r.report);
    CHECK(r.ok);
  }
  {
    nddr::MaxPool2d<double> layer(Pool2dOptions{}.kernel(3, 2).stride(1, 2).padding(1, 0));
    const auto r = nddr::testing::check_layer_laws(layer, in);
    INFO(r.report);
    CHECK(r.ok);
  }
  {
    nddr::AvgPool2d<double> layer(Pool2dOptions{}.kernel(3).same());
    const auto r = nddr::testing::check_layer_laws(layer, in);
    INFO(r.report);
    CHECK(r.ok);
  }
  {
    nddr::AvgPool2d<double> layer(
        Pool2dOptions{}.kernel(3).stride(2).padding(1).count_include_pad());
    const auto r = nddr::testing::check_layer_laws(layer, in);
    INFO(r.report);
    CHECK(r.ok);
  }
  {
    nddr::GlobalAvgPool<double> layer;
    CHECK(layer.output_shape(in) == Shape::nchw(2, 3, 1, 1));
    const auto r = nddr::testing::check_layer_laws(layer, in);
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("Pool2d: bad input", "[ops][pool]") {
  using Catch::Contains;
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> x(Shape::nchw(1, 2, 3, 3));
  Tensor<double> y(Shape::nchw(1, 2, 1, 1));

  CHECK_THROWS_AS(
      nddr::ops::max_pool2d_forward(ctx, x.cview(), y.view(), Pool2dOptions{}.kernel(5)),
      nddr::ShapeError);
  CHECK_THROWS_WITH(
      nddr::ops::max_pool2d_forward(ctx, x.cview(), y.view(), Pool2dOptions{}.kernel(5)),
      Contains("max_pool2d_forward") && Contains("kernel (5, 5)") && Contains("(1, 2, 3, 3)"));
  CHECK_THROWS_WITH(
      nddr::MaxPool2d<double>(Pool2dOptions{}.kernel(4, 2)).output_shape(Shape::nchw(1, 1, 3, 8)),
      Contains("nddr::MaxPool2d") && Contains("(1, 1, 3, 8)"));
  CHECK_THROWS_AS(nddr::ops::avg_pool2d_forward(ctx, x.cview(), y.view(),
                                                Pool2dOptions{}.kernel(2).stride(0, 1)),
                  nddr::OptionError);
  CHECK_THROWS_WITH(nddr::ops::avg_pool2d_forward(ctx, x.cview(), y.view(),
                                                  Pool2dOptions{}.kernel(2).stride(0, 1)),
                    Contains("avg_pool2d_forward") && Contains("stride_h") && Contains("got 0"));
  CHECK_THROWS_WITH(
      nddr::ops::avg_pool2d_forward(ctx, x.cview(), y.view(), Pool2dOptions{}.kernel(2, 0)),
      Contains("kernel_w") && Contains("got 0"));
  CHECK_THROWS_WITH(
      nddr::ops::max_pool2d_forward(ctx, x.cview(), y.view(), Pool2dOptions{}.kernel(3).padding(2)),
      Contains("pad_h") && Contains("got 2"));
  // A wrong output shape names both shapes.
  Tensor<double> y_bad(Shape::nchw(1, 2, 2, 2));
  CHECK_THROWS_WITH(nddr::ops::max_pool2d_forward(ctx, x.cview(), y.view(),
                                                  Pool2dOptions{}.kernel(3).same().stride(2)),
                    Contains("y has shape (1, 2, 1, 1)") && Contains("expected (1, 2, 2, 2)"));
  CHECK_THROWS_WITH(nddr::ops::avg_pool2d_forward(ctx, x.cview(), y_bad.view(),
                                                  Pool2dOptions{}.kernel(3).stride(2)),
                    Contains("y has shape (1, 2, 2, 2)") && Contains("expected (1, 2, 1, 1)"));
  // An argmax index outside the plane is data corruption, reported as ValueError.
  Tensor<std::int64_t> arg(y.shape(), 9);
  Tensor<double> dx(x.shape());
  CHECK_THROWS_AS(nddr::ops::max_pool2d_backward(ctx, arg.cview(), y.cview(), dx.view()),
                  nddr::ValueError);
  CHECK_THROWS_AS(nddr::ops::max_pool2d_backward(ctx, arg.cview(), y.cview(), dx.view(),
                                                 nddr::ArgmaxCheck::kValidate),
                  nddr::ValueError);
  // A trusted argmax (what the forward wrote) routes exactly as a validated one.
  Tensor<std::int64_t> good(y.shape(), 3);
  Tensor<double> dx_trusted(x.shape());
  y[0] = 1.5;
  y[1] = -2.0;
  nddr::ops::max_pool2d_backward(ctx, good.cview(), y.cview(), dx.view());
  nddr::ops::max_pool2d_backward(ctx, good.cview(), y.cview(), dx_trusted.view(),
                                 nddr::ArgmaxCheck::kTrusted);
  for (std::int64_t i = 0; i < dx.numel(); ++i) CHECK(dx_trusted[i] == dx[i]);
  CHECK(dx[3] == 1.5);
  CHECK(dx[9 + 3] == -2.0);
  Tensor<double> gy(Shape::nchw(1, 2, 2, 1));
  CHECK_THROWS_WITH(nddr::ops::global_avg_pool_forward(ctx, x.cview(), gy.view()),
                    Contains("global_avg_pool_forward") && Contains("(1, 2, 2, 1)"));
}

namespace {

/// Max pooling of output pixel (oh, ow) by the definition: scan the in-bounds window cells in
/// row-major order; the first NaN, else the first maximum, with its plane index.
template <class T>
T naive_max_pool(const T* plane, const nddr::Pool2dGeometry& g, std::int64_t oh, std::int64_t ow,
                 std::int64_t& arg) {
  bool found = false;
  T best = T(0);
  for (std::int64_t h = oh * g.stride_h - g.pad_top; h < oh * g.stride_h - g.pad_top + g.kernel_h;
       ++h)
    for (std::int64_t w = ow * g.stride_w - g.pad_left;
         w < ow * g.stride_w - g.pad_left + g.kernel_w; ++w) {
      if (h < 0 || h >= g.in_h || w < 0 || w >= g.in_w) continue;
      const T v = plane[h * g.in_w + w];
      if (!found || (!std::isnan(best) && (std::isnan(v) || v > best))) {
        best = v;
        arg = h * g.in_w + w;
        found = true;
      }
    }
  return best;
}

/// Average pooling of (oh, ow) by the definition, summed in row-major window order.
template <class T>
T naive_avg_pool(const T* plane, const nddr::Pool2dGeometry& g, std::int64_t oh, std::int64_t ow,
                 bool include_pad) {
  T sum = T(0);
  std::int64_t inside = 0, padded = 0;
  for (std::int64_t h = oh * g.stride_h - g.pad_top; h < oh * g.stride_h - g.pad_top + g.kernel_h;
       ++h)
    for (std::int64_t w = ow * g.stride_w - g.pad_left;
         w < ow * g.stride_w - g.pad_left + g.kernel_w; ++w) {
      if (h < g.in_h + g.pad_bottom && w < g.in_w + g.pad_right) ++padded;
      if (h < 0 || h >= g.in_h || w < 0 || w >= g.in_w) continue;
      sum += plane[h * g.in_w + w];
      ++inside;
    }
  return sum / static_cast<T>(include_pad ? padded : inside);
}

/// Same value to the bit, NaN included (any NaN equals any NaN; the sign of zero counts).
template <class T>
bool same_value(T a, T b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

}  // namespace

TEMPLATE_TEST_CASE("Pool2d: row sweeps match the definition at every edge/interior split",
                   "[ops][pool]", float, double) {
  using T = TestType;
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Rng rng(17);
  // Few distinct values, signed zeros and NaNs, so that windows hold ties and NaNs.
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const T pool[] = {T(-1), T(-0.0), T(0), T(1), T(2), T(2), T(0.5), nan};
  const std::pair<int, int> kernels[] = {{1, 1}, {2, 2}, {3, 3}, {3, 2}, {2, 3}, {4, 4}};
  const std::pair<int, int> strides[] = {{1, 1}, {2, 2}, {1, 2}, {2, 1}, {3, 3}};
  int checked = 0;
  for (const int in_h : {1, 2, 3, 4, 5, 8, 9})
    for (const int in_w : {1, 2, 3, 4, 5, 8, 9, 17, 40})
      for (const auto& [kh, kw] : kernels)
        for (const auto& [sh, sw] : strides)
          for (int pad_mode = 0; pad_mode < 3; ++pad_mode) {
            // pad_mode: 0 TF SAME, 1 no padding, 2 explicit kernel / 2.
            auto opt = Pool2dOptions{}.kernel(kh, kw).stride(sh, sw);
            if (pad_mode == 0) opt.same();
            if (pad_mode == 2) opt.padding(kh / 2, kw / 2);
            const Shape xs = Shape::nchw(1, 2, in_h, in_w);
            nddr::Pool2dGeometry g;
            try {
              g = nddr::pool2d_geometry("t", xs, opt);
            } catch (const nddr::ShapeError&) {
              continue;  // kernel larger than the padded input
            }
            Tensor<T> x(xs);
            for (std::int64_t i = 0; i < x.numel(); ++i) {
              // One cell in 16 NaN; the rest from the tie-heavy pool.
              const auto r = static_cast<int>(rng.uniform(0.0, 16.0));
              x[i] = r == 0 ? nan : pool[r % 7];
            }
            const Shape ys = nddr::pool2d_output_shape("t", xs, opt);
            Tensor<T> y(ys), y32(ys), y64(ys), ya(ys), yp(ys);
            Tensor<std::int32_t> a32(ys);
            Tensor<std::int64_t> a64(ys);
            nddr::ops::max_pool2d_forward(ctx, x.cview(), y.view(), opt);
            nddr::ops::max_pool2d_forward(ctx, x.cview(), y32.view(), a32.view(), opt);
            nddr::ops::max_pool2d_forward(ctx, x.cview(), y64.view(), a64.view(), opt);
            nddr::ops::avg_pool2d_forward(ctx, x.cview(), ya.view(), opt);
            nddr::ops::avg_pool2d_forward(ctx, x.cview(), yp.view(),
                                          Pool2dOptions(opt).count_include_pad());
            bool ok = true;
            for (std::int64_t p = 0; p < 2; ++p)
              for (std::int64_t oh = 0; oh < g.out_h; ++oh)
                for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
                  const std::int64_t o = (p * g.out_h + oh) * g.out_w + ow;
                  const T* plane = x.data() + p * in_h * in_w;
                  std::int64_t arg = -1;
                  const T m = naive_max_pool(plane, g, oh, ow, arg);
                  ok = ok && same_value(y[o], m) && same_value(y32[o], m) &&
                       same_value(y64[o], m) && a32[o] == arg && a64[o] == arg &&
                       same_value(ya[o], naive_avg_pool(plane, g, oh, ow, false)) &&
                       same_value(yp[o], naive_avg_pool(plane, g, oh, ow, true));
                }
            INFO("x " << xs.str() << " kernel (" << kh << ", " << kw << ") stride (" << sh
                      << ", " << sw << ") pad mode " << pad_mode);
            CHECK(ok);
            ++checked;
          }
  CHECK(checked > 1000);
}
