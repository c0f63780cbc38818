#pragma once
/// \file
/// `detail::SubspaceLayout`: where the subspace tensors mixed by the cross-stitch and sluice
/// layers live inside the task tensors. A plain struct (no Eigen) whose offsets the CPU loops
/// (backend/cpu/subspace_mix.hpp) and the CUDA kernels (backend/cuda/kernels/subspace_mix.cuh)
/// share. Front door of the mixing: nddr/ops/subspace_mix.hpp.

#include <cstddef>
#include <cstdint>

#include "nddr/core/macros.hpp"
#include "nddr/core/shape.hpp"

namespace nddr::detail {

/// Where subspace p = k * S + s lives: per batch item, `size` contiguous elements of task k's
/// (N, C, H, W) tensor starting at s * size, with size = (C / S) * H * W.
struct SubspaceLayout {
  std::int64_t batch = 0;  ///< N
  std::int64_t item = 0;   ///< C * H * W
  std::int64_t size = 0;   ///< (C / S) * H * W
  std::int64_t subspaces = 1;
  std::int64_t count = 0;  ///< P = K * S

  SubspaceLayout(const Shape& s, std::size_t tasks, std::int64_t subspaces_per_task)
      : batch(s.n()),
        item(s.item_size()),
        size(s.item_size() / subspaces_per_task),
        subspaces(subspaces_per_task),
        count(static_cast<std::int64_t>(tasks) * subspaces_per_task) {}

  NDDR_HOST_DEVICE std::size_t task(std::int64_t p) const {
    return static_cast<std::size_t>(p / subspaces);
  }
  /// Flat offset of batch item n of subspace p inside its task's tensor.
  NDDR_HOST_DEVICE std::int64_t offset(std::int64_t p, std::int64_t n) const {
    return n * item + (p % subspaces) * size;
  }
};

}  // namespace nddr::detail
