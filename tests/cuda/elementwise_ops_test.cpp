// CPU/CUDA parity of our own CUDA kernels: pooling, resize, channel concat/split, dropout,
// the two losses, L2 normalisation and the fused SGD step. Every case runs the CPU op and the
// CUDA op on the same random data (float and double, odd sizes) and compares; backward passes
// start from a pre-filled dx so that accumulation (dx += ...) is checked. Cases need a device
// and print "no CUDA device: skipped" without one.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nddr/cuda.hpp>
#include <nddr/nddr.hpp>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "no_device.hpp"

namespace {

using nddr::Cpu;
using nddr::Cuda;
using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;

using nddr_test::no_device;

template <class T>
Tensor<T> random_tensor(Shape s, std::uint32_t seed, T lo = T(-1), T hi = T(1)) {
  Tensor<T> t(s);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<T> dist(lo, hi);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = dist(gen);
  return t;
}

/// Relative tolerance of CPU/GPU parity: the GPU may contract a * b + c into an FMA.
template <class T>
constexpr double kTol = std::is_same_v<T, float> ? 2e-5 : 1e-12;

/// Element-wise |a - b| <= tol * max(1, |a|, |b|) scaled by the tensor's magnitude.
template <class T>
void check_close(const Tensor<T>& gpu, const Tensor<T>& cpu, double tol = kTol<T>) {
  REQUIRE(gpu.shape() == cpu.shape());
  double scale = 1.0;
  for (std::int64_t i = 0; i < cpu.numel(); ++i) scale = std::max(scale, std::abs(double(cpu[i])));
  std::int64_t bad = 0, first = -1;
  for (std::int64_t i = 0; i < cpu.numel(); ++i)
    if (!(std::abs(double(gpu[i]) - double(cpu[i])) <= tol * scale)) {
      if (first < 0) first = i;
      ++bad;
    }
  INFO("first mismatch at " << first << ": gpu "
                            << (first >= 0 ? double(gpu[first]) : 0.0) << " cpu "
                            << (first >= 0 ? double(cpu[first]) : 0.0));
  CHECK(bad == 0);
}

template <class T>
void check_equal(const Tensor<T>& gpu, const Tensor<T>& cpu) {
  REQUIRE(gpu.shape() == cpu.shape());
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < cpu.numel(); ++i) bad += !(gpu[i] == cpu[i]);
  CHECK(bad == 0);
}

/// Runs a forward op on CPU and GPU (y starts zero) and returns (gpu, cpu) results.
struct Devices {
  nddr::Context<Cuda> gpu;
  nddr::Context<Cpu> cpu{2};
};

}  // namespace

using Catch::Contains;

// ---- pooling ----------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("CUDA max/avg pooling matches the CPU op", "[cuda][pool][device]", float,
                   double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  const Shape xs = Shape::nchw(2, 3, 9, 11);
  const std::vector<nddr::Pool2dOptions> options = {
      nddr::Pool2dOptions{}.kernel(3).stride(2).same(),
      nddr::Pool2dOptions{}.kernel(3).stride(2).padding(1),
      nddr::Pool2dOptions{}.kernel(2).stride(2),
      nddr::Pool2dOptions{}.kernel(3, 2).stride(1, 2).same(),
      nddr::Pool2dOptions{}.kernel(3).stride(2).padding(1).count_include_pad(),
      nddr::Pool2dOptions{}.kernel(3).stride(2).same().count_include_pad(),
  };
  const Tensor<T> x = random_tensor<T>(xs, 11);
  const auto x_dev = nddr::to_device(d.gpu, x);
  for (std::size_t k = 0; k < options.size(); ++k) {
    INFO("options " << k);
    const auto& opt = options[k];
    const Shape ys = nddr::pool2d_output_shape("test", xs, opt);
    const Tensor<T> dy = random_tensor<T>(ys, 12 + static_cast<std::uint32_t>(k));
    const Tensor<T> dx0 = random_tensor<T>(xs, 30);
    const auto dy_dev = nddr::to_device(d.gpu, dy);

    // max forward, with and without argmax (int32 and int64)
    Tensor<T> y_cpu(ys);
    Tensor<std::int64_t> am_cpu(ys);
    nddr::ops::max_pool2d_forward(d.cpu, x.cview(), y_cpu.view(), am_cpu.view(), opt);
    Tensor<T, Cuda> y_dev(ys);
    nddr::ops::max_pool2d_forward(d.gpu, x_dev.cview(), y_dev.view(), opt);
    check_equal(nddr::to_host(d.gpu, y_dev), y_cpu);
    Tensor<T, Cuda> y2_dev(ys);
    Tensor<std::int64_t, Cuda> am64(ys);
    nddr::ops::max_pool2d_forward(d.gpu, x_dev.cview(), y2_dev.view(), am64.view(), opt);
    check_equal(nddr::to_host(d.gpu, y2_dev), y_cpu);
    check_equal(nddr::to_host(d.gpu, am64), am_cpu);
    Tensor<std::int32_t, Cuda> am32(ys);
    nddr::ops::max_pool2d_forward(d.gpu, x_dev.cview(), y2_dev.view(), am32.view(), opt);
    const Tensor<std::int32_t> am32_host = nddr::to_host(d.gpu, am32);
    for (std::int64_t i = 0; i < am32_host.numel(); ++i) REQUIRE(am32_host[i] == am_cpu[i]);

    // max backward: recomputed from x, and routed by argmax (both accumulate)
    Tensor<T> dx_cpu = dx0;
    nddr::ops::max_pool2d_backward(d.cpu, x.cview(), dy.cview(), dx_cpu.view(), opt);
    auto dx_dev = nddr::to_device(d.gpu, dx0);
    nddr::ops::max_pool2d_backward(d.gpu, x_dev.cview(), dy_dev.cview(), dx_dev.view(), opt);
    check_close(nddr::to_host(d.gpu, dx_dev), dx_cpu);
    auto dx_am = nddr::to_device(d.gpu, dx0);
    nddr::ops::max_pool2d_backward(d.gpu, am32.cview(), dy_dev.cview(), dx_am.view());
    check_close(nddr::to_host(d.gpu, dx_am), dx_cpu);

    // avg forward and backward
    Tensor<T> a_cpu(ys);
    nddr::ops::avg_pool2d_forward(d.cpu, x.cview(), a_cpu.view(), opt);
    Tensor<T, Cuda> a_dev(ys);
    nddr::ops::avg_pool2d_forward(d.gpu, x_dev.cview(), a_dev.view(), opt);
    check_close(nddr::to_host(d.gpu, a_dev), a_cpu);
    Tensor<T> da_cpu = dx0;
    nddr::ops::avg_pool2d_backward(d.cpu, x.cview(), dy.cview(), da_cpu.view(), opt);
    auto da_dev = nddr::to_device(d.gpu, dx0);
    nddr::ops::avg_pool2d_backward(d.gpu, x_dev.cview(), dy_dev.cview(), da_dev.view(), opt);
    check_close(nddr::to_host(d.gpu, da_dev), da_cpu);
  }

  // Bad argmax: ValueError naming the index, dx untouched; empty dx skipped; shapes checked.
  const auto opt = nddr::Pool2dOptions{}.kernel(3).stride(2).same();
  const Shape ys = nddr::pool2d_output_shape("test", xs, opt);
  Tensor<std::int64_t> am_bad(ys);
  am_bad[7] = 99;
  am_bad[9] = -1;
  const auto am_bad_dev = nddr::to_device(d.gpu, am_bad);
  const auto dy_dev = nddr::to_device(d.gpu, random_tensor<T>(ys, 5));
  Tensor<T, Cuda> dx_dev(xs);
  CHECK_THROWS_AS(nddr::ops::max_pool2d_backward(d.gpu, am_bad_dev.cview(), dy_dev.cview(),
                                                 dx_dev.view()),
                  nddr::ValueError);
  CHECK_THROWS_WITH(nddr::ops::max_pool2d_backward(d.gpu, am_bad_dev.cview(), dy_dev.cview(),
                                                   dx_dev.view()),
                    Contains("argmax 99 at 7") && Contains("99 cells"));
  check_equal(nddr::to_host(d.gpu, dx_dev), Tensor<T>(xs));
  REQUIRE_NOTHROW(nddr::ops::max_pool2d_backward(d.gpu, x_dev.cview(), dy_dev.cview(),
                                                 TensorView<T, Cuda>{}, opt));
  Tensor<T, Cuda> wrong(Shape::nchw(2, 3, 5, 5));
  CHECK_THROWS_WITH(nddr::ops::max_pool2d_forward(d.gpu, x_dev.cview(), wrong.view(), opt),
                    Contains("max_pool2d_forward") && Contains("(2, 3, 5, 5)") &&
                        Contains("(2, 3, 5, 6)"));
  CHECK_THROWS_AS(nddr::ops::avg_pool2d_forward(d.gpu, x_dev.cview(), wrong.view(),
                                                nddr::Pool2dOptions{}.kernel(0)),
                  nddr::OptionError);
}

TEMPLATE_TEST_CASE("CUDA global average pooling matches the CPU op", "[cuda][pool][device]",
                   float, double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  const Shape xs = Shape::nchw(3, 5, 7, 9), ys = Shape::nchw(3, 5, 1, 1);
  const Tensor<T> x = random_tensor<T>(xs, 1), dy = random_tensor<T>(ys, 2),
                  dx0 = random_tensor<T>(xs, 3);
  Tensor<T> y_cpu(ys);
  nddr::ops::global_avg_pool_forward(d.cpu, x.cview(), y_cpu.view());
  const auto x_dev = nddr::to_device(d.gpu, x);
  Tensor<T, Cuda> y_dev(ys);
  nddr::ops::global_avg_pool_forward(d.gpu, x_dev.cview(), y_dev.view());
  check_equal(nddr::to_host(d.gpu, y_dev), y_cpu);
  Tensor<T> dx_cpu = dx0;
  nddr::ops::global_avg_pool_backward(d.cpu, x.cview(), dy.cview(), dx_cpu.view());
  auto dx_dev = nddr::to_device(d.gpu, dx0);
  const auto dy_dev = nddr::to_device(d.gpu, dy);
  nddr::ops::global_avg_pool_backward(d.gpu, x_dev.cview(), dy_dev.cview(), dx_dev.view());
  check_close(nddr::to_host(d.gpu, dx_dev), dx_cpu);
  CHECK_THROWS_AS(nddr::ops::global_avg_pool_forward(d.gpu, x_dev.cview(), dx_dev.view()),
                  nddr::ShapeError);
}

// ---- resize -----------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("CUDA resize matches the CPU op in every mode, up and down",
                   "[cuda][resize][device]", float, double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  const nddr::ResizeMode modes[] = {
      nddr::ResizeMode::kBilinearTfLegacy, nddr::ResizeMode::kBilinearHalfPixel,
      nddr::ResizeMode::kBilinearAlignCorners, nddr::ResizeMode::kNearestTfLegacy};
  const Shape inputs[] = {Shape::nchw(2, 3, 5, 7), Shape::nchw(2, 3, 13, 11)};
  const std::int64_t sizes[][2] = {{11, 15}, {4, 6}, {1, 1}};
  for (const auto mode : modes)
    for (const Shape& xs : inputs)
      for (const auto& sz : sizes) {
        INFO(nddr::resize_mode_name(mode) << " " << xs.str() << " -> " << sz[0] << "x" << sz[1]);
        const auto opt = nddr::ResizeOptions{}.size(sz[0], sz[1]).mode(mode);
        const Shape ys = nddr::resize_output_shape("test", xs, opt);
        const Tensor<T> x = random_tensor<T>(xs, 4), dy = random_tensor<T>(ys, 5),
                        dx0 = random_tensor<T>(xs, 6);
        Tensor<T> y_cpu(ys);
        nddr::ops::resize_forward(d.cpu, x.cview(), y_cpu.view(), opt);
        const auto x_dev = nddr::to_device(d.gpu, x);
        Tensor<T, Cuda> y_dev(ys);
        nddr::ops::resize_forward(d.gpu, x_dev.cview(), y_dev.view(), opt);
        check_close(nddr::to_host(d.gpu, y_dev), y_cpu);
        Tensor<T> dx_cpu = dx0;
        nddr::ops::resize_backward(d.cpu, x.cview(), dy.cview(), dx_cpu.view(), opt);
        auto dx_dev = nddr::to_device(d.gpu, dx0);
        const auto dy_dev = nddr::to_device(d.gpu, dy);
        nddr::ops::resize_backward(d.gpu, x_dev.cview(), dy_dev.cview(), dx_dev.view(), opt);
        check_close(nddr::to_host(d.gpu, dx_dev), dx_cpu);
      }
}

TEMPLATE_TEST_CASE("CUDA nearest resize of label maps matches the CPU op",
                   "[cuda][resize][device]", std::uint8_t, std::int32_t, std::int64_t) {
  using L = TestType;
  if (no_device()) return;
  Devices d;
  const Shape xs = Shape::nchw(2, 1, 7, 9);
  Tensor<L> x(xs);
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<L>((i * 37) % 251);
  const auto x_dev = nddr::to_device(d.gpu, x);
  for (const std::int64_t h : {3, 15}) {
    const auto opt = nddr::ResizeOptions{}.size(h, 20 - h).mode(nddr::ResizeMode::kNearestTfLegacy);
    const Shape ys = nddr::resize_output_shape("test", xs, opt);
    Tensor<L> y_cpu(ys);
    nddr::ops::resize_forward(d.cpu, x.cview(), y_cpu.view(), opt);
    Tensor<L, Cuda> y_dev(ys);
    nddr::ops::resize_forward(d.gpu, x_dev.cview(), y_dev.view(), opt);
    check_equal(nddr::to_host(d.gpu, y_dev), y_cpu);
    CHECK_THROWS_WITH(
        nddr::ops::resize_forward(d.gpu, x_dev.cview(), y_dev.view(),
                                  nddr::ResizeOptions{}.size(h, 20 - h)),
        Contains("integer tensors support only mode kNearestTfLegacy"));
  }
}

// ---- concat / split ---------------------------------------------------------------------------

TEMPLATE_TEST_CASE("CUDA channel concat and split of 3 parts match the CPU ops",
                   "[cuda][concat][device]", float, double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  // Parts of 2, 0 and 3 channels; the 0-channel part has no data but carries its shape.
  const Shape s0 = Shape::nchw(2, 2, 5, 7), s1 = Shape::nchw(2, 0, 5, 7),
              s2 = Shape::nchw(2, 3, 5, 7), whole = Shape::nchw(2, 5, 5, 7);
  const Tensor<T> x0 = random_tensor<T>(s0, 1), x2 = random_tensor<T>(s2, 2);
  const auto x0d = nddr::to_device(d.gpu, x0), x2d = nddr::to_device(d.gpu, x2);
  std::vector<TensorView<const T, Cpu>> xs_cpu = {x0.cview(), TensorView<const T, Cpu>(nullptr, s1),
                                                  x2.cview()};
  std::vector<TensorView<const T, Cuda>> xs_gpu = {
      x0d.cview(), TensorView<const T, Cuda>(nullptr, s1), x2d.cview()};
  Tensor<T> y_cpu(whole);
  nddr::ops::concat_channels_forward<T>(d.cpu, xs_cpu, y_cpu.view());
  Tensor<T, Cuda> y_dev(whole);
  nddr::ops::concat_channels_forward<T>(d.gpu, xs_gpu, y_dev.view());
  check_equal(nddr::to_host(d.gpu, y_dev), y_cpu);

  // Backward: dx_0 and dx_2 pre-filled, the middle part empty (skipped).
  const Tensor<T> dy = random_tensor<T>(whole, 3);
  const auto dyd = nddr::to_device(d.gpu, dy);
  Tensor<T> d0 = random_tensor<T>(s0, 4), d2 = random_tensor<T>(s2, 5);
  auto d0d = nddr::to_device(d.gpu, d0), d2d = nddr::to_device(d.gpu, d2);
  std::vector<TensorView<T, Cpu>> dx_cpu = {d0.view(), TensorView<T, Cpu>(nullptr, s1), d2.view()};
  std::vector<TensorView<T, Cuda>> dx_gpu = {d0d.view(), TensorView<T, Cuda>(nullptr, s1),
                                             d2d.view()};
  nddr::ops::concat_channels_backward<T>(d.cpu, dy.cview(), dx_cpu);
  nddr::ops::concat_channels_backward<T>(d.gpu, dyd.cview(), dx_gpu);
  check_equal(nddr::to_host(d.gpu, d0d), d0);
  check_equal(nddr::to_host(d.gpu, d2d), d2);

  // An empty dx part with channels (3 of them) is skipped but still shifts the others.
  const Shape e1 = Shape::nchw(2, 3, 5, 7), whole2 = Shape::nchw(2, 8, 5, 7);
  const Tensor<T> big = random_tensor<T>(whole2, 6);
  const auto bigd = nddr::to_device(d.gpu, big);
  Tensor<T> y0(s0), y2(s2);
  Tensor<T, Cuda> y0d(s0), y2d(s2);
  std::vector<TensorView<T, Cpu>> ys_cpu = {y0.view(), TensorView<T, Cpu>(nullptr, e1), y2.view()};
  std::vector<TensorView<T, Cuda>> ys_gpu = {y0d.view(), TensorView<T, Cuda>(nullptr, e1),
                                             y2d.view()};
  nddr::ops::split_channels_forward<T>(d.cpu, big.cview(), ys_cpu);
  nddr::ops::split_channels_forward<T>(d.gpu, bigd.cview(), ys_gpu);
  check_equal(nddr::to_host(d.gpu, y0d), y0);
  check_equal(nddr::to_host(d.gpu, y2d), y2);

  // Split backward accumulates into a pre-filled dx; the empty dy part counts as zero.
  Tensor<T> dx = random_tensor<T>(whole2, 7);
  auto dxd = nddr::to_device(d.gpu, dx);
  const Tensor<T> g0 = random_tensor<T>(s0, 8), g2 = random_tensor<T>(s2, 9);
  const auto g0d = nddr::to_device(d.gpu, g0), g2d = nddr::to_device(d.gpu, g2);
  std::vector<TensorView<const T, Cpu>> dys_cpu = {g0.cview(), TensorView<const T, Cpu>(nullptr, e1),
                                                   g2.cview()};
  std::vector<TensorView<const T, Cuda>> dys_gpu = {
      g0d.cview(), TensorView<const T, Cuda>(nullptr, e1), g2d.cview()};
  nddr::ops::split_channels_backward<T>(d.cpu, dys_cpu, dx.view());
  nddr::ops::split_channels_backward<T>(d.gpu, dys_gpu, dxd.view());
  check_equal(nddr::to_host(d.gpu, dxd), dx);

  // Channel sums are checked with the CPU message.
  Tensor<T, Cuda> short_y(Shape::nchw(2, 4, 5, 7));
  CHECK_THROWS_WITH(nddr::ops::concat_channels_forward<T>(d.gpu, xs_gpu, short_y.view()),
                    Contains("channels sum to 5"));
}

// ---- dropout ----------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("CUDA dropout draws the CPU mask bit for bit", "[cuda][dropout][device]", float,
                   double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  const Shape s = Shape::nchw(3, 5, 17, 19);
  const Tensor<T> x = random_tensor<T>(s, 1), dx0 = random_tensor<T>(s, 2);
  const auto xd = nddr::to_device(d.gpu, x);
  for (const double p : {0.0, 0.3, 0.5}) {
    INFO("p " << p);
    const std::uint64_t seed = 1234, counter = 987654321;
    Tensor<T> y_cpu(s);
    nddr::ops::dropout_forward<T>(d.cpu, x.cview(), y_cpu.view(), p, seed, counter);
    Tensor<T, Cuda> yd(s);
    nddr::ops::dropout_forward<T>(d.gpu, xd.cview(), yd.view(), p, seed, counter);
    const Tensor<T> y_gpu = nddr::to_host(d.gpu, yd);
    check_equal(y_gpu, y_cpu);
    std::int64_t zeros = 0;
    for (std::int64_t i = 0; i < s.numel(); ++i) zeros += y_gpu[i] == T(0);
    CHECK(std::abs(double(zeros) / double(s.numel()) - p) < 0.05);

    Tensor<T> dx_cpu = dx0;
    nddr::ops::dropout_backward<T>(d.cpu, x.cview(), dx_cpu.view(), p, seed, counter);
    auto dxd = nddr::to_device(d.gpu, dx0);
    nddr::ops::dropout_backward<T>(d.gpu, xd.cview(), dxd.view(), p, seed, counter);
    check_equal(nddr::to_host(d.gpu, dxd), dx_cpu);
  }
  Tensor<T, Cuda> yd(s);
  CHECK_THROWS_WITH(nddr::ops::dropout_forward<T>(d.gpu, xd.cview(), yd.view(), 1.0, 1, 0),
                    Contains("dropout p must be in [0, 1)"));
}

// ---- losses -----------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("CUDA softmax cross-entropy matches the CPU op", "[cuda][loss][device]", float,
                   double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  const Shape s = Shape::nchw(2, 5, 7, 9);
  const Tensor<T> logits = random_tensor<T>(s, 1, T(-4), T(4)), dx0 = random_tensor<T>(s, 2);
  Tensor<std::int32_t> labels(Shape{2, 7, 9});
  for (std::int64_t i = 0; i < labels.numel(); ++i)
    labels[i] = i % 6 == 0 ? 255 : static_cast<std::int32_t>((i * 7) % 5);
  const auto ld = nddr::to_device(d.gpu, logits);
  const auto lab = nddr::to_device(d.gpu, labels);
  const auto opt = nddr::SoftmaxCrossEntropyOptions{}.scale(0.7);
  const T l_cpu = nddr::ops::softmax_cross_entropy_forward<T>(d.cpu, logits.cview(), labels.cview(), opt);
  const T l_gpu = nddr::ops::softmax_cross_entropy_forward<T>(d.gpu, ld.cview(), lab.cview(), opt);
  CHECK(l_gpu == Approx(l_cpu).epsilon(kTol<T>));
  CHECK(l_cpu > T(0.1));
  Tensor<T> dx_cpu = dx0;
  nddr::ops::softmax_cross_entropy_backward<T>(d.cpu, logits.cview(), labels.cview(), dx_cpu.view(),
                                               opt);
  auto dxd = nddr::to_device(d.gpu, dx0);
  nddr::ops::softmax_cross_entropy_backward<T>(d.gpu, ld.cview(), lab.cview(), dxd.view(), opt);
  check_close(nddr::to_host(d.gpu, dxd), dx_cpu);

  // (N, K) logits with (N) labels; every pixel ignored gives 0 and no gradient.
  const Tensor<T> flat = random_tensor<T>(Shape{6, 4}, 3);
  Tensor<std::int32_t> fl(Shape{6});
  for (std::int64_t i = 0; i < 6; ++i) fl[i] = static_cast<std::int32_t>(i % 4);
  const auto flatd = nddr::to_device(d.gpu, flat);
  const auto fld = nddr::to_device(d.gpu, fl);
  CHECK(nddr::ops::softmax_cross_entropy_forward<T>(d.gpu, flatd.cview(), fld.cview()) ==
        Approx(nddr::ops::softmax_cross_entropy_forward<T>(d.cpu, flat.cview(), fl.cview()))
            .epsilon(kTol<T>));
  Tensor<std::int32_t> none(Shape{6});
  for (std::int64_t i = 0; i < 6; ++i) none[i] = 255;
  const auto noned = nddr::to_device(d.gpu, none);
  CHECK(nddr::ops::softmax_cross_entropy_forward<T>(d.gpu, flatd.cview(), noned.cview()) == T(0));
  Tensor<T, Cuda> dflat(Shape{6, 4});
  nddr::ops::softmax_cross_entropy_backward<T>(d.gpu, flatd.cview(), noned.cview(), dflat.view());
  check_equal(nddr::to_host(d.gpu, dflat), Tensor<T>(Shape{6, 4}));

  // Out-of-range labels: the CPU's ValueError text, naming the first bad label.
  Tensor<std::int32_t> bad = labels;
  bad[40] = 7;
  bad[50] = -3;
  const auto badd = nddr::to_device(d.gpu, bad);
  std::string cpu_msg, gpu_msg;
  try {
    nddr::ops::softmax_cross_entropy_forward<T>(d.cpu, logits.cview(), bad.cview());
  } catch (const nddr::ValueError& e) {
    cpu_msg = e.what();
  }
  try {
    nddr::ops::softmax_cross_entropy_forward<T>(d.gpu, ld.cview(), badd.cview());
  } catch (const nddr::ValueError& e) {
    gpu_msg = e.what();
  }
  CHECK_FALSE(cpu_msg.empty());
  CHECK(gpu_msg == cpu_msg);
  CHECK_THAT(gpu_msg, Contains("label 7 at (n, h, w) = (0, 4, 4)"));
  auto dx_keep = nddr::to_device(d.gpu, dx0);
  CHECK_THROWS_AS(
      nddr::ops::softmax_cross_entropy_backward<T>(d.gpu, ld.cview(), badd.cview(), dx_keep.view()),
      nddr::ValueError);
  check_equal(nddr::to_host(d.gpu, dx_keep), dx0);
}

TEMPLATE_TEST_CASE("CUDA normal loss matches the CPU op in both forms", "[cuda][loss][device]",
                   float, double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  const Shape s = Shape::nchw(2, 3, 7, 9);
  const Tensor<T> p = random_tensor<T>(s, 1), dx0 = random_tensor<T>(s, 2);
  Tensor<T> g = random_tensor<T>(s, 3);
  const std::int64_t plane = 63;
  for (std::int64_t i = 0; i < 2 * plane; i += 5) {  // invalid pixels: g = 0
    const std::int64_t o = (i / plane) * 3 * plane + i % plane;
    for (int c = 0; c < 3; ++c) g[o + c * plane] = T(0);
  }
  const auto pd = nddr::to_device(d.gpu, p), gd = nddr::to_device(d.gpu, g);
  for (const auto form : {nddr::NormalLossForm::kL2, nddr::NormalLossForm::kCosine}) {
    const auto opt = nddr::NormalLossOptions{}.form(form).scale(1.3);
    const T l_cpu = nddr::ops::normal_loss_forward<T>(d.cpu, p.cview(), g.cview(), opt);
    const T l_gpu = nddr::ops::normal_loss_forward<T>(d.gpu, pd.cview(), gd.cview(), opt);
    CHECK(l_gpu == Approx(l_cpu).epsilon(kTol<T>));
    Tensor<T> dx_cpu = dx0;
    nddr::ops::normal_loss_backward<T>(d.cpu, p.cview(), g.cview(), dx_cpu.view(), opt);
    auto dxd = nddr::to_device(d.gpu, dx0);
    nddr::ops::normal_loss_backward<T>(d.gpu, pd.cview(), gd.cview(), dxd.view(), opt);
    check_close(nddr::to_host(d.gpu, dxd), dx_cpu);
  }
  Tensor<T, Cuda> zero(s);
  CHECK(nddr::ops::normal_loss_forward<T>(d.gpu, pd.cview(), zero.cview()) == T(0));
  Tensor<T, Cuda> two(Shape::nchw(2, 2, 7, 9));
  CHECK_THROWS_AS(nddr::ops::normal_loss_forward<T>(d.gpu, two.cview(), two.cview()),
                  nddr::ShapeError);
}

// ---- L2 normalisation -------------------------------------------------------------------------

TEMPLATE_TEST_CASE("CUDA L2 normalisation matches the CPU op", "[cuda][l2_normalize][device]",
                   float, double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  for (const Shape& s : {Shape::nchw(2, 5, 6, 7), Shape{4, 9}}) {
    Tensor<T> x = random_tensor<T>(s, 1);
    for (std::int64_t c = 0; c < s[1]; ++c) x[c * (s.rank() == 4 ? 42 : 1)] = T(0);  // a zero pixel
    const Tensor<T> dy = random_tensor<T>(s, 2), dx0 = random_tensor<T>(s, 3);
    const auto xd = nddr::to_device(d.gpu, x), dyd = nddr::to_device(d.gpu, dy);
    Tensor<T> y_cpu(s);
    nddr::ops::l2_normalize_forward<T>(d.cpu, x.cview(), y_cpu.view());
    Tensor<T, Cuda> yd(s);
    nddr::ops::l2_normalize_forward<T>(d.gpu, xd.cview(), yd.view());
    check_close(nddr::to_host(d.gpu, yd), y_cpu);
    Tensor<T> dx_cpu = dx0;
    nddr::ops::l2_normalize_backward<T>(d.cpu, x.cview(), dy.cview(), dx_cpu.view());
    auto dxd = nddr::to_device(d.gpu, dx0);
    nddr::ops::l2_normalize_backward<T>(d.gpu, xd.cview(), dyd.cview(), dxd.view());
    check_close(nddr::to_host(d.gpu, dxd), dx_cpu, std::is_same_v<T, float> ? 1e-4 : 1e-11);
  }
  Tensor<T, Cuda> x3(Shape{2, 3, 4});
  CHECK_THROWS_AS(nddr::ops::l2_normalize_forward<T>(d.gpu, x3.cview(), x3.view()),
                  nddr::ShapeError);
}

// ---- arg-max (the segmentation metric's prediction) ------------------------------------------

TEMPLATE_TEST_CASE("CUDA arg-max over channels matches the CPU op", "[cuda][argmax][device]",
                   float, double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  const Shape s = Shape::nchw(3, 40, 17, 23);
  Tensor<T> x = random_tensor<T>(s, 4);
  for (std::int64_t i = 0; i < x.numel(); i += 7) x[i] = T(0.5);  // ties
  Tensor<std::int32_t> want(Shape{3, 17, 23});
  nddr::ops::argmax_channels<T>(d.cpu, x.cview(), want.view());
  const auto xd = nddr::to_device(d.gpu, x);
  Tensor<std::int32_t, Cuda> got(want.shape());
  nddr::ops::argmax_channels<T>(d.gpu, xd.cview(), got.view());
  const Tensor<std::int32_t> h = nddr::to_host(d.gpu, got);
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < h.numel(); ++i) differ += h[i] != want[i];
  CHECK(differ == 0);
  Tensor<std::int32_t, Cuda> bad(Shape{3, 17, 22});
  CHECK_THROWS_AS(nddr::ops::argmax_channels<T>(d.gpu, xd.cview(), bad.view()), nddr::ShapeError);
}

// ---- SGD --------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("CUDA fused SGD step matches the CPU Sgd", "[cuda][sgd][device]", float, double) {
  using T = TestType;
  if (no_device()) return;
  nddr::Context<Cuda> gpu;
  nddr::Context<Cpu> cpu(2);
  auto build = [](auto& store) {
    store.add_group(nddr::ParamGroup{"nddr", 100.0, 0.5});
    store.declare("conv.weight", Shape::nchw(7, 3, 3, 3));
    store.declare("conv.bias", Shape{7});
    store.declare("nddr.weight", Shape::nchw(5, 10, 1, 1), "nddr");
    store.declare("big.weight", Shape{300, 70});  // longer than one kernel span
    store.allocate();
  };
  for (const bool nesterov : {false, true}) {
    nddr::ParameterStore<T, Cpu> host;
    nddr::ParameterStore<T, Cuda> dev;
    build(host);
    build(dev);
    const auto opt = nddr::SgdOptions{}.momentum(0.9).weight_decay(5e-3).nesterov(nesterov);
    nddr::Sgd<T, Cpu> sgd_cpu(host, opt);
    nddr::Sgd<T, Cuda> sgd_gpu(dev, opt);
    const Tensor<T> v0 = random_tensor<T>(host.values().shape(), 1);
    nddr::copy(gpu, v0.cview(), host.values());
    nddr::copy(gpu, v0.cview(), dev.values());
    for (int step = 0; step < 3; ++step) {
      const Tensor<T> g = random_tensor<T>(host.grads().shape(), 10 + step);
      nddr::copy(gpu, g.cview(), host.grads());
      nddr::copy(gpu, g.cview(), dev.grads());
      sgd_cpu.step(cpu, 0.01 * (step + 1));
      nddr::cuda::sgd_step(gpu, dev, sgd_gpu, 0.01 * (step + 1));
    }
    Tensor<T> vals_cpu(host.values().shape()), vel_cpu(host.values().shape());
    nddr::copy(gpu, TensorView<const T, Cpu>(host.values()), vals_cpu.view());
    nddr::copy(gpu, sgd_cpu.velocity(), vel_cpu.view());
    // FMA contraction on the GPU changes the last bit at most; padding cells stay untouched.
    check_close(nddr::to_host(gpu, TensorView<const T, Cuda>(dev.values())), vals_cpu,
                std::is_same_v<T, float> ? 1e-6 : 1e-15);
    check_close(nddr::to_host(gpu, sgd_gpu.velocity()), vel_cpu,
                std::is_same_v<T, float> ? 1e-6 : 1e-15);
  }
  nddr::ParameterStore<T, Cuda> dev;
  dev.declare("w", Shape{3, 3});
  dev.allocate();
  nddr::Sgd<T, Cuda> sgd(dev);
  CHECK_THROWS_WITH(nddr::cuda::sgd_step(gpu, dev, sgd, -1.0), Contains("lr must be"));
}

// ---- element-wise sums (ResNet's residual unit and ASPP) ------------------------------------

TEMPLATE_TEST_CASE("CUDA accumulate, add_relu and relu_gradient match the CPU ops",
                   "[cuda][elementwise][device]", float, double) {
  using T = TestType;
  if (no_device()) return;
  Devices d;
  const Shape s = Shape::nchw(2, 3, 7, 5);  // 210 elements: not a multiple of the block
  Tensor<T> a = random_tensor<T>(s, 41), b = random_tensor<T>(s, 42), y0 = random_tensor<T>(s, 43);
  a[0] = std::numeric_limits<T>::quiet_NaN();  // a diverging sum reads as 0 after add_relu
  const auto a_dev = nddr::to_device(d.gpu, a), b_dev = nddr::to_device(d.gpu, b);

  Tensor<T> acc_cpu = y0;
  nddr::ops::accumulate<T>(d.cpu, b.cview(), acc_cpu.view());
  auto acc_dev = nddr::to_device(d.gpu, y0);
  nddr::ops::accumulate<T>(d.gpu, b_dev.cview(), acc_dev.view());
  check_equal(nddr::to_host(d.gpu, acc_dev), acc_cpu);
  CHECK(acc_cpu[5] == y0[5] + b[5]);

  Tensor<T> y_cpu(s);
  nddr::ops::add_relu<T>(d.cpu, a.cview(), b.cview(), y_cpu.view());
  Tensor<T, Cuda> y_dev(s);
  nddr::ops::add_relu<T>(d.gpu, a_dev.cview(), b_dev.cview(), y_dev.view());
  const Tensor<T> y_host = nddr::to_host(d.gpu, y_dev);
  check_equal(y_host, y_cpu);
  CHECK(y_host[0] == T(0));
  for (std::int64_t i = 1; i < s.numel(); ++i)
    REQUIRE(y_cpu[i] == std::max(a[i] + b[i], T(0)));

  // relu_gradient assigns dy where y > 0 (g starts as garbage on both devices).
  Tensor<T> g_cpu = y0;
  nddr::ops::relu_gradient<T>(d.cpu, y_cpu.cview(), b.cview(), g_cpu.view());
  auto g_dev = nddr::to_device(d.gpu, y0);
  nddr::ops::relu_gradient<T>(d.gpu, y_dev.cview(), b_dev.cview(), g_dev.view());
  check_equal(nddr::to_host(d.gpu, g_dev), g_cpu);
  for (std::int64_t i = 0; i < s.numel(); ++i)
    REQUIRE(g_cpu[i] == (y_cpu[i] > T(0) ? b[i] : T(0)));

  // Mismatched shapes are refused by the front door on either device.
  Tensor<T, Cuda> wrong(Shape::nchw(2, 3, 7, 4));
  CHECK_THROWS_WITH(nddr::ops::accumulate<T>(d.gpu, b_dev.cview(), wrong.view()),
                    Catch::Contains("nddr::ops::accumulate"));
  CHECK_THROWS_WITH(nddr::ops::add_relu<T>(d.gpu, a_dev.cview(), b_dev.cview(), wrong.view()),
                    Catch::Contains("nddr::ops::add_relu"));
}
