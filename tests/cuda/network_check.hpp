#pragma once
// One training step of a whole multi-task network on the CPU and on the GPU, compared: outputs,
// every parameter gradient, BN buffers and the parameters after one SGD step. Shared by the CUDA
// network tests (network_test.cpp, subspace_mix_test.cpp); the caller checks for a device.
#include <catch2/catch.hpp>

#include <nddr/cuda.hpp>
#include <nddr/nddr.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace nddr_test {

template <class T>
std::vector<T> download(nddr::TensorView<const T, nddr::Cuda> v) {
  std::vector<T> h(static_cast<std::size_t>(v.numel()));
  nddr::Storage<nddr::Cuda>::download(h.data(), v.data(), h.size() * sizeof(T));
  return h;
}

template <class T>
double max_rel_diff(const std::vector<T>& gpu, nddr::TensorView<const T, nddr::Cpu> cpu) {
  REQUIRE(gpu.size() == static_cast<std::size_t>(cpu.numel()));
  double scale = 1e-30, diff = 0.0;
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    scale = std::max(scale, std::abs(double(cpu[static_cast<std::int64_t>(i)])));
    diff = std::max(diff, std::abs(double(gpu[i]) - double(cpu[static_cast<std::int64_t>(i)])));
  }
  return diff / scale;
}

// Runs one training step of `Spec` on both devices and compares everything.
template <class Spec, class T>
void check_step(const std::array<std::int64_t, Spec::tasks>& outputs, nddr::Shape in, double tol) {
  nddr::Context<nddr::Cpu> cpu(2);
  nddr::Context<nddr::Cuda> gpu(0);
  nddr::Network<Spec, nddr::Cpu, T> hnet(outputs);
  nddr::Network<Spec, nddr::Cuda, T> dnet(outputs);
  CHECK(max_rel_diff(download<T>(std::as_const(dnet.parameters()).values()), std::as_const(hnet.parameters()).values()) == 0.0);

  nddr::Rng rng(11);
  nddr::Tensor<T> x(in);
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<T>(rng.uniform(-1, 1));
  nddr::Tensor<T, nddr::Cuda> dx(in);
  nddr::Storage<nddr::Cuda>::upload(dx.data(), x.data(), x.bytes());

  auto hout = hnet.forward(cpu, x.cview());
  auto dout = dnet.forward(gpu, dx.cview());
  std::vector<nddr::Tensor<T>> hd;
  std::vector<nddr::Tensor<T, nddr::Cuda>> dd;
  for (std::size_t k = 0; k < Spec::tasks; ++k) {
    INFO("task " << k << " output");
    CHECK(max_rel_diff(download<T>(dout[k]), hout[k]) < tol);
    hd.emplace_back(hout[k].shape());
    for (std::int64_t i = 0; i < hd.back().numel(); ++i) hd.back()[i] = static_cast<T>(rng.uniform(-1, 1));
    dd.emplace_back(hout[k].shape());
    nddr::Storage<nddr::Cuda>::upload(dd.back().data(), hd.back().data(), hd.back().bytes());
  }
  std::vector<nddr::TensorView<const T>> hdv;
  std::vector<nddr::TensorView<const T, nddr::Cuda>> ddv;
  for (auto& t : hd) hdv.push_back(t.cview());
  for (auto& t : dd) ddv.push_back(t.cview());
  hnet.backward(cpu, x.cview(), hdv);
  dnet.backward(gpu, dx.cview(), ddv);
  gpu.synchronize();
  const auto& hs = std::as_const(hnet.parameters());
  const auto& ds = std::as_const(dnet.parameters());
  for (const auto& e : hs.parameters()) {
    INFO("gradient of " << e.name);
    auto id = *hs.find(e.name);
    CHECK(max_rel_diff(download<T>(ds.grad(id)), hs.grad(id)) < tol);
  }
  for (const auto& e : hs.buffers()) {
    INFO("buffer " << e.name);
    auto id = *hs.find_buffer(e.name);
    CHECK(max_rel_diff(download<T>(ds.buffer(id)), hs.buffer(id)) < tol);
  }
  // One SGD step on each device.
  nddr::Sgd<T, nddr::Cpu> hsgd(hnet.parameters(), nddr::SgdOptions::paper_multi_task());
  nddr::Sgd<T, nddr::Cuda> dsgd(dnet.parameters(), nddr::SgdOptions::paper_multi_task());
  hsgd.step(cpu, 1e-2);
  nddr::cuda::sgd_step(gpu, dnet.parameters(), dsgd, 1e-2);
  gpu.synchronize();
  CHECK(max_rel_diff(download<T>(ds.values()), hs.values()) < tol);
}

}  // namespace nddr_test
