// CUDA conv2d (cuDNN), batch norm (own kernels) and linear (cuBLAS): parity with the CPU ops
// for the forward pass and every gradient, float and double, accumulate/assign semantics,
// the algorithm cache and the CPU op's error messages. Test cases that need a GPU print
// "no CUDA device: skipped" and pass when none is usable.
#include <catch2/catch.hpp>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <nddr/cuda.hpp>
#include <nddr/nddr.hpp>
#include <random>
#include <span>
#include <string>

#include "no_device.hpp"

namespace {

using nddr::Cpu;
using nddr::Cuda;
using nddr::Shape;
using nddr::Tensor;

using nddr_test::no_device;
using nddr_test::rounded_bf16;

template <class T>
Tensor<T> random_tensor(Shape s, std::uint32_t seed, T lo = T(-1), T hi = T(1)) {
  Tensor<T> t(s);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<T> dist(lo, hi);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = dist(gen);
  return t;
}

template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

/// Every element of `got` within tolerance of `want`, relative to want's largest magnitude.
template <class T>
void check_close(const Tensor<T>& got, const Tensor<T>& want, const std::string& what) {
  INFO(what << " " << want.shape().str());
  REQUIRE(got.shape() == want.shape());
  double scale = 1e-30;
  for (std::int64_t i = 0; i < want.numel(); ++i)
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
  double worst = 0.0;
  std::int64_t at = 0;
  for (std::int64_t i = 0; i < want.numel(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (d > worst) {
      worst = d;
      at = i;
    }
  }
  INFO("worst element " << at << ": |diff| " << worst << " vs scale " << scale);
  CHECK(worst <= tolerance<T>() * scale);
}

template <class T>
Tensor<T> host(nddr::Context<Cuda>& g, const Tensor<T, Cuda>& t) {
  return nddr::to_host(g, t);
}

template <class T>
Tensor<T, Cuda> dev(nddr::Context<Cuda>& g, const Tensor<T>& t) {
  return nddr::to_device(g, t);
}

/// Conv forward and backward on both backends; dx pre-filled to check accumulation, dw and db
/// pre-filled with garbage to check assignment.
template <class T>
void conv_parity(Shape xs, Shape ws, const nddr::Conv2dOptions& opt, std::uint32_t seed,
                 const nddr::NumericSettings& settings = {}) {
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu;
  gpu.set_settings(settings);
  const Tensor<T> x = random_tensor<T>(xs, seed);
  const Tensor<T> w = random_tensor<T>(ws, seed + 1);
  const Tensor<T> b = opt.use_bias ? random_tensor<T>(Shape{ws.n()}, seed + 2) : Tensor<T>();
  const Shape ys = nddr::conv2d_output_shape(xs, ws, opt);
  Tensor<T> y(ys);
  nddr::ops::conv2d_forward<T>(cpu, x.cview(), w.cview(), b.cview(), y.view(), opt);

  const auto xd = dev(gpu, x), wd = dev(gpu, w);
  const auto bd = opt.use_bias ? dev(gpu, b) : Tensor<T, Cuda>();
  Tensor<T, Cuda> yd(ys);
  nddr::ops::conv2d_forward<T>(gpu, xd.cview(), wd.cview(), bd.cview(), yd.view(), opt);
  check_close(host(gpu, yd), y, "conv2d y");

  const Tensor<T> dy = random_tensor<T>(ys, seed + 3);
  Tensor<T> dx = random_tensor<T>(xs, seed + 4);
  Tensor<T> dw(ws), db = opt.use_bias ? Tensor<T>(Shape{ws.n()}) : Tensor<T>();
  auto dxd = dev(gpu, dx);
  auto dwd = dev(gpu, random_tensor<T>(ws, seed + 5, T(100), T(200)));
  auto dbd = opt.use_bias ? dev(gpu, random_tensor<T>(Shape{ws.n()}, seed + 6, T(100), T(200)))
                          : Tensor<T, Cuda>();
  nddr::ops::conv2d_backward<T>(cpu, x.cview(), w.cview(), dy.cview(), dx.view(), dw.view(),
                                db.view(), opt);
  const auto dyd = dev(gpu, dy);
  nddr::ops::conv2d_backward<T>(gpu, xd.cview(), wd.cview(), dyd.cview(), dxd.view(), dwd.view(),
                                dbd.view(), opt);
  check_close(host(gpu, dxd), dx, "conv2d dx (accumulated)");
  check_close(host(gpu, dwd), dw, "conv2d dw");
  if (opt.use_bias) check_close(host(gpu, dbd), db, "conv2d db");
}

template <class T>
void conv_suite(const nddr::NumericSettings& settings = {}) {
  using O = nddr::Conv2dOptions;
  SECTION("3x3 pad 1, bias") { conv_parity<T>(Shape::nchw(2, 3, 9, 11), Shape::nchw(5, 3, 3, 3), O{}.padding(1), 11, settings); }
  SECTION("3x3 pad 1, no bias") {
    conv_parity<T>(Shape::nchw(2, 4, 8, 7), Shape::nchw(6, 4, 3, 3), O{}.padding(1).bias(false), 12, settings);
  }
  SECTION("dilation 2") {
    conv_parity<T>(Shape::nchw(2, 3, 13, 12), Shape::nchw(4, 3, 3, 3), O{}.padding(2).dilation(2), 13, settings);
  }
  SECTION("dilation 12 on 27x27") {
    conv_parity<T>(Shape::nchw(2, 3, 27, 27), Shape::nchw(4, 3, 3, 3), O{}.padding(12).dilation(12), 14, settings);
  }
  SECTION("stride 2 SAME, odd sizes (asymmetric pads)") {
    conv_parity<T>(Shape::nchw(2, 3, 10, 12), Shape::nchw(5, 3, 3, 3), O{}.stride(2).same(), 15, settings);
    conv_parity<T>(Shape::nchw(2, 3, 9, 8), Shape::nchw(4, 3, 4, 4), O{}.stride(2).same().bias(false), 16, settings);
  }
  SECTION("stride 1 SAME, even kernel (asymmetric pads)") {
    conv_parity<T>(Shape::nchw(2, 2, 7, 6), Shape::nchw(3, 2, 2, 2), O{}.same(), 17, settings);
  }
  SECTION("1x1") { conv_parity<T>(Shape::nchw(2, 8, 5, 7), Shape::nchw(3, 8, 1, 1), O{}, 18, settings); }
  SECTION("stride 2 unpadded 7x7") {
    conv_parity<T>(Shape::nchw(2, 3, 17, 15), Shape::nchw(4, 3, 7, 7), O{}.stride(2).padding(3), 19, settings);
  }
}

/// Element-wise check of a BF16 convolution result against the exact product of the rounded
/// operands (`exact`) plus `base`: got - base is `exact` after an FP32 accumulation and a
/// rounding to bfloat16, so it may sit one bfloat16 ulp (2^-7 relative) away, plus FP32
/// summation noise relative to the largest magnitude.
void check_bf16(const Tensor<float>& got, const Tensor<float>& exact, const Tensor<float>* base,
                const std::string& what) {
  INFO(what << " " << exact.shape().str());
  REQUIRE(got.shape() == exact.shape());
  double scale = 1e-30;
  for (std::int64_t i = 0; i < exact.numel(); ++i)
    scale = std::max(scale, std::abs(static_cast<double>(exact[i])));
  std::int64_t bad = 0, first_bad = -1;
  for (std::int64_t i = 0; i < exact.numel(); ++i) {
    const double b = base ? static_cast<double>((*base)[i]) : 0.0;
    const double e = static_cast<double>(exact[i]);
    const double d = std::abs(static_cast<double>(got[i]) - b - e);
    if (d > std::ldexp(std::abs(e), -7) + 2e-5 * scale) {
      if (first_bad < 0) first_bad = i;
      ++bad;
    }
  }
  INFO(bad << " elements off; first at " << first_bad << ": got "
            << (first_bad >= 0 ? got[first_bad] : 0.0f) << ", want "
            << (first_bad >= 0 ? exact[first_bad] + (base ? (*base)[first_bad] : 0.0f) : 0.0f));
  CHECK(bad == 0);
}

/// `t` widened to double.
Tensor<double> widened(const Tensor<float>& t) {
  Tensor<double> d(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) d[i] = t[i];
  return d;
}

/// `t` narrowed to float.
Tensor<float> narrowed(const Tensor<double>& t) {
  Tensor<float> f(t.shape());
  for (std::int64_t i = 0; i < t.numel(); ++i) f[i] = static_cast<float>(t[i]);
  return f;
}

/// The BF16 convolution (the GPU context's `conv_bf16` setting) against the exact product of the bfloat16-rounded
/// operands (the CPU op in double, which the switch leaves alone): y, dx accumulated onto
/// garbage, dw assigned over garbage, db from the unrounded dy. Also checks that the rounding
/// happened (the exact FP32-operand result differs).
void conv_parity_bf16(Shape xs, Shape ws, const nddr::Conv2dOptions& opt, std::uint32_t seed,
                      const nddr::NumericSettings& settings = {}) {
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu;
  gpu.set_settings(nddr::NumericSettings(settings).conv_bf16(true));
  const Tensor<float> x = random_tensor<float>(xs, seed), w = random_tensor<float>(ws, seed + 1);
  const Tensor<float> b =
      opt.use_bias ? random_tensor<float>(Shape{ws.n()}, seed + 2) : Tensor<float>();
  const Tensor<double> xr = widened(rounded_bf16(x)), wr = widened(rounded_bf16(w));
  const Shape ys = nddr::conv2d_output_shape(xs, ws, opt);
  const auto nobias = nddr::Conv2dOptions(opt).bias(false);

  // y: the rounded operands' product (rounded by the GPU), plus the float bias.
  Tensor<double> y_exact(ys), y_full(ys);
  nddr::ops::conv2d_forward<double>(cpu, xr.cview(), wr.cview(), {}, y_exact.view(), nobias);
  nddr::ops::conv2d_forward<double>(cpu, widened(x).cview(), widened(w).cview(), {},
                                    y_full.view(), nobias);
  Tensor<float> bias_plane(ys);
  if (opt.use_bias)
    for (std::int64_t i = 0; i < bias_plane.numel(); ++i)
      bias_plane[i] = b[(i / (ys.h() * ys.w())) % ys.c()];
  const auto xd = dev(gpu, x), wd = dev(gpu, w);
  const auto bd = opt.use_bias ? dev(gpu, b) : Tensor<float, Cuda>();
  Tensor<float, Cuda> yd(ys);
  nddr::ops::conv2d_forward<float>(gpu, xd.cview(), wd.cview(), bd.cview(), yd.view(), opt);
  const Tensor<float> y = host(gpu, yd);
  check_bf16(y, narrowed(y_exact), &bias_plane, "bf16 conv2d y");
  double full_diff = 0.0;
  for (std::int64_t i = 0; i < y.numel(); ++i)
    full_diff = std::max(full_diff, std::abs(static_cast<double>(y[i]) - bias_plane[i] - y_full[i]));
  CHECK(full_diff > 0.0);

  // dx += the product of rounded dy and w (rounded by the GPU).
  const Tensor<float> dy = random_tensor<float>(ys, seed + 3);
  const Tensor<double> dyr = widened(rounded_bf16(dy));
  const Tensor<float> dx0 = random_tensor<float>(xs, seed + 4);
  Tensor<double> dx_exact(xs);
  nddr::ops::conv2d_backward_data<double>(cpu, wr.cview(), dyr.cview(), dx_exact.view(), opt);
  // dw = the product of rounded x and dy (rounded by the GPU); db sums the unrounded dy.
  Tensor<double> dw_exact(ws), db(opt.use_bias ? Shape{ws.n()} : Shape{0});
  nddr::ops::conv2d_backward_weights<double>(cpu, xr.cview(), dyr.cview(), dw_exact.view(), {},
                                             nobias);
  if (opt.use_bias)
    nddr::ops::conv2d_backward_weights<double>(cpu, widened(x).cview(), widened(dy).cview(), {},
                                               db.view(), opt);

  auto dxd = dev(gpu, dx0);
  auto dwd = dev(gpu, random_tensor<float>(ws, seed + 5, 100.0f, 200.0f));
  auto dbd = opt.use_bias ? dev(gpu, random_tensor<float>(Shape{ws.n()}, seed + 6, 100.0f, 200.0f))
                          : Tensor<float, Cuda>();
  const auto dyd = dev(gpu, dy);
  nddr::ops::conv2d_backward<float>(gpu, xd.cview(), wd.cview(), dyd.cview(), dxd.view(),
                                    dwd.view(), dbd.view(), opt);
  check_bf16(host(gpu, dxd), narrowed(dx_exact), &dx0, "bf16 conv2d dx (accumulated)");
  check_bf16(host(gpu, dwd), narrowed(dw_exact), nullptr, "bf16 conv2d dw");
  if (opt.use_bias) check_close(host(gpu, dbd), narrowed(db), "bf16 conv2d db (float)");
}

template <class T>
struct BnState {
  Tensor<T> gamma, beta, rm, rv;
};

template <class T>
void batch_norm_parity(Shape xs, const nddr::BatchNormOptions& opt, std::uint32_t seed) {
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu;
  const Shape cs{xs.c()};
  // A large offset checks the two-pass variance in float.
  const Tensor<T> x0 = random_tensor<T>(xs, seed, T(2), T(5));
  const Tensor<T> x1 = random_tensor<T>(xs, seed + 1, T(-3), T(1));
  const Tensor<T> gamma = random_tensor<T>(cs, seed + 2, T(0.5), T(1.5));
  const Tensor<T> beta = random_tensor<T>(cs, seed + 3);
  Tensor<T> rm = random_tensor<T>(cs, seed + 4), rv = random_tensor<T>(cs, seed + 5, T(0.5), T(2));
  const auto gd = dev(gpu, gamma), bd = dev(gpu, beta);
  auto rmd = dev(gpu, rm), rvd = dev(gpu, rv);
  Tensor<T> y(xs), sm(cs), si(cs);
  Tensor<T, Cuda> yd(xs), smd(cs), sid(cs);
  for (const Tensor<T>* x : {&x0, &x1}) {  // two steps: running statistics compound
    nddr::ops::batch_norm_forward_training<T>(cpu, x->cview(), gamma.cview(), beta.cview(),
                                              rm.view(), rv.view(), y.view(), sm.view(), si.view(),
                                              opt);
    const auto xd = dev(gpu, *x);
    nddr::ops::batch_norm_forward_training<T>(gpu, xd.cview(), gd.cview(), bd.cview(), rmd.view(),
                                              rvd.view(), yd.view(), smd.view(), sid.view(), opt);
    check_close(host(gpu, yd), y, "bn training y");
  }
  check_close(host(gpu, smd), sm, "bn save_mean");
  check_close(host(gpu, sid), si, "bn save_inv_std");
  check_close(host(gpu, rmd), rm, "bn running_mean after two steps");
  check_close(host(gpu, rvd), rv, "bn running_var after two steps");

  const auto xd = dev(gpu, x1);
  const Tensor<T> dy = random_tensor<T>(xs, seed + 6);
  const auto dyd = dev(gpu, dy);
  {
    Tensor<T> dx = random_tensor<T>(xs, seed + 7), dg(cs), dbt(cs);
    auto dxd = dev(gpu, dx), dgd = dev(gpu, random_tensor<T>(cs, 1, T(50), T(60))),
         dbd = dev(gpu, random_tensor<T>(cs, 2, T(50), T(60)));
    // y and yd hold the forward of x1 (the fused ReLU's mask; unused without it).
    nddr::ops::batch_norm_backward_training<T>(cpu, x1.cview(), dy.cview(), gamma.cview(),
                                               sm.cview(), si.cview(), dx.view(), dg.view(),
                                               dbt.view(), opt, y.cview());
    nddr::ops::batch_norm_backward_training<T>(gpu, xd.cview(), dyd.cview(), gd.cview(),
                                               smd.cview(), sid.cview(), dxd.view(), dgd.view(),
                                               dbd.view(), opt, yd.cview());
    check_close(host(gpu, dxd), dx, "bn training dx (accumulated)");
    if (opt.affine()) {
      check_close(host(gpu, dgd), dg, "bn training dgamma");
      check_close(host(gpu, dbd), dbt, "bn training dbeta");
    }
  }
  {
    nddr::ops::batch_norm_forward_inference<T>(cpu, x0.cview(), gamma.cview(), beta.cview(),
                                               rm.cview(), rv.cview(), y.view(), opt);
    const auto x0d = dev(gpu, x0);
    nddr::ops::batch_norm_forward_inference<T>(gpu, x0d.cview(), gd.cview(), bd.cview(),
                                               rmd.cview(), rvd.cview(), yd.view(), opt);
    check_close(host(gpu, yd), y, "bn inference y");
    Tensor<T> dx = random_tensor<T>(xs, seed + 8), dg(cs), dbt(cs);
    auto dxd = dev(gpu, dx), dgd = dev(gpu, dg), dbd = dev(gpu, dbt);
    nddr::ops::batch_norm_backward_inference<T>(cpu, x0.cview(), dy.cview(), gamma.cview(),
                                                rm.cview(), rv.cview(), dx.view(), dg.view(),
                                                dbt.view(), opt, y.cview());
    nddr::ops::batch_norm_backward_inference<T>(gpu, x0d.cview(), dyd.cview(), gd.cview(),
                                                rmd.cview(), rvd.cview(), dxd.view(), dgd.view(),
                                                dbd.view(), opt, yd.cview());
    check_close(host(gpu, dxd), dx, "bn inference dx (accumulated)");
    if (opt.affine()) {
      check_close(host(gpu, dgd), dg, "bn inference dgamma");
      check_close(host(gpu, dbd), dbt, "bn inference dbeta");
    }
  }
}

template <class T>
void linear_parity(Shape xs, std::int64_t out, bool bias, std::uint32_t seed) {
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu;
  const std::int64_t features = xs.item_size();
  const Tensor<T> x = random_tensor<T>(xs, seed);
  const Tensor<T> w = random_tensor<T>(Shape{out, features}, seed + 1);
  const Tensor<T> b = bias ? random_tensor<T>(Shape{out}, seed + 2) : Tensor<T>();
  const Shape ys = nddr::ops::linear_output_shape("test", xs, out);
  Tensor<T> y(ys);
  nddr::ops::linear_forward<T>(cpu, x.cview(), w.cview(), b.cview(), y.view());
  const auto xd = dev(gpu, x), wd = dev(gpu, w);
  const auto bd = bias ? dev(gpu, b) : Tensor<T, Cuda>();
  Tensor<T, Cuda> yd(ys);
  nddr::ops::linear_forward<T>(gpu, xd.cview(), wd.cview(), bd.cview(), yd.view());
  check_close(host(gpu, yd), y, "linear y");

  const Tensor<T> dy = random_tensor<T>(ys, seed + 3);
  Tensor<T> dx = random_tensor<T>(xs, seed + 4), dw(w.shape()),
            db = bias ? Tensor<T>(Shape{out}) : Tensor<T>();
  auto dxd = dev(gpu, dx), dwd = dev(gpu, random_tensor<T>(w.shape(), 3, T(10), T(20)));
  auto dbd = bias ? dev(gpu, random_tensor<T>(Shape{out}, 4, T(10), T(20))) : Tensor<T, Cuda>();
  nddr::ops::linear_backward<T>(cpu, x.cview(), w.cview(), dy.cview(), dx.view(), dw.view(),
                                db.view());
  const auto dyd = dev(gpu, dy);
  nddr::ops::linear_backward<T>(gpu, xd.cview(), wd.cview(), dyd.cview(), dxd.view(), dwd.view(),
                                dbd.view());
  check_close(host(gpu, dxd), dx, "linear dx (accumulated)");
  check_close(host(gpu, dwd), dw, "linear dw");
  if (bias) check_close(host(gpu, dbd), db, "linear db");
}

/// The same layer on both backends: CPU store initialised and copied to the device, then a
/// training forward and backward; outputs, dx, every gradient and the buffers must agree.
template <template <class, class> class Layer, class... Args>
void layer_parity(Shape xs, Args... args) {
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu;
  Layer<double, Cpu> lc(args...);
  Layer<double, Cuda> lg(args...);
  nddr::ParameterStore<double, Cpu> sc;
  nddr::ParameterStore<double, Cuda> sg;
  lc.declare(sc, "layer");
  lg.declare(sg, "layer");
  sc.allocate();
  sg.allocate();
  nddr::Rng rng(7);
  lc.initialize(rng);
  nddr::copy<double, Cpu, Cuda>(gpu, sc.values(), sg.values());
  nddr::copy<double, Cpu, Cuda>(gpu, sc.buffer_values(), sg.buffer_values());
  const Tensor<double> x = random_tensor<double>(xs, 3);
  const Shape ys = lc.output_shape(xs);
  Tensor<double> y(ys), dx = random_tensor<double>(xs, 4);
  const auto xd = dev(gpu, x);
  Tensor<double, Cuda> yd(ys);
  auto dxd = dev(gpu, dx);
  lc.forward(cpu, x.cview(), y.view());
  lg.forward(gpu, xd.cview(), yd.view());
  check_close(host(gpu, yd), y, "layer y");
  const Tensor<double> dy = random_tensor<double>(ys, 5);
  const auto dyd = dev(gpu, dy);
  lc.backward(cpu, x.cview(), y.cview(), dy.cview(), dx.view());
  lg.backward(gpu, xd.cview(), yd.cview(), dyd.cview(), dxd.view());
  check_close(host(gpu, dxd), dx, "layer dx");
  Tensor<double> grads(sc.grads().shape()), buffers(sc.buffer_values().shape());
  nddr::copy<double, Cuda, Cpu>(gpu, sg.grads(), grads.view());
  nddr::copy<double, Cuda, Cpu>(gpu, sg.buffer_values(), buffers.view());
  Tensor<double> want_grads(grads.shape()), want_buffers(buffers.shape());
  for (std::int64_t i = 0; i < grads.numel(); ++i) want_grads[i] = sc.grads()[i];
  for (std::int64_t i = 0; i < buffers.numel(); ++i) want_buffers[i] = sc.buffer_values()[i];
  check_close(grads, want_grads, "layer parameter gradients");
  if (buffers.numel() > 0) check_close(buffers, want_buffers, "layer buffers");
}

}  // namespace

using Catch::Contains;

TEST_CASE("CUDA conv2d matches the CPU op (float)", "[cuda][conv2d]") {
  if (no_device()) return;
  conv_suite<float>();
}

TEST_CASE("CUDA conv2d matches the CPU op (double)", "[cuda][conv2d]") {
  if (no_device()) return;
  conv_suite<double>();
}

TEST_CASE("CUDA conv2d with timed (benchmark) or deterministic algorithms matches the CPU op",
          "[cuda][conv2d]") {
  if (no_device()) return;
  SECTION("benchmark, float") {
    conv_suite<float>(nddr::NumericSettings{}.conv_benchmark(true));
  }
  SECTION("benchmark + deterministic, double") {
    conv_suite<double>(nddr::NumericSettings{}.conv_benchmark(true).conv_deterministic(true));
  }
  SECTION("deterministic, float") {
    conv_suite<float>(nddr::NumericSettings{}.conv_deterministic(true));
  }
}

TEST_CASE("CUDA conv2d caches its algorithms and repeats its results", "[cuda][conv2d]") {
  if (no_device()) return;
  // Bit-for-bit repeats need deterministic algorithms (the default may add with atomics).
  nddr::Context<Cuda> gpu;
  gpu.set_settings(nddr::NumericSettings{}.conv_deterministic(true));
  const auto opt = nddr::Conv2dOptions{}.stride(2).same();
  const Shape xs = Shape::nchw(2, 3, 11, 10), ws = Shape::nchw(4, 3, 3, 3);
  const auto x = dev(gpu, random_tensor<float>(xs, 1));
  const auto w = dev(gpu, random_tensor<float>(ws, 2));
  const auto b = dev(gpu, random_tensor<float>(Shape{4}, 3));
  const Shape ys = nddr::conv2d_output_shape(xs, ws, opt);
  const auto dy = dev(gpu, random_tensor<float>(ys, 4));
  Tensor<float, Cuda> y(ys), dx(xs), dw(ws), db(Shape{4});
  Tensor<float> first_y, first_dx, first_dw;
  for (int round = 0; round < 2; ++round) {
    const std::size_t size = nddr::cuda::conv2d_algorithm_cache_size();
    const std::size_t hits = nddr::cuda::conv2d_algorithm_cache_hits();
    dx = Tensor<float, Cuda>(xs);
    nddr::ops::conv2d_forward<float>(gpu, x.cview(), w.cview(), b.cview(), y.view(), opt);
    nddr::ops::conv2d_backward<float>(gpu, x.cview(), w.cview(), dy.cview(), dx.view(), dw.view(),
                                      db.view(), opt);
    if (round == 0) {
      first_y = host(gpu, y);
      first_dx = host(gpu, dx);
      first_dw = host(gpu, dw);
    } else {
      CHECK(nddr::cuda::conv2d_algorithm_cache_size() == size);
      CHECK(nddr::cuda::conv2d_algorithm_cache_hits() == hits + 3);
      const auto y2 = host(gpu, y), dx2 = host(gpu, dx), dw2 = host(gpu, dw);
      for (std::int64_t i = 0; i < y2.numel(); ++i) CHECK(y2[i] == first_y[i]);
      for (std::int64_t i = 0; i < dx2.numel(); ++i) CHECK(dx2[i] == first_dx[i]);
      for (std::int64_t i = 0; i < dw2.numel(); ++i) CHECK(dw2[i] == first_dw[i]);
    }
  }
}

TEST_CASE("CUDA conv2d in BF16 (the conv_bf16 setting) matches the CPU op on rounded operands",
          "[cuda][conv2d][bf16]") {
  if (no_device()) return;
  using O = nddr::Conv2dOptions;
  const auto run_all = [](const nddr::NumericSettings& s) {
    conv_parity_bf16(Shape::nchw(2, 3, 9, 11), Shape::nchw(5, 3, 3, 3), O{}.padding(1), 41, s);
    conv_parity_bf16(Shape::nchw(2, 16, 13, 12), Shape::nchw(8, 16, 3, 3),
                     O{}.padding(2).dilation(2).bias(false), 42, s);
    conv_parity_bf16(Shape::nchw(2, 3, 10, 12), Shape::nchw(5, 3, 3, 3), O{}.stride(2).same(), 43, s);
    conv_parity_bf16(Shape::nchw(2, 2, 7, 6), Shape::nchw(3, 2, 2, 2), O{}.same(), 44, s);
    conv_parity_bf16(Shape::nchw(2, 32, 5, 7), Shape::nchw(16, 32, 1, 1), O{}, 45, s);
    // Large enough for tensor-core tiles and a long FP32 accumulation (K = 64 * 9).
    conv_parity_bf16(Shape::nchw(2, 64, 33, 33), Shape::nchw(64, 64, 3, 3),
                     O{}.padding(1).bias(false), 46, s);
  };
  SECTION("heuristic algorithms") { run_all({}); }
  SECTION("timed algorithms") { run_all(nddr::NumericSettings{}.conv_benchmark(true)); }
  SECTION("deterministic algorithms") { run_all(nddr::NumericSettings{}.conv_deterministic(true)); }
}

TEST_CASE("CUDA conv2d: BF16 and TF32 choices are cached apart from FP32 ones, double ignores "
          "them", "[cuda][conv2d][bf16]") {
  if (no_device()) return;
  nddr::Context<Cuda> gpu;
  const auto opt = nddr::Conv2dOptions{}.padding(1);
  const Shape xs = Shape::nchw(2, 5, 9, 9), ws = Shape::nchw(6, 5, 3, 3);
  const Shape ys = nddr::conv2d_output_shape(xs, ws, opt);
  const auto run = [&](auto zero) {
    using T = decltype(zero);
    const auto x = dev(gpu, random_tensor<T>(xs, 51));
    const auto w = dev(gpu, random_tensor<T>(ws, 52));
    const auto b = dev(gpu, random_tensor<T>(Shape{6}, 53));
    const auto dy = dev(gpu, random_tensor<T>(ys, 54));
    Tensor<T, Cuda> y(ys), dx(xs), dw(ws), db(Shape{6});
    nddr::ops::conv2d_forward<T>(gpu, x.cview(), w.cview(), b.cview(), y.view(), opt);
    nddr::ops::conv2d_backward<T>(gpu, x.cview(), w.cview(), dy.cview(), dx.view(), dw.view(),
                                  db.view(), opt);
    return host(gpu, y);
  };
  // The largest difference relative to the largest magnitude of `want`.
  const auto rel_diff = [](const Tensor<float>& got, const Tensor<float>& want) {
    double scale = 1e-30, diff = 0.0;
    for (std::int64_t i = 0; i < want.numel(); ++i) {
      scale = std::max(scale, std::abs(static_cast<double>(want[i])));
      diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
    }
    return diff / scale;
  };
  const Tensor<double> dbl = run(0.0);
  const Tensor<float> fp32 = run(0.0f);
  const std::size_t size = nddr::cuda::conv2d_algorithm_cache_size();
  Tensor<float> bf16;
  {
    const nddr_test::ConvBf16Setting on(gpu, true);
    CHECK(gpu.settings().conv_bf16());
    bf16 = run(0.0f);
    CHECK(nddr::cuda::conv2d_algorithm_cache_size() == size + 3);
    // Double ignores the setting: its full-precision choices are reused, bit for bit.
    const Tensor<double> dbl2 = run(0.0);
    CHECK(nddr::cuda::conv2d_algorithm_cache_size() == size + 3);
    for (std::int64_t i = 0; i < dbl.numel(); ++i) REQUIRE(dbl2[i] == dbl[i]);
  }
  CHECK_FALSE(gpu.settings().conv_bf16());
  const std::size_t after_bf16 = nddr::cuda::conv2d_algorithm_cache_size();
  {
    Tensor<float> tf32;
    {
      const nddr::ScopedSettings on(gpu, nddr::NumericSettings(gpu.settings()).conv_tf32(true));
      tf32 = run(0.0f);
    }
    CHECK(nddr::cuda::conv2d_algorithm_cache_size() == after_bf16 + 3);
    // TF32 keeps 11 significant bits of each operand, BF16 8: both near FP32, BF16 less so.
    CHECK(rel_diff(tf32, fp32) < 3e-3);
  }
  CHECK(rel_diff(bf16, fp32) < 3e-2);
  CHECK(rel_diff(bf16, fp32) > 0.0);
}

TEST_CASE("cuDNN algorithm choice: precision, workspace, determinism and math type (host "
          "logic, runs without a device)", "[cuda][conv2d][algorithm]") {
  namespace cd = nddr::cuda::detail;
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  const auto perf = [](int algo, cudnnStatus_t status, std::size_t memory,
                       cudnnMathType_t math, cudnnDeterminism_t det) {
    Perf p{};
    p.algo = static_cast<cudnnConvolutionFwdAlgo_t>(algo);
    p.status = status;
    p.memory = memory;
    p.mathType = math;
    p.determinism = det;
    return p;
  };
  constexpr auto ok = CUDNN_STATUS_SUCCESS;
  constexpr auto nd = CUDNN_NON_DETERMINISTIC;
  constexpr auto det = CUDNN_DETERMINISTIC;
  // cuDNN's ranked list: a failed candidate, one over the workspace limit, one that would round
  // float data to half, a tensor-core one (non-deterministic), then FMA and default-math ones.
  const std::array<Perf, 6> ranked{
      perf(0, CUDNN_STATUS_NOT_SUPPORTED, 0, CUDNN_FMA_MATH, det),
      perf(1, ok, nddr::cuda::kConvWorkspaceLimit + 1, CUDNN_FMA_MATH, det),
      perf(2, ok, 0, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, det),
      perf(3, ok, 4096, CUDNN_TENSOR_OP_MATH, nd),
      perf(4, ok, 256, CUDNN_FMA_MATH, nd),
      perf(5, ok, 512, CUDNN_DEFAULT_MATH, det)};
  const auto key = [](cd::ConvMath math, bool deterministic) {
    return cd::ConvKey{0, CUDNN_DATA_FLOAT, cd::ConvDirection::kForward, 1, nddr::Conv2dGeometry{},
                       math, deterministic, false};
  };
  const auto pick = [&](cd::ConvMath math, bool deterministic, int count = 6) {
    return cd::pick_algorithm(ranked.data(), count, key(math, deterministic), "test");
  };
  // Full precision never takes tensor-core math; TF32 and BF16 take the first usable candidate
  // and carry its math type (set on the descriptor before the call runs).
  CHECK(pick(cd::ConvMath::kFull, false).algo == 4);
  CHECK(pick(cd::ConvMath::kFull, false).workspace == 256);
  for (const auto math : {cd::ConvMath::kTf32, cd::ConvMath::kBf16}) {
    const cd::ConvAlgo a = pick(math, false);
    CHECK(a.algo == 3);
    CHECK(a.workspace == 4096);
    CHECK(a.math_type == CUDNN_TENSOR_OP_MATH);
    // Deterministic: the first usable deterministic candidate, skipping faster others.
    const cd::ConvAlgo d = pick(math, true);
    CHECK(d.algo == 5);
    CHECK(d.math_type == CUDNN_DEFAULT_MATH);
  }
  CHECK(pick(cd::ConvMath::kFull, true).algo == 5);
  // No deterministic candidate usable: the first usable other one.
  CHECK(pick(cd::ConvMath::kBf16, true, 5).algo == 3);
  CHECK(pick(cd::ConvMath::kFull, true, 5).algo == 4);
  // None usable: an error that names the caller, the precision and the limit.
  const auto none = [&](cd::ConvMath math) {
    try {
      (void)pick(math, false, 3);
    } catch (const nddr::DeviceError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(none(cd::ConvMath::kBf16),
             Catch::Contains("test: cuDNN offers no BF16 algorithm within 1073741824 bytes"));
  CHECK_THAT(none(cd::ConvMath::kFull), Catch::Contains("no full-precision algorithm"));
  CHECK_THAT(none(cd::ConvMath::kTf32), Catch::Contains("no TF32 or full-precision algorithm"));
}

TEST_CASE("CUDA conv2d rejects bad shapes like the CPU op", "[cuda][conv2d]") {
  if (no_device()) return;
  nddr::Context<Cuda> gpu;
  Tensor<float, Cuda> x(Shape::nchw(1, 3, 5, 5)), w(Shape::nchw(2, 4, 3, 3)), b(Shape{2});
  Tensor<float, Cuda> y(Shape::nchw(1, 2, 3, 3));
  CHECK_THROWS_WITH(
      nddr::ops::conv2d_forward<float>(gpu, x.cview(), w.cview(), b.cview(), y.view(), {}),
      Contains("nddr::ops::conv2d_forward") && Contains("has 3 channels but weight"));
  Tensor<float, Cuda> w3(Shape::nchw(2, 3, 3, 3)), ybad(Shape::nchw(1, 2, 4, 4));
  CHECK_THROWS_AS(
      nddr::ops::conv2d_forward<float>(gpu, x.cview(), w3.cview(), b.cview(), ybad.view(), {}),
      nddr::ShapeError);
  CHECK_THROWS_WITH(nddr::ops::conv2d_forward<float>(gpu, x.cview(), w3.cview(), {}, y.view(), {}),
                    Contains("use_bias is true but bias is empty"));
  CHECK_THROWS_AS(nddr::ops::conv2d_forward<float>(gpu, x.cview(), w3.cview(), b.cview(), y.view(),
                                                   nddr::Conv2dOptions{}.stride(0)),
                  nddr::OptionError);
}

TEST_CASE("CUDA batch norm matches the CPU op (float)", "[cuda][batch_norm]") {
  if (no_device()) return;
  SECTION("affine") { batch_norm_parity<float>(Shape::nchw(3, 5, 7, 9), {}, 21); }
  // Planes of >= 256 elements take the plane-wise element kernels; 4 x 130^2 per channel is
  // reduced by 33 blocks per channel.
  SECTION("large planes, split reductions") {
    batch_norm_parity<float>(Shape::nchw(4, 3, 130, 130), {}, 25);
  }
  SECTION("fused ReLU, small and large planes") {
    batch_norm_parity<float>(Shape::nchw(3, 5, 7, 9), nddr::BatchNormOptions::tf_slim().relu(true), 28);
    batch_norm_parity<float>(Shape::nchw(2, 4, 40, 33), nddr::BatchNormOptions{}.relu(true), 29);
  }
  SECTION("tf_slim, no affine") {
    batch_norm_parity<float>(Shape::nchw(2, 4, 5, 3), nddr::BatchNormOptions::tf_slim().affine(false), 22);
  }
}

TEST_CASE("CUDA batch norm matches the CPU op (double)", "[cuda][batch_norm]") {
  if (no_device()) return;
  SECTION("affine") { batch_norm_parity<double>(Shape::nchw(3, 5, 7, 9), {}, 23); }
  SECTION("large planes, split reductions") {
    batch_norm_parity<double>(Shape::nchw(4, 3, 130, 130), {}, 26);
    batch_norm_parity<double>(Shape::nchw(2, 70, 17, 19), nddr::BatchNormOptions::tf_slim(), 27);
  }
  SECTION("fused ReLU, small and large planes") {
    batch_norm_parity<double>(Shape::nchw(3, 5, 7, 9), nddr::BatchNormOptions::tf_slim().relu(true), 30);
    batch_norm_parity<double>(Shape::nchw(2, 4, 40, 33), nddr::BatchNormOptions{}.relu(true).affine(false), 31);
  }
  SECTION("biased running var, N*H*W = 2") {
    batch_norm_parity<double>(Shape::nchw(2, 3, 1, 1),
                              nddr::BatchNormOptions{}.unbiased_running_var(false).momentum(0.3), 24);
  }
}

/// Synchronized batch norm on both backends with the same host reduction `reduce` (an identity,
/// or a doubling that stands for two replicas holding the same batch): forward and backward
/// outputs, the running statistics and the number of reductions (the CPU op's three) agree.
template <class T>
void batch_norm_sync_parity(Shape xs, const nddr::BatchNormOptions& opt, double replicas,
                            std::uint32_t seed) {
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu;
  const Shape cs{xs.c()};
  const Tensor<T> x = random_tensor<T>(xs, seed, T(2), T(5));
  const Tensor<T> dy = random_tensor<T>(xs, seed + 1);
  const Tensor<T> gamma = random_tensor<T>(cs, seed + 2, T(0.5), T(1.5));
  const Tensor<T> beta = random_tensor<T>(cs, seed + 3);
  Tensor<T> rm = random_tensor<T>(cs, seed + 4), rv = random_tensor<T>(cs, seed + 5, T(0.5), T(2));
  Tensor<T> dx = random_tensor<T>(xs, seed + 6), y(xs), sm(cs), si(cs), dg(cs), dbt(cs);
  const auto xd = dev(gpu, x), dyd = dev(gpu, dy), gd = dev(gpu, gamma), bd = dev(gpu, beta);
  auto rmd = dev(gpu, rm), rvd = dev(gpu, rv), dxd = dev(gpu, dx);
  Tensor<T, Cuda> yd(xs), smd(cs), sid(cs);
  auto dgd = dev(gpu, random_tensor<T>(cs, 1, T(50), T(60)));
  auto dbd = dev(gpu, random_tensor<T>(cs, 2, T(50), T(60)));
  int cpu_calls = 0, gpu_calls = 0;
  const auto scaled = [replicas](int& calls) {
    return nddr::BatchNormAllReduce([replicas, &calls](std::span<double> v) {
      ++calls;
      for (double& e : v) e *= replicas;
    });
  };
  const nddr::BatchNormAllReduce on_cpu = scaled(cpu_calls), on_gpu = scaled(gpu_calls);
  nddr::ops::batch_norm_forward_training_sync<T>(cpu, x.cview(), gamma.cview(), beta.cview(),
                                                 rm.view(), rv.view(), y.view(), sm.view(),
                                                 si.view(), opt, on_cpu);
  nddr::ops::batch_norm_forward_training_sync<T>(gpu, xd.cview(), gd.cview(), bd.cview(),
                                                 rmd.view(), rvd.view(), yd.view(), smd.view(),
                                                 sid.view(), opt, on_gpu);
  check_close(host(gpu, yd), y, "sync bn y");
  check_close(host(gpu, smd), sm, "sync bn save_mean");
  check_close(host(gpu, sid), si, "sync bn save_inv_std");
  check_close(host(gpu, rmd), rm, "sync bn running_mean");
  check_close(host(gpu, rvd), rv, "sync bn running_var");
  nddr::ops::batch_norm_backward_training_sync<T>(cpu, x.cview(), dy.cview(), gamma.cview(),
                                                  sm.cview(), si.cview(), dx.view(), dg.view(),
                                                  dbt.view(), opt, on_cpu, y.cview());
  nddr::ops::batch_norm_backward_training_sync<T>(gpu, xd.cview(), dyd.cview(), gd.cview(),
                                                  smd.cview(), sid.cview(), dxd.view(),
                                                  dgd.view(), dbd.view(), opt, on_gpu, yd.cview());
  check_close(host(gpu, dxd), dx, "sync bn dx (accumulated)");
  if (opt.affine()) {
    check_close(host(gpu, dgd), dg, "sync bn dgamma (this replica's)");
    check_close(host(gpu, dbd), dbt, "sync bn dbeta (this replica's)");
  }
  CHECK(cpu_calls == 3);
  CHECK(gpu_calls == 3);
}

TEST_CASE("CUDA synchronized batch norm matches the CPU op", "[cuda][batch_norm][sync]") {
  if (no_device()) return;
  SECTION("one replica (identity reduction)") {
    batch_norm_sync_parity<double>(Shape::nchw(3, 5, 7, 9), {}, 1.0, 61);
    batch_norm_sync_parity<float>(Shape::nchw(4, 3, 130, 130), {}, 1.0, 62);
  }
  SECTION("two replicas of the same batch (doubling reduction)") {
    batch_norm_sync_parity<double>(Shape::nchw(2, 4, 40, 33),
                                   nddr::BatchNormOptions{}.relu(true).momentum(0.3), 2.0, 63);
    batch_norm_sync_parity<float>(Shape::nchw(3, 5, 7, 9),
                                  nddr::BatchNormOptions::tf_slim().relu(true), 2.0, 64);
    batch_norm_sync_parity<double>(Shape::nchw(2, 4, 5, 3),
                                   nddr::BatchNormOptions::tf_slim().affine(false), 2.0, 65);
  }
  SECTION("the identity reduction gives the local op's results") {
    nddr::Context<Cuda> gpu;
    const Shape xs = Shape::nchw(2, 6, 11, 13), cs{6};
    const auto x = dev(gpu, random_tensor<double>(xs, 66, 1.0, 4.0));
    const auto g = dev(gpu, random_tensor<double>(cs, 67, 0.5, 1.5));
    const auto b = dev(gpu, random_tensor<double>(cs, 68));
    Tensor<double, Cuda> rm1(cs), rv1(cs), rm2(cs), rv2(cs), y1(xs), y2(xs), sm1(cs), si1(cs),
        sm2(cs), si2(cs);
    const nddr::BatchNormAllReduce identity = [](std::span<double>) {};
    nddr::ops::batch_norm_forward_training<double>(gpu, x.cview(), g.cview(), b.cview(),
                                                   rm1.view(), rv1.view(), y1.view(), sm1.view(),
                                                   si1.view(), {});
    nddr::ops::batch_norm_forward_training_sync<double>(gpu, x.cview(), g.cview(), b.cview(),
                                                        rm2.view(), rv2.view(), y2.view(),
                                                        sm2.view(), si2.view(), {}, identity);
    check_close(host(gpu, y2), host(gpu, y1), "identity-synchronized y vs local y");
    check_close(host(gpu, si2), host(gpu, si1), "identity-synchronized inv_std vs local");
  }
  SECTION("bad inputs") {
    nddr::Context<Cuda> gpu;
    Tensor<double, Cuda> x(Shape::nchw(1, 2, 1, 1)), y(x.shape()), c1(Shape{2}), c2(Shape{2}),
        c3(Shape{2}), c4(Shape{2});
    const auto opt = nddr::BatchNormOptions{}.affine(false);
    CHECK_THROWS_WITH(nddr::ops::batch_norm_forward_training_sync<double>(
                          gpu, x.cview(), {}, {}, c1.view(), c2.view(), y.view(), c3.view(),
                          c4.view(), opt, nddr::BatchNormAllReduce{}),
                      Contains("batch_norm_forward_training_sync: all_reduce is empty"));
    CHECK_THROWS_WITH(nddr::ops::batch_norm_forward_training_sync<double>(
                          gpu, x.cview(), {}, {}, c1.view(), c2.view(), y.view(), c3.view(),
                          c4.view(), opt, [](std::span<double>) {}),
                      Contains("global batch 1 values per channel"));
    // Two replicas of one value each: the global batch has two, so it trains.
    CHECK_NOTHROW(nddr::ops::batch_norm_forward_training_sync<double>(
        gpu, x.cview(), {}, {}, c1.view(), c2.view(), y.view(), c3.view(), c4.view(), opt,
        [](std::span<double> v) {
          for (double& e : v) e *= 2.0;
        }));
  }
  SECTION("BatchNorm2d inside ScopedBatchNormSync, as on the CPU") {
    nddr::Context<Cpu> cpu(2);
    nddr::Context<Cuda> gpu;
    nddr::ParameterStore<float> hs;
    nddr::ParameterStore<float, Cuda> ds;
    nddr::BatchNorm2d<float> hb(3, nddr::BatchNormOptions{}.relu(true));
    nddr::BatchNorm2d<float, Cuda> db(3, nddr::BatchNormOptions{}.relu(true));
    hb.declare(hs, "bn");
    db.declare(ds, "bn");
    hs.allocate();
    ds.allocate();
    nddr::Rng rng(1);
    hb.initialize(rng);
    nddr::copy<float, Cpu, Cuda>(gpu, hs.values(), ds.values());
    nddr::copy<float, Cpu, Cuda>(gpu, hs.buffer_values(), ds.buffer_values());
    const Shape xs = Shape::nchw(2, 3, 9, 8);
    const Tensor<float> x = random_tensor<float>(xs, 69), dy = random_tensor<float>(xs, 70);
    const auto xd = dev(gpu, x), dyd = dev(gpu, dy);
    Tensor<float> y(xs), dx(xs);
    Tensor<float, Cuda> yd(xs), dxd(xs);
    int calls = 0;
    {
      const nddr::ScopedBatchNormSync sync([&calls](std::span<double> v) {
        ++calls;
        for (double& e : v) e *= 2.0;
      });
      hb.forward(cpu, x.cview(), y.view());
      db.forward(gpu, xd.cview(), yd.view());
      hb.backward(cpu, x.cview(), y.cview(), dy.cview(), dx.view());
      db.backward(gpu, xd.cview(), yd.cview(), dyd.cview(), dxd.view());
    }
    CHECK(calls == 6);
    check_close(host(gpu, yd), y, "synchronized BatchNorm2d y");
    check_close(host(gpu, dxd), dx, "synchronized BatchNorm2d dx");
    Tensor<float> hrv(Shape{3});
    nddr::Storage<Cuda>::download(hrv.data(), db.running_var().data(), 3 * sizeof(float));
    Tensor<float> want(Shape{3});
    for (int c = 0; c < 3; ++c) want[c] = hb.running_var()[c];
    check_close(hrv, want, "synchronized BatchNorm2d running_var");
  }
}

TEST_CASE("CUDA batch norm rejects bad shapes like the CPU op", "[cuda][batch_norm]") {
  if (no_device()) return;
  nddr::Context<Cuda> gpu;
  Tensor<float, Cuda> x(Shape::nchw(1, 3, 1, 1)), g(Shape{3}), b(Shape{3}), rm(Shape{3}),
      rv(Shape{3}), y(Shape::nchw(1, 3, 1, 1)), sm(Shape{3}), si(Shape{3}), bad(Shape{4});
  CHECK_THROWS_WITH(nddr::ops::batch_norm_forward_training<float>(
                        gpu, x.cview(), g.cview(), b.cview(), rm.view(), rv.view(), y.view(),
                        sm.view(), si.view(), {}),
                    Contains("nddr::ops::batch_norm_forward_training") &&
                        Contains("more than one value per channel"));
  CHECK_THROWS_AS(nddr::ops::batch_norm_forward_inference<float>(
                      gpu, x.cview(), g.cview(), b.cview(), bad.cview(), rv.cview(), y.view(), {}),
                  nddr::ShapeError);
  CHECK_THROWS_AS(nddr::ops::batch_norm_forward_inference<float>(
                      gpu, x.cview(), g.cview(), b.cview(), rm.cview(), rv.cview(), y.view(),
                      nddr::BatchNormOptions{}.eps(0)),
                  nddr::OptionError);
}

TEST_CASE("CUDA linear matches the CPU op", "[cuda][linear]") {
  if (no_device()) return;
  SECTION("rank 2, bias, float") { linear_parity<float>(Shape{5, 37}, 13, true, 31); }
  SECTION("rank 4, no bias, float") { linear_parity<float>(Shape::nchw(3, 4, 5, 3), 7, false, 32); }
  SECTION("rank 2, bias, double") { linear_parity<double>(Shape{5, 37}, 13, true, 33); }
  SECTION("rank 4, bias, double") { linear_parity<double>(Shape::nchw(3, 4, 5, 3), 7, true, 34); }
}

TEST_CASE("CUDA linear with TF32 GEMMs (the matmul_tf32 setting) stays near FP32", "[cuda][linear]") {
  if (no_device()) return;
  nddr::Context<Cuda> gpu;
  const Shape xs{64, 512};
  const std::int64_t out = 256;
  const auto x = dev(gpu, random_tensor<float>(xs, 61));
  const auto w = dev(gpu, random_tensor<float>(Shape{out, 512}, 62));
  const auto dy = dev(gpu, random_tensor<float>(Shape{64, out}, 63));
  const auto run = [&] {
    Tensor<float, Cuda> y(Shape{64, out}), dx(xs), dw(Shape{out, 512});
    nddr::ops::linear_forward<float>(gpu, x.cview(), w.cview(), {}, y.view());
    nddr::ops::linear_backward<float>(gpu, x.cview(), w.cview(), dy.cview(), dx.view(), dw.view(),
                                      {});
    return std::array<Tensor<float>, 3>{host(gpu, y), host(gpu, dx), host(gpu, dw)};
  };
  const auto fp32 = run();
  gpu.set_settings(nddr::NumericSettings{}.matmul_tf32(true));
  const auto tf32 = run();
  gpu.set_settings({});
  const auto fp32_again = run();
  for (std::size_t i = 0; i < 3; ++i) {
    INFO("output " << i << " (y, dx, dw)");
    double scale = 1e-30, diff = 0.0, again = 0.0;
    for (std::int64_t j = 0; j < fp32[i].numel(); ++j) {
      scale = std::max(scale, std::abs(static_cast<double>(fp32[i][j])));
      diff = std::max(diff, std::abs(static_cast<double>(tf32[i][j]) - fp32[i][j]));
      again = std::max(again, std::abs(static_cast<double>(fp32_again[i][j]) - fp32[i][j]));
    }
    // 11 significant bits per operand: about 1e-3 of the scale, and visibly not FP32.
    CHECK(diff < 3e-3 * scale);
    CHECK(diff > 0.0);
    CHECK(again == 0.0);  // switching back restores full precision
  }
}

TEST_CASE("CUDA linear rejects bad shapes like the CPU op", "[cuda][linear]") {
  if (no_device()) return;
  nddr::Context<Cuda> gpu;
  Tensor<float, Cuda> x(Shape{2, 6}), w(Shape{3, 5}), b(Shape{3}), y(Shape{2, 3});
  CHECK_THROWS_WITH(nddr::ops::linear_forward<float>(gpu, x.cview(), w.cview(), b.cview(), y.view()),
                    Contains("nddr::ops::linear_forward") && Contains("expected weight (out, 6)"));
  Tensor<float, Cuda> x3(Shape{2, 3, 2});
  CHECK_THROWS_WITH(
      nddr::ops::linear_forward<float>(gpu, x3.cview(), w.cview(), b.cview(), y.view()),
      Contains("expected rank 2 (N, F) or rank 4"));
}

TEST_CASE("Conv2d, BatchNorm2d and Linear layers run on CUDA like on the CPU", "[cuda][layers]") {
  if (no_device()) return;
  SECTION("Conv2d") {
    layer_parity<nddr::Conv2d>(Shape::nchw(2, 3, 9, 8), std::int64_t{3}, std::int64_t{4},
                               std::int64_t{3}, nddr::Conv2dOptions{}.stride(2).same());
  }
  SECTION("BatchNorm2d") { layer_parity<nddr::BatchNorm2d>(Shape::nchw(2, 3, 5, 4), std::int64_t{3}); }
  SECTION("Linear") {
    layer_parity<nddr::Linear>(Shape::nchw(2, 3, 2, 2), std::int64_t{12}, std::int64_t{5});
  }
}
