// The CUDA emulator's own tests: the device side (barriers, warp shuffles, 2-d grids), the
// checks that make GPU bugs visible on a CPU (uninitialised memory, host pointers, bad copies,
// divergent barriers, bad launch configurations, graph-capture rules) and TF32 rounding. The
// CUDA tests (tests/cuda) then run against it in nddr_cuda_emulated_tests.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "nddr/backend/cuda/cublas_api.hpp"
#include "nddr/backend/cuda/kernels/launch.cuh"  // NDDR_LAUNCH, with include/cuda_runtime.h
#include "runtime.hpp"

namespace {

/// Sum of x[0..n) per block: a warp-shuffle reduction, then a shared-memory one across warps
/// (the shape of nddr's block reductions); out[block] = the block's partial sum.
__global__ void block_sum(const double* x, double* out, std::int64_t n) {
  __shared__ double warp_sums[32];
  const unsigned threads = blockDim.x * blockDim.y;
  const unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
  double v = 0.0;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * threads + t; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * threads)
    v += x[i];
  for (unsigned o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  if (t % 32 == 0) warp_sums[t / 32] = v;
  __syncthreads();
  if (t == 0) {
    double s = 0.0;
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) s += warp_sums[w];
    out[blockIdx.x] = s;
  }
}

/// out[t] = the value lane t receives from __shfl_down_sync(t, delta, width).
__global__ void shuffle_lanes(int* out, unsigned delta, int width) {
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, static_cast<int>(threadIdx.x), delta, width);
}

/// Thread 0 leaves before the barrier the others wait at: undefined on a GPU (a hang or worse).
__global__ void divergent_barrier(int* out) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void fill(float* out, std::int64_t n, float v) {
  for (std::int64_t i = nddr::cuda::kernels::first_index(); i < n;
       i += nddr::cuda::kernels::grid_stride())
    out[i] = v;
}

}  // namespace

namespace {

template <class T>
T* device_alloc(std::size_t n) {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  return static_cast<T*>(p);
}

}  // namespace

TEST_CASE("CUDA emulator: block reductions with shuffles and barriers", "[emulator]") {
  const std::int64_t n = 5000;
  std::vector<double> host(n);
  std::iota(host.begin(), host.end(), 1.0);
  double* x = device_alloc<double>(n);
  double* out = device_alloc<double>(64);
  REQUIRE(cudaMemcpy(x, host.data(), n * sizeof(double), cudaMemcpyHostToDevice) == cudaSuccess);
  for (const dim3 block : {dim3(32), dim3(256), dim3(1024), dim3(16, 8), dim3(96)}) {
    for (const unsigned grid : {1u, 7u}) {
      NDDR_LAUNCH(grid, block, 0, nullptr, block_sum)(x, out, n);
      REQUIRE(cudaGetLastError() == cudaSuccess);
      std::vector<double> partial(grid);
      REQUIRE(cudaMemcpy(partial.data(), out, grid * sizeof(double), cudaMemcpyDeviceToHost) ==
              cudaSuccess);
      INFO("block (" << block.x << ", " << block.y << "), grid " << grid);
      CHECK(std::accumulate(partial.begin(), partial.end(), 0.0) == n * (n + 1) / 2.0);
    }
  }
  cudaFree(x);
  cudaFree(out);
}

TEST_CASE("CUDA emulator: __shfl_down_sync keeps a lane's own value past the width",
          "[emulator]") {
  int* out = device_alloc<int>(64);
  std::vector<int> lanes(64);
  NDDR_LAUNCH(1, 64, 0, nullptr, shuffle_lanes)(out, 3u, 32);
  REQUIRE(cudaMemcpy(lanes.data(), out, 64 * sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess);
  for (int t = 0; t < 64; ++t) CHECK(lanes[t] == (t % 32 + 3 < 32 ? t + 3 : t));
  NDDR_LAUNCH(1, 32, 0, nullptr, shuffle_lanes)(out, 4u, 8);
  REQUIRE(cudaMemcpy(lanes.data(), out, 32 * sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess);
  for (int t = 0; t < 32; ++t) CHECK(lanes[t] == (t % 8 + 4 < 8 ? t + 4 : t));
  cudaFree(out);
}

TEST_CASE("CUDA emulator: memory nobody wrote reads as NaN", "[emulator]") {
  float* p = device_alloc<float>(8);
  std::vector<float> host(8, 0.0f);
  REQUIRE(cudaMemcpy(host.data(), p, 8 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  for (float v : host) CHECK(std::isnan(v));
  cudaFree(p);
}

TEST_CASE("CUDA emulator: GPU mistakes are errors, not lucky passes", "[emulator]") {
  REQUIRE(cudaGetLastError() == cudaSuccess);
  float* d = device_alloc<float>(16);
  std::vector<float> host(16);
  SECTION("a host pointer handed to a kernel") {
    NDDR_LAUNCH(1, 32, 0, nullptr, fill)(host.data(), 16, 1.0f);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(host[0] == 0.0f);  // not run: a GPU would have faulted
  }
  SECTION("a copy whose kind does not match its pointers, or that runs past an allocation") {
    CHECK(cudaMemcpy(d, host.data(), 64, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(host.data(), d, 64, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(host.data(), d, 68, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(host.data(), d, 64, cudaMemcpyDeviceToHost) == cudaSuccess);
    cudaGetLastError();
  }
  SECTION("a barrier that not every thread reaches") {
    int* out = device_alloc<int>(64);
    NDDR_LAUNCH(1, 64, 0, nullptr, divergent_barrier)(out);
    CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
    cudaFree(out);
  }
  SECTION("a launch configuration a GPU refuses") {
    NDDR_LAUNCH(1, 2048, 0, nullptr, fill)(d, 16, 1.0f);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    NDDR_LAUNCH(0, 32, 0, nullptr, fill)(d, 16, 1.0f);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  }
  cudaFree(d);
}

TEST_CASE("CUDA emulator: captured work runs at graph launch, unsafe calls break the capture",
          "[emulator]") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  float* d = device_alloc<float>(4);
  float* pinned = nullptr;
  REQUIRE(cudaHostAlloc(reinterpret_cast<void**>(&pinned), 4 * sizeof(float), 0) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(d, 0, 4 * sizeof(float), s) == cudaSuccess);

  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  NDDR_LAUNCH(1, 32, 0, s, fill)(d, 4, 2.5f);
  REQUIRE(cudaMemcpyAsync(pinned + 1, d, 3 * sizeof(float), cudaMemcpyDeviceToHost, s) ==
          cudaSuccess);  // pinned memory, inside the allocation: capturable
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
  float now = -1.0f;
  REQUIRE(cudaMemcpy(&now, d, sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(now == 0.0f);  // recorded, not run
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(pinned[1] == 2.5f);
  CHECK(pinned[3] == 2.5f);

  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  void* more = nullptr;
  CHECK(cudaMalloc(&more, 16) == cudaErrorStreamCaptureUnsupported);
  std::vector<float> pageable(4);
  CHECK(cudaMemcpyAsync(pageable.data(), d, 16, cudaMemcpyDeviceToHost, s) ==
        cudaErrorStreamCaptureUnsupported);
  cudaGraph_t broken = nullptr;
  CHECK(cudaStreamEndCapture(s, &broken) == cudaErrorStreamCaptureInvalidated);
  CHECK(broken == nullptr);
  cudaGetLastError();

  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFreeHost(pinned);
  cudaFree(d);
  cudaStreamDestroy(s);
}

TEST_CASE("CUDA emulator: TF32 rounding keeps 10 mantissa bits, nearest with ties away",
          "[emulator]") {
  CHECK(nddr_emu::round_tf32(1.0f) == 1.0f);
  CHECK(nddr_emu::round_tf32(1.0f + 0x1p-11f) == 1.0f + 0x1p-10f);  // a tie rounds away
  CHECK(nddr_emu::round_tf32(1.0f + 0x1p-12f) == 1.0f);
  CHECK(nddr_emu::round_tf32(-(1.0f + 0x1p-11f)) == -(1.0f + 0x1p-10f));
  CHECK(std::isinf(nddr_emu::round_tf32(INFINITY)));
  CHECK(std::isnan(nddr_emu::round_tf32(NAN)));
}

TEST_CASE("CUDA emulator: nddr's cuBLAS table holds the emulator's functions, not libcublas's",
          "[emulator]") {
  // nddr_cuda_emulation's link option --undefined=cublasCreate_v2 pulls cublas.cpp's object in
  // (weak references alone would not), so cublas_api() finds it linked and never dlopens.
  const nddr::cuda::CublasApi& api = nddr::cuda::cublas_api();
  struct Entry {
    const char* symbol;
    void *api, *emulator;
  };
  const Entry entries[] = {
#define NDDR_TEST_EMULATED_ENTRY(symbol) \
  {#symbol, reinterpret_cast<void*>(api.symbol), reinterpret_cast<void*>(&::symbol)},
      NDDR_CUBLAS_FUNCTIONS(NDDR_TEST_EMULATED_ENTRY)
#undef NDDR_TEST_EMULATED_ENTRY
  };
  for (const Entry& e : entries) {
    INFO(e.symbol);
    CHECK(e.emulator != nullptr);
    CHECK(e.api == e.emulator);
  }
}
