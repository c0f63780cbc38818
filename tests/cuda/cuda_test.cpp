// CUDA backend plumbing: checked calls, context, device memory, copies, the first kernels
// (ReLU, parity with the CPU op) and the cuDNN/cuBLAS handles. Test cases that need a GPU
// print "no CUDA device: skipped" and pass when none is usable, so CI runs this file too.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <dlfcn.h>
#include <nddr/cuda.hpp>
#include <nddr/nddr.hpp>
#include <random>
#include <string>
#include <vector>

#include "no_device.hpp"

namespace {

using nddr_test::no_device;

/// Uniform values in [-1, 1] with exact zeros sprinkled in (ReLU's kink).
template <class T>
nddr::Tensor<T> random_tensor(nddr::Shape s, std::uint32_t seed) {
  nddr::Tensor<T> t(s);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<T> dist(T(-1), T(1));
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = i % 7 == 3 ? T(0) : dist(gen);
  return t;
}

template <class T>
bool equal(const nddr::Tensor<T>& a, const nddr::Tensor<T>& b) {
  if (!(a.shape() == b.shape())) return false;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

cudaError_t fake_cuda_malloc() { return cudaErrorMemoryAllocation; }
cudnnStatus_t fake_cudnn_call() { return CUDNN_STATUS_BAD_PARAM; }
cublasStatus_t fake_cublas_call() { return CUBLAS_STATUS_INVALID_VALUE; }

}  // namespace

using Catch::Contains;

// ---- always run: no device needed ---------------------------------------------------------

TEST_CASE("CUDA checked calls turn failures into DeviceError naming the call", "[cuda][error]") {
  CHECK_THROWS_AS(NDDR_CUDA_CHECK(fake_cuda_malloc(), "allocating ", 64, " bytes"),
                  nddr::DeviceError);
  CHECK_THROWS_WITH(NDDR_CUDA_CHECK(fake_cuda_malloc(), "allocating ", 64, " bytes"),
                    Contains("fake_cuda_malloc()") && Contains("cudaErrorMemoryAllocation") &&
                        Contains("allocating 64 bytes") && Contains("CUDA runtime") &&
                        Contains("cuda_test.cpp"));
  CHECK_THROWS_WITH(NDDR_CUDA_CHECK(fake_cudnn_call(), "describing a tensor"),
                    Contains("fake_cudnn_call()") && Contains("CUDNN_STATUS_BAD_PARAM") &&
                        Contains("cuDNN") && Contains("describing a tensor"));
  CHECK_THROWS_WITH(NDDR_CUDA_CHECK(fake_cublas_call(), "multiplying"),
                    Contains("fake_cublas_call()") && Contains("CUBLAS_STATUS_INVALID_VALUE") &&
                        Contains("cuBLAS") && Contains("multiplying"));
  CHECK_THROWS_WITH(
      nddr::cuda::check_status(cudaErrorInvalidValue, "cudaMemcpy(a, b)", "copying"),
      Contains("cudaMemcpy(a, b)") && Contains("cudaErrorInvalidValue") && Contains("copying"));

  // Success throws nothing, and the message arguments are not even evaluated.
  int evaluated = 0;
  auto count = [&] { return ++evaluated; };
  CHECK_NOTHROW(NDDR_CUDA_CHECK(cudaSuccess, "never ", count()));
  CHECK_NOTHROW(NDDR_CUDA_CHECK(CUDNN_STATUS_SUCCESS, "never ", count()));
  CHECK_NOTHROW(NDDR_CUDA_CHECK(CUBLAS_STATUS_SUCCESS, "never ", count()));
  CHECK(evaluated == 0);
}

TEST_CASE("cuBLAS loader resolves every function from the process or from libcublas",
          "[cuda][cublas]") {
  // The process's table (loaded here if no context did it yet): every entry is the function
  // linked into the program (the emulator's, in the emulated tests) or else libcublas's, which
  // is then loaded. `real`: the dlopen path even where the program links the emulator, on the
  // real library (CMake's CUDA::cublas).
  const nddr::cuda::CublasApi& api = nddr::cuda::cublas_api();
  const nddr::cuda::CublasApi linked = nddr::cuda::detail::linked_cublas();
  const nddr::cuda::CublasApi real =
      nddr::cuda::detail::load_cublas(NDDR_TEST_CUBLAS_LIBRARY, /*use_linked=*/false);
  void* lib = linked.cublasCreate_v2 ? nullptr
                                     : dlopen(nddr::cuda::kCublasSoname, RTLD_NOW | RTLD_NOLOAD);
  CHECK((linked.cublasCreate_v2 != nullptr || lib != nullptr));
  struct Entry {
    const char* symbol;
    void *api, *expected, *real;
  };
  std::vector<Entry> entries;
#define NDDR_TEST_CUBLAS_ENTRY(symbol)                                                 \
  entries.push_back({#symbol, reinterpret_cast<void*>(api.symbol),                     \
                     lib ? dlsym(lib, #symbol) : reinterpret_cast<void*>(linked.symbol), \
                     reinterpret_cast<void*>(real.symbol)});
  NDDR_CUBLAS_FUNCTIONS(NDDR_TEST_CUBLAS_ENTRY)
#undef NDDR_TEST_CUBLAS_ENTRY
  if (lib) dlclose(lib);  // drops only the reference RTLD_NOLOAD took
  CHECK(entries.size() >= 9);  // the functions nddr called when this test was written
  for (const Entry& e : entries) {
    INFO(e.symbol);
    CHECK(e.api != nullptr);
    CHECK(e.api == e.expected);
    CHECK(e.real != nullptr);
  }
  CHECK(std::strcmp(nddr::cuda::kCublasSoname,
                    "libcublas.so." NDDR_CUBLAS_STRINGIFY(CUBLAS_VER_MAJOR)) == 0);
  // Those that need no GPU answer.
  CHECK(std::string(real.cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE)) ==
        "CUBLAS_STATUS_INVALID_VALUE");
  CHECK(std::string(real.cublasGetStatusString(CUBLAS_STATUS_SUCCESS)).size() > 0);
}

TEST_CASE("cuBLAS that cannot be loaded is a DeviceError naming the library and the reason",
          "[cuda][cublas]") {
  using nddr::cuda::detail::load_cublas;
  const char* missing = "libnddr-test-no-such-cublas.so.13";
  CHECK_THROWS_AS(load_cublas(missing, /*use_linked=*/false), nddr::DeviceError);
  CHECK_THROWS_WITH(load_cublas(missing, false),
                    Contains("cannot load cuBLAS (libnddr-test-no-such-cublas.so.13)") &&
                        Contains("cannot open shared object file") &&
                        Contains("LD_LIBRARY_PATH"));
  // A library that loads but is not cuBLAS: the first missing function is named.
  CHECK_THROWS_WITH(load_cublas("libc.so.6", false),
                    Contains("cuBLAS library libc.so.6 has no function cublasCreate_v2") &&
                        Contains("undefined symbol: cublasCreate_v2"));
}

TEST_CASE("CUDA device count never throws and a bad device index is a DeviceError",
          "[cuda][context]") {
  int count = -1;
  REQUIRE_NOTHROW(count = nddr::cuda_device_count());
  CHECK(count >= 0);
  CHECK(nddr::cuda_available() == (count > 0));
  // Both out-of-range indices fail even without a driver, naming the index and the count.
  CHECK_THROWS_AS(nddr::Context<nddr::Cuda>(count + 3), nddr::DeviceError);
  CHECK_THROWS_WITH(nddr::Context<nddr::Cuda>(count + 3),
                    Contains("device index " + std::to_string(count + 3)) &&
                        Contains(std::to_string(count) + " CUDA device(s)"));
  CHECK_THROWS_WITH(nddr::Context<nddr::Cuda>(-1), Contains("device index -1"));
}

TEST_CASE("CUDA memory pool size classes", "[cuda][storage]") {
  using Pool = nddr::cuda::MemoryPool;
  STATIC_REQUIRE(Pool::round_size(1) == 512);
  STATIC_REQUIRE(Pool::round_size(512) == 512);
  STATIC_REQUIRE(Pool::round_size(513) == 1024);
  STATIC_REQUIRE(Pool::round_size((1u << 20) - 1) == (1u << 20));
  STATIC_REQUIRE(Pool::round_size((1u << 20) + 1) == (2u << 20));
  STATIC_REQUIRE(nddr::kDeviceAvailable<nddr::Cuda>);
}

// ---- need a device --------------------------------------------------------------------------

TEST_CASE("CUDA context: stream, handles, workspace", "[cuda][context][device]") {
  if (no_device()) return;
  nddr::Context<nddr::Cuda> ctx(0);
  CHECK(ctx.device() == 0);
  CHECK(ctx.stream() != nullptr);
  CHECK(ctx.cudnn() != nullptr);
  CHECK(ctx.cublas() != nullptr);

  cudaStream_t cudnn_stream = nullptr;
  REQUIRE(cudnnGetStream(ctx.cudnn(), &cudnn_stream) == CUDNN_STATUS_SUCCESS);
  CHECK(cudnn_stream == ctx.stream());
  cudaStream_t cublas_stream = nullptr;
  REQUIRE(nddr::cuda::cublas_api().cublasGetStream_v2(ctx.cublas(), &cublas_stream) ==
          CUBLAS_STATUS_SUCCESS);
  CHECK(cublas_stream == ctx.stream());

  float* small = ctx.workspace<float>(10);
  CHECK(small != nullptr);
  CHECK(ctx.workspace_size() >= 10 * sizeof(float));
  CHECK(ctx.workspace<float>(5) == small);  // never shrinks
  double* big = ctx.workspace<double>(1 << 20);
  CHECK(big != nullptr);
  CHECK(ctx.workspace_size() >= (std::size_t{1} << 20) * sizeof(double));
  REQUIRE_NOTHROW(ctx.synchronize());

  // A second context has its own stream.
  nddr::Context<nddr::Cuda> other;
  CHECK(other.stream() != ctx.stream());
}

TEST_CASE("CUDA tensors: allocate, zero, copy round trip", "[cuda][storage][device]") {
  if (no_device()) return;
  nddr::Context<nddr::Cuda> ctx;
  const auto shape = nddr::Shape::nchw(2, 3, 5, 7);
  const nddr::Tensor<float> host = random_tensor<float>(shape, 1);

  nddr::Tensor<float, nddr::Cuda> dev = nddr::to_device(ctx, host);
  CHECK(dev.shape() == shape);
  CHECK(equal(nddr::to_host(ctx, dev), host));

  // Device-to-device through the Tensor copy constructor (Storage<Cuda>::copy) and copy().
  nddr::Tensor<float, nddr::Cuda> dup(dev);
  CHECK(equal(nddr::to_host(ctx, dup), host));
  nddr::Tensor<float, nddr::Cuda> dst(shape);
  nddr::copy(ctx, dev, dst);
  CHECK(equal(nddr::to_host(ctx, dst), host));

  // A fresh device tensor is zero, and zero() clears a filled one.
  nddr::Tensor<double, nddr::Cuda> fresh(nddr::Shape{4, 9});
  CHECK(equal(nddr::to_host(ctx, fresh), nddr::Tensor<double>(nddr::Shape{4, 9})));
  dev.zero();
  CHECK(equal(nddr::to_host(ctx, dev), nddr::Tensor<float>(shape)));

  // Host-to-host through copy() works too; shapes are checked in every direction.
  nddr::Tensor<float> host2(shape);
  nddr::copy(ctx, host, host2);
  CHECK(equal(host2, host));
  nddr::Tensor<float> wrong(nddr::Shape::nchw(2, 3, 5, 6));
  CHECK_THROWS_AS(nddr::copy(ctx, dup, wrong), nddr::ShapeError);
  CHECK_THROWS_WITH(nddr::copy(ctx, dup, wrong),
                    Contains("nddr::copy") && Contains("(2, 3, 5, 6)") && Contains("(2, 3, 5, 7)"));

  // Freed blocks are cached and served again.
  auto& pool = nddr::cuda::MemoryPool::instance();
  const std::size_t before = pool.allocated_bytes();
  { nddr::Tensor<float, nddr::Cuda> tmp(nddr::Shape{1000}); }
  const std::size_t cached = pool.cached_bytes();
  CHECK(cached >= 4000);
  { nddr::Tensor<float, nddr::Cuda> again(nddr::Shape{1000}); }
  CHECK(pool.allocated_bytes() <= before + nddr::cuda::MemoryPool::round_size(4000));
  pool.release_cached();
  CHECK(pool.cached_bytes() == 0);
  CHECK(equal(nddr::to_host(ctx, dup), host));  // live tensors are untouched
}

TEMPLATE_TEST_CASE("CUDA ReLU matches the CPU op", "[cuda][relu][device]", float, double) {
  using T = TestType;
  if (no_device()) return;
  nddr::Context<nddr::Cuda> gpu;
  nddr::Context<nddr::Cpu> cpu(2);
  const auto shape = nddr::Shape::nchw(3, 4, 17, 19);
  const nddr::Tensor<T> x = random_tensor<T>(shape, 2);
  const nddr::Tensor<T> dy = random_tensor<T>(shape, 3);
  const nddr::Tensor<T> dx0 = random_tensor<T>(shape, 4);

  nddr::Tensor<T> y_cpu(shape);
  nddr::ops::relu_forward(cpu, x.cview(), y_cpu.view());
  const auto x_dev = nddr::to_device(gpu, x);
  nddr::Tensor<T, nddr::Cuda> y_dev(shape);
  nddr::ops::relu_forward(gpu, x_dev.cview(), y_dev.view());
  CHECK(equal(nddr::to_host(gpu, y_dev), y_cpu));

  // Backward accumulates into a non-zero dx on both devices.
  nddr::Tensor<T> dx_cpu = dx0;
  nddr::ops::relu_backward(cpu, x.cview(), dy.cview(), dx_cpu.view());
  const auto dy_dev = nddr::to_device(gpu, dy);
  auto dx_dev = nddr::to_device(gpu, dx0);
  nddr::ops::relu_backward(gpu, x_dev.cview(), dy_dev.cview(), dx_dev.view());
  const nddr::Tensor<T> dx_gpu = nddr::to_host(gpu, dx_dev);
  CHECK(equal(dx_gpu, dx_cpu));
  CHECK_FALSE(equal(dx_gpu, dx0));

  // An empty dx is skipped; mismatched shapes are rejected with both shapes named.
  REQUIRE_NOTHROW(nddr::ops::relu_backward(gpu, x_dev.cview(), dy_dev.cview(),
                                           nddr::TensorView<T, nddr::Cuda>{}));
  nddr::Tensor<T, nddr::Cuda> bad(nddr::Shape::nchw(3, 4, 17, 18));
  CHECK_THROWS_WITH(
      nddr::ops::relu_forward(gpu, x_dev.cview(), bad.view()),
      Contains("relu_forward") && Contains("(3, 4, 17, 18)") && Contains("(3, 4, 17, 19)"));
  CHECK_THROWS_AS(nddr::ops::relu_backward(gpu, x_dev.cview(), dy_dev.cview(), bad.view()),
                  nddr::ShapeError);

  // The ReLU layer runs unchanged on the GPU.
  nddr::ReLU<T, nddr::Cuda> layer;
  nddr::Tensor<T, nddr::Cuda> y_layer(shape);
  layer.forward(gpu, x_dev.cview(), y_layer.view());
  CHECK(equal(nddr::to_host(gpu, y_layer), y_cpu));
  REQUIRE_NOTHROW(gpu.synchronize());
}

TEST_CASE("CUDA ReLU covers tensors larger than one grid (grid-stride loop)",
          "[cuda][relu][device]") {
  if (no_device()) return;
  nddr::Context<nddr::Cuda> gpu;
  nddr::Context<nddr::Cpu> cpu;
  // More elements than kMaxBlocks * kBlock threads, so every thread loops.
  const auto shape = nddr::Shape{2, 8'400'000};
  const nddr::Tensor<float> x = random_tensor<float>(shape, 5);
  nddr::Tensor<float> y_cpu(shape);
  nddr::ops::relu_forward(cpu, x.cview(), y_cpu.view());
  const auto x_dev = nddr::to_device(gpu, x);
  nddr::Tensor<float, nddr::Cuda> y_dev(shape);
  nddr::ops::relu_forward(gpu, x_dev.cview(), y_dev.view());
  CHECK(equal(nddr::to_host(gpu, y_dev), y_cpu));
}

TEST_CASE("cuBLAS handle: small SGEMM matches a CPU loop", "[cuda][cublas][device]") {
  if (no_device()) return;
  nddr::Context<nddr::Cuda> ctx;
  // Row-major C (M x N) = A (M x K) * B (K x N), computed by cuBLAS (column-major) as
  // C^T = B^T * A^T, which needs no transposition flags.
  const int m = 5, n = 7, k = 3;
  const nddr::Tensor<float> a = random_tensor<float>(nddr::Shape{m, k}, 6);
  const nddr::Tensor<float> b = random_tensor<float>(nddr::Shape{k, n}, 7);
  nddr::Tensor<float> c_ref(nddr::Shape{m, n});
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int l = 0; l < k; ++l) s += double(a[i * k + l]) * double(b[l * n + j]);
      c_ref[i * n + j] = float(s);
    }
  const auto a_dev = nddr::to_device(ctx, a);
  const auto b_dev = nddr::to_device(ctx, b);
  nddr::Tensor<float, nddr::Cuda> c_dev(nddr::Shape{m, n});
  const float alpha = 1.f, beta = 0.f;
  NDDR_CUDA_CHECK(nddr::cuda::cublas_api().cublasSgemm_v2(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n,
                                                          m, k, &alpha, b_dev.data(), n,
                                                          a_dev.data(), k, &beta, c_dev.data(), n),
                  "testing SGEMM");
  const nddr::Tensor<float> c = nddr::to_host(ctx, c_dev);
  for (std::int64_t i = 0; i < c.numel(); ++i)
    CHECK(c[i] == Approx(c_ref[i]).epsilon(1e-5).margin(1e-6));
}

TEST_CASE("cuDNN handle and descriptors: broadcast bias add matches the CPU",
          "[cuda][cudnn][device]") {
  if (no_device()) return;
  nddr::Context<nddr::Cuda> ctx;
  CHECK(cudnnGetVersion() >= 90000);
  const auto shape = nddr::Shape::nchw(2, 3, 4, 5);
  const nddr::Tensor<double> x = random_tensor<double>(shape, 8);
  const nddr::Tensor<double> bias = random_tensor<double>(nddr::Shape{1, 3}, 9);

  const auto x_desc = nddr::cuda::TensorDescriptor::nchw<double>(shape);
  const auto b_desc = nddr::cuda::TensorDescriptor::nchw<double>(bias.shape());
  cudnnDataType_t type{};
  int dims[4] = {}, strides[4] = {};
  REQUIRE(cudnnGetTensor4dDescriptor(b_desc, &type, &dims[0], &dims[1], &dims[2], &dims[3],
                                     &strides[0], &strides[1], &strides[2],
                                     &strides[3]) == CUDNN_STATUS_SUCCESS);
  CHECK(type == CUDNN_DATA_DOUBLE);
  CHECK((dims[0] == 1 && dims[1] == 3 && dims[2] == 1 && dims[3] == 1));

  auto x_dev = nddr::to_device(ctx, x);
  const auto b_dev = nddr::to_device(ctx, bias);
  const double one = 1.0;
  NDDR_CUDA_CHECK(
      cudnnAddTensor(ctx.cudnn(), &one, b_desc, b_dev.data(), &one, x_desc, x_dev.data()),
      "testing cudnnAddTensor");
  const nddr::Tensor<double> out = nddr::to_host(ctx, x_dev);
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 4; ++h)
        for (int w = 0; w < 5; ++w)
          CHECK(out(n, c, h, w) == Approx(x(n, c, h, w) + bias[c]).epsilon(1e-12).margin(1e-14));

  // A rank-0 tensor has no descriptor; a real cuDNN failure comes back as a DeviceError.
  CHECK_THROWS_AS(nddr::cuda::TensorDescriptor::nchw<float>(nddr::Shape{}), nddr::ShapeError);
  auto desc = nddr::cuda::TensorDescriptor::create();
  CHECK_THROWS_WITH(NDDR_CUDA_CHECK(cudnnSetTensor4dDescriptor(desc, CUDNN_TENSOR_NCHW,
                                                               CUDNN_DATA_FLOAT, 0, -1, 0, 0),
                                    "describing a bad tensor"),
                    Contains("cudnnSetTensor4dDescriptor") && Contains("CUDNN_STATUS_BAD_PARAM"));
  auto filter = nddr::cuda::FilterDescriptor::create();
  auto conv = nddr::cuda::ConvolutionDescriptor::create();
  CHECK(filter);
  CHECK(conv);
  auto moved = std::move(filter);
  CHECK(moved);
  CHECK_FALSE(filter);
}
