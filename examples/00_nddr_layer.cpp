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
// gradients), takes SGD steps on a toy objective and prints timings. The same code runs on the
// CPU and on the GPU (`--device cuda`): layers, ops and the optimiser are templated on the device.
//
// Usage: 00_nddr_layer [--batch 2] [--channels 64] [--size 81] [--threads N]
//                      [--device cpu|cuda|cuda:N]   (00_nddr_layer --help; docs/cli.md)
#if defined(NDDR_WITH_CUDA)
#include <nddr/cuda.hpp>  // --device cuda: the CUDA backend, declared before the library
#endif
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <nddr/nddr.hpp>
#include <nddr_apps/cli.hpp>
#include <string>
#include <type_traits>
#include <vector>

namespace {

constexpr int kTasks = 2;
constexpr float kAlpha = 0.9f;  // the paper's default diagonal initialisation (0.9, 0.1)
constexpr float kBeta = 0.1f;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One task's branch of the NDDR layer: 1x1 conv (K*C -> C) -> BatchNorm -> ReLU, on device D.
template <class D>
struct Branch {
  nddr::Conv2d<float, D> conv;
  nddr::BatchNorm2d<float, D> bn;
  nddr::ReLU<float, D> relu;
  nddr::Tensor<float, D> z, b, y;  // (N, C, H, W): conv output, BN output, ReLU output

  explicit Branch(std::int64_t c)
      : conv(kTasks * c, c, 1, nddr::Conv2dOptions{}.bias(false)),
        bn(c, nddr::BatchNormOptions::tf_slim()) {}
};

std::string param_prefix(int k) { return "fusion.stage2.task" + std::to_string(k); }

// Both branches' parameters in one flat store, in the "nddr" group (lr x100 in the paper).
template <class D>
void declare(nddr::ParameterStore<float, D>& store, std::vector<Branch<D>>& branches,
             std::int64_t c) {
  store.add_group({"nddr", 100.0, 1.0});
  for (int k = 0; k < kTasks; ++k) branches.emplace_back(c);
  for (int k = 0; k < kTasks; ++k) {
    branches[k].conv.declare(store, param_prefix(k) + ".conv");
    branches[k].bn.declare(store, param_prefix(k) + ".bn");
  }
  store.allocate();
}

// Host <-> device copies of whole tensors (plain copies on the CPU).
template <class D>
nddr::Tensor<float, D> upload(const nddr::Tensor<float>& h) {
  nddr::Tensor<float, D> d(h.shape());
  nddr::Storage<D>::upload(d.data(), h.data(), static_cast<std::size_t>(h.numel()) * sizeof(float));
  return d;
}
template <class D>
nddr::Tensor<float> download(nddr::TensorView<const float, D> d) {
  nddr::Tensor<float> h(d.shape());
  nddr::Storage<D>::download(h.data(), d.data(),
                             static_cast<std::size_t>(d.numel()) * sizeof(float));
  return h;
}

// Waits for the device's queued work (for timings); the CPU runs synchronously.
template <class D>
void finish(nddr::Context<D>& ctx) {
  if constexpr (!std::is_same_v<D, nddr::Cpu>) ctx.synchronize();
}

// The SGD step over the flat buffer, on the device of the store.
template <class D>
void sgd_step(nddr::Context<D>& ctx, [[maybe_unused]] nddr::ParameterStore<float, D>& store,
              nddr::Sgd<float, D>& sgd, double lr) {
  if constexpr (std::is_same_v<D, nddr::Cpu>) {
    sgd.step(ctx, lr);
  } else {
#if defined(NDDR_WITH_CUDA)
    nddr::cuda::sgd_step(ctx, store, sgd, lr);
#endif
  }
}

template <class D>
int run(nddr::Context<D>& ctx, std::int64_t n, std::int64_t c, std::int64_t s) {
  const nddr::Shape feat = nddr::Shape::nchw(n, c, s, s);
  const nddr::Shape cat = nddr::Shape::nchw(n, kTasks * c, s, s);
  if constexpr (std::is_same_v<D, nddr::Cpu>)
    std::printf("NDDR layer on the CPU: K = %d tasks, features %s, %d threads\n", kTasks,
                feat.str().c_str(), ctx.threads());
  else
    std::printf("NDDR layer on CUDA device %d: K = %d tasks, features %s\n", ctx.device(), kTasks,
                feat.str().c_str());

  // Parameters are initialised on the host (layers write their initial values there), then the
  // flat buffers are uploaded into the device store, which was declared in the same order and
  // so has the same layout.
  nddr::ParameterStore<float> host_store;
  std::vector<Branch<nddr::Cpu>> host_branches;
  declare(host_store, host_branches, c);
  nddr::Rng rng(2019);
  for (auto& br : host_branches) {
    br.conv.initialize(rng);
    br.bn.initialize(rng);
  }
  // Diagonal initialisation: weight (C, K*C, 1, 1) of task k = [beta I, ..., alpha I (own), ...].
  for (int k = 0; k < kTasks; ++k) {
    auto w = host_store.value(*host_store.find(param_prefix(k) + ".conv.weight"));
    for (std::int64_t i = 0; i < w.numel(); ++i) w[i] = 0.0f;
    for (std::int64_t o = 0; o < c; ++o)
      for (int j = 0; j < kTasks; ++j) w(o, j * c + o, 0, 0) = j == k ? kAlpha : kBeta;
  }
  nddr::ParameterStore<float, D> store;
  std::vector<Branch<D>> branches;
  declare(store, branches, c);
  nddr::Storage<D>::upload(store.values().data(), host_store.values().data(),
                           static_cast<std::size_t>(host_store.values().numel()) * sizeof(float));
  nddr::Storage<D>::upload(
      store.buffer_values().data(), host_store.buffer_values().data(),
      static_cast<std::size_t>(host_store.buffer_values().numel()) * sizeof(float));
  std::printf("parameters: %lld trainable, %lld buffers (BN running statistics)\n",
              static_cast<long long>(store.parameter_count()),
              static_cast<long long>(store.buffer_count()));

  // Two task features, as two columns' pool outputs would be (non-negative after ReLU).
  std::array<nddr::Tensor<float>, kTasks> f_host{nddr::Tensor<float>(feat),
                                                 nddr::Tensor<float>(feat)};
  for (auto& t : f_host)
    for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(rng.uniform());
  const std::array<nddr::Tensor<float, D>, kTasks> f{upload<D>(f_host[0]), upload<D>(f_host[1])};
  nddr::Tensor<float, D> x(cat);  // (N, K*C, H, W): the concatenation, shared by both branches
  for (auto& br : branches) {
    br.z = nddr::Tensor<float, D>(feat);
    br.b = nddr::Tensor<float, D>(feat);
    br.y = nddr::Tensor<float, D>(feat);
  }

  auto forward = [&] {
    const std::array<nddr::TensorView<const float, D>, kTasks> parts{f[0].cview(), f[1].cview()};
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
  for (int k = 0; k < kTasks; ++k) {
    const nddr::Tensor<float> z = download<D>(branches[k].z.cview());
    for (std::int64_t i = 0; i < z.numel(); ++i) {
      const double expected = kAlpha * f_host[k][i] + kBeta * f_host[1 - k][i];
      max_err = std::max(max_err, std::abs(z[i] - expected));
    }
  }
  std::printf("closed form at init: max |z_k - (a F_k + b F_other)| = %.3g\n", max_err);
  if (!(max_err <= 1e-5)) {
    std::fprintf(stderr, "00_nddr_layer: closed form violated (max error %.3g > 1e-5)\n", max_err);
    return 1;
  }

  // 2. Training on a toy objective: make task k's output match a target built from the other
  //    task, L = 0.5 / (N H W) * sum_k ||y_k - t_k||^2, so the fusion weights must learn to mix.
  //    The loss and dL/dy are computed on the host (a download and an upload per task and step,
  //    outside the timings); forward, backward and the SGD step run on the device.
  std::array<nddr::Tensor<float>, kTasks> target{nddr::Tensor<float>(feat),
                                                 nddr::Tensor<float>(feat)};
  for (int k = 0; k < kTasks; ++k)
    for (std::int64_t i = 0; i < target[k].numel(); ++i) target[k][i] = 0.5f * f_host[1 - k][i];
  const double pixels = static_cast<double>(n * s * s);
  nddr::Tensor<float, D> dcat(cat), dz(feat), db(feat);
  std::array<nddr::Tensor<float, D>, kTasks> df{nddr::Tensor<float, D>(feat),
                                                nddr::Tensor<float, D>(feat)};
  std::array<nddr::Tensor<float, D>, kTasks> dy{nddr::Tensor<float, D>(feat),
                                                nddr::Tensor<float, D>(feat)};
  nddr::Tensor<float> dy_host(feat);
  // Plain SGD (no momentum, no weight decay); every parameter is in the NDDR group (x100).
  nddr::Sgd<float, D> sgd(store, nddr::SgdOptions{}.momentum(0.0).weight_decay(0.0));
  const double base_lr = 0.01;
  std::printf("\n step   loss        |dF_1|      |dF_2|      fwd ms   bwd ms\n");
  for (int step = 0; step <= 20; ++step) {
    auto t0 = Clock::now();
    forward();
    finish(ctx);
    const double t_fwd = seconds_since(t0);
    double loss = 0.0;
    for (int k = 0; k < kTasks; ++k) {
      const nddr::Tensor<float> y = download<D>(branches[k].y.cview());
      for (std::int64_t i = 0; i < y.numel(); ++i) {
        const float r = y[i] - target[k][i];
        loss += 0.5 * r * r / pixels;
        dy_host[i] = static_cast<float>(r / pixels);
      }
      dy[k] = upload<D>(dy_host);
    }
    t0 = Clock::now();
    dcat.zero();
    for (int k = 0; k < kTasks; ++k) {
      auto& br = branches[k];
      dz.zero();
      db.zero();
      br.relu.backward(ctx, br.b.cview(), br.y.cview(), dy[k].cview(), db.view());
      br.bn.backward(ctx, br.z.cview(), br.b.cview(), db.cview(), dz.view());
      // Both branches add into the same concatenated-input gradient.
      br.conv.backward(ctx, x.cview(), br.z.cview(), dz.cview(), dcat.view());
    }
    for (auto& d : df) d.zero();
    const std::array<nddr::TensorView<float, D>, kTasks> dparts{df[0].view(), df[1].view()};
    nddr::ops::concat_channels_backward(ctx, dcat.cview(), std::span(dparts));
    finish(ctx);
    const double t_bwd = seconds_since(t0);
    auto norm = [](const nddr::Tensor<float>& t) {
      double s2 = 0.0;
      for (std::int64_t i = 0; i < t.numel(); ++i) s2 += double(t[i]) * t[i];
      return std::sqrt(s2);
    };
    if (step % 4 == 0)
      std::printf("%5d   %-10.5g  %-10.4g  %-10.4g  %7.2f  %7.2f\n", step, loss,
                  norm(download<D>(df[0].cview())), norm(download<D>(df[1].cview())), 1e3 * t_fwd,
                  1e3 * t_bwd);
    if (!std::isfinite(loss)) {
      std::fprintf(stderr, "00_nddr_layer: the loss diverged at step %d\n", step);
      return 1;
    }
    sgd_step(ctx, store, sgd, base_lr);
  }
  const nddr::Tensor<float> w0 =
      download<D>(store.value(*store.find(param_prefix(0) + ".conv.weight")));
  std::printf("\nlearned mixing of task 0, output channel 0: own %.3f, other %.3f\n",
              w0(0, 0, 0, 0), w0(0, c, 0, 0));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t n = 2, c = 64, s = 81;
  int threads = 0;  // 0: all cores
  std::string device = "cpu";
  nddr::cli::ArgParser p("00_nddr_layer",
                         "One NDDR fusion layer (K = 2 tasks) built from nddr's ops and layers: "
                         "checks its closed form, trains it on a toy objective, prints timings.");
  p.integer("batch", n, "batch size (batch norm needs two samples)", std::int64_t{2},
            std::int64_t{1024})
      .integer("channels", c, "channels C of each task's feature", std::int64_t{1},
               std::int64_t{4096})
      .integer("size", s, "feature side (81: the paper's pool2 output)", std::int64_t{1},
               std::int64_t{4096})
      .integer("threads", threads, "CPU threads (0 = all cores)", 0, nddr::cli::kMaxThreads)
      .device("device", device, "cpu | cuda | cuda:N");
  if (const auto status = p.parse_or_exit(argc, argv)) return *status;
  // The concatenated input holds batch x 2C x size^2 floats: keep it within 1 GiB.
  constexpr std::int64_t kMaxElements = std::int64_t{1} << 28;
  if (n * 2 * c > kMaxElements / (s * s))
    return p.usage_error("size", "--batch x 2 --channels x size^2 <= " +
                                     std::to_string(kMaxElements) + " elements",
                         std::to_string(s));
  try {
    const auto choice = nddr::cli::parse_device("00_nddr_layer", device);
    if (choice.cuda) {
      nddr::cli::require_cuda_backend("00_nddr_layer", device);
#if defined(NDDR_WITH_CUDA)
      nddr::Context<nddr::Cuda> gpu(choice.index);
      return run(gpu, n, c, s);
#endif
    }
    nddr::Context<nddr::Cpu> cpu;
    if (threads > 0) cpu.set_threads(threads);
    return run(cpu, n, c, s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
