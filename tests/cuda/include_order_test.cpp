// Include order does not matter (issue 17): this translation unit includes the layer, fusion,
// backbone and multitask headers first and <nddr/cuda.hpp> last, then runs every layer and every
// fusion layer, and MultiTask networks (NDDR, and the shortcut variant of cross-stitch), on Cuda
// against the CPU. Before the ops' front doors this failed to compile: a layer template only
// found the Context<Cuda> overloads declared before it.
// The order of these includes is the test, so this file is compiled alone (never in a unity
// batch):
// NDDR_UNITY_STANDALONE
// clang-format off
#include <nddr/backbones/heads.hpp>
#include <nddr/backbones/tiny.hpp>
#include <nddr/fusion/cross_stitch.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/fusion/none.hpp>
#include <nddr/fusion/shortcut.hpp>
#include <nddr/fusion/sluice.hpp>
#include <nddr/layers/batch_norm.hpp>
#include <nddr/layers/conv2d.hpp>
#include <nddr/layers/dropout.hpp>
#include <nddr/layers/linear.hpp>
#include <nddr/layers/pool.hpp>
#include <nddr/layers/relu.hpp>
#include <nddr/layers/resize.hpp>
#include <nddr/layers/sequential.hpp>
#include <nddr/multitask/multitask.hpp>
#include <nddr/multitask/network.hpp>

#include <nddr/cuda.hpp>  // last, on purpose
// clang-format on

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "no_device.hpp"

namespace {

using nddr::Context;
using nddr::Cpu;
using nddr::Cuda;
using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;
using nddr_test::no_device;

constexpr double kTol = 1e-9;  // double precision everywhere

Tensor<double> random_tensor(const Shape& s, nddr::Rng& rng) {
  Tensor<double> t(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(-1, 1);
  return t;
}

Tensor<double, Cuda> upload(TensorView<const double, Cpu> h) {
  Tensor<double, Cuda> d(h.shape());
  if (h.numel() > 0)
    nddr::Storage<Cuda>::upload(d.data(), h.data(), static_cast<std::size_t>(h.numel()) * 8);
  return d;
}

Tensor<double, Cuda> zeros_on_device(const Shape& s) {
  Tensor<double, Cuda> d(s);
  d.zero();
  return d;
}

/// max |gpu - cpu| / max |cpu| (0 for equal, also when both are empty).
double rel_diff(TensorView<const double, Cuda> gpu, TensorView<const double, Cpu> cpu) {
  REQUIRE(gpu.shape() == cpu.shape());
  std::vector<double> h(static_cast<std::size_t>(gpu.numel()));
  if (!h.empty()) nddr::Storage<Cuda>::download(h.data(), gpu.data(), h.size() * 8);
  double scale = 1e-30, diff = 0.0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    const double c = cpu[static_cast<std::int64_t>(i)];
    scale = std::max(scale, std::abs(c));
    diff = std::max(diff, std::abs(h[i] - c));
  }
  return diff / scale;
}

/// Declares and allocates both stores, initialises the CPU layer (and the GPU one when
/// `kInitOnDevice`, for layers whose state is drawn at initialisation, such as dropout's seed)
/// and copies the CPU parameters and buffers to the device.
template <bool kInitOnDevice, class H, class G>
void set_up(H& h, G& g, nddr::ParameterStore<double, Cpu>& hs,
            nddr::ParameterStore<double, Cuda>& gs) {
  h.declare(hs, "l");
  g.declare(gs, "l");
  hs.allocate();
  gs.allocate();
  nddr::Rng rh(5), rg(5);
  h.initialize(rh);
  if constexpr (kInitOnDevice) g.initialize(rg);
  const auto copy = [](TensorView<double, Cuda> d, TensorView<const double, Cpu> s) {
    if (s.numel() > 0)
      nddr::Storage<Cuda>::upload(d.data(), s.data(), static_cast<std::size_t>(s.numel()) * 8);
  };
  copy(gs.values(), std::as_const(hs).values());
  copy(gs.buffer_values(), std::as_const(hs).buffer_values());
}

/// One forward and one backward pass of layer L on both devices: y, dx and every parameter
/// gradient agree.
template <template <class, class> class L, bool kInitOnDevice = false, class... Args>
void check_layer(const std::string& name, const Shape& in, const Args&... args) {
  INFO("layer " << name);
  Context<Cpu> cpu(2);
  Context<Cuda> gpu(0);
  L<double, Cpu> h(args...);
  L<double, Cuda> g(args...);
  nddr::ParameterStore<double, Cpu> hs;
  nddr::ParameterStore<double, Cuda> gs;
  set_up<kInitOnDevice>(h, g, hs, gs);

  nddr::Rng rng(17);
  const auto x = random_tensor(in, rng);
  const auto xd = upload(x.cview());
  const Shape out = h.output_shape(in);
  Tensor<double> y(out);
  Tensor<double, Cuda> yd(out);
  h.forward(cpu, x.cview(), y.view());
  g.forward(gpu, xd.cview(), yd.view());
  CHECK(rel_diff(yd.cview(), y.cview()) < kTol);

  const auto dy = random_tensor(out, rng);
  const auto dyd = upload(dy.cview());
  Tensor<double> dx(in);
  dx.zero();
  auto dxd = zeros_on_device(in);
  h.backward(cpu, x.cview(), y.cview(), dy.cview(), dx.view());
  g.backward(gpu, xd.cview(), yd.cview(), dyd.cview(), dxd.view());
  gpu.synchronize();
  CHECK(rel_diff(dxd.cview(), dx.cview()) < kTol);
  CHECK(rel_diff(std::as_const(gs).grads(), std::as_const(hs).grads()) < kTol);
}

/// The same for a fusion layer F over two tasks of (2, 4, 5, 6) features.
template <template <class, class> class F, class Options>
void check_fusion(const std::string& name, const Options& opt) {
  INFO("fusion layer " << name);
  constexpr std::size_t kTasks = 2;
  const Shape s = Shape::nchw(2, 4, 5, 6);
  Context<Cpu> cpu(2);
  Context<Cuda> gpu(0);
  F<double, Cpu> h(kTasks, s.c(), opt);
  F<double, Cuda> g(kTasks, s.c(), opt);
  nddr::ParameterStore<double, Cpu> hs;
  nddr::ParameterStore<double, Cuda> gs;
  set_up<false>(h, g, hs, gs);

  nddr::Rng rng(23);
  std::vector<Tensor<double>> x, y, dy, dx;
  std::vector<Tensor<double, Cuda>> xd, yd, dyd, dxd;
  for (std::size_t k = 0; k < kTasks; ++k) {
    x.push_back(random_tensor(s, rng));
    dy.push_back(random_tensor(s, rng));
    xd.push_back(upload(x.back().cview()));
    dyd.push_back(upload(dy.back().cview()));
    y.emplace_back(s);
    yd.emplace_back(s);
    dx.emplace_back(s);
    dx.back().zero();
    dxd.push_back(zeros_on_device(s));
  }
  const auto cviews = [](auto& ts) {
    std::vector<decltype(ts[0].cview())> v;
    for (auto& t : ts) v.push_back(t.cview());
    return v;
  };
  const auto views = [](auto& ts) {
    std::vector<decltype(ts[0].view())> v;
    for (auto& t : ts) v.push_back(t.view());
    return v;
  };
  h.forward(cpu, cviews(x), views(y));
  g.forward(gpu, cviews(xd), views(yd));
  for (std::size_t k = 0; k < kTasks; ++k) CHECK(rel_diff(yd[k].cview(), y[k].cview()) < kTol);
  h.backward(cpu, cviews(x), cviews(y), cviews(dy), views(dx));
  g.backward(gpu, cviews(xd), cviews(yd), cviews(dyd), views(dxd));
  gpu.synchronize();
  for (std::size_t k = 0; k < kTasks; ++k) CHECK(rel_diff(dxd[k].cview(), dx[k].cview()) < kTol);
  CHECK(rel_diff(std::as_const(gs).grads(), std::as_const(hs).grads()) < kTol);
}

/// One forward and backward pass of a whole network on both devices.
template <class Spec>
void check_network(const std::string& name) {
  INFO("network " << name);
  Context<Cpu> cpu(2);
  Context<Cuda> gpu(0);
  nddr::Network<Spec, Cpu, double> h({5, 3});
  nddr::Network<Spec, Cuda, double> g({5, 3});
  nddr::Rng rng(29);
  const auto x = random_tensor(Shape::nchw(2, 3, 17, 15), rng);
  const auto xd = upload(x.cview());
  const auto out = h.forward(cpu, x.cview());
  const auto outd = g.forward(gpu, xd.cview());
  std::vector<Tensor<double>> dy;
  std::vector<Tensor<double, Cuda>> dyd;
  std::vector<TensorView<const double, Cpu>> dyv;
  std::vector<TensorView<const double, Cuda>> dydv;
  for (std::size_t k = 0; k < Spec::tasks; ++k) {
    CHECK(rel_diff(outd[k], out[k]) < kTol);
    dy.push_back(random_tensor(out[k].shape(), rng));
    dyd.push_back(upload(dy.back().cview()));
  }
  for (std::size_t k = 0; k < Spec::tasks; ++k) {
    dyv.push_back(dy[k].cview());
    dydv.push_back(dyd[k].cview());
  }
  h.backward(cpu, x.cview(), dyv);
  g.backward(gpu, xd.cview(), dydv);
  gpu.synchronize();
  CHECK(rel_diff(std::as_const(g.parameters()).grads(), std::as_const(h.parameters()).grads()) <
        1e-8);
}

}  // namespace

TEST_CASE("Include order: every layer runs on Cuda with <nddr/cuda.hpp> included last",
          "[cuda][include-order]") {
  if (no_device()) return;
  const Shape in = Shape::nchw(2, 3, 9, 8);
  check_layer<nddr::Conv2d>("Conv2d", in, std::int64_t{3}, std::int64_t{5}, std::int64_t{3},
                            nddr::Conv2dOptions{}.same());
  check_layer<nddr::BatchNorm2d>("BatchNorm2d", in, std::int64_t{3},
                                 nddr::BatchNormOptions{}.relu(true));
  check_layer<nddr::ReLU>("ReLU", in);
  const auto pool = nddr::Pool2dOptions{}.kernel(3).stride(2).same();
  check_layer<nddr::MaxPool2d>("MaxPool2d", in, pool);
  check_layer<nddr::AvgPool2d>("AvgPool2d", in, pool);
  check_layer<nddr::GlobalAvgPool>("GlobalAvgPool", in);
  check_layer<nddr::Dropout, true>("Dropout", in, nddr::DropoutOptions{}.p(0.5));
  check_layer<nddr::Linear>("Linear", in, in.c() * in.h() * in.w(), std::int64_t{4});
  check_layer<nddr::Resize>("Resize", in, nddr::ResizeOptions{}.size(13, 11));
}

TEST_CASE("Include order: every fusion layer runs on Cuda with <nddr/cuda.hpp> included last",
          "[cuda][include-order]") {
  if (no_device()) return;
  check_fusion<nddr::NddrLayer>("NddrLayer", nddr::NddrOptions{});
  check_fusion<nddr::CrossStitchLayer>("CrossStitchLayer", nddr::CrossStitchOptions{});
  check_fusion<nddr::SluiceLayer>("SluiceLayer", nddr::SluiceOptions{});
  check_fusion<nddr::IdentityFusion>("IdentityFusion", nddr::IdentityFusionOptions{});
}

TEST_CASE("Include order: MultiTask networks run on Cuda with <nddr/cuda.hpp> included last",
          "[cuda][include-order]") {
  if (no_device()) return;
  check_network<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>>("NDDR");
  check_network<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::Shortcut<nddr::CrossStitch>>>(
      "Shortcut<CrossStitch>");
}
