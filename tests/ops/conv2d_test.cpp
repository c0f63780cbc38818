// Conv2d op and layer: geometry, bad inputs, im2col/col2im element bodies, finite-difference
// gradients (op and laws kit), PyTorch reference values in double and float.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <nddr/ops/conv2d.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/layers/conv2d.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <nddr/testing/layer_laws.hpp>
#include <string>
#include <vector>

#include "../support/bf16.hpp"

namespace {

using nddr::Conv2dOptions;
using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;

template <class T>
void fill_uniform(Tensor<T>& t, nddr::Rng& rng) {
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(rng.uniform(-1.0, 1.0));
}

/// max_i |a_i - b_i| / (1 + |b_i|).
template <class A>
double max_rel_error(const A* a, const std::vector<double>& b) {
  double e = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i)
    e = std::max(e, std::abs(static_cast<double>(a[i]) - b[i]) / (1.0 + std::abs(b[i])));
  return e;
}

template <class T>
Tensor<T> to_tensor(const nddr::io::SafetensorsFile& f, const std::string& name) {
  return f.tensor<T>(name);
}

Conv2dOptions options_from_config(const std::vector<double>& c) {
  auto i = [&](std::size_t k) { return static_cast<std::int64_t>(c[k]); };
  Conv2dOptions opt =
      Conv2dOptions{}.stride(i(0), i(1)).dilation(i(2), i(3)).padding(i(4), i(5)).bias(c[7] != 0.0);
  if (c[6] != 0.0) opt.same();
  return opt;
}

const char* const kReferenceCases[] = {"pad1",      "dil2",          "dil12",
                                       "same_s2",   "same_s2_asym",  "same_s2_dil2",
                                       "pointwise", "strided_nobias"};

nddr::io::SafetensorsFile reference_file() {
  return nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/conv2d.safetensors");
}

}  // namespace

TEST_CASE("Conv2d: output shape and TF 'SAME' padding", "[ops][conv2d]") {
  const Shape x = Shape::nchw(2, 3, 7, 9);
  const Shape w = Shape::nchw(4, 3, 4, 2);
  CHECK(nddr::conv2d_output_shape(x, w, Conv2dOptions{}) == Shape::nchw(2, 4, 4, 8));
  CHECK(nddr::conv2d_output_shape(x, w, Conv2dOptions{}.padding(1, 2).stride(2, 3)) ==
        Shape::nchw(2, 4, 3, 4));
  // SAME, stride 2: OH = ceil(7/2) = 4, pad_h total (4-1)*2+4-7 = 3 -> 1 before, 2 after;
  // OW = ceil(9/2) = 5, pad_w total (5-1)*2+2-9 = 1 -> 0 before, 1 after.
  const auto g = nddr::conv2d_geometry(x, w, Conv2dOptions{}.stride(2).same());
  CHECK(g.out_h == 4);
  CHECK(g.out_w == 5);
  CHECK(g.pad_top == 1);
  CHECK(g.pad_bottom == 2);
  CHECK(g.pad_left == 0);
  CHECK(g.pad_right == 1);
  // Dilation 12 with pad 12 keeps the size (DeepLab fc6).
  CHECK(nddr::conv2d_output_shape(Shape::nchw(1, 512, 21, 21), Shape::nchw(1024, 512, 3, 3),
                                  Conv2dOptions{}.dilation(12).padding(12)) ==
        Shape::nchw(1, 1024, 21, 21));
  // SAME never pads negatively: a 1x1 stride-2 kernel needs no padding.
  const auto g1 =
      nddr::conv2d_geometry(x, Shape::nchw(4, 3, 1, 1), Conv2dOptions{}.stride(2).same());
  CHECK(g1.pad_top + g1.pad_bottom + g1.pad_left + g1.pad_right == 0);
  CHECK(g1.out_h == 4);
  CHECK(nddr::conv2d_geometry(x, Shape::nchw(4, 3, 1, 1), Conv2dOptions{}).is_pointwise());
  CHECK_FALSE(
      nddr::conv2d_geometry(x, Shape::nchw(4, 3, 1, 1), Conv2dOptions{}.stride(2)).is_pointwise());
}

TEST_CASE("Conv2d: bad inputs throw errors naming the field, the op and the shapes",
          "[ops][conv2d]") {
  const Shape x = Shape::nchw(1, 3, 5, 5);
  const Shape w = Shape::nchw(2, 3, 3, 3);
  CHECK_THROWS_AS(nddr::conv2d_output_shape(x, w, Conv2dOptions{}.stride(0)), nddr::OptionError);
  CHECK_THROWS_WITH(nddr::conv2d_output_shape(x, w, Conv2dOptions{}.stride(1, 0)),
                    Catch::Contains("stride_w") && Catch::Contains("got 0"));
  CHECK_THROWS_WITH(nddr::conv2d_output_shape(x, w, Conv2dOptions{}.dilation(-2, 1)),
                    Catch::Contains("dilation_h") && Catch::Contains("got -2"));
  CHECK_THROWS_WITH(nddr::conv2d_output_shape(x, w, Conv2dOptions{}.padding(-1)),
                    Catch::Contains("pad_h") && Catch::Contains("got -1"));
  // Dilation 3: the 3x3 kernel spans 7 > 5 + 2 * 0.
  CHECK_THROWS_AS(nddr::conv2d_output_shape(x, w, Conv2dOptions{}.dilation(3)), nddr::ShapeError);
  CHECK_THROWS_WITH(nddr::conv2d_output_shape(x, w, Conv2dOptions{}.dilation(3)),
                    Catch::Contains("conv2d") && Catch::Contains("(1, 3, 5, 5)") &&
                        Catch::Contains("(2, 3, 3, 3)") && Catch::Contains("extent 7"));
  CHECK_NOTHROW(nddr::conv2d_output_shape(x, w, Conv2dOptions{}.dilation(3).padding(1)));
  CHECK_THROWS_WITH(nddr::conv2d_output_shape(Shape::nchw(1, 4, 5, 5), w, Conv2dOptions{}),
                    Catch::Contains("(1, 4, 5, 5)") && Catch::Contains("(2, 3, 3, 3)") &&
                        Catch::Contains("channels"));

  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> xt(x), wt(w), b(Shape{2}), y(Shape::nchw(1, 2, 3, 3));
  Tensor<double> bad_y(Shape::nchw(1, 2, 5, 5)), bad_b(Shape{3});
  CHECK_THROWS_WITH(
      nddr::ops::conv2d_forward<double>(ctx, xt, wt, b, bad_y.view(), Conv2dOptions{}),
      Catch::Contains("conv2d_forward") && Catch::Contains("(1, 2, 5, 5)") &&
          Catch::Contains("(1, 2, 3, 3)"));
  CHECK_THROWS_WITH(
      nddr::ops::conv2d_forward<double>(ctx, xt, wt, bad_b, y.view(), Conv2dOptions{}),
      Catch::Contains("conv2d_forward") && Catch::Contains("bias") && Catch::Contains("(3)"));
  CHECK_THROWS_WITH(nddr::ops::conv2d_forward<double>(ctx, xt, wt, {}, y.view(), Conv2dOptions{}),
                    Catch::Contains("use_bias is true"));
  CHECK_THROWS_AS(
      nddr::ops::conv2d_forward<double>(ctx, xt, wt, b, y.view(), Conv2dOptions{}.bias(false)),
      nddr::OptionError);
  CHECK_THROWS_WITH(
      nddr::ops::conv2d_forward<double>(ctx, xt, wt, b, y.view(), Conv2dOptions{}.stride(0)),
      Catch::Contains("conv2d_forward") && Catch::Contains("stride_h"));
  Tensor<double> dx(x), dw(w), db(Shape{2});
  CHECK_THROWS_WITH(nddr::ops::conv2d_backward<double>(ctx, xt, wt, bad_y, dx.view(), dw.view(),
                                                       db.view(), Conv2dOptions{}),
                    Catch::Contains("conv2d_backward") && Catch::Contains("dy"));

  CHECK_THROWS_WITH(nddr::Conv2d<double>(3, 4, 3, Conv2dOptions{}.stride(0)),
                    Catch::Contains("nddr::Conv2d") && Catch::Contains("stride_h"));
  CHECK_THROWS_WITH(nddr::Conv2d<double>(3, 0, 3), Catch::Contains("out_channels"));
  nddr::Conv2d<double> layer(3, 4, 3);
  CHECK_THROWS_AS(layer.output_shape(Shape::nchw(1, 5, 8, 8)), nddr::ShapeError);
}

TEST_CASE("Conv2d: CPU im2col/col2im loops agree with the shared element bodies", "[ops][conv2d]") {
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Rng rng(3);
  struct Geo {
    Shape x, w;
    Conv2dOptions opt;
  };
  const Geo geos[] = {
      {Shape::nchw(1, 3, 9, 8), Shape::nchw(1, 3, 3, 3), Conv2dOptions{}.padding(1)},
      {Shape::nchw(1, 2, 8, 7), Shape::nchw(1, 2, 3, 3),
       Conv2dOptions{}.stride(2).dilation(2).same()},
      {Shape::nchw(1, 2, 7, 9), Shape::nchw(1, 2, 4, 2),
       Conv2dOptions{}.stride(3, 2).padding(2, 1)},
      {Shape::nchw(1, 3, 27, 27), Shape::nchw(1, 3, 3, 3),
       Conv2dOptions{}.dilation(12).padding(12)},
  };
  for (const Geo& geo : geos) {
    const auto g = nddr::conv2d_geometry(geo.x, geo.w, geo.opt);
    Tensor<double> x(geo.x);  // (1, C, H, W)
    fill_uniform(x, rng);
    const Shape col_shape{g.col_rows(), g.col_cols()};
    Tensor<double> col(col_shape, 99.0);  // (K, P); stale values must be overwritten
    nddr::ops::conv2d_im2col(ctx, x.data(), g, col.data());
    int im2col_mismatches = 0;
    for (std::int64_t r = 0; r < g.col_rows(); ++r)
      for (std::int64_t c = 0; c < g.col_cols(); ++c)
        im2col_mismatches +=
            col[r * g.col_cols() + c] != nddr::ops::im2col_element(x.data(), g, r, c);
    CHECK(im2col_mismatches == 0);

    fill_uniform(col, rng);
    Tensor<double> dx(geo.x, 0.25);  // (1, C, H, W): col2im must add, not assign
    nddr::ops::conv2d_col2im_add(ctx, static_cast<const double*>(col.data()), g, dx.data());
    double err = 0.0;
    for (std::int64_t c = 0; c < g.in_c; ++c)
      for (std::int64_t h = 0; h < g.in_h; ++h)
        for (std::int64_t w = 0; w < g.in_w; ++w)
          err = std::max(err, std::abs(dx(0, c, h, w) - 0.25 -
                                       nddr::ops::col2im_element(col.data(), g, c, h, w)));
    CHECK(err < 1e-13);
  }
}

TEST_CASE("Conv2d: op gradients wrt input, weight and bias match finite differences",
          "[ops][conv2d]") {
  struct Case {
    const char* name;
    Shape x, w;
    Conv2dOptions opt;
  };
  const Case cases[] = {
      {"3x3 pad 1", Shape::nchw(2, 3, 6, 5), Shape::nchw(4, 3, 3, 3), Conv2dOptions{}.padding(1)},
      {"dilation 2", Shape::nchw(1, 2, 9, 8), Shape::nchw(3, 2, 3, 3),
       Conv2dOptions{}.dilation(2).padding(2)},
      {"stride 2 SAME asym", Shape::nchw(2, 2, 7, 9), Shape::nchw(3, 2, 4, 2),
       Conv2dOptions{}.stride(2).same()},
      {"1x1", Shape::nchw(2, 4, 5, 3), Shape::nchw(3, 4, 1, 1), Conv2dOptions{}},
      {"no bias", Shape::nchw(1, 3, 6, 7), Shape::nchw(2, 3, 2, 3),
       Conv2dOptions{}.stride(2, 1).padding(1, 0).bias(false)},
  };
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Rng rng(11);
  for (const Case& c : cases) {
    INFO(c.name);
    const Shape out = nddr::conv2d_output_shape(c.x, c.w, c.opt);
    Tensor<double> x(c.x), w(c.w), b(Shape{c.w.n()}), y(out), r(out);
    fill_uniform(x, rng);
    fill_uniform(w, rng);
    fill_uniform(b, rng);
    fill_uniform(r, rng);
    const TensorView<const double> bv = c.opt.use_bias ? b.cview() : TensorView<const double>{};
    auto loss = [&] {
      nddr::ops::conv2d_forward<double>(ctx, x, w, bv, y.view(), c.opt);
      double s = 0.0;
      for (std::int64_t i = 0; i < y.numel(); ++i) s += y[i] * r[i];
      return s;
    };
    Tensor<double> dx(c.x), dw(c.w, 5.0), db(b.shape(), 5.0);
    nddr::ops::conv2d_backward<double>(ctx, x, w, r, dx.view(), dw.view(),
                                       c.opt.use_bias ? db.view() : TensorView<double>{}, c.opt);
    auto rx = nddr::testing::check_gradient("dx", x.data(), x.numel(), dx.data(), loss);
    INFO(rx.report);
    CHECK(rx.ok);
    auto rw = nddr::testing::check_gradient("dw", w.data(), w.numel(), dw.data(), loss);
    INFO(rw.report);
    CHECK(rw.ok);
    if (c.opt.use_bias) {
      auto rb = nddr::testing::check_gradient("db", b.data(), b.numel(), db.data(), loss);
      INFO(rb.report);
      CHECK(rb.ok);
    }
  }
}

TEST_CASE("Conv2d: layer laws (determinism, accumulate/assign, finite differences)",
          "[ops][conv2d]") {
  struct Case {
    const char* name;
    nddr::Conv2d<double> layer;
    Shape in;
  };
  Case cases[] = {
      {"3x3 pad 1", nddr::Conv2d<double>(3, 4, 3, Conv2dOptions{}.padding(1)),
       Shape::nchw(2, 3, 6, 5)},
      {"3x3 dilation 2", nddr::Conv2d<double>(2, 3, 3, Conv2dOptions{}.dilation(2).padding(2)),
       Shape::nchw(1, 2, 9, 8)},
      {"stride 2 SAME odd", nddr::Conv2d<double>(2, 3, 3, Conv2dOptions{}.stride(2).same()),
       Shape::nchw(2, 2, 9, 7)},
      {"1x1", nddr::Conv2d<double>(4, 3, 1), Shape::nchw(2, 4, 5, 3)},
      {"non-square kernel", nddr::Conv2d<double>(2, 3, 2, 4, Conv2dOptions{}.padding(1, 2)),
       Shape::nchw(1, 2, 5, 6)},
      {"no bias", nddr::Conv2d<double>(3, 2, 3, Conv2dOptions{}.stride(2, 1).bias(false)),
       Shape::nchw(2, 3, 7, 6)},
  };
  for (Case& c : cases) {
    INFO(c.name);
    auto r = nddr::testing::check_layer_laws(c.layer, c.in);
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("Conv2d: layer parameters and initialisation", "[ops][conv2d]") {
  nddr::ParameterStore<double> store;
  nddr::Conv2d<double> conv(16, 32, 3);
  nddr::Conv2d<double> head(32, 64, 1, Conv2dOptions{}.bias(false));
  head.set_init(nddr::Conv2dInit::kKaimingNormal);
  conv.declare(store, "stage1.conv1");
  head.declare(store, "stage1.head");
  REQUIRE(store.parameters().size() == 3);
  CHECK(store.find("stage1.conv1.weight").has_value());
  CHECK(store.find("stage1.conv1.bias").has_value());
  CHECK_FALSE(store.find("stage1.head.bias").has_value());
  store.allocate();
  auto b = store.value(*store.find("stage1.conv1.bias"));
  b[0] = 1.0;
  nddr::Rng rng(5);
  conv.initialize(rng);
  head.initialize(rng);
  CHECK(b[0] == 0.0);

  auto w = store.value(*store.find("stage1.conv1.weight"));
  const double limit = std::sqrt(6.0 / (9.0 * 16 + 9.0 * 32));
  double lo = 0.0, hi = 0.0, sq = 0.0;
  for (std::int64_t i = 0; i < w.numel(); ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
    sq += w[i] * w[i];
  }
  CHECK(lo >= -limit);
  CHECK(hi <= limit);
  CHECK(hi > 0.95 * limit);  // spans the interval, not a smaller one
  CHECK(sq / static_cast<double>(w.numel()) == Approx(limit * limit / 3.0).epsilon(0.05));

  auto k = store.value(*store.find("stage1.head.weight"));
  double mean = 0.0, var = 0.0;
  for (std::int64_t i = 0; i < k.numel(); ++i) mean += k[i];
  mean /= static_cast<double>(k.numel());
  for (std::int64_t i = 0; i < k.numel(); ++i) var += (k[i] - mean) * (k[i] - mean);
  var /= static_cast<double>(k.numel());
  CHECK(std::abs(mean) < 0.02);
  CHECK(var == Approx(2.0 / 64.0).epsilon(0.06));
}

TEST_CASE("Conv2d: matches PyTorch in double (forward y, then dx, dw, db for a given dy)",
          "[ops][conv2d]") {
  const auto f = reference_file();
  nddr::Context<nddr::Cpu> ctx(2);
  for (const char* name : kReferenceCases) {
    const std::string p = std::string(name) + ".";
    INFO(name);
    REQUIRE(f.contains(p + "x"));
    const Conv2dOptions opt = options_from_config(f.values<double>(p + "config"));
    const Tensor<double> x = to_tensor<double>(f, p + "x");
    const Tensor<double> w = to_tensor<double>(f, p + "w");
    const Tensor<double> dy = to_tensor<double>(f, p + "dy");
    const Tensor<double> b = opt.use_bias ? to_tensor<double>(f, p + "b") : Tensor<double>{};
    REQUIRE(nddr::conv2d_output_shape(x.shape(), w.shape(), opt) == dy.shape());

    Tensor<double> y(dy.shape(), 7.0), dx(x.shape()), dw(w.shape(), 7.0), db(b.shape(), 7.0);
    nddr::ops::conv2d_forward<double>(ctx, x, w, b, y.view(), opt);
    CHECK(max_rel_error(y.data(), f.values<double>(p + "y")) < 1e-9);
    nddr::ops::conv2d_backward<double>(ctx, x, w, dy, dx.view(), dw.view(),
                                       opt.use_bias ? db.view() : TensorView<double>{}, opt);
    CHECK(max_rel_error(dx.data(), f.values<double>(p + "dx")) < 1e-9);
    CHECK(max_rel_error(dw.data(), f.values<double>(p + "dw")) < 1e-9);
    if (opt.use_bias) CHECK(max_rel_error(db.data(), f.values<double>(p + "db")) < 1e-9);
  }
}

TEST_CASE("Conv2d: float matches the double PyTorch reference", "[ops][conv2d]") {
  const auto f = reference_file();
  nddr::Context<nddr::Cpu> ctx(2);
  for (const char* name : kReferenceCases) {
    const std::string p = std::string(name) + ".";
    INFO(name);
    const Conv2dOptions opt = options_from_config(f.values<double>(p + "config"));
    const Tensor<float> x = to_tensor<float>(f, p + "x");
    const Tensor<float> w = to_tensor<float>(f, p + "w");
    const Tensor<float> dy = to_tensor<float>(f, p + "dy");
    const Tensor<float> b = opt.use_bias ? to_tensor<float>(f, p + "b") : Tensor<float>{};
    Tensor<float> y(dy.shape()), dx(x.shape()), dw(w.shape()), db(b.shape());
    nddr::ops::conv2d_forward<float>(ctx, x, w, b, y.view(), opt);
    CHECK(max_rel_error(y.data(), f.values<double>(p + "y")) < 1e-5);
    nddr::ops::conv2d_backward<float>(ctx, x, w, dy, dx.view(), dw.view(),
                                      opt.use_bias ? db.view() : TensorView<float>{}, opt);
    CHECK(max_rel_error(dx.data(), f.values<double>(p + "dx")) < 1e-5);
    CHECK(max_rel_error(dw.data(), f.values<double>(p + "dw")) < 1e-4);
  }
}

TEST_CASE("Conv2d: layer with PyTorch weights reproduces the reference", "[ops][conv2d]") {
  const auto f = reference_file();
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Conv2d<double> conv(3, 2, 3, Conv2dOptions{}.dilation(12).padding(12));
  nddr::ParameterStore<double> store;
  conv.declare(store, "fc6");
  store.allocate();
  const auto wr = f.values<double>("dil12.w");
  const auto br = f.values<double>("dil12.b");
  std::copy(wr.begin(), wr.end(), store.value(*store.find("fc6.weight")).data());
  std::copy(br.begin(), br.end(), store.value(*store.find("fc6.bias")).data());
  const Tensor<double> x = to_tensor<double>(f, "dil12.x");
  const Tensor<double> dy = to_tensor<double>(f, "dil12.dy");
  Tensor<double> y(conv.output_shape(x.shape())), dx(x.shape());
  conv.forward(ctx, x, y.view());
  CHECK(max_rel_error(y.data(), f.values<double>("dil12.y")) < 1e-9);
  conv.backward(ctx, x, y, dy, dx.view());
  CHECK(max_rel_error(dx.data(), f.values<double>("dil12.dx")) < 1e-9);
  CHECK(max_rel_error(store.grad(*store.find("fc6.weight")).data(), f.values<double>("dil12.dw")) <
        1e-9);
  CHECK(max_rel_error(store.grad(*store.find("fc6.bias")).data(), f.values<double>("dil12.db")) <
        1e-9);
}

TEST_CASE("Conv2d: results do not depend on the thread count", "[ops][conv2d]") {
  // K = 24 * 9 = 216 and P = 144 columns: both GEMM splits use several chunks at 3 threads.
  const Shape xs = Shape::nchw(2, 24, 12, 12), ws = Shape::nchw(8, 24, 3, 3);
  const Conv2dOptions opt = Conv2dOptions{}.padding(1);
  nddr::Rng rng(17);
  Tensor<double> x(xs), w(ws), b(Shape{8}), dy(nddr::conv2d_output_shape(xs, ws, opt));
  fill_uniform(x, rng);
  fill_uniform(w, rng);
  fill_uniform(b, rng);
  fill_uniform(dy, rng);
  auto run = [&](int threads) {
    nddr::Context<nddr::Cpu> ctx(threads);
    Tensor<double> y(dy.shape()), dx(xs), dw(ws), db(Shape{8});
    nddr::ops::conv2d_forward<double>(ctx, x, w, b, y.view(), opt);
    nddr::ops::conv2d_backward<double>(ctx, x, w, dy, dx.view(), dw.view(), db.view(), opt);
    std::vector<double> all(y.data(), y.data() + y.numel());
    all.insert(all.end(), dx.data(), dx.data() + dx.numel());
    all.insert(all.end(), dw.data(), dw.data() + dw.numel());
    all.insert(all.end(), db.data(), db.data() + db.numel());
    return all;
  };
  const std::vector<double> one = run(1);
  const std::vector<double> three = run(3);
  REQUIRE(one.size() == three.size());
  CHECK(max_rel_error(three.data(), one) < 1e-12);
}

namespace {

// Direct (naive) convolution in double: the reference for the blocked CPU path.
void naive_conv(const nddr::Tensor<double>& x, const nddr::Tensor<double>& w,
                const nddr::Conv2dGeometry& g, nddr::Tensor<double>& y) {
  const std::int64_t n = x.shape()[0];
  for (std::int64_t b = 0; b < n; ++b)
    for (std::int64_t o = 0; o < g.out_c; ++o)
      for (std::int64_t oh = 0; oh < g.out_h; ++oh)
        for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
          double s = 0.0;
          for (std::int64_t c = 0; c < g.in_c; ++c)
            for (std::int64_t kh = 0; kh < g.kernel_h; ++kh)
              for (std::int64_t kw = 0; kw < g.kernel_w; ++kw) {
                const std::int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dilation_h;
                const std::int64_t iw = ow * g.stride_w - g.pad_left + kw * g.dilation_w;
                if (ih < 0 || iw < 0 || ih >= g.in_h || iw >= g.in_w) continue;
                s += x(b, c, ih, iw) * w(o, c, kh, kw);
              }
          y(b, o, oh, ow) = s;
        }
}

}  // namespace

TEST_CASE("Conv2d: blocked im2col columns equal the full im2col on every sub-range",
          "[ops][conv2d]") {
  nddr::Rng rng(5);
  for (const auto& opt : {nddr::Conv2dOptions{}.padding(1), nddr::Conv2dOptions{}.stride(2).same(),
                          nddr::Conv2dOptions{}.dilation(2).padding(2)}) {
    nddr::Tensor<double> x(nddr::Shape::nchw(1, 3, 37, 41)), w(nddr::Shape::nchw(4, 3, 3, 3));
    for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1, 1);
    const auto g = nddr::conv2d_geometry(x.shape(), w.shape(), opt, "test");
    const std::int64_t rows = g.col_rows(), cols = g.col_cols();
    std::vector<double> full(static_cast<std::size_t>(rows * cols));
    nddr::Context<nddr::Cpu> ctx(2);
    nddr::ops::conv2d_im2col(ctx, x.data(), g, full.data());
    for (std::int64_t p0 : {std::int64_t{0}, std::int64_t{1}, cols / 3, cols - 7}) {
      const std::int64_t p1 = std::min(cols, p0 + 517);
      std::vector<double> part(static_cast<std::size_t>(rows * (p1 - p0)));
      nddr::ops::conv2d_im2col_columns(x.data(), g, p0, p1, part.data());
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t p = p0; p < p1; ++p)
          REQUIRE(part[static_cast<std::size_t>(r * (p1 - p0) + p - p0)] ==
                  full[static_cast<std::size_t>(r * cols + p)]);
    }
  }
}

TEST_CASE("Conv2d: many-block forward and weight gradient match a direct convolution",
          "[ops][conv2d]") {
  // Output planes of 1,640 and 3,000+ pixels span several column blocks and partial rows.
  nddr::Rng rng(9);
  for (const auto& opt : {nddr::Conv2dOptions{}.padding(1).bias(false),
                          nddr::Conv2dOptions{}.stride(2).same().bias(false),
                          nddr::Conv2dOptions{}.dilation(2).padding(2).bias(false)}) {
    for (int threads : {1, 2, 3}) {
      nddr::Context<nddr::Cpu> ctx(threads);
      nddr::Tensor<double> x(nddr::Shape::nchw(2, 3, 40, 83)), w(nddr::Shape::nchw(5, 3, 3, 3));
      for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1, 1);
      for (std::int64_t i = 0; i < w.numel(); ++i) w[i] = rng.uniform(-1, 1);
      const auto g = nddr::conv2d_geometry(x.shape(), w.shape(), opt, "test");
      const nddr::Shape ys = nddr::Shape::nchw(2, 5, g.out_h, g.out_w);
      nddr::Tensor<double> y(ys), ref(ys);
      nddr::ops::conv2d_forward<double>(ctx, x.cview(), w.cview(), nddr::TensorView<const double>{},
                                        y.view(), opt);
      naive_conv(x, w, g, ref);
      for (std::int64_t i = 0; i < y.numel(); ++i) REQUIRE(y[i] == Approx(ref[i]).margin(1e-12));
      // dW = sum over pixels of dY * x_patch: with dY = 1 at one output pixel of one channel,
      // the gradient is that pixel's input patch; use a random dY and compare with a direct sum.
      nddr::Tensor<double> dy(ys), dw(w.shape(), 7.0);
      for (std::int64_t i = 0; i < dy.numel(); ++i) dy[i] = rng.uniform(-1, 1);
      nddr::ops::conv2d_backward_weights<double>(ctx, x.cview(), dy.cview(), dw.view(),
                                                 nddr::TensorView<double>{}, opt);
      for (std::int64_t o = 0; o < 5; ++o)
        for (std::int64_t c = 0; c < 3; ++c)
          for (std::int64_t kh = 0; kh < 3; ++kh)
            for (std::int64_t kw = 0; kw < 3; ++kw) {
              double s = 0.0;
              for (std::int64_t b = 0; b < 2; ++b)
                for (std::int64_t oh = 0; oh < g.out_h; ++oh)
                  for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
                    const std::int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dilation_h;
                    const std::int64_t iw = ow * g.stride_w - g.pad_left + kw * g.dilation_w;
                    if (ih < 0 || iw < 0 || ih >= g.in_h || iw >= g.in_w) continue;
                    s += dy(b, o, oh, ow) * x(b, c, ih, iw);
                  }
              REQUIRE(dw(o, c, kh, kw) == Approx(s).margin(1e-10));  // assigned, not += 7
            }
    }
  }
}

TEST_CASE("Conv2d: blocked im2col data gradient matches a direct transposed convolution",
          "[ops][conv2d]") {
  // Planes of 744 to 2,867 output pixels: several column blocks (512 columns at K = 180),
  // block edges inside output rows; 1, 3 and 20 input channels split over 1 to 3 threads.
  struct Case {
    std::int64_t in_c;
    Conv2dOptions opt;
  };
  const Case cases[] = {{20, Conv2dOptions{}.padding(1).bias(false)},
                        {20, Conv2dOptions{}.stride(2).same().bias(false)},
                        {20, Conv2dOptions{}.dilation(2).padding(2).bias(false)},
                        {3, Conv2dOptions{}.stride(3, 2).padding(1, 0).bias(false)},
                        {1, Conv2dOptions{}.padding(1).bias(false)}};
  nddr::Rng rng(21);
  for (const Case& c : cases) {
    const Shape xs = Shape::nchw(2, c.in_c, 61, 47), ws = Shape::nchw(6, c.in_c, 3, 3);
    const auto g = nddr::conv2d_geometry(xs, ws, c.opt, "test");
    Tensor<double> w(ws), dy(Shape::nchw(2, 6, g.out_h, g.out_w)), ref(xs, 0.5);
    fill_uniform(w, rng);
    fill_uniform(dy, rng);
    for (std::int64_t b = 0; b < 2; ++b)
      for (std::int64_t o = 0; o < 6; ++o)
        for (std::int64_t oh = 0; oh < g.out_h; ++oh)
          for (std::int64_t ow = 0; ow < g.out_w; ++ow)
            for (std::int64_t ci = 0; ci < c.in_c; ++ci)
              for (std::int64_t kh = 0; kh < 3; ++kh)
                for (std::int64_t kw = 0; kw < 3; ++kw) {
                  const std::int64_t ih = oh * g.stride_h - g.pad_top + kh * g.dilation_h;
                  const std::int64_t iw = ow * g.stride_w - g.pad_left + kw * g.dilation_w;
                  if (ih < 0 || iw < 0 || ih >= g.in_h || iw >= g.in_w) continue;
                  ref(b, ci, ih, iw) += dy(b, o, oh, ow) * w(o, ci, kh, kw);
                }
    for (int threads : {1, 2, 3}) {
      INFO("in_c " << c.in_c << " out " << g.out_h << "x" << g.out_w << ", " << threads
                   << " threads");
      nddr::Context<nddr::Cpu> ctx(threads);
      ctx.set_settings(nddr::NumericSettings{}.cpu_conv_algorithm(nddr::cpu::ConvAlgo::kIm2col));
      Tensor<double> dx(xs, 0.5), again(xs, 0.5);  // accumulated onto 0.5
      nddr::ops::conv2d_backward_data<double>(ctx, w.cview(), dy.cview(), dx.view(), c.opt);
      nddr::ops::conv2d_backward_data<double>(ctx, w.cview(), dy.cview(), again.view(), c.opt);
      double err = 0.0;
      bool repeat = true;
      for (std::int64_t i = 0; i < dx.numel(); ++i) {
        err = std::max(err, std::abs(dx[i] - ref[i]));
        repeat = repeat && dx[i] == again[i];
      }
      CHECK(err < 1e-12);
      CHECK(repeat);
    }
  }
}

TEST_CASE("conv2d under the conv_bf16 setting (CPU emulation): rounds operands and products like the "
          "GPU's BF16 convolutions, bit for bit",
          "[ops][conv2d][bf16]") {
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Rng rng(77);
  struct Case {
    Shape x, w;
    Conv2dOptions opt;
  };
  const std::vector<Case> cases = {
      {Shape::nchw(2, 3, 9, 11), Shape::nchw(5, 3, 3, 3), Conv2dOptions{}.padding(1)},
      {Shape::nchw(2, 3, 10, 12), Shape::nchw(4, 3, 3, 3), Conv2dOptions{}.stride(2).same()},
      {Shape::nchw(1, 8, 6, 5), Shape::nchw(6, 8, 1, 1), Conv2dOptions{}.bias(false)},
      {Shape::nchw(2, 4, 13, 13), Shape::nchw(3, 4, 3, 3), Conv2dOptions{}.padding(2).dilation(2)},
  };
  for (const auto& c : cases) {
    INFO("x " << c.x.str() << " w " << c.w.str());
    Tensor<float> x(c.x), w(c.w), b(c.opt.use_bias ? Shape{c.w.n()} : Shape{0});
    fill_uniform(x, rng);
    fill_uniform(w, rng);
    fill_uniform(b, rng);
    const Shape ys = nddr::conv2d_output_shape(c.x, c.w, c.opt);
    Tensor<float> dy(ys), dx0(c.x);
    fill_uniform(dy, rng);
    fill_uniform(dx0, rng);
    const Tensor<float> xr = nddr_test::rounded_bf16(x), wr = nddr_test::rounded_bf16(w),
                        dyr = nddr_test::rounded_bf16(dy);
    const auto nobias = Conv2dOptions(c.opt).bias(false);
    const auto bview = c.opt.use_bias ? b.cview() : TensorView<const float>();

    // What the emulation must equal: the FP32 op on rounded operands, its result rounded.
    Tensor<float> y_want(ys), y_fp32(ys), dx_part(c.x), dw_want(c.w), db_want(b.shape());
    nddr::ops::conv2d_forward<float>(ctx, xr.cview(), wr.cview(), {}, y_want.view(), nobias);
    for (std::int64_t i = 0; i < y_want.numel(); ++i)
      y_want[i] = nddr::round_to_bfloat16(y_want[i]) +
                  (c.opt.use_bias ? b[(i / (ys.h() * ys.w())) % ys.c()] : 0.0f);
    nddr::ops::conv2d_forward<float>(ctx, x.cview(), w.cview(), bview, y_fp32.view(), c.opt);
    nddr::ops::conv2d_backward_data<float>(ctx, wr.cview(), dyr.cview(), dx_part.view(), c.opt);
    Tensor<float> dx_want = dx0;
    for (std::int64_t i = 0; i < dx_want.numel(); ++i)
      dx_want[i] += nddr::round_to_bfloat16(dx_part[i]);
    nddr::ops::conv2d_backward_weights<float>(ctx, xr.cview(), dyr.cview(), dw_want.view(), {},
                                              c.opt);
    for (std::int64_t i = 0; i < dw_want.numel(); ++i)
      dw_want[i] = nddr::round_to_bfloat16(dw_want[i]);
    if (c.opt.use_bias)
      nddr::ops::conv2d_backward_weights<float>(ctx, x.cview(), dy.cview(), {}, db_want.view(),
                                                c.opt);

    const nddr_test::ConvBf16Setting on(ctx, true);
    Tensor<float> y(ys), dx = dx0, dw(c.w), db(b.shape());
    for (std::int64_t i = 0; i < dw.numel(); ++i) dw[i] = 123.0f;  // assigned over garbage
    for (std::int64_t i = 0; i < db.numel(); ++i) db[i] = 123.0f;
    nddr::ops::conv2d_forward<float>(ctx, x.cview(), w.cview(), bview, y.view(), c.opt);
    nddr::ops::conv2d_backward<float>(ctx, x.cview(), w.cview(), dy.cview(), dx.view(), dw.view(),
                                      c.opt.use_bias ? db.view() : TensorView<float>(), c.opt);
    for (std::int64_t i = 0; i < y.numel(); ++i) REQUIRE(y[i] == y_want[i]);
    for (std::int64_t i = 0; i < dx.numel(); ++i) REQUIRE(dx[i] == dx_want[i]);
    for (std::int64_t i = 0; i < dw.numel(); ++i) REQUIRE(dw[i] == dw_want[i]);
    for (std::int64_t i = 0; i < db.numel(); ++i) REQUIRE(db[i] == db_want[i]);
    // ... and it is not FP32: the rounding shows, by about 2^-8 of the magnitude.
    double diff = 0.0, scale = 0.0;
    for (std::int64_t i = 0; i < y.numel(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(y[i] - y_fp32[i])));
      scale = std::max(scale, static_cast<double>(std::abs(y_fp32[i])));
    }
    CHECK(diff > 0.0);
    CHECK(diff < 2e-2 * scale);
  }
  // Double ignores the switch; bad shapes are refused with the op's own message.
  const nddr_test::ConvBf16Setting on(ctx, true);
  Tensor<double> xd(Shape::nchw(1, 2, 4, 4)), wd(Shape::nchw(1, 2, 1, 1)), yd(Shape::nchw(1, 1, 4, 4));
  for (std::int64_t i = 0; i < xd.numel(); ++i) xd[i] = 1.0 + 1e-6 * static_cast<double>(i);
  for (std::int64_t i = 0; i < wd.numel(); ++i) wd[i] = 1.0;
  nddr::ops::conv2d_forward<double>(ctx, xd.cview(), wd.cview(), {}, yd.view(),
                                    Conv2dOptions{}.bias(false));
  CHECK(yd[1] == xd[1] + xd[17]);
  Tensor<float> xf(Shape::nchw(1, 2, 4, 4)), wf(Shape::nchw(1, 3, 1, 1)), yf(Shape::nchw(1, 1, 4, 4));
  CHECK_THROWS_WITH(nddr::ops::conv2d_forward<float>(ctx, xf.cview(), wf.cview(), {}, yf.view(),
                                                     Conv2dOptions{}.bias(false)),
                    Catch::Contains("nddr::ops::conv2d_forward"));
}

TEST_CASE("conv2d: two contexts with different settings each compute under their own",
          "[ops][conv2d][bf16][settings]") {
  // One process, two CPU contexts: BF16 emulation on one, FP32 on the other, calls interleaved.
  nddr::Context<nddr::Cpu> fp32(1), bf16(1);
  bf16.set_settings(nddr::NumericSettings{}.conv_bf16(true));
  nddr::Rng rng(9);
  const auto opt = Conv2dOptions{}.padding(1);
  Tensor<float> x(Shape::nchw(1, 4, 6, 6)), w(Shape::nchw(3, 4, 3, 3)), b(Shape{3});
  for (auto* t : {&x, &w, &b})
    for (std::int64_t i = 0; i < t->numel(); ++i) (*t)[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  const Shape ys = nddr::conv2d_output_shape(x.shape(), w.shape(), opt);
  const auto run = [&](nddr::Context<nddr::Cpu>& ctx) {
    Tensor<float> y(ys);
    nddr::ops::conv2d_forward<float>(ctx, x.cview(), w.cview(), b.cview(), y.view(), opt);
    return y;
  };
  const Tensor<float> a1 = run(fp32), b1 = run(bf16), a2 = run(fp32), b2 = run(bf16);
  bool differ = false;
  for (std::int64_t i = 0; i < a1.numel(); ++i) {
    REQUIRE(a1[i] == a2[i]);
    REQUIRE(b1[i] == b2[i]);
    differ = differ || a1[i] != b1[i];
  }
  CHECK(differ);
  CHECK_FALSE(fp32.settings().conv_bf16());
  {
    const nddr::ScopedSettings scoped(fp32, nddr::NumericSettings(fp32.settings()).conv_bf16(true));
    const Tensor<float> c = run(fp32);
    for (std::int64_t i = 0; i < c.numel(); ++i) REQUIRE(c[i] == b1[i]);
  }
  CHECK_FALSE(fp32.settings().conv_bf16());
  CHECK(nddr::NumericSettings{}.conv_bf16(true).str() == "bf16 conv");
  CHECK(nddr::NumericSettings{}.str() == "fp32");
}
