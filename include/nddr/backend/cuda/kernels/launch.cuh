#pragma once
/// \file
/// Launch geometry shared by our element-wise kernels, and the launch macro (nvcc, or g++ with
/// the CPU emulator of tests/emulation).

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

/// `NDDR_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...)` is
/// `kernel<<<grid, block, shared_bytes, stream>>>(args...)`. Under `NDDR_CUDA_EMULATION`
/// (tests/emulation: the kernels compiled by the host compiler, run on the CPU by one fiber per
/// thread) it calls the emulator's launcher instead, which is why every launch goes through it.
#if defined(NDDR_CUDA_EMULATION)
#define NDDR_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::nddr_emu::launch(#__VA_ARGS__, grid, block, shared_bytes, stream, __VA_ARGS__)
#else
#define NDDR_LAUNCH(grid, block, shared_bytes, stream, ...) \
  __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#endif

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
