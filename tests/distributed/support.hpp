// Shared by the distributed tests: a TinyNet NDDR network without dropout (so that ranks and a
// single process can agree exactly), synthetic batches with every pixel labelled, comparisons.
#pragma once

#include <catch2/catch.hpp>

#include <nddr/distributed.hpp>
#include <nddr/nddr.hpp>
#include <nddr/train/trainer.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>

namespace dist_test {

/// TinyNet's five stages with the dropout-free FashionHead.
struct TinyNoDropout {
  static constexpr const char* name = "tiny_nodrop";
  static constexpr std::int64_t input_channels = 3;
  using stages = nddr::TinyNet::stages;
  using head = nddr::FashionHead;
};

using Spec = nddr::MultiTask<TinyNoDropout, TinyNoDropout, nddr::NDDR>;
using Exp = nddr::Experiment<Spec, nddr::Tasks<nddr::Segmentation<5>, nddr::SurfaceNormal>>;
using Net = nddr::Network<Spec, nddr::Cpu, double>;
using Train = nddr::Trainer<Exp, nddr::Cpu, double>;

inline constexpr std::int64_t kSize = 32;  // image side; outputs are 4 x 4 (stride 8)
inline constexpr std::int64_t kOut = kSize / 8;

/// The global batch of `step`: `n` random images, targets at the output size (no resizing), no
/// ignored or invalid pixel, so every per-rank loss is a mean over the same number of pixels.
inline Train::Batch global_batch(std::int64_t step, std::int64_t n) {
  nddr::Rng rng(5000 + static_cast<std::uint64_t>(step));
  Train::Batch b;
  b.image = nddr::Tensor<double>(nddr::Shape::nchw(n, 3, kSize, kSize));
  for (std::int64_t i = 0; i < b.image.numel(); ++i) b.image[i] = rng.uniform(-1, 1);
  auto& seg = std::get<0>(b.targets);
  seg = nddr::Tensor<std::int32_t>(nddr::Shape{n, kOut, kOut});
  for (std::int64_t i = 0; i < seg.numel(); ++i) seg[i] = static_cast<std::int32_t>(rng.below(5));
  auto& nor = std::get<1>(b.targets);
  nor = nddr::Tensor<double>(nddr::Shape::nchw(n, 3, kOut, kOut));
  const std::int64_t plane = kOut * kOut;
  for (std::int64_t s = 0; s < n; ++s)
    for (std::int64_t p = 0; p < plane; ++p) {
      double v[3] = {rng.normal(), rng.normal(), rng.normal()};
      const double norm = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
      for (int c = 0; c < 3; ++c) nor[(s * 3 + c) * plane + p] = v[c] / norm;
    }
  return b;
}

template <class T>
nddr::Tensor<T> copy_items(const nddr::Tensor<T>& t, std::int64_t begin, std::int64_t count) {
  auto v = t.cview().batch_slice(begin, begin + count);
  nddr::Tensor<T> out(v.shape());
  std::copy(v.data(), v.data() + v.numel(), out.data());
  return out;
}

/// Items [begin, begin + count) of a batch.
inline Train::Batch slice(const Train::Batch& b, std::int64_t begin, std::int64_t count) {
  Train::Batch s;
  s.image = copy_items(b.image, begin, count);
  std::get<0>(s.targets) = copy_items(std::get<0>(b.targets), begin, count);
  std::get<1>(s.targets) = copy_items(std::get<1>(b.targets), begin, count);
  return s;
}

inline nddr::TrainerOptions quiet(std::string dir = {}) {
  nddr::TrainerOptions o;
  o.loss_weights = {1.0, 20.0};
  o.progress = false;
  o.log_every = 1;
  o.output_dir = std::move(dir);
  o.optimizer = nddr::SgdOptions::paper_multi_task();
  return o;
}

inline const nddr::PolySchedule kSchedule{0.02, 100, 0.9};

/// max |a - b| / max(1, max |b|).
template <class A, class B>
double max_rel_diff(A a, B b) {
  REQUIRE(a.numel() == b.numel());
  double diff = 0.0, scale = 1.0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

/// max |a - b| (0 when bit-identical).
template <class A, class B>
double max_abs_diff(A a, B b) {
  REQUIRE(a.numel() == b.numel());
  double diff = 0.0;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return diff;
}

/// A directory every rank of `comm` agrees on (rank 0's pid), emptied by rank 0.
template <class Comm>
std::filesystem::path shared_dir(Comm& comm, const std::string& name) {
  double pid[1] = {comm.rank() == 0 ? static_cast<double>(::getpid()) : 0.0};
  comm.all_reduce_sum_host(std::span<double>(pid));
  const auto dir = std::filesystem::temp_directory_path() /
                   ("nddr_dist_" + name + "_" + std::to_string(static_cast<long>(pid[0])));
  if (comm.rank() == 0) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  comm.barrier();
  return dir;
}

}  // namespace dist_test
