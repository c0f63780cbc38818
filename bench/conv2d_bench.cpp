// Conv2d (im2col + Eigen GEMM) at the VGG16-DeepLab-LargeFOV shapes of a 161x161 input,
// batch 1, float. Each direction is paired with a plain Eigen GEMM of the same (M, K, N) and
// orientation, so the GFLOP/s ratio conv/GEMM shows the im2col/col2im and splitting overhead.
//
//   forward         Y (C_out, P)  = W (C_out, K) * col (K, P)        M=C_out K=K     N=P
//   backward data   dcol (K, P)   = W^T (K, C_out) * dY (C_out, P)    M=K     K=C_out N=P
//   backward wts    dW (C_out, K) = dY (C_out, P) * col^T (P, K)      M=C_out K=P     N=K
//
// Both sides run on the same number of threads: the conv through its Context, the GEMM through
// OpenMP's default team size, which Eigen follows.
//
// Run: conv2d_bench --benchmark_min_time=0.05
#include <benchmark/benchmark.h>
#include <omp.h>

#include <Eigen/Core>
#include <cstdint>
#include <iterator>
#include <nddr/backend/cpu/conv2d.hpp>
#include <nddr/core/context.hpp>
#include <nddr/core/random.hpp>
#include <nddr/core/tensor.hpp>

namespace {

struct Layer {
  const char* name;
  std::int64_t in_c, out_c, size, kernel, dilation;
};

// Padding = dilation * (kernel / 2) keeps the spatial size, as in the network.
constexpr Layer kLayers[] = {
    {"conv1_2", 64, 64, 161, 3, 1},  {"conv2_2", 128, 128, 81, 3, 1},
    {"conv3_2", 256, 256, 41, 3, 1}, {"conv4_2", 512, 512, 21, 3, 1},
    {"conv5", 512, 512, 21, 3, 2},   {"fc6", 512, 1024, 21, 3, 12},
    {"fc7", 1024, 1024, 21, 1, 1},
};

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Problem {
  explicit Problem(const Layer& l)
      : opt(nddr::Conv2dOptions{}.dilation(l.dilation).padding(l.dilation * (l.kernel / 2))),
        x(nddr::Shape::nchw(1, l.in_c, l.size, l.size)),
        w(nddr::Shape::nchw(l.out_c, l.in_c, l.kernel, l.kernel)),
        b(nddr::Shape{l.out_c}),
        y(nddr::conv2d_output_shape(x.shape(), w.shape(), opt)),
        dx(x.shape()),
        dw(w.shape()),
        db(b.shape()) {
    nddr::Rng rng(1);
    for (auto* t : {&x, &w, &b, &y})
      for (std::int64_t i = 0; i < t->numel(); ++i)
        (*t)[i] = static_cast<float>(rng.uniform(-1, 1));
    const auto g = nddr::conv2d_geometry(x.shape(), w.shape(), opt);
    c_out = g.out_c;
    k = g.col_rows();
    p = g.col_cols();
  }
  double gflop() const { return 2.0 * static_cast<double>(c_out * k * p) * 1e-9; }

  nddr::Conv2dOptions opt;
  nddr::Tensor<float> x, w, b, y, dx, dw, db;  // y doubles as dy
  std::int64_t c_out = 0, k = 0, p = 0;
};

void set_counters(benchmark::State& state, const Layer& l, double gflop) {
  state.counters["GFLOP/s"] = benchmark::Counter(gflop * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
  state.SetLabel(l.name);
}

void BM_conv2d_forward(benchmark::State& state) {
  const Layer& l = kLayers[state.range(0)];
  Problem pr(l);
  nddr::Context<nddr::Cpu> ctx(static_cast<int>(state.range(1)));
  for (auto _ : state) {
    nddr::ops::conv2d_forward<float>(ctx, pr.x, pr.w, pr.b, pr.y.view(), pr.opt);
    benchmark::DoNotOptimize(pr.y.data());
  }
  set_counters(state, l, pr.gflop());
}

void BM_gemm_forward(benchmark::State& state) {
  const Layer& l = kLayers[state.range(0)];
  Problem pr(l);
  const Matrix a = Matrix::Random(pr.c_out, pr.k), bm = Matrix::Random(pr.k, pr.p);
  omp_set_num_threads(static_cast<int>(state.range(1)));  // Eigen's team size
  Matrix c(pr.c_out, pr.p);
  for (auto _ : state) {
    c.noalias() = a * bm;
    benchmark::DoNotOptimize(c.data());
  }
  set_counters(state, l, pr.gflop());
}

void BM_conv2d_backward_data(benchmark::State& state) {
  const Layer& l = kLayers[state.range(0)];
  Problem pr(l);
  nddr::Context<nddr::Cpu> ctx(static_cast<int>(state.range(1)));
  for (auto _ : state) {
    nddr::ops::conv2d_backward_data<float>(ctx, pr.w, pr.y, pr.dx.view(), pr.opt);
    benchmark::DoNotOptimize(pr.dx.data());
  }
  set_counters(state, l, pr.gflop());
}

void BM_gemm_backward_data(benchmark::State& state) {
  const Layer& l = kLayers[state.range(0)];
  Problem pr(l);
  const Matrix a = Matrix::Random(pr.c_out, pr.k), bm = Matrix::Random(pr.c_out, pr.p);
  omp_set_num_threads(static_cast<int>(state.range(1)));  // Eigen's team size
  Matrix c(pr.k, pr.p);
  for (auto _ : state) {
    c.noalias() = a.transpose() * bm;
    benchmark::DoNotOptimize(c.data());
  }
  set_counters(state, l, pr.gflop());
}

void BM_conv2d_backward_weights(benchmark::State& state) {
  const Layer& l = kLayers[state.range(0)];
  Problem pr(l);
  nddr::Context<nddr::Cpu> ctx(static_cast<int>(state.range(1)));
  for (auto _ : state) {
    nddr::ops::conv2d_backward_weights<float>(ctx, pr.x, pr.y, pr.dw.view(), pr.db.view(), pr.opt);
    benchmark::DoNotOptimize(pr.dw.data());
  }
  set_counters(state, l, pr.gflop());
}

void BM_gemm_backward_weights(benchmark::State& state) {
  const Layer& l = kLayers[state.range(0)];
  Problem pr(l);
  const Matrix a = Matrix::Random(pr.c_out, pr.p), bm = Matrix::Random(pr.k, pr.p);
  omp_set_num_threads(static_cast<int>(state.range(1)));  // Eigen's team size
  Matrix c(pr.c_out, pr.k);
  for (auto _ : state) {
    c.noalias() = a * bm.transpose();
    benchmark::DoNotOptimize(c.data());
  }
  set_counters(state, l, pr.gflop());
}

constexpr std::int64_t kLayerCount = static_cast<std::int64_t>(std::size(kLayers));

}  // namespace

// Wall-clock time: the work runs on several threads, the main thread's CPU time undercounts it.
// Arguments: layer index, threads (1, and 2 = the machine's cores when this was written).
#define NDDR_CONV2D_BENCH(fn)                                                     \
  BENCHMARK(fn)                                                                   \
      ->ArgsProduct({benchmark::CreateDenseRange(0, kLayerCount - 1, 1), {1, 2}}) \
      ->ArgNames({"layer", "threads"})                                            \
      ->UseRealTime()                                                             \
      ->Unit(benchmark::kMillisecond)

NDDR_CONV2D_BENCH(BM_conv2d_forward);
NDDR_CONV2D_BENCH(BM_gemm_forward);
NDDR_CONV2D_BENCH(BM_conv2d_backward_data);
NDDR_CONV2D_BENCH(BM_gemm_backward_data);
NDDR_CONV2D_BENCH(BM_conv2d_backward_weights);
NDDR_CONV2D_BENCH(BM_gemm_backward_weights);

BENCHMARK_MAIN();
