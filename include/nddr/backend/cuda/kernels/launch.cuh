#pragma once
/// \file
/// Launch geometry shared by our element-wise kernels (nvcc only).

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace nddr::cuda::kernels {

/// Threads per block of the element-wise kernels.
inline constexpr int kBlock = 256;
/// Cap on the grid size; grid-stride loops cover the rest, so huge tensors need no 64-bit grid.
inline constexpr std::int64_t kMaxBlocks = 65536;

/// Blocks for `n` elements at one element per thread, capped at `kMaxBlocks`.
inline unsigned grid_for(std::int64_t n) {
  return static_cast<unsigned>(std::min<std::int64_t>((n + kBlock - 1) / kBlock, kMaxBlocks));
}

/// First element index of the calling thread in a grid-stride loop.
__device__ inline std::int64_t first_index() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

/// Stride of a grid-stride loop.
__device__ inline std::int64_t grid_stride() {
  return static_cast<std::int64_t>(gridDim.x) * blockDim.x;
}

}  // namespace nddr::cuda::kernels
