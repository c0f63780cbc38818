// nddr-bench-step: times one training step (forward, the task losses, backward, SGD) and one
// inference pass of a paper network on DeepLab-VGG16-LargeFOV (40-class segmentation +
// normals), on the CPU or, in a build with the CUDA backend, on a GPU.
// Prints one JSON line: network, median/min/max seconds, images/s, GFLOP/s (analytic forward
// FLOPs x 3 for training), peak host RSS.
//
// Usage: nddr-bench-step [--network vgg16-nddr] [--device cpu|cuda] [--batch 2] [--size 161]
//                        [--width W] [--iters 5] [--warmup 2] [--threads N]
//                        [--mode train|infer]
//                        [--tf32 (GPU: TF32 convolutions)]
//                        [--bf16 (BF16 convolutions, FP32 accumulation; emulated on the CPU)]
//                        [--cudnn-benchmark (GPU: time cuDNN's algorithms per shape, take the
//                         fastest)] [--deterministic (GPU: deterministic algorithms only)]
//                        [--profile-step (GPU: one extra step between cudaProfilerStart/Stop,
//                         for `ncu --profile-from-start off`)]
//        (nddr-bench-step --help; the flags' syntax and errors: docs/cli.md)
// Networks (two tasks, seg 40 + normals 3, unless said):
//   vgg16-nddr           MultiTask<VGG16, VGG16, NDDR>            NDDR-CNN
//   vgg16-nddr-shortcut  MultiTask<VGG16, VGG16, Shortcut<NDDR>>  NDDR-CNN-Shortcut
//   vgg16-mt             MultiTask<VGG16, VGG16, Shared<5>>       split multi-task baseline
//   vgg16-st             MultiTask<VGG16, None>                   one single-task column, seg only
//   vgg16-cross-stitch   MultiTask<VGG16, VGG16, CrossStitch>
//   vgg16-sluice         MultiTask<VGG16, VGG16, Sluice>
// Compare with bench/pytorch/nddr_vgg16.py run with the same flags in the same command
// (bench/compare_cpu.sh does).
#if defined(NDDR_WITH_CUDA)
#include <cuda_profiler_api.h>
#include <nddr/cuda.hpp>
#endif
#include <nddr/nddr.hpp>
#include <nddr_apps/cli.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace {

const std::vector<std::string> kNetworks = {"vgg16-nddr",         "vgg16-nddr-shortcut", "vgg16-mt",
                                            "vgg16-st",           "vgg16-cross-stitch",  "vgg16-sluice"};

// Forward FLOPs (multiply-add = 2) of the convolutions, fusion layers and shortcut 1x1s, as
// performance-notes.md; element-wise work (BN, ReLU, pooling) is not counted, the cross-stitch
// and sluice mixes are (2 K S FLOPs per output element, S subspaces).
double forward_gflop(const std::string& network, std::int64_t batch, std::int64_t height,
                     std::int64_t width) {
  auto out = [](std::int64_t in, std::int64_t s) { return (in + s - 1) / s; };
  const std::int64_t h1 = out(height, 2), h2 = out(h1, 2), h3 = out(h2, 2);
  const std::int64_t w1 = out(width, 2), w2 = out(w1, 2), w3 = out(w2, 2);
  const std::int64_t p0 = height * width, p1 = h1 * w1, p2 = h2 * w2, p3 = h3 * w3;
  struct L { std::int64_t cin, cout, k2, hw; };
  const std::vector<L> trunk = {
      {3, 64, 9, p0},     {64, 64, 9, p0},    {64, 128, 9, p1},   {128, 128, 9, p1},
      {128, 256, 9, p2},  {256, 256, 9, p2},  {256, 256, 9, p2},  {256, 512, 9, p3},
      {512, 512, 9, p3},  {512, 512, 9, p3},  {512, 512, 9, p3},  {512, 512, 9, p3},
      {512, 512, 9, p3}};
  const std::vector<L> head = {{512, 1024, 9, p3}, {1024, 1024, 1, p3}};
  auto flops = [](const std::vector<L>& ls) {
    double f = 0;
    for (const auto& l : ls) f += 2.0 * l.cin * l.cout * l.k2 * l.hw;
    return f;
  };
  const bool single = network == "vgg16-st";
  const double tasks = single ? 1 : 2;
  const double trunks = network == "vgg16-mt" || single ? 1 : 2;
  double f = trunks * flops(trunk) + tasks * flops(head) + 2.0 * 1024 * (single ? 40 : 40 + 3) * p3;
  // Stage outputs (pool1..pool5): channels and pixels.
  const std::int64_t stage_c[5] = {64, 128, 256, 512, 512};
  const std::int64_t stage_hw[5] = {p1, p2, p3, p3, p3};
  for (int i = 0; i < 5; ++i) {
    const double elems = static_cast<double>(stage_c[i]) * stage_hw[i];
    if (network == "vgg16-nddr" || network == "vgg16-nddr-shortcut")
      f += tasks * 2.0 * (tasks * stage_c[i]) * elems;  // per task a (K C -> C) 1x1
    else if (network == "vgg16-cross-stitch")
      f += tasks * 2.0 * tasks * elems;
    else if (network == "vgg16-sluice")
      f += tasks * 2.0 * tasks * 2 * elems;
  }
  if (network == "vgg16-nddr-shortcut") f += tasks * 2.0 * (64 + 128 + 256 + 512 + 512) * 512 * p3;
  return f * static_cast<double>(batch) / 1e9;
}

struct Args {
  std::string network = "vgg16-nddr", device = "cpu", mode = "train";
  std::int64_t batch = 2, size = 161;
  std::int64_t width = 0;  // input width; 0: size (square)
  int iters = 5, warmup = 2, threads = 0;
  bool tf32 = false;
  bool bf16 = false;
  bool profile_step = false;
  bool cudnn_benchmark = false;
  bool deterministic = false;
};

// How the GPU convolution algorithms were chosen: heuristic or benchmark, + deterministic.
std::string conv_algos(const Args& a) {
  return std::string(a.cudnn_benchmark ? "benchmark" : "heuristic") + (a.deterministic ? "+deterministic" : "");
}

// Random image and targets in host memory.
struct HostData {
  nddr::Tensor<float> x, normals;
  nddr::Tensor<std::int32_t> labels;
};

HostData make_data(const Args& a, std::int64_t out_h, std::int64_t out_w) {
  nddr::Rng rng(7);
  HostData d{nddr::Tensor<float>(nddr::Shape::nchw(a.batch, 3, a.size, a.width)),
             nddr::Tensor<float>(nddr::Shape::nchw(a.batch, 3, out_h, out_w)),
             nddr::Tensor<std::int32_t>(nddr::Shape{a.batch, out_h, out_w})};
  for (std::int64_t i = 0; i < d.x.numel(); ++i) d.x[i] = static_cast<float>(rng.normal());
  for (std::int64_t i = 0; i < d.labels.numel(); ++i) d.labels[i] = static_cast<std::int32_t>(rng.below(40));
  for (std::int64_t i = 0; i < d.normals.numel(); ++i) d.normals[i] = static_cast<float>(rng.normal());
  return d;
}

template <class Spec, class D>
int run(const Args& a, nddr::Context<D>& ctx) {
  constexpr std::size_t kTasks = Spec::tasks;
  std::array<std::int64_t, kTasks> outputs{};
  outputs[0] = 40;
  if constexpr (kTasks > 1) outputs[1] = 3;
  nddr::Network<Spec, D> net(outputs);
  const nddr::Shape out0 = net.output_shape(0, nddr::Shape::nchw(a.batch, 3, a.size, a.width));
  HostData h = make_data(a, out0.h(), out0.w());
  nddr::Tensor<float, D> x(h.x.shape()), normals(h.normals.shape());
  nddr::Tensor<std::int32_t, D> labels(h.labels.shape());
  nddr::Storage<D>::upload(x.data(), h.x.data(), h.x.bytes());
  nddr::Storage<D>::upload(normals.data(), h.normals.data(), h.normals.bytes());
  nddr::Storage<D>::upload(labels.data(), h.labels.data(), h.labels.bytes());
  // Inference never steps the optimiser, so it does not get one (no momentum buffers in its RSS).
  std::unique_ptr<nddr::Sgd<float, D>> sgd;
  if (a.mode == "train")
    sgd = std::make_unique<nddr::Sgd<float, D>>(net.parameters(), nddr::SgdOptions::paper_multi_task());
  std::array<nddr::Tensor<float, D>, kTasks> d;
  const auto ce = nddr::SoftmaxCrossEntropyOptions{}.ignore_label(255).scale(1.0);
  const auto nl = nddr::NormalLossOptions{}.form(nddr::NormalLossForm::kCosine).scale(20.0);
  auto sync = [&] {
    if constexpr (!std::is_same_v<D, nddr::Cpu>) ctx.synchronize();
  };
  auto step = [&] {
    if (a.mode == "infer") {
      net.set_training(false);
      net.forward(ctx, x.cview());
      return;
    }
    net.set_training(true);
    auto out = net.forward(ctx, x.cview());
    for (std::size_t k = 0; k < kTasks; ++k) {
      d[k].resize(out[k].shape());
      d[k].zero();
    }
    nddr::ops::softmax_cross_entropy_forward(ctx, out[0], labels.cview(), ce);
    nddr::ops::softmax_cross_entropy_backward(ctx, out[0], labels.cview(), d[0].view(), ce);
    if constexpr (kTasks > 1) {
      nddr::ops::normal_loss_forward(ctx, out[1], normals.cview(), nl);
      nddr::ops::normal_loss_backward(ctx, out[1], normals.cview(), d[1].view(), nl);
    }
    std::vector<nddr::TensorView<const float, D>> douts;
    for (auto& t : d) douts.push_back(t.cview());
    net.backward(ctx, x.cview(), douts);
    if constexpr (std::is_same_v<D, nddr::Cpu>)
      sgd->step(ctx, 1e-3);
#if defined(NDDR_WITH_CUDA)
    else
      nddr::cuda::sgd_step(ctx, net.parameters(), *sgd, 1e-3);
#endif
  };
  for (int i = 0; i < a.warmup; ++i) step();
  sync();
#if defined(NDDR_WITH_CUDA)
  // One step, after the warm-up, inside the profiler's range: `ncu --profile-from-start off`
  // then sees exactly the kernels of one steady-state step.
  if constexpr (!std::is_same_v<D, nddr::Cpu>) {
    if (a.profile_step) {
      NDDR_CUDA_CHECK(cudaProfilerStart());
      step();
      sync();
      NDDR_CUDA_CHECK(cudaProfilerStop());
    }
  }
#endif
  std::vector<double> times;
  for (int i = 0; i < a.iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    sync();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const double med = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                       : 0.5 * (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]);
  const double gflop =
      forward_gflop(a.network, a.batch, a.size, a.width) * (a.mode == "train" ? 3.0 : 1.0);
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf(
      "{\"impl\":\"nddr\",\"network\":\"%s\",\"device\":\"%s\",\"precision\":\"%s\",\"conv_algos\":\"%s\",\"mode\":\"%s\",\"batch\":%lld,\"size\":%lld,\"width\":%lld,"
      "\"iters\":%d,\"median_s\":%.6f,\"min_s\":%.6f,\"max_s\":%.6f,\"images_per_s\":%.4f,"
      "\"gflop_per_s\":%.1f,\"peak_rss_mib\":%.1f}\n",
      a.network.c_str(), a.device.c_str(), a.bf16 ? "bf16" : a.tf32 && a.device != "cpu" ? "tf32" : "fp32",
      a.device == "cpu" ? "cpu" : conv_algos(a).c_str(), a.mode.c_str(), static_cast<long long>(a.batch),
      static_cast<long long>(a.size), static_cast<long long>(a.width), a.iters, med, sorted.front(), sorted.back(),
      static_cast<double>(a.batch) / med, gflop / med, static_cast<double>(ru.ru_maxrss) / 1024.0);
  return 0;
}

template <class D>
int dispatch(const Args& a, nddr::Context<D>& ctx) {
  using nddr::MultiTask;
  using nddr::VGG16;
  if (a.network == "vgg16-nddr") return run<MultiTask<VGG16, VGG16, nddr::NDDR>>(a, ctx);
  if (a.network == "vgg16-nddr-shortcut")
    return run<MultiTask<VGG16, VGG16, nddr::Shortcut<nddr::NDDR>>>(a, ctx);
  if (a.network == "vgg16-mt") return run<MultiTask<VGG16, VGG16, nddr::Shared<5>>>(a, ctx);
  if (a.network == "vgg16-st") return run<MultiTask<VGG16, nddr::None>>(a, ctx);
  if (a.network == "vgg16-cross-stitch") return run<MultiTask<VGG16, VGG16, nddr::CrossStitch>>(a, ctx);
  return run<MultiTask<VGG16, VGG16, nddr::Sluice>>(a, ctx);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  nddr::cli::ArgParser p("nddr-bench-step",
                         "Times one training step (forward, losses, backward, SGD) or one "
                         "inference pass of a paper network; prints one JSON line.");
  p.choice("network", a.network, "the network (see the comment of nddr_bench_step.cpp)",
           kNetworks)
      .device("device", a.device, "cpu | cuda | cuda:N")
      .choice("mode", a.mode, "train: a training step; infer: a forward pass", {"train", "infer"})
      .integer("batch", a.batch, "images per step", std::int64_t{1}, std::int64_t{1024})
      .integer("size", a.size, "input height (and width, without --width)", std::int64_t{8},
               std::int64_t{4096})
      .integer("width", a.width, "input width (0: --size; 640 with --size 480: a full NYUv2 image)",
               std::int64_t{0}, std::int64_t{4096})
      .integer("iters", a.iters, "timed steps", 1, 1000000)
      .integer("warmup", a.warmup, "untimed steps before them", 0, 1000000)
      .integer("threads", a.threads, "CPU threads (0 = all cores)", 0, nddr::cli::kMaxThreads)
      .flag("tf32", a.tf32, "GPU: TF32 convolutions and GEMMs")
      .flag("bf16", a.bf16, "BF16 convolutions, FP32 accumulation (emulated on the CPU)")
      .flag("cudnn-benchmark", a.cudnn_benchmark,
            "GPU: time cuDNN's algorithms per shape, take the fastest")
      .flag("deterministic", a.deterministic, "GPU: deterministic algorithms only")
      .flag("profile-step", a.profile_step,
            "GPU: one extra step between cudaProfilerStart/Stop (ncu --profile-from-start off)");
  if (const auto status = p.parse_or_exit(argc, argv)) return *status;
  if (a.tf32 && a.bf16)
    return p.usage_error("bf16", "no --tf32 with it (both set the convolutions' precision)",
                         "--tf32 --bf16");
  // VGG16's first activations hold batch x 64 x size^2 floats: keep the input within 2^24 pixels.
  constexpr std::int64_t kMaxPixels = std::int64_t{1} << 24;
  if (a.width == 0) a.width = a.size;
  if (a.width < 8) return p.usage_error("width", "0 or at least 8", std::to_string(a.width));
  if (a.batch > kMaxPixels / (a.size * a.width))
    return p.usage_error("size", "--batch x size x width <= " + std::to_string(kMaxPixels) +
                         " pixels", std::to_string(a.size));
  try {
    // The context's numeric settings; on the CPU, --bf16 emulates the GPU's BF16 numerics.
    const auto settings = nddr::NumericSettings{}
                              .conv_bf16(a.bf16)
                              .conv_tf32(a.tf32)
                              .matmul_tf32(a.tf32)
                              .conv_benchmark(a.cudnn_benchmark)
                              .conv_deterministic(a.deterministic);
    const auto device = nddr::cli::parse_device("nddr-bench-step", a.device);
    if (device.cuda) {
      nddr::cli::require_cuda_backend("nddr-bench-step", a.device);
#if defined(NDDR_WITH_CUDA)
      nddr::Context<nddr::Cuda> ctx(device.index);
      ctx.set_settings(settings);
      return dispatch(a, ctx);
#endif
    }
    nddr::Context<nddr::Cpu> ctx;
    if (a.threads > 0) ctx.set_threads(a.threads);
    ctx.set_settings(settings);
    return dispatch(a, ctx);
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
