// The non-convolution ops of the NDDR-VGG16 training step at its shapes (batch 2, 161x161
// input, float): BatchNorm (training) forward/backward, ReLU forward/backward, max pool 3x3/2
// TF-'SAME' forward/backward, the stride-1 max and average pools of stage 5 forward, and the NDDR fusion layer (K = 2, 1x1 GEMMs + BN + ReLU) forward
// and backward after each of the five stages: the whole layer (`<false>`), its GEMMs alone
// (`<true>`: BN and ReLU off) and the concatenate + Conv2d formulation the layer used before
// ("concat", the same GEMM work).
//
// Counters:
//   GB/s       memory-bound ops: the bytes the minimal algorithm moves (listed per op below)
//              per second;  bw_frac: that over a measured copy bandwidth (a 256 MiB parallel
//              read + write sweep on the same threads, measured once per thread count).
//   GFLOP/s    NDDR: the GEMMs' 2 K C x C x N H W FLOPs per task (x2 for backward: dW and
//              dx); BN/ReLU work is not counted.  peak_frac: that over a measured FMA peak,
//              a loop of 12 independent vector FMA chains per thread (native vector width:
//              AVX-512 where compiled for it, else AVX2), run on the same thread count for
//              about 0.2 s, measured once per thread count.
//
// Run: ops_bench --benchmark_min_time=0.1   (second argument of every row: threads)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nddr/ops/activation.hpp>
#include <nddr/ops/concat.hpp>
#include <nddr/ops/conv2d.hpp>
#include <nddr/core/context.hpp>
#include <nddr/core/random.hpp>
#include <nddr/core/tensor.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/layers/batch_norm.hpp>
#include <nddr/layers/pool.hpp>

namespace {

using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;
using Ctx = nddr::Context<nddr::Cpu>;

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#else
constexpr int kVecBytes = 32;
#endif
using Vec = float __attribute__((vector_size(kVecBytes)));
constexpr int kLanes = kVecBytes / 4;

// FLOP/s of `threads` threads each running 12 independent a = a * b + c chains (GCC contracts
// them to FMAs under -march=native); 12 chains cover 2 FMA pipes x 4-6 cycles of latency.
double measure_fma_peak(int threads) {
  static std::map<int, double> cache;
  if (auto it = cache.find(threads); it != cache.end()) return it->second;
  constexpr int kChains = 12;
  constexpr std::int64_t kInner = 1 << 20;
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<double> sink(static_cast<std::size_t>(threads));
    const auto t0 = std::chrono::steady_clock::now();
    std::int64_t rounds = 0;
    do {
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int t = 0; t < threads; ++t) {
        Vec acc[kChains];
        Vec b, c;
        for (int l = 0; l < kLanes; ++l) {
          b[l] = 0.999999f;
          c[l] = 1e-7f;
        }
        for (int i = 0; i < kChains; ++i)
          for (int l = 0; l < kLanes; ++l) acc[i][l] = static_cast<float>(i + t);
        for (std::int64_t k = 0; k < kInner; ++k)
          for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * b + c;
        double s = 0.0;
        for (int i = 0; i < kChains; ++i)
          for (int l = 0; l < kLanes; ++l) s += acc[i][l];
        sink[static_cast<std::size_t>(t)] = s;
      }
      ++rounds;
    } while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(70));
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(sink.data());
    best = std::max(best, 2.0 * kChains * kLanes * static_cast<double>(kInner) * rounds * threads / sec);
  }
  cache[threads] = best;
  return best;
}

// Bytes/s of a parallel copy of a 256 MiB buffer (read + write counted).
double measure_copy_bandwidth(int threads) {
  static std::map<int, double> cache;
  if (auto it = cache.find(threads); it != cache.end()) return it->second;
  const std::int64_t n = std::int64_t{64} << 20;  // floats
  Tensor<float> a(Shape{n}), b(Shape{n});
  Ctx ctx(threads);
  const float* src = a.data();
  float* dst = b.data();
  const std::int64_t chunks = 64 * threads, chunk = n / chunks;
  auto sweep = [&] {
    nddr::detail::parallel_for(ctx, chunks, [=](std::int64_t c) {
      std::memcpy(dst + c * chunk, src + c * chunk, static_cast<std::size_t>(chunk) * sizeof(float));
    });
  };
  sweep();
  double best = 0.0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    sweep();
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(n) * sizeof(float) / sec);
  }
  benchmark::DoNotOptimize(b.data());
  cache[threads] = best;
  return best;
}

void fill(Tensor<float>& t, std::uint64_t seed) {
  nddr::Rng rng(seed);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(rng.uniform(-1, 1));
}

// Memory-bound row: `bytes` moved per iteration.
void set_bandwidth(benchmark::State& state, double bytes, int threads, const char* label) {
  const double per_s = bytes * static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(per_s * 1e-9, benchmark::Counter::kIsRate);
  state.counters["bw_frac"] = benchmark::Counter(per_s / measure_copy_bandwidth(threads),
                                                 benchmark::Counter::kIsRate);
  state.SetLabel(label);
}

void set_flops(benchmark::State& state, double flop, int threads, const char* label) {
  const double per_s = flop * static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(per_s * 1e-9, benchmark::Counter::kIsRate);
  state.counters["peak_frac"] = benchmark::Counter(per_s / measure_fma_peak(threads),
                                                   benchmark::Counter::kIsRate);
  state.SetLabel(label);
}

// Activations of the step at batch 2, 161^2: the BN/ReLU shapes of conv1..conv4 (pool
// inputs for the first three) and the five NDDR (pool1..pool5 output) shapes.
struct Act {
  const char* name;
  std::int64_t c, hw;
};
constexpr Act kActs[] = {{"conv1", 64, 161}, {"conv2", 128, 81}, {"conv3", 256, 41}, {"conv4", 512, 21}};
constexpr Act kNddr[] = {{"nddr1", 64, 81},  {"nddr2", 128, 41}, {"nddr3", 256, 21},
                         {"nddr4", 512, 21}, {"nddr5", 512, 21}};
constexpr std::int64_t kBatch = 2;

Shape act_shape(const Act& a) { return Shape::nchw(kBatch, a.c, a.hw, a.hw); }

struct BnProblem {
  BnProblem(const Act& a, bool relu)
      : bn(a.c, nddr::BatchNormOptions{}.relu(relu)), x(act_shape(a)), y(x.shape()), dy(x.shape()), dx(x.shape()) {
    bn.declare(store, "bn");
    store.allocate();
    nddr::Rng rng(1);
    bn.initialize(rng);
    fill(x, 1);
    fill(dy, 2);
  }
  nddr::ParameterStore<float, nddr::Cpu> store;
  nddr::BatchNorm2d<float> bn;
  Tensor<float> x, y, dy, dx;
};

// BN forward (Relu: with the fused ReLU): read x (statistics), read x + write y (normalise) =
// 3 |x|.
template <bool Relu>
void BM_batch_norm_forward(benchmark::State& state) {
  const Act& a = kActs[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  BnProblem p(a, Relu);
  Ctx ctx(threads);
  for (auto _ : state) {
    p.bn.forward(ctx, p.x.cview(), p.y.view());
    benchmark::DoNotOptimize(p.y.data());
  }
  set_bandwidth(state, 3.0 * static_cast<double>(p.x.bytes()), threads, a.name);
}

// BN backward: read x, dy (sums), read x, dy, dx + write dx (dx +=) = 6 |x|; with the fused
// ReLU also y twice (8 |x|).
template <bool Relu>
void BM_batch_norm_backward(benchmark::State& state) {
  const Act& a = kActs[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  BnProblem p(a, Relu);
  Ctx ctx(threads);
  p.bn.forward(ctx, p.x.cview(), p.y.view());
  for (auto _ : state) {
    p.bn.backward(ctx, p.x.cview(), p.y.cview(), p.dy.cview(), p.dx.view());
    benchmark::DoNotOptimize(p.dx.data());
  }
  set_bandwidth(state, (Relu ? 8.0 : 6.0) * static_cast<double>(p.x.bytes()), threads, a.name);
}

// ReLU forward: read x, write y = 2 |x|.
void BM_relu_forward(benchmark::State& state) {
  const Act& a = kActs[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  Tensor<float> x(act_shape(a)), y(x.shape());
  fill(x, 1);
  Ctx ctx(threads);
  for (auto _ : state) {
    nddr::ops::relu_forward<float>(ctx, x.cview(), y.view());
    benchmark::DoNotOptimize(y.data());
  }
  set_bandwidth(state, 2.0 * static_cast<double>(x.bytes()), threads, a.name);
}

// ReLU backward: read x, dy, dx, write dx = 4 |x|.
void BM_relu_backward(benchmark::State& state) {
  const Act& a = kActs[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  Tensor<float> x(act_shape(a)), dy(x.shape()), dx(x.shape());
  fill(x, 1);
  fill(dy, 2);
  Ctx ctx(threads);
  for (auto _ : state) {
    nddr::ops::relu_backward<float>(ctx, x.cview(), dy.cview(), dx.view());
    benchmark::DoNotOptimize(dx.data());
  }
  set_bandwidth(state, 4.0 * static_cast<double>(x.bytes()), threads, a.name);
}

const auto kPool = nddr::Pool2dOptions{}.kernel(3).stride(2).same();

// Max pool forward: read x, write y and the int32 argmax (|x| / 4 each).
void BM_max_pool_forward(benchmark::State& state) {
  const Act& a = kActs[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  nddr::MaxPool2d<float> pool(kPool);
  Tensor<float> x(act_shape(a)), y(pool.output_shape(x.shape()));
  fill(x, 1);
  Ctx ctx(threads);
  for (auto _ : state) {
    pool.forward(ctx, x.cview(), y.view());
    benchmark::DoNotOptimize(y.data());
  }
  set_bandwidth(state, static_cast<double>(x.bytes() + 2 * y.bytes()), threads, a.name);
}

// Max pool backward: read dy and argmax, read + write dx = 2 |x| + 2 |y|.
void BM_max_pool_backward(benchmark::State& state) {
  const Act& a = kActs[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  nddr::MaxPool2d<float> pool(kPool);
  Tensor<float> x(act_shape(a)), y(pool.output_shape(x.shape())), dx(x.shape());
  fill(x, 1);
  Ctx ctx(threads);
  pool.forward(ctx, x.cview(), y.view());
  for (auto _ : state) {
    pool.backward(ctx, x.cview(), y.cview(), y.cview(), dx.view());
    benchmark::DoNotOptimize(dx.data());
  }
  set_bandwidth(state, static_cast<double>(2 * x.bytes() + 2 * y.bytes()), threads, a.name);
}

// K = 2 NDDR layer with its inputs, outputs and gradients.
struct NddrProblem {
  static constexpr std::size_t kTasks = 2;
  explicit NddrProblem(const Act& a, const nddr::NddrOptions& opt = {})
      : layer(kTasks, a.c, opt), s(Shape::nchw(kBatch, a.c, a.hw, a.hw)) {
    layer.declare(store, "f");
    store.allocate();
    nddr::Rng rng(1);
    layer.initialize(rng);
    for (std::size_t k = 0; k < kTasks; ++k) {
      x.emplace_back(s);
      y.emplace_back(s);
      dy.emplace_back(s);
      dx.emplace_back(s);
      fill(x.back(), 1 + k);
      fill(dy.back(), 3 + k);
    }
  }
  // One task's GEMM FLOPs: (C x K C) x (K C x N H W).
  double gemm_flop() const {
    return 2.0 * static_cast<double>(kTasks) * static_cast<double>(s.c()) * static_cast<double>(s.numel());
  }
  template <class V, class Ts>
  static std::vector<V> views(Ts& ts) {
    std::vector<V> v;
    for (auto& t : ts) v.push_back(t);
    return v;
  }
  nddr::ParameterStore<float, nddr::Cpu> store;
  nddr::NddrLayer<float> layer;
  Shape s;
  std::vector<Tensor<float>> x, y, dy, dx;
};

// The NDDR layers: `Linear` without BN and ReLU (the GEMMs alone, the same work as the concat
// rows), else the whole layer.
template <bool Linear>
void BM_nddr_forward(benchmark::State& state) {
  const Act& a = kNddr[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  NddrProblem p(a, nddr::NddrOptions{}.batch_norm(!Linear).relu(!Linear));
  Ctx ctx(threads);
  const auto xs = NddrProblem::views<TensorView<const float>>(p.x);
  const auto ys = NddrProblem::views<TensorView<float>>(p.y);
  for (auto _ : state) {
    p.layer.forward(ctx, xs, ys);
    benchmark::DoNotOptimize(p.y[0].data());
  }
  set_flops(state, NddrProblem::kTasks * p.gemm_flop(), threads, a.name);
}

template <bool Linear>
void BM_nddr_backward(benchmark::State& state) {
  const Act& a = kNddr[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  NddrProblem p(a, nddr::NddrOptions{}.batch_norm(!Linear).relu(!Linear));
  Ctx ctx(threads);
  const auto xs = NddrProblem::views<TensorView<const float>>(p.x);
  const auto ys = NddrProblem::views<TensorView<float>>(p.y);
  const auto yc = NddrProblem::views<TensorView<const float>>(p.y);
  const auto dys = NddrProblem::views<TensorView<const float>>(p.dy);
  const auto dxs = NddrProblem::views<TensorView<float>>(p.dx);
  p.layer.forward(ctx, xs, ys);
  for (auto _ : state) {
    p.layer.backward(ctx, xs, yc, dys, dxs);
    benchmark::DoNotOptimize(p.dx[0].data());
  }
  set_flops(state, 2.0 * NddrProblem::kTasks * p.gemm_flop(), threads, a.name);
}

// The GEMM part of the old formulation: concatenate, then per task a (K C -> C) 1x1 Conv2d.
void BM_nddr_concat_forward(benchmark::State& state) {
  const Act& a = kNddr[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  NddrProblem p(a);
  Ctx ctx(threads);
  const auto xs = NddrProblem::views<TensorView<const float>>(p.x);
  Tensor<float> cat(Shape::nchw(kBatch, 2 * a.c, a.hw, a.hw));
  const auto opt = nddr::Conv2dOptions{}.bias(false);
  for (auto _ : state) {
    nddr::ops::concat_channels_forward<float>(ctx, xs, cat.view());
    for (std::size_t k = 0; k < NddrProblem::kTasks; ++k)
      nddr::ops::conv2d_forward<float>(ctx, cat.cview(), p.layer.weight(k), {}, p.y[k].view(), opt);
    benchmark::DoNotOptimize(p.y[0].data());
  }
  set_flops(state, NddrProblem::kTasks * p.gemm_flop(), threads, a.name);
}

// ... and its backward: per task dW and d(concat) +=, then the split into the tasks' dx.
void BM_nddr_concat_backward(benchmark::State& state) {
  const Act& a = kNddr[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  NddrProblem p(a);
  Ctx ctx(threads);
  const auto xs = NddrProblem::views<TensorView<const float>>(p.x);
  const auto dxs = NddrProblem::views<TensorView<float>>(p.dx);
  Tensor<float> cat(Shape::nchw(kBatch, 2 * a.c, a.hw, a.hw)), dcat(cat.shape());
  nddr::ops::concat_channels_forward<float>(ctx, xs, cat.view());
  const auto opt = nddr::Conv2dOptions{}.bias(false);
  for (auto _ : state) {
    dcat.zero();
    for (std::size_t k = 0; k < NddrProblem::kTasks; ++k) {
      auto dw = p.store.grad(*p.store.find("f.task" + std::to_string(k) + ".conv.weight"));
      nddr::ops::conv2d_backward<float>(ctx, cat.cview(), p.layer.weight(k), p.dy[k].cview(), dcat.view(),
                                        dw, {}, opt);
    }
    nddr::ops::concat_channels_backward<float>(ctx, dcat.cview(), std::span<const TensorView<float>>(dxs));
    benchmark::DoNotOptimize(p.dx[0].data());
  }
  set_flops(state, 2.0 * NddrProblem::kTasks * p.gemm_flop(), threads, a.name);
}

// pool4/pool5 of the Deeplab VGG16 (3x3, stride 1, SAME) and pool5a (average, the same
// geometry) at conv4/conv5's shape: read x, write y (and the int32 argmax for max) = 3 |x|
// (max) or 2 |x| (average).
const auto kPoolS1 = nddr::Pool2dOptions{}.kernel(3).same();

/// `Pool` forward at pool4's shape; `write_factor` output-sized tensors are written (2 for max:
/// y and the argmax, 1 for average).
template <class Pool>
void pool_s1_forward(benchmark::State& state, int write_factor, const char* name) {
  const Act& a = kActs[3];
  const int threads = static_cast<int>(state.range(0));
  Pool pool(kPoolS1);
  Tensor<float> x(act_shape(a)), y(pool.output_shape(x.shape()));
  fill(x, 1);
  Ctx ctx(threads);
  for (auto _ : state) {
    pool.forward(ctx, x.cview(), y.view());
    benchmark::DoNotOptimize(y.data());
  }
  set_bandwidth(state, static_cast<double>(x.bytes() + write_factor * y.bytes()), threads, name);
}

void BM_max_pool_s1_forward(benchmark::State& state) {
  pool_s1_forward<nddr::MaxPool2d<float>>(state, 2, "pool4");
}

void BM_avg_pool_s1_forward(benchmark::State& state) {
  pool_s1_forward<nddr::AvgPool2d<float>>(state, 1, "pool5a");
}

void act_args(benchmark::internal::Benchmark* b) {
  for (int i = 0; i < 4; ++i)
    for (int t : {1, 2}) b->Args({i, t});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

void pool_args(benchmark::internal::Benchmark* b) {
  for (int i = 0; i < 3; ++i)
    for (int t : {1, 2}) b->Args({i, t});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

void nddr_args(benchmark::internal::Benchmark* b) {
  for (int i = 0; i < 5; ++i)
    for (int t : {1, 2}) b->Args({i, t});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK_TEMPLATE(BM_batch_norm_forward, false)->Apply(act_args);
BENCHMARK_TEMPLATE(BM_batch_norm_forward, true)->Apply(act_args);
BENCHMARK_TEMPLATE(BM_batch_norm_backward, false)->Apply(act_args);
BENCHMARK_TEMPLATE(BM_batch_norm_backward, true)->Apply(act_args);
BENCHMARK(BM_relu_forward)->Apply(act_args);
BENCHMARK(BM_relu_backward)->Apply(act_args);
BENCHMARK(BM_max_pool_forward)->Apply(pool_args);
BENCHMARK(BM_max_pool_backward)->Apply(pool_args);
BENCHMARK(BM_max_pool_s1_forward)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_avg_pool_s1_forward)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_nddr_forward, false)->Apply(nddr_args);
BENCHMARK_TEMPLATE(BM_nddr_forward, true)->Apply(nddr_args);
BENCHMARK(BM_nddr_concat_forward)->Apply(nddr_args);
BENCHMARK_TEMPLATE(BM_nddr_backward, false)->Apply(nddr_args);
BENCHMARK_TEMPLATE(BM_nddr_backward, true)->Apply(nddr_args);
BENCHMARK(BM_nddr_concat_backward)->Apply(nddr_args);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  for (int t : {1, 2})
    std::printf("measured FMA peak (%d thread%s): %.1f GFLOP/s; copy bandwidth: %.1f GB/s\n", t,
                t == 1 ? "" : "s", measure_fma_peak(t) * 1e-9, measure_copy_bandwidth(t) * 1e-9);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
