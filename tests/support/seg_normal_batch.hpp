#pragma once
// Test support: a deterministic synthetic two-task training batch (segmentation + normals) for
// any trainer's `Batch` type: random image in [-1, 1], labels in [0, classes) with 10 % ignored
// (255), unit normals with 10 % invalid (zero) pixels.
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include <nddr/core/random.hpp>
#include <nddr/core/tensor.hpp>

namespace nddr_test {

/// Labels and normals at `label_size` (the trainer resizes them to the outputs if they differ).
template <class B>
B seg_normal_batch(std::uint64_t seed, std::int64_t n, std::int64_t size, std::int64_t label_size,
                   std::uint64_t classes) {
  using T = std::remove_cvref_t<decltype(std::declval<B&>().image[0])>;
  nddr::Rng rng(seed);
  B b;
  b.image = nddr::Tensor<T>(nddr::Shape::nchw(n, 3, size, size));
  for (std::int64_t i = 0; i < b.image.numel(); ++i) b.image[i] = static_cast<T>(rng.uniform(-1, 1));
  auto& seg = std::get<0>(b.targets);
  seg = nddr::Tensor<std::int32_t>(nddr::Shape{n, label_size, label_size});
  for (std::int64_t i = 0; i < seg.numel(); ++i)
    seg[i] = rng.uniform() < 0.1 ? 255 : static_cast<std::int32_t>(rng.below(classes));
  auto& nor = std::get<1>(b.targets);
  nor = nddr::Tensor<T>(nddr::Shape::nchw(n, 3, label_size, label_size));
  const std::int64_t plane = label_size * label_size;
  for (std::int64_t s = 0; s < n; ++s)
    for (std::int64_t p = 0; p < plane; ++p) {
      if (rng.uniform() < 0.1) continue;  // invalid: zero vector
      double v[3] = {rng.normal(), rng.normal(), rng.normal()};
      const double norm = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
      for (int c = 0; c < 3; ++c) nor[(s * 3 + c) * plane + p] = static_cast<T>(v[c] / norm);
    }
  return b;
}

}  // namespace nddr_test
