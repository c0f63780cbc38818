// Conv2d fast algorithms (Winograd F(2x2, 3x3) and F(4x4, 3x3), tap-skipping for dilated kernels): each, forced
// through a context's NumericSettings::cpu_conv_algorithm, equals the im2col path and a direct convolution in all
// three directions (double and float, 1 and 2 threads, odd sizes, 1x1 maps, padding 0-2,
// dilation 2/3/12), keeps the accumulate/assign contract, and passes finite differences.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <nddr/ops/conv2d.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/layers/conv2d.hpp>
#include <nddr/ops/math/winograd.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <nddr/testing/layer_laws.hpp>
#include <string>
#include <utility>
#include <vector>

namespace {

using nddr::Conv2dOptions;
using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;
using nddr::cpu::ConvAlgo;

/// Forces an algorithm on `ctx` for one scope (its `NumericSettings::cpu_conv_algorithm`); the
/// previous settings again afterwards, even when a CHECK throws.
struct ForceAlgo {
  ForceAlgo(nddr::Context<nddr::Cpu>& ctx, ConvAlgo a)
      : scope(ctx, nddr::NumericSettings(ctx.settings()).cpu_conv_algorithm(a)) {}
  nddr::ScopedSettings<nddr::Context<nddr::Cpu>> scope;
};

struct Case {
  const char* name;
  Shape x, w;
  Conv2dOptions opt;
};

// 3x3, stride 1: the Winograd shapes. H, W not multiples of the 2x2 tile, 1x1 maps, padding
// 0/1/2 and TF 'SAME', channels 1..70, batch 1..3, dilation 2/3 (phases of unequal size).
const Case kWinogradCases[] = {
    {"1x1 map pad 1, 1 channel", Shape::nchw(1, 1, 1, 1), Shape::nchw(1, 1, 3, 3),
     Conv2dOptions{}.padding(1)},
    {"7x9 pad 1 batch 2", Shape::nchw(2, 3, 7, 9), Shape::nchw(5, 3, 3, 3),
     Conv2dOptions{}.padding(1)},
    {"5x4 pad 0 batch 3", Shape::nchw(3, 17, 5, 4), Shape::nchw(6, 17, 3, 3), Conv2dOptions{}},
    {"11x13 pad 2, 70 -> 33", Shape::nchw(1, 70, 11, 13), Shape::nchw(33, 70, 3, 3),
     Conv2dOptions{}.padding(2)},
    {"8x8 SAME no bias", Shape::nchw(2, 16, 8, 8), Shape::nchw(16, 16, 3, 3),
     Conv2dOptions{}.same().bias(false)},
    {"3x3 map pad 0, 5 -> 70", Shape::nchw(1, 5, 3, 3), Shape::nchw(70, 5, 3, 3), Conv2dOptions{}},
    {"1x6 map pad (1, 2)", Shape::nchw(2, 4, 1, 6), Shape::nchw(3, 4, 3, 3),
     Conv2dOptions{}.padding(1, 2)},
    {"25x23 pad 1, many tiles", Shape::nchw(2, 9, 25, 23), Shape::nchw(7, 9, 3, 3),
     Conv2dOptions{}.padding(1)},
    {"conv5-like dilation 2 pad 2 on 21x21", Shape::nchw(2, 18, 21, 21), Shape::nchw(17, 18, 3, 3),
     Conv2dOptions{}.dilation(2).padding(2)},
    {"dilation 3 pad 1 on 10x11", Shape::nchw(1, 5, 10, 11), Shape::nchw(4, 5, 3, 3),
     Conv2dOptions{}.dilation(3).padding(1)},
    {"dilation (2, 3) SAME on 7x9, 1 channel", Shape::nchw(3, 1, 7, 9), Shape::nchw(2, 1, 3, 3),
     Conv2dOptions{}.dilation(2, 3).same()},
    {"dilation 12 pad 12 on 5x4", Shape::nchw(1, 3, 5, 4), Shape::nchw(2, 3, 3, 3),
     Conv2dOptions{}.dilation(12).padding(12)},
    {"130 -> 129 channels on 5x7", Shape::nchw(1, 130, 5, 7), Shape::nchw(129, 130, 3, 3),
     Conv2dOptions{}.padding(1)},
};

// Dilated (and a few other) shapes for tap-skipping, which handles any kernel.
const Case kTapSkipCases[] = {
    {"fc6-like dilation 12 on 21x21", Shape::nchw(1, 4, 21, 21), Shape::nchw(6, 4, 3, 3),
     Conv2dOptions{}.dilation(12).padding(12)},
    {"dilation 12 on a 1x1 map", Shape::nchw(2, 3, 1, 1), Shape::nchw(5, 3, 3, 3),
     Conv2dOptions{}.dilation(12).padding(12)},
    {"dilation 2 pad 2 batch 2", Shape::nchw(2, 5, 9, 8), Shape::nchw(3, 5, 3, 3),
     Conv2dOptions{}.dilation(2).padding(2)},
    {"dilation 3 pad 1 batch 3", Shape::nchw(3, 7, 10, 11), Shape::nchw(9, 7, 3, 3),
     Conv2dOptions{}.dilation(3).padding(1)},
    {"dilation (3, 2) 5x2 kernel", Shape::nchw(1, 2, 13, 7), Shape::nchw(4, 2, 5, 2),
     Conv2dOptions{}.dilation(3, 2).padding(4, 1)},
    {"stride 2 dilation 2 SAME no bias", Shape::nchw(2, 3, 9, 7), Shape::nchw(4, 3, 3, 3),
     Conv2dOptions{}.stride(2).dilation(2).same().bias(false)},
    {"dilation 12, 70 -> 66", Shape::nchw(1, 70, 14, 15), Shape::nchw(66, 70, 3, 3),
     Conv2dOptions{}.dilation(12).padding(12)},
    {"3x3 pad 1 undilated", Shape::nchw(2, 3, 6, 5), Shape::nchw(4, 3, 3, 3),
     Conv2dOptions{}.padding(1)},
    // >= 128 output and input channels: both threads get a channel range (the split needs 64
    // channels per thread), so each scatters its own rows.
    {"dilation 2, 130 -> 129 channels", Shape::nchw(2, 130, 7, 6), Shape::nchw(129, 130, 3, 3),
     Conv2dOptions{}.dilation(2).padding(2)},
    {"fc6-like on 9x9: only the centre tap", Shape::nchw(1, 136, 9, 9), Shape::nchw(144, 136, 3, 3),
     Conv2dOptions{}.dilation(12).padding(12)},
};

template <class T>
void fill_uniform(Tensor<T>& t, nddr::Rng& rng) {
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(rng.uniform(-1.0, 1.0));
}

/// max |a - b| / max |b|: the error relative to the result's scale.
template <class A, class B>
double scaled_error(const A& a, const B& b) {
  double diff = 0.0, scale = 0.0;
  for (std::int64_t i = 0; i < b.numel(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / std::max(scale, 1e-300);
}

/// The three directions by a direct loop over (n, k, oh, ow, c, i, j), in double.
struct Direct {
  Tensor<double> y, dx, dw, db;
};

Direct direct_convolution(const Tensor<double>& x, const Tensor<double>& w, const Tensor<double>& b,
                          const Tensor<double>& dy, const Conv2dOptions& opt) {
  const auto g = nddr::conv2d_geometry(x.shape(), w.shape(), opt);
  Direct d{Tensor<double>(dy.shape()), Tensor<double>(x.shape()), Tensor<double>(w.shape()),
           Tensor<double>(Shape{g.out_c})};
  for (std::int64_t n = 0; n < x.shape().n(); ++n)
    for (std::int64_t k = 0; k < g.out_c; ++k)
      for (std::int64_t oh = 0; oh < g.out_h; ++oh)
        for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
          double sum = opt.use_bias ? b[k] : 0.0;
          const double gy = dy(n, k, oh, ow);
          d.db[k] += gy;
          for (std::int64_t c = 0; c < g.in_c; ++c)
            for (std::int64_t i = 0; i < g.kernel_h; ++i)
              for (std::int64_t j = 0; j < g.kernel_w; ++j) {
                const std::int64_t ih = oh * g.stride_h - g.pad_top + i * g.dilation_h;
                const std::int64_t iw = ow * g.stride_w - g.pad_left + j * g.dilation_w;
                if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
                sum += w(k, c, i, j) * x(n, c, ih, iw);
                d.dx(n, c, ih, iw) += w(k, c, i, j) * gy;
                d.dw(k, c, i, j) += x(n, c, ih, iw) * gy;
              }
          d.y(n, k, oh, ow) = sum;
        }
  return d;
}

template <class T>
Tensor<T> cast(const Tensor<double>& t) {
  Tensor<T> r(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) r[i] = static_cast<T>(t[i]);
  return r;
}

template <class T>
Tensor<double> cast_back(const Tensor<T>& t) {
  Tensor<double> r(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) r[i] = static_cast<double>(t[i]);
  return r;
}

struct Outputs {
  Tensor<double> y, dx, dw, db;
};

/// Runs forward, backward-data and backward-weights under `algo` in precision T. dx starts at
/// `dx0` (accumulated onto), dw and db at 7 (must be assigned); returns everything in double
/// with dx0 subtracted again.
template <class T>
Outputs run(ConvAlgo algo, int threads, const Case& c, const Tensor<double>& x,
            const Tensor<double>& w, const Tensor<double>& b, const Tensor<double>& dy,
            const Tensor<double>& dx0) {
  nddr::Context<nddr::Cpu> ctx(threads);
  const ForceAlgo force(ctx, algo);
  const Tensor<T> xt = cast<T>(x), wt = cast<T>(w), bt = cast<T>(b), dyt = cast<T>(dy);
  Tensor<T> y(dy.shape(), T(7)), dx = cast<T>(dx0), dw(w.shape(), T(7)), db(b.shape(), T(7));
  const TensorView<const T> bv = c.opt.use_bias ? bt.cview() : TensorView<const T>{};
  nddr::ops::conv2d_forward<T>(ctx, xt, wt, bv, y.view(), c.opt);
  nddr::ops::conv2d_backward_data<T>(ctx, wt, dyt, dx.view(), c.opt);
  nddr::ops::conv2d_backward_weights<T>(ctx, xt, dyt, dw.view(),
                                        c.opt.use_bias ? db.view() : TensorView<T>{}, c.opt);
  Outputs o{cast_back(y), cast_back(dx), cast_back(dw), cast_back(db)};
  for (std::int64_t i = 0; i < dx0.numel(); ++i) o.dx[i] -= dx0[i];
  return o;
}

/// Checks `algo` against im2col and the direct loops for every case, both precisions and 1
/// to 3 threads (3: uneven tile and channel splits).
void check_against_im2col(ConvAlgo algo, const Case* begin, const Case* end) {
  nddr::Rng rng(21);
  for (const Case* c = begin; c != end; ++c) {
    INFO(c->name);
    const Shape out = nddr::conv2d_output_shape(c->x, c->w, c->opt);
    Tensor<double> x(c->x), w(c->w), b(Shape{c->w.n()}), dy(out), dx0(c->x);
    fill_uniform(x, rng);
    fill_uniform(w, rng);
    fill_uniform(b, rng);
    fill_uniform(dy, rng);
    fill_uniform(dx0, rng);
    const Direct ref = direct_convolution(x, w, b, dy, c->opt);
    for (int threads : {1, 2, 3}) {
      INFO("threads " << threads);
      const Outputs d_fast = run<double>(algo, threads, *c, x, w, b, dy, dx0);
      const Outputs d_im2col = run<double>(ConvAlgo::kIm2col, threads, *c, x, w, b, dy, dx0);
      CHECK(scaled_error(d_fast.y, ref.y) < 1e-12);
      CHECK(scaled_error(d_fast.dx, ref.dx) < 1e-12);
      CHECK(scaled_error(d_fast.dw, ref.dw) < 1e-12);
      CHECK(scaled_error(d_fast.y, d_im2col.y) < 1e-12);
      CHECK(scaled_error(d_fast.dx, d_im2col.dx) < 1e-12);
      CHECK(scaled_error(d_fast.dw, d_im2col.dw) < 1e-12);
      if (c->opt.use_bias) CHECK(scaled_error(d_fast.db, ref.db) < 1e-12);

      const Outputs f_fast = run<float>(algo, threads, *c, x, w, b, dy, dx0);
      const Outputs f_im2col = run<float>(ConvAlgo::kIm2col, threads, *c, x, w, b, dy, dx0);
      CHECK(scaled_error(f_fast.y, ref.y) < 1e-5);
      CHECK(scaled_error(f_fast.dx, ref.dx) < 1e-5);
      CHECK(scaled_error(f_fast.dw, ref.dw) < 1e-5);
      CHECK(scaled_error(f_fast.y, f_im2col.y) < 1e-5);
      CHECK(scaled_error(f_fast.dx, f_im2col.dx) < 1e-5);
      CHECK(scaled_error(f_fast.dw, f_im2col.dw) < 1e-5);
    }
  }
}

/// Finite differences through the forced algorithm: dx, dw and db of <y, r>.
void check_op_gradients(ConvAlgo algo, const Case& c) {
  INFO(c.name);
  nddr::Context<nddr::Cpu> ctx(2);
  const ForceAlgo force(ctx, algo);
  nddr::Rng rng(5);
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
  const auto rx = nddr::testing::check_gradient("dx", x.data(), x.numel(), dx.data(), loss);
  INFO(rx.report);
  CHECK(rx.ok);
  const auto rw = nddr::testing::check_gradient("dw", w.data(), w.numel(), dw.data(), loss);
  INFO(rw.report);
  CHECK(rw.ok);
  if (c.opt.use_bias) {
    const auto rb = nddr::testing::check_gradient("db", b.data(), b.numel(), db.data(), loss);
    INFO(rb.report);
    CHECK(rb.ok);
  }
}

}  // namespace

namespace {

/// One tile of variant F: Y = A^T [U . V] A against the direct 3x3 correlation, and the
/// weight gradient through the adjoint transforms against the direct sum.
template <class F>
void check_tile_transforms() {
  constexpr int kA = F::kAlpha, kM = F::kTile, kP = F::kPoints;
  nddr::Rng rng(3);
  double d[kP], g[9], dy[kM * kM];
  for (double& v : d) v = rng.uniform(-1.0, 1.0);
  for (double& v : g) v = rng.uniform(-1.0, 1.0);
  for (double& v : dy) v = rng.uniform(-1.0, 1.0);
  double u[kP], vt[kP], m[kP], y[kM * kM];
  nddr::ops::winograd_weight_transform<F>(g, std::int64_t{3}, std::int64_t{1}, u,
                                          std::int64_t{1});
  nddr::ops::winograd_input_transform<F>(d, std::int64_t{kA}, std::int64_t{1}, vt, std::int64_t{1});
  for (int i = 0; i < kP; ++i) m[i] = u[i] * vt[i];
  nddr::ops::winograd_output_transform<F>(m, std::int64_t{1}, y, std::int64_t{kM}, std::int64_t{1});
  for (int r = 0; r < kM; ++r)
    for (int s = 0; s < kM; ++s) {
      double direct = 0.0;
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) direct += g[i * 3 + j] * d[(r + i) * kA + s + j];
      CHECK(y[r * kM + s] == Approx(direct).margin(1e-13));
    }
  // Weight gradient of <y, dy>: dg[i][j] = sum_rs dy[r][s] d[r + i][s + j].
  double z[kP], du[kP], dg[9];
  nddr::ops::winograd_output_grad_transform<F>(dy, std::int64_t{kM}, std::int64_t{1}, z,
                                               std::int64_t{1});
  for (int i = 0; i < kP; ++i) du[i] = z[i] * vt[i];
  nddr::ops::winograd_weight_grad_transform<F>(du, std::int64_t{1}, dg, std::int64_t{3},
                                               std::int64_t{1});
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      double direct = 0.0;
      for (int r = 0; r < kM; ++r)
        for (int s = 0; s < kM; ++s) direct += dy[r * kM + s] * d[(r + i) * kA + s + j];
      CHECK(dg[i * 3 + j] == Approx(direct).margin(1e-13));
    }
}

constexpr ConvAlgo kWinogradAlgos[] = {ConvAlgo::kWinograd, ConvAlgo::kWinogradF4};

}  // namespace

TEST_CASE("Conv2d fast: Winograd tile transforms compute a 3x3 correlation and its adjoints",
          "[conv2d-fast]") {
  SECTION("F(2x2, 3x3)") { check_tile_transforms<nddr::ops::WinogradF2x3>(); }
  SECTION("F(4x4, 3x3)") { check_tile_transforms<nddr::ops::WinogradF4x3>(); }
}

TEST_CASE("Conv2d fast: Winograd equals im2col and a direct convolution in every direction",
          "[conv2d-fast]") {
  for (const Case& c : kWinogradCases)
    REQUIRE(nddr::ops::conv2d_winograd_applicable(nddr::conv2d_geometry(c.x, c.w, c.opt)));
  for (ConvAlgo algo : kWinogradAlgos) {
    INFO((algo == ConvAlgo::kWinograd ? "F(2x2, 3x3)" : "F(4x4, 3x3)"));
    check_against_im2col(algo, std::begin(kWinogradCases), std::end(kWinogradCases));
  }
}

TEST_CASE("Conv2d fast: tap-skipping equals im2col and a direct convolution in every direction",
          "[conv2d-fast]") {
  check_against_im2col(ConvAlgo::kTapSkip, std::begin(kTapSkipCases), std::end(kTapSkipCases));
}

TEST_CASE("Conv2d fast: op gradients through the forced algorithms match finite differences",
          "[conv2d-fast]") {
  for (ConvAlgo algo : kWinogradAlgos) {
    check_op_gradients(algo, kWinogradCases[1]);
    check_op_gradients(algo, kWinogradCases[4]);
    check_op_gradients(algo, kWinogradCases[6]);
    check_op_gradients(algo, kWinogradCases[9]);
  }
  check_op_gradients(ConvAlgo::kTapSkip, kTapSkipCases[0]);
  check_op_gradients(ConvAlgo::kTapSkip, kTapSkipCases[3]);
  check_op_gradients(ConvAlgo::kTapSkip, kTapSkipCases[5]);
}

TEST_CASE("Conv2d fast: layer laws hold through the forced algorithms", "[conv2d-fast]") {
  for (ConvAlgo algo : {ConvAlgo::kWinograd, ConvAlgo::kWinogradF4, ConvAlgo::kTapSkip}) {
    nddr::testing::LayerLawsOptions laws;
    laws.settings.cpu_conv_algorithm(algo);
    nddr::Conv2d<double> pad1(3, 4, 3, Conv2dOptions{}.padding(1));
    nddr::Conv2d<double> dilated(2, 3, 3, Conv2dOptions{}.dilation(3).padding(3));
    auto r1 = nddr::testing::check_layer_laws(pad1, Shape::nchw(2, 3, 7, 6), laws);
    INFO(r1.report);
    CHECK(r1.ok);
    auto r2 = nddr::testing::check_layer_laws(dilated, Shape::nchw(2, 2, 8, 9), laws);
    INFO(r2.report);
    CHECK(r2.ok);
  }
}

TEST_CASE("Conv2d fast: the forced algorithms match the PyTorch reference in double",
          "[conv2d-fast]") {
  // tests/data/conv2d.safetensors (tools/reference/conv2d.py): config = stride h/w, dilation
  // h/w, pad h/w, same, bias.
  const auto f = nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/conv2d.safetensors");
  const char* const cases[] = {"pad1",         "dil2",         "dil12",     "same_s2",
                               "same_s2_asym", "same_s2_dil2", "pointwise", "strided_nobias"};
  int winograd_cases = 0;
  for (ConvAlgo algo : {ConvAlgo::kWinograd, ConvAlgo::kWinogradF4, ConvAlgo::kTapSkip})
    for (const char* name : cases) {
      const std::string p = std::string(name) + ".";
      INFO(name << " algorithm " << static_cast<int>(algo));
      const auto c = f.values<double>(p + "config");
      auto i = [&](std::size_t k) { return static_cast<std::int64_t>(c[k]); };
      Conv2dOptions opt =
          Conv2dOptions{}.stride(i(0), i(1)).dilation(i(2), i(3)).padding(i(4), i(5));
      opt.bias(c[7] != 0.0);
      if (c[6] != 0.0) opt.same();
      const Tensor<double> x = f.tensor<double>(p + "x"), w = f.tensor<double>(p + "w");
      const Tensor<double> dy = f.tensor<double>(p + "dy");
      const Tensor<double> b = opt.use_bias ? f.tensor<double>(p + "b") : Tensor<double>{};
      const auto g = nddr::conv2d_geometry(x.shape(), w.shape(), opt);
      winograd_cases += algo != ConvAlgo::kTapSkip && nddr::ops::conv2d_winograd_applicable(g);
      nddr::Context<nddr::Cpu> ctx(2);
      const ForceAlgo force(ctx, algo);
      Tensor<double> y(dy.shape(), 7.0), dx(x.shape()), dw(w.shape(), 7.0), db(b.shape(), 7.0);
      nddr::ops::conv2d_forward<double>(ctx, x, w, b, y.view(), opt);
      nddr::ops::conv2d_backward<double>(ctx, x, w, dy, dx.view(), dw.view(),
                                         opt.use_bias ? db.view() : TensorView<double>{}, opt);
      const std::pair<const char*, const Tensor<double>*> outputs[] = {
          {"y", &y}, {"dx", &dx}, {"dw", &dw}};
      for (const auto& [key, t] : outputs) {
        const std::vector<double> ref = f.values<double>(p + key);
        double err = 0.0;
        for (std::size_t k = 0; k < ref.size(); ++k)
          err = std::max(err, std::abs((*t)[static_cast<std::int64_t>(k)] - ref[k]) /
                                  (1.0 + std::abs(ref[k])));
        INFO(key);
        CHECK(err < 1e-9);
      }
    }
  CHECK(winograd_cases >= 2);  // pad1 is 3x3, stride 1
}

TEST_CASE("Conv2d fast: an empty batch leaves y and dx alone and zeroes dw", "[conv2d-fast]") {
  const Shape xs = Shape::nchw(0, 20, 6, 6), ws = Shape::nchw(18, 20, 3, 3);
  for (ConvAlgo algo : {ConvAlgo::kWinograd, ConvAlgo::kWinogradF4, ConvAlgo::kTapSkip})
    for (const Conv2dOptions& opt :
         {Conv2dOptions{}.padding(1), Conv2dOptions{}.dilation(2).padding(2)}) {
      nddr::Context<nddr::Cpu> ctx(2);
      const ForceAlgo force(ctx, algo);
      Tensor<double> x(xs), w(ws, 1.0), b(Shape{18}), dx(xs), dw(ws, 7.0), db(Shape{18}, 7.0);
      Tensor<double> y(nddr::conv2d_output_shape(xs, ws, opt));
      nddr::ops::conv2d_forward<double>(ctx, x, w, b, y.view(), opt);
      nddr::ops::conv2d_backward<double>(ctx, x, w, y, dx.view(), dw.view(), db.view(), opt);
      CHECK(std::all_of(dw.data(), dw.data() + dw.numel(), [](double v) { return v == 0.0; }));
      CHECK(std::all_of(db.data(), db.data() + db.numel(), [](double v) { return v == 0.0; }));
    }
}

TEST_CASE("Conv2d fast: algorithm selection", "[conv2d-fast]") {
  using nddr::ops::conv2d_select_algorithm;
  using nddr::ops::Conv2dDirection;
  auto geo = [](std::int64_t c_in, std::int64_t c_out, std::int64_t size, std::int64_t k,
                const Conv2dOptions& opt) {
    return nddr::conv2d_geometry(Shape::nchw(1, c_in, size, size), Shape::nchw(c_out, c_in, k, k),
                                 opt);
  };
  const auto conv1_1 = geo(3, 64, 161, 3, Conv2dOptions{}.padding(1));
  const auto conv3_2 = geo(256, 256, 41, 3, Conv2dOptions{}.padding(1));
  const auto conv5 = geo(512, 512, 21, 3, Conv2dOptions{}.dilation(2).padding(2));
  const auto fc6 = geo(512, 1024, 21, 3, Conv2dOptions{}.dilation(12).padding(12));
  const auto fc7 = geo(1024, 1024, 21, 1, Conv2dOptions{});
  const auto strided = geo(64, 64, 20, 3, Conv2dOptions{}.stride(2).same());
  for (auto dir : {Conv2dDirection::kForward, Conv2dDirection::kBackwardData,
                   Conv2dDirection::kBackwardWeights}) {
    CHECK(conv2d_select_algorithm(conv1_1, dir) == ConvAlgo::kIm2col);
    CHECK(conv2d_select_algorithm(conv3_2, dir) == ConvAlgo::kWinogradF4);
    CHECK(conv2d_select_algorithm(fc6, dir) == ConvAlgo::kTapSkip);
    CHECK(conv2d_select_algorithm(fc7, dir) == ConvAlgo::kIm2col);
    CHECK(conv2d_select_algorithm(strided, dir) == ConvAlgo::kIm2col);
  }
  // fc6 at 161^2 reads padding through 62 % of its (tap, output) pairs; conv5 through 12 %.
  CHECK(nddr::detail::conv2d_tap_fraction(fc6) == Approx(1521.0 / 3969.0));
  CHECK(nddr::detail::conv2d_tap_fraction(conv5) == Approx(3481.0 / 3969.0));
  for (auto dir : {Conv2dDirection::kForward, Conv2dDirection::kBackwardData,
                   Conv2dDirection::kBackwardWeights})
    CHECK(conv2d_select_algorithm(conv5, dir) == ConvAlgo::kWinogradF4);
  // Small maps: F(4x4, 3x3) computes whole 4x4 tiles. 3x3 outputs: one 6x6 tile (36 products)
  // against four 4x4 ones (64); 6x6: 4 x 36 = 9 x 16, a tie, F(2x2, 3x3); 2x2: 36 against 16.
  CHECK(conv2d_select_algorithm(geo(64, 64, 3, 3, Conv2dOptions{}.padding(1)),
                                Conv2dDirection::kForward) == ConvAlgo::kWinogradF4);
  CHECK(conv2d_select_algorithm(geo(64, 64, 6, 3, Conv2dOptions{}.padding(1)),
                                Conv2dDirection::kForward) == ConvAlgo::kWinograd);
  CHECK(conv2d_select_algorithm(geo(64, 64, 2, 3, Conv2dOptions{}.padding(1)),
                                Conv2dDirection::kForward) == ConvAlgo::kWinograd);
  // A forced algorithm (the context's NumericSettings::cpu_conv_algorithm) where it applies.
  const auto fwd = Conv2dDirection::kForward;
  CHECK(conv2d_select_algorithm(conv3_2, fwd, ConvAlgo::kWinogradF4) == ConvAlgo::kWinogradF4);
  CHECK(conv2d_select_algorithm(fc7, fwd, ConvAlgo::kWinogradF4) == ConvAlgo::kIm2col);
  CHECK(conv2d_select_algorithm(conv1_1, fwd, ConvAlgo::kWinograd) == ConvAlgo::kWinograd);
  CHECK(conv2d_select_algorithm(fc6, fwd, ConvAlgo::kWinograd) == ConvAlgo::kWinograd);
  CHECK(conv2d_select_algorithm(fc7, fwd, ConvAlgo::kWinograd) == ConvAlgo::kIm2col);
  CHECK(conv2d_select_algorithm(conv3_2, fwd, ConvAlgo::kIm2col) == ConvAlgo::kIm2col);
  CHECK(conv2d_select_algorithm(fc6, Conv2dDirection::kBackwardData, ConvAlgo::kIm2col) ==
        ConvAlgo::kIm2col);
  CHECK(conv2d_select_algorithm(conv3_2, Conv2dDirection::kBackwardWeights, ConvAlgo::kTapSkip) ==
        ConvAlgo::kTapSkip);
}

TEST_CASE("Conv2d fast: Winograd float error at a VGG width stays near float rounding",
          "[conv2d-fast]") {
  // 256 -> 256 channels on 21x21 (conv4-like), He-scaled weights, ReLU-like inputs: float
  // through each variant against double im2col. Measured here: F(2x2, 3x3) 5.6e-7, F(4x4,
  // 3x3) 8.7e-6 of max |y| (docs/ops/conv2d.md); the bounds leave about 5x room, not 100x.
  const Conv2dOptions opt = Conv2dOptions{}.padding(1);
  const Shape xs = Shape::nchw(1, 256, 21, 21), ws = Shape::nchw(256, 256, 3, 3);
  Tensor<double> x(xs), w(ws), b(Shape{256}), y(nddr::conv2d_output_shape(xs, ws, opt));
  nddr::Rng rng(8);
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = std::max(0.0, rng.uniform(-1.0, 1.0));
  for (std::int64_t i = 0; i < w.numel(); ++i)
    w[i] = rng.uniform(-1.0, 1.0) * std::sqrt(2.0 / (9.0 * 256.0));
  nddr::Context<nddr::Cpu> ctx(2);
  {
    const ForceAlgo force(ctx, ConvAlgo::kIm2col);
    nddr::ops::conv2d_forward<double>(ctx, x, w, b, y.view(), opt);
  }
  const Tensor<float> xf = cast<float>(x), wf = cast<float>(w), bf = cast<float>(b);
  double scale = 0.0;
  for (std::int64_t i = 0; i < y.numel(); ++i) scale = std::max(scale, std::abs(y[i]));
  for (const auto& [algo, bound] : {std::pair{ConvAlgo::kWinograd, 3e-6},
                                    std::pair{ConvAlgo::kWinogradF4, 5e-5}}) {
    const ForceAlgo force(ctx, algo);
    Tensor<float> yf(y.shape());
    nddr::ops::conv2d_forward<float>(ctx, xf, wf, bf, yf.view(), opt);
    double err = 0.0;
    for (std::int64_t i = 0; i < y.numel(); ++i)
      err = std::max(err, std::abs(static_cast<double>(yf[i]) - y[i]));
    INFO("algorithm " << static_cast<int>(algo) << ": max error / max |y| = " << err / scale);
    CHECK(err / scale < bound);
  }
}
