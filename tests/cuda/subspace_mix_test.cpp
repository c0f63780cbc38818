// CPU/CUDA parity of the subspace mixing behind the cross-stitch (S = 1) and sluice (S = 2)
// layers: forward (assigned), dA (assigned, deterministic) and dx (accumulated onto pre-filled
// values, empty dx skipped) for K = 2, 3 tasks, odd sizes, float and double; then one training
// step of whole cross-stitch and sluice TinyNet networks on both devices. Cases that need a
// device print "no CUDA device: skipped" without one.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <nddr/cuda.hpp>
#include <nddr/nddr.hpp>
#include <random>
#include <span>
#include <type_traits>
#include <vector>

#include "network_check.hpp"

#include "no_device.hpp"

namespace {

using nddr::Cpu;
using nddr::Cuda;
using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;
using nddr::detail::SubspaceLayout;

using nddr_test::no_device;

template <class T>
Tensor<T> random_tensor(Shape s, std::uint32_t seed) {
  Tensor<T> t(s);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<T> dist(T(-1), T(1));
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = dist(gen);
  return t;
}

/// Relative tolerance of CPU/GPU parity: the GPU contracts a * b + c into an FMA.
template <class T>
constexpr double kTol = std::is_same_v<T, float> ? 2e-5 : 1e-12;

/// |gpu - cpu| <= tol * max(1, max |cpu|) everywhere.
template <class T>
void check_close(const Tensor<T>& gpu, const Tensor<T>& cpu) {
  REQUIRE(gpu.shape() == cpu.shape());
  double scale = 1.0;
  for (std::int64_t i = 0; i < cpu.numel(); ++i) scale = std::max(scale, std::abs(double(cpu[i])));
  std::int64_t bad = 0, first = -1;
  for (std::int64_t i = 0; i < cpu.numel(); ++i)
    if (!(std::abs(double(gpu[i]) - double(cpu[i])) <= kTol<T> * scale)) {
      if (first < 0) first = i;
      ++bad;
    }
  INFO("first mismatch at " << first << ": gpu " << (first >= 0 ? double(gpu[first]) : 0.0)
                            << " cpu " << (first >= 0 ? double(cpu[first]) : 0.0));
  CHECK(bad == 0);
}

/// K task tensors of one shape on both devices, the GPU ones copies of the CPU ones.
template <class T>
struct TaskTensors {
  std::vector<Tensor<T>> cpu;
  std::vector<Tensor<T, Cuda>> gpu;

  TaskTensors(nddr::Context<Cuda>& ctx, std::size_t tasks, Shape s, std::uint32_t seed) {
    for (std::size_t k = 0; k < tasks; ++k) {
      cpu.push_back(random_tensor<T>(s, seed + static_cast<std::uint32_t>(k)));
      gpu.push_back(nddr::to_device(ctx, cpu.back()));
    }
  }

  std::vector<TensorView<const T>> cpu_in() const { return {cpu.begin(), cpu.end()}; }
  std::vector<TensorView<const T, Cuda>> gpu_in() const { return {gpu.begin(), gpu.end()}; }
  /// Writable views; task `skip` (if < K) gets an empty view.
  std::vector<TensorView<T>> cpu_out(std::size_t skip = SIZE_MAX) {
    std::vector<TensorView<T>> v;
    for (std::size_t k = 0; k < cpu.size(); ++k)
      v.push_back(k == skip ? TensorView<T>{} : cpu[k].view());
    return v;
  }
  std::vector<TensorView<T, Cuda>> gpu_out(std::size_t skip = SIZE_MAX) {
    std::vector<TensorView<T, Cuda>> v;
    for (std::size_t k = 0; k < gpu.size(); ++k)
      v.push_back(k == skip ? TensorView<T, Cuda>{} : gpu[k].view());
    return v;
  }
};

template <class T, class D>
std::span<const TensorView<const T, D>> in_span(const std::vector<TensorView<const T, D>>& v) {
  return {v.data(), v.size()};
}
template <class T, class D>
std::span<const TensorView<T, D>> out_span(const std::vector<TensorView<T, D>>& v) {
  return {v.data(), v.size()};
}

/// Forward and backward of K tasks of shape `s` split into S subspaces on both devices.
/// `skip` names a task whose dx is empty (SIZE_MAX: none).
template <class T>
void check_mix(std::size_t tasks, std::int64_t subspaces, Shape s, std::size_t skip = SIZE_MAX) {
  INFO("K = " << tasks << ", S = " << subspaces << ", shape " << s.str()
              << (skip < tasks ? ", one dx empty" : ""));
  nddr::Context<Cuda> gpu;
  nddr::Context<Cpu> cpu(2);
  const SubspaceLayout l(s, tasks, subspaces);
  const std::int64_t P = l.count;
  const Tensor<T> a = random_tensor<T>(Shape{P, P}, 7);
  const Tensor<T, Cuda> a_gpu = nddr::to_device(gpu, a);

  TaskTensors<T> xs(gpu, tasks, s, 100);
  // Outputs start from garbage that differs between devices: forward must assign.
  TaskTensors<T> ys(gpu, tasks, s, 200);
  for (auto& y : ys.cpu)
    for (std::int64_t i = 0; i < y.numel(); ++i) y[i] = T(1e3);
  nddr::ops::subspace_mix_forward<T>(cpu, l, in_span(xs.cpu_in()), a.data(),
                                        out_span(ys.cpu_out()));
  nddr::ops::subspace_mix_forward<T>(gpu, l, in_span(xs.gpu_in()), a_gpu.data(),
                                        out_span(ys.gpu_out()));
  for (std::size_t k = 0; k < tasks; ++k) {
    INFO("y of task " << k);
    check_close(nddr::to_host(gpu, ys.gpu[k]), ys.cpu[k]);
  }

  TaskTensors<T> dys(gpu, tasks, s, 300);
  TaskTensors<T> dxs(gpu, tasks, s, 400);  // pre-filled alike: backward must accumulate
  Tensor<T> da(Shape{P, P});
  for (std::int64_t i = 0; i < da.numel(); ++i) da[i] = T(5);  // garbage: dA must be assigned
  Tensor<T, Cuda> da_gpu = nddr::to_device(gpu, random_tensor<T>(Shape{P, P}, 8));
  nddr::ops::subspace_mix_backward<T>(cpu, l, in_span(xs.cpu_in()), in_span(dys.cpu_in()),
                                         a.data(), da.data(), out_span(dxs.cpu_out(skip)));
  nddr::ops::subspace_mix_backward<T>(gpu, l, in_span(xs.gpu_in()), in_span(dys.gpu_in()),
                                         a_gpu.data(), da_gpu.data(), out_span(dxs.gpu_out(skip)));
  const Tensor<T> da_host = nddr::to_host(gpu, da_gpu);
  {
    INFO("dA");
    check_close(da_host, da);
  }
  for (std::size_t k = 0; k < tasks; ++k) {
    INFO("dx of task " << k);
    check_close(nddr::to_host(gpu, dxs.gpu[k]), dxs.cpu[k]);
  }
  // dA is reduced in a fixed order: a second run gives the same bits.
  Tensor<T, Cuda> da_again(Shape{P, P});
  TaskTensors<T> scratch(gpu, tasks, s, 500);
  nddr::ops::subspace_mix_backward<T>(gpu, l, in_span(xs.gpu_in()), in_span(dys.gpu_in()),
                                         a_gpu.data(), da_again.data(),
                                         out_span(scratch.gpu_out()));
  const Tensor<T> again = nddr::to_host(gpu, da_again);
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < again.numel(); ++i) differ += !(again[i] == da_host[i]);
  CHECK(differ == 0);
}

template <class T>
void check_all_mixes() {
  SECTION("cross-stitch, K = 2") { check_mix<T>(2, 1, Shape::nchw(3, 5, 7, 9)); }
  SECTION("cross-stitch, K = 3, middle dx empty") {
    check_mix<T>(3, 1, Shape::nchw(2, 3, 5, 11), 1);
  }
  SECTION("sluice, K = 2, S = 2") { check_mix<T>(2, 2, Shape::nchw(3, 6, 5, 7)); }
  SECTION("sluice, K = 3, S = 2, last dx empty") {
    check_mix<T>(3, 2, Shape::nchw(1, 10, 3, 7), 2);
  }
  // N * size = 2 * 4 * 37 * 37 = 10952 products per dA entry: several blocks per entry, the
  // last one partly filled.
  SECTION("sluice, K = 2, S = 2, several reduction blocks per entry") {
    check_mix<T>(2, 2, Shape::nchw(2, 8, 37, 37));
  }
  SECTION("cross-stitch, K = 3, one pixel") { check_mix<T>(3, 1, Shape::nchw(1, 1, 1, 1)); }
}

}  // namespace

TEST_CASE("CUDA subspace mixing matches the CPU (float)", "[cuda][fusion]") {
  if (no_device()) return;
  check_all_mixes<float>();
}

TEST_CASE("CUDA subspace mixing matches the CPU (double)", "[cuda][fusion]") {
  if (no_device()) return;
  check_all_mixes<double>();
}

TEST_CASE("CUDA subspace mixing takes at most 8 tasks", "[cuda][fusion]") {
  // Needs no device: the task count is checked before anything is queued.
  const SubspaceLayout l(Shape::nchw(1, 2, 1, 1), 9, 1);
  const std::vector<TensorView<const float, Cuda>> nine(9);
  CHECK_THROWS_AS(nddr::detail::subspace_task_pointers<const float>(
                      "who", "x", l, std::span<const TensorView<const float, Cuda>>(nine)),
                  nddr::DeviceError);
  CHECK_THROWS_WITH(nddr::detail::subspace_task_pointers<const float>(
                        "who", "x", l, std::span<const TensorView<const float, Cuda>>(nine)),
                    Catch::Contains("at most 8 tasks, got 9"));
  const SubspaceLayout two(Shape::nchw(1, 2, 1, 1), 2, 1);
  CHECK_THROWS_WITH(nddr::detail::subspace_task_pointers<const float>(
                        "who", "x", two, std::span<const TensorView<const float, Cuda>>(nine)),
                    Catch::Contains("expected 2 x views, got 9"));
}

// 1e-8: the CPU's Winograd convolutions and cuDNN's algorithms differ by a few 1e-9 in double
// (measured on an H200 for the trainer); a wrong mixing kernel is off by far more.
TEST_CASE("CUDA network: cross-stitch and sluice TinyNet steps match the CPU (double)",
          "[cuda][network][fusion]") {
  if (no_device()) return;
  SECTION("cross-stitch") {
    nddr_test::check_step<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::CrossStitch>, double>(
        {11, 3}, Shape::nchw(2, 3, 33, 29), 1e-8);
  }
  SECTION("sluice") {
    nddr_test::check_step<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::Sluice>, double>(
        {11, 3}, Shape::nchw(2, 3, 33, 29), 1e-8);
  }
  SECTION("three-task cross-stitch") {
    nddr_test::check_step<
        nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::TinyNet, nddr::CrossStitch>, double>(
        {11, 3, 5}, Shape::nchw(2, 3, 33, 29), 1e-8);
  }
  SECTION("cross-stitch with shortcuts") {
    nddr_test::check_step<
        nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::Shortcut<nddr::CrossStitch>>, double>(
        {11, 3}, Shape::nchw(2, 3, 33, 33), 1e-8);
  }
}
