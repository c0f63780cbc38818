// 00_nddr_layer: one NDDR fusion layer built from nddr's ops and layers, end to end.
//
// NDDR-CNN (Gao et al., CVPR 2019) fuses the same-resolution features F_1..F_K of K task columns:
// for each task k it concatenates [F_1, ..., F_K] along channels and applies a 1x1 convolution
// (K*C -> C, no bias), BatchNorm and ReLU. With the "diagonal" initialisation the 1x1 kernel of
// task k starts as alpha on its own channels and beta on every other task's channels, so before
// BatchNorm the fused feature is exactly alpha * F_k + beta * sum_{j != k} F_j.
//
// This program builds that layer for K = 2 tasks at the size of the paper's pool2 output, checks
// the closed form above, runs a training-mode backward pass (each task's input gradient collects
// the contributions of both fusion branches, which is why nddr's layers *accumulate* data
// gradients), takes SGD steps on a toy objective and prints timings.
//
// Usage: 00_nddr_layer [batch] [channels] [size] [threads]     (defaults: 2 64 81 all cores)

#include <nddr/nddr.hpp>
#include <nddr/layers/conv2d.hpp>
#include <nddr/backend/cpu/conv2d.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

constexpr int kTasks = 2;
constexpr float kAlpha = 0.9f;  // the paper's default diagonal initialisation (0.9, 0.1)
constexpr float kBeta = 0.1f;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One task's branch of the NDDR layer: 1x1 conv (K*C -> C) -> BatchNorm -> ReLU.
struct Branch {
  nddr::Conv2d<float> conv;
  nddr::BatchNorm2d<float> bn;
  nddr::ReLU<float> relu;
  nddr::Tensor<float> z, b, y;  // (N, C, H, W): conv output, BN output, ReLU output

  Branch(std::int64_t c)
      : conv(kTasks * c, c, 1, nddr::Conv2dOptions{}.bias(false)),
        bn(c, nddr::BatchNormOptions::tf_slim()) {}
};

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t n = argc > 1 ? std::atoll(argv[1]) : 2;
  const std::int64_t c = argc > 2 ? std::atoll(argv[2]) : 64;
  const std::int64_t s = argc > 3 ? std::atoll(argv[3]) : 81;
  nddr::Context<nddr::Cpu> ctx;
  if (argc > 4) ctx.set_threads(std::atoi(argv[4]));
  if (n < 2 || c < 1 || s < 1) {
    std::fprintf(stderr, "usage: %s [batch>=2] [channels>=1] [size>=1] [threads>=1]\n", argv[0]);
    return 2;
  }
  const nddr::Shape feat = nddr::Shape::nchw(n, c, s, s);
  const nddr::Shape cat = nddr::Shape::nchw(n, kTasks * c, s, s);
  std::printf("NDDR layer: K = %d tasks, features %s, %d threads\n", kTasks, feat.str().c_str(),
              ctx.threads());

  // Parameters of both branches live in one flat store, in the "nddr" group (lr x100 in the paper).
  nddr::ParameterStore<float> store;
  store.add_group({"nddr", 100.0, 1.0});
  std::vector<Branch> branches;
  for (int k = 0; k < kTasks; ++k) branches.emplace_back(c);
  for (int k = 0; k < kTasks; ++k) {
    const std::string prefix = "fusion.stage2.task" + std::to_string(k);
    branches[k].conv.declare(store, prefix + ".conv");
    branches[k].bn.declare(store, prefix + ".bn");
  }
  store.allocate();
  nddr::Rng rng(2019);
  for (auto& br : branches) {
    br.conv.initialize(rng);
    br.bn.initialize(rng);
  }
  // Diagonal initialisation: weight (C, K*C, 1, 1) of task k = [beta I, ..., alpha I (own), ...].
  for (int k = 0; k < kTasks; ++k) {
    auto w = store.value(*store.find("fusion.stage2.task" + std::to_string(k) + ".conv.weight"));
    for (std::int64_t i = 0; i < w.numel(); ++i) w[i] = 0.0f;
    for (std::int64_t o = 0; o < c; ++o)
      for (int j = 0; j < kTasks; ++j) w(o, j * c + o, 0, 0) = j == k ? kAlpha : kBeta;
  }
  std::printf("parameters: %lld trainable, %lld buffers (BN running statistics)\n",
              static_cast<long long>(store.parameter_count()),
              static_cast<long long>(store.buffer_count()));

  // Two task features, as two columns' pool outputs would be (non-negative after ReLU).
  std::array<nddr::Tensor<float>, kTasks> f{nddr::Tensor<float>(feat), nddr::Tensor<float>(feat)};
  for (auto& t : f)
    for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(rng.uniform());
  nddr::Tensor<float> x(cat);  // (N, K*C, H, W): the concatenation, shared by both branches
  for (auto& br : branches) {
    br.z = nddr::Tensor<float>(feat);
    br.b = nddr::Tensor<float>(feat);
    br.y = nddr::Tensor<float>(feat);
  }

  auto forward = [&] {
    const std::array<nddr::TensorView<const float>, kTasks> parts{f[0].cview(), f[1].cview()};
    nddr::ops::concat_channels_forward(ctx, std::span(parts), x.view());
    for (auto& br : branches) {
      br.conv.forward(ctx, x.cview(), br.z.view());
      br.bn.forward(ctx, br.z.cview(), br.b.view());
      br.relu.forward(ctx, br.b.cview(), br.y.view());
    }
  };

  // 1. Closed form at initialisation: z_k = alpha * F_k + beta * F_other.
  forward();
  double max_err = 0.0;
  for (int k = 0; k < kTasks; ++k)
    for (std::int64_t i = 0; i < f[0].numel(); ++i) {
      const double expected = kAlpha * f[k][i] + kBeta * f[1 - k][i];
      max_err = std::max(max_err, std::abs(branches[k].z[i] - expected));
    }
  std::printf("closed form at init: max |z_k - (a F_k + b F_other)| = %.3g\n", max_err);
  if (max_err > 1e-5) {
    std::fprintf(stderr, "closed form violated\n");
    return 1;
  }

  // 2. Training on a toy objective: make task k's output match a target built from the other
  //    task (L = 0.5 * sum_k ||y_k - t_k||^2), so the fusion weights must learn to mix.
  std::array<nddr::Tensor<float>, kTasks> target{nddr::Tensor<float>(feat), nddr::Tensor<float>(feat)};
  for (int k = 0; k < kTasks; ++k)
    for (std::int64_t i = 0; i < f[0].numel(); ++i) target[k][i] = 0.5f * f[1 - k][i];
  nddr::Tensor<float> dcat(cat), dz(feat), db(feat), dy(feat);
  std::array<nddr::Tensor<float>, kTasks> df{nddr::Tensor<float>(feat), nddr::Tensor<float>(feat)};
  const float lr = 0.01f * 100.0f;  // base rate x the NDDR group's multiplier
  std::printf("\n step   loss        |dF_1|      |dF_2|      fwd ms   bwd ms\n");
  for (int step = 0; step <= 20; ++step) {
    auto t0 = Clock::now();
    forward();
    const double t_fwd = seconds_since(t0);
    double loss = 0.0;
    t0 = Clock::now();
    dcat.zero();
    for (int k = 0; k < kTasks; ++k) {
      auto& br = branches[k];
      for (std::int64_t i = 0; i < dy.numel(); ++i) {
        const float r = br.y[i] - target[k][i];
        loss += 0.5 * r * r;
        dy[i] = r;
      }
      dz.zero();
      db.zero();
      br.relu.backward(ctx, br.b.cview(), br.y.cview(), dy.cview(), db.view());
      br.bn.backward(ctx, br.z.cview(), br.b.cview(), db.cview(), dz.view());
      // Both branches add into the same concatenated-input gradient.
      br.conv.backward(ctx, x.cview(), br.z.cview(), dz.cview(), dcat.view());
    }
    for (auto& d : df) d.zero();
    const std::array<nddr::TensorView<float>, kTasks> dparts{df[0].view(), df[1].view()};
    nddr::ops::concat_channels_backward(ctx, dcat.cview(), std::span(dparts));
    const double t_bwd = seconds_since(t0);
    auto norm = [](const nddr::Tensor<float>& t) {
      double s2 = 0.0;
      for (std::int64_t i = 0; i < t.numel(); ++i) s2 += double(t[i]) * t[i];
      return std::sqrt(s2);
    };
    if (step % 4 == 0)
      std::printf("%5d   %-10.5g  %-10.4g  %-10.4g  %7.2f  %7.2f\n", step, loss, norm(df[0]),
                  norm(df[1]), 1e3 * t_fwd, 1e3 * t_bwd);
    // Plain SGD over the flat buffer (every parameter here is in the NDDR group).
    auto v = store.values();
    auto g = store.grads();
    for (std::int64_t i = 0; i < v.numel(); ++i) v[i] -= lr * g[i] / static_cast<float>(n * s * s);
  }
  std::printf("\nlearned mixing of task 0, output channel 0: own %.3f, other %.3f\n",
              store.value(*store.find("fusion.stage2.task0.conv.weight"))(0, 0, 0, 0),
              store.value(*store.find("fusion.stage2.task0.conv.weight"))(0, c, 0, 0));
  return 0;
}
