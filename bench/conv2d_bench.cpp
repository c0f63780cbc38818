// Conv2d on the CPU at every VGG16-DeepLab-LargeFOV shape of a 161x161 input (conv1_1 .. fc7,
// dilation 2 and 12 included), batch 2 (the training step of the performance issue), float:
// forward, backward data and backward weights, for each algorithm (im2col + GEMM, Winograd
// F(2x2, 3x3) and F(4x4, 3x3), tap-skipping, and the automatic choice), at 1 and 2 threads.
//
// GFLOP/s counts the direct convolution, 2 N C_out C_in kh kw OH OW per direction, whatever
// the algorithm does, so a faster algorithm shows as more GFLOP/s (Winograd can exceed the
// machine's peak). `peak` is the fraction of a measured FMA peak: a loop of independent
// vector FMAs (AVX-512 where compiled for it, else AVX2/FMA) on the same number of threads,
// measured once at start-up and printed.
//
// Two modes:
//   conv2d_bench [google-benchmark flags]     the suite (e.g. --benchmark_filter=fc6)
//   conv2d_bench --compare [rounds] [threads] [layer]  im2col vs the fast algorithms,
//        alternated shape by shape in one process for `rounds` rounds (default 7, threads 2;
//        every layer, or only `layer`); prints a markdown table of medians and ratios (robust
//        to a shared, noisy machine). With NDDR_BENCH_CPU_TIME=1 it times the process's CPU
//        time instead of the wall clock (on a machine other jobs share; set
//        OMP_WAIT_POLICY=passive then so that idle threads do not spin into the count).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <nddr/ops/conv2d.hpp>
#include <nddr/core/context.hpp>
#include <nddr/core/random.hpp>
#include <nddr/core/tensor.hpp>
#include <string>
#include <vector>

#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

using nddr::cpu::ConvAlgo;

struct Layer {
  const char* name;
  std::int64_t in_c, out_c, size, kernel, dilation;
};

// Padding = dilation * (kernel / 2) keeps the spatial size, as in the network.
constexpr Layer kLayers[] = {
    {"conv1_1", 3, 64, 161, 3, 1},   {"conv1_2", 64, 64, 161, 3, 1},
    {"conv2_1", 64, 128, 81, 3, 1},  {"conv2_2", 128, 128, 81, 3, 1},
    {"conv3_1", 128, 256, 41, 3, 1}, {"conv3_2", 256, 256, 41, 3, 1},
    {"conv4_1", 256, 512, 21, 3, 1}, {"conv4_2", 512, 512, 21, 3, 1},
    {"conv5", 512, 512, 21, 3, 2},   {"fc6", 512, 1024, 21, 3, 12},
    {"fc7", 1024, 1024, 21, 1, 1},
};
constexpr std::int64_t kLayerCount = static_cast<std::int64_t>(std::size(kLayers));
constexpr std::int64_t kBatch = 2;

enum Direction { kForward, kBackwardData, kBackwardWeights };
constexpr const char* kDirectionNames[] = {"forward", "backward data", "backward weights"};

constexpr ConvAlgo kAlgos[] = {ConvAlgo::kIm2col, ConvAlgo::kWinograd, ConvAlgo::kWinogradF4,
                               ConvAlgo::kTapSkip, ConvAlgo::kAuto};
constexpr const char* kAlgoNames[] = {"im2col", "winograd-f2", "winograd-f4", "tapskip", "auto"};

const char* algo_name(ConvAlgo algo) {
  for (std::size_t i = 0; i < std::size(kAlgos); ++i)
    if (kAlgos[i] == algo) return kAlgoNames[i];
  return "?";
}

struct Problem {
  explicit Problem(const Layer& l)
      : opt(nddr::Conv2dOptions{}.dilation(l.dilation).padding(l.dilation * (l.kernel / 2))),
        x(nddr::Shape::nchw(kBatch, l.in_c, l.size, l.size)),
        w(nddr::Shape::nchw(l.out_c, l.in_c, l.kernel, l.kernel)),
        b(nddr::Shape{l.out_c}),
        y(nddr::conv2d_output_shape(x.shape(), w.shape(), opt)),
        dx(x.shape()),
        dw(w.shape()),
        db(b.shape()),
        g(nddr::conv2d_geometry(x.shape(), w.shape(), opt)) {
    nddr::Rng rng(1);
    for (auto* t : {&x, &w, &b, &y})
      for (std::int64_t i = 0; i < t->numel(); ++i)
        (*t)[i] = static_cast<float>(rng.uniform(-1, 1));
  }
  /// Direct-convolution GFLOP of one direction.
  double gflop() const {
    return 2.0 * static_cast<double>(kBatch * g.out_c * g.col_rows() * g.col_cols()) * 1e-9;
  }
  /// Whether forcing `algo` runs that algorithm (else it falls back to im2col).
  bool runs(ConvAlgo algo) const {
    if (algo == ConvAlgo::kWinograd || algo == ConvAlgo::kWinogradF4)
      return nddr::ops::conv2d_winograd_applicable(g);
    if (algo == ConvAlgo::kTapSkip) return g.dilation_h > 1 || g.dilation_w > 1;
    return true;
  }
  void run(nddr::Context<nddr::Cpu>& ctx, Direction d) {
    switch (d) {
      case kForward:
        nddr::ops::conv2d_forward<float>(ctx, x, w, b, y.view(), opt);
        break;
      case kBackwardData:
        nddr::ops::conv2d_backward_data<float>(ctx, w, y, dx.view(), opt);
        break;
      case kBackwardWeights:
        nddr::ops::conv2d_backward_weights<float>(ctx, x, y, dw.view(), {}, opt);
        break;
    }
  }

  nddr::Conv2dOptions opt;
  nddr::Tensor<float> x, w, b, y, dx, dw, db;  // y doubles as dy
  nddr::Conv2dGeometry g;
};

/// GFLOP/s of `threads` threads each running independent vector FMAs (2 flops per lane).
double measure_fma_peak(int threads) {
  constexpr int kAcc = 12;  // independent chains: enough to cover the FMA latency
  constexpr std::int64_t kIters = 20'000'000;
  double sink = 0.0;
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
#if defined(__AVX512F__)
    constexpr int kLanes = 16;
    __m512 acc[kAcc];
    for (int j = 0; j < kAcc; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
    const __m512 a = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
    for (std::int64_t it = 0; it < kIters; ++it)
      for (int j = 0; j < kAcc; ++j) acc[j] = _mm512_fmadd_ps(acc[j], a, c);
    for (int j = 0; j < kAcc; ++j) sink += _mm512_reduce_add_ps(acc[j]);
#elif defined(__FMA__)
    constexpr int kLanes = 8;
    __m256 acc[kAcc];
    for (int j = 0; j < kAcc; ++j) acc[j] = _mm256_set1_ps(static_cast<float>(j));
    const __m256 a = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
    for (std::int64_t it = 0; it < kIters; ++it)
      for (int j = 0; j < kAcc; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, c);
    float lanes[8];
    for (int j = 0; j < kAcc; ++j) {
      _mm256_storeu_ps(lanes, acc[j]);
      for (float v : lanes) sink += v;
    }
#else
    constexpr int kLanes = 1;
    float acc[kAcc];
    for (int j = 0; j < kAcc; ++j) acc[j] = static_cast<float>(j);
    for (std::int64_t it = 0; it < kIters; ++it)
      for (int j = 0; j < kAcc; ++j) acc[j] = acc[j] * 0.999999f + 1e-6f;
    for (float v : acc) sink += v;
#endif
    (void)kLanes;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  benchmark::DoNotOptimize(sink);
#if defined(__AVX512F__)
  constexpr double kFlopsPerIter = 2.0 * 16 * kAcc;
#elif defined(__FMA__)
  constexpr double kFlopsPerIter = 2.0 * 8 * kAcc;
#else
  constexpr double kFlopsPerIter = 2.0 * kAcc;
#endif
  return kFlopsPerIter * static_cast<double>(kIters) * threads / seconds * 1e-9;
}

/// Peak GFLOP/s at 1 and 2 threads (best of 3), measured on first use.
double fma_peak(int threads) {
  static const std::vector<double> peaks = [] {
    std::vector<double> p;
    for (int t : {1, 2}) {
      double best = 0.0;
      for (int r = 0; r < 3; ++r) best = std::max(best, measure_fma_peak(t));
      p.push_back(best);
    }
    std::printf("FMA peak (vector FMA loop, float): %.1f GFLOP/s at 1 thread, %.1f at 2\n", p[0],
                p[1]);
    return p;
  }();
  return peaks[static_cast<std::size_t>(std::min(threads, 2) - 1)];
}

void BM_conv2d(benchmark::State& state) {
  const auto dir = static_cast<Direction>(state.range(0));
  const Layer& l = kLayers[state.range(1)];
  const auto algo_index = static_cast<std::size_t>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  Problem pr(l);
  if (!pr.runs(kAlgos[algo_index])) {
    state.SkipWithError("algorithm does not apply to this shape");
    return;
  }
  const double peak = fma_peak(threads);
  nddr::Context<nddr::Cpu> ctx(threads);
  ctx.set_settings(nddr::NumericSettings{}.cpu_conv_algorithm(kAlgos[algo_index]));
  for (auto _ : state) {
    pr.run(ctx, dir);
    benchmark::ClobberMemory();
  }
  const double rate = pr.gflop() * static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(rate, benchmark::Counter::kIsRate);
  state.counters["peak"] = benchmark::Counter(rate / peak, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(l.name) + " " + kDirectionNames[dir] + " " + kAlgoNames[algo_index]);
}

// Wall-clock time: the work runs on several threads, the main thread's CPU time undercounts it.
BENCHMARK(BM_conv2d)
    ->ArgsProduct({{kForward, kBackwardData, kBackwardWeights},
                   benchmark::CreateDenseRange(0, kLayerCount - 1, 1),
                   benchmark::CreateDenseRange(0, static_cast<int>(std::size(kAlgos)) - 1, 1),
                   {1, 2}})
    ->ArgNames({"dir", "layer", "algo", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

/// Seconds of the process's CPU time (all threads) when NDDR_BENCH_CPU_TIME=1, else of the
/// wall clock.
double now_seconds() {
  static const bool cpu_time = [] {
    const char* v = std::getenv("NDDR_BENCH_CPU_TIME");
    return v && std::strcmp(v, "1") == 0;
  }();
  if (cpu_time) {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double seconds_of(Problem& pr, nddr::Context<nddr::Cpu>& ctx, Direction d, ConvAlgo algo) {
  const nddr::ScopedSettings forced(ctx, nddr::NumericSettings(ctx.settings()).cpu_conv_algorithm(algo));
  const double t0 = now_seconds();
  pr.run(ctx, d);
  return now_seconds() - t0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// The --compare mode: per shape and direction, im2col and every fast algorithm that applies,
/// run alternately `rounds` times after one warm-up each; medians and ratios.
int compare(int rounds, int threads, const char* only) {
  const double peak = fma_peak(threads);
  nddr::Context<nddr::Cpu> ctx(threads);
  std::printf("batch %lld, 161x161 input, float, %d threads, median of %d alternating rounds\n\n",
              static_cast<long long>(kBatch), threads, rounds);
  std::printf(
      "| layer | direction | im2col ms | algorithm | its ms | speedup | GFLOP/s im2col -> "
      "algorithm | of peak | auto picks |\n|---|---|---:|---|---:|---:|---|---:|---|\n");
  for (const Layer& l : kLayers) {
    if (only && std::strcmp(only, l.name) != 0) continue;
    Problem pr(l);
    for (Direction d : {kForward, kBackwardData, kBackwardWeights}) {
      std::vector<ConvAlgo> algos{ConvAlgo::kIm2col};
      for (ConvAlgo a : {ConvAlgo::kWinograd, ConvAlgo::kWinogradF4, ConvAlgo::kTapSkip})
        if (pr.runs(a)) algos.push_back(a);
      std::vector<std::vector<double>> times(algos.size());
      for (ConvAlgo a : algos) seconds_of(pr, ctx, d, a);  // warm-up: workspace, caches
      for (int r = 0; r < rounds; ++r)
        for (std::size_t i = 0; i < algos.size(); ++i)
          times[i].push_back(seconds_of(pr, ctx, d, algos[i]));
      const auto pick =
          nddr::ops::conv2d_select_algorithm(pr.g, static_cast<nddr::ops::Conv2dDirection>(d));
      const char* pick_name = algo_name(pick);
      const double base = median(times[0]);
      const auto row = [&](const char* algo, double t) {
        std::printf("| %s | %s | %.2f | %s | %.2f | %.2f | %.0f -> %.0f | %.2f | %s |\n", l.name,
                    kDirectionNames[d], base * 1e3, algo, t * 1e3, base / t, pr.gflop() / base,
                    pr.gflop() / t, pr.gflop() / t / peak, pick_name);
      };
      if (algos.size() == 1) row("-", base);
      for (std::size_t i = 1; i < algos.size(); ++i)
        row(algo_name(algos[i]), median(times[i]));
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--compare") == 0) {
    const int rounds = argc >= 3 ? std::atoi(argv[2]) : 7;
    const int threads = argc >= 4 ? std::atoi(argv[3]) : 2;
    return compare(std::max(rounds, 1), std::max(threads, 1), argc >= 5 ? argv[4] : nullptr);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  fma_peak(1);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
