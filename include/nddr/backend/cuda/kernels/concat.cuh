#pragma once
/// \file
/// Channel concatenation/split kernels and their launchers (nvcc only; instantiated in
/// kernels.cu).

#include <cuda_runtime.h>

#include <cstdint>

#include "nddr/backend/cuda/concat.hpp"
#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/ops/math/concat.hpp"

namespace nddr::cuda::kernels {

template <class T>
__global__ void concat_part_to_whole(const T* __restrict__ part, T* __restrict__ whole,
                                     launch::ConcatPart m) {
  for (std::int64_t i = first_index(); i < m.count; i += grid_stride())
    whole[ops::concat_index(i, m.part_item, m.part_offset, m.item)] = part[i];
}

template <class T>
__global__ void concat_part_add_to_whole(const T* __restrict__ part, T* __restrict__ whole,
                                         launch::ConcatPart m) {
  for (std::int64_t i = first_index(); i < m.count; i += grid_stride())
    whole[ops::concat_index(i, m.part_item, m.part_offset, m.item)] += part[i];
}

template <class T>
__global__ void concat_whole_to_part(const T* __restrict__ whole, T* __restrict__ part,
                                     launch::ConcatPart m, bool accumulate) {
  for (std::int64_t i = first_index(); i < m.count; i += grid_stride()) {
    const T v = whole[ops::concat_index(i, m.part_item, m.part_offset, m.item)];
    part[i] = accumulate ? part[i] + v : v;
  }
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void concat_part_to_whole(cudaStream_t stream, const T* part, T* whole, ConcatPart m) {
  if (m.count == 0) return;
  NDDR_LAUNCH(kernels::grid_for(m.count), kernels::kBlock, 0, stream,
              kernels::concat_part_to_whole<T>)
  (part, whole, m);
  check_launch("concat_part_to_whole");
}

template <class T>
void concat_part_add_to_whole(cudaStream_t stream, const T* part, T* whole, ConcatPart m) {
  if (m.count == 0) return;
  NDDR_LAUNCH(kernels::grid_for(m.count), kernels::kBlock, 0, stream,
              kernels::concat_part_add_to_whole<T>)
  (part, whole, m);
  check_launch("concat_part_add_to_whole");
}

template <class T>
void concat_whole_to_part(cudaStream_t stream, const T* whole, T* part, ConcatPart m,
                          bool accumulate) {
  if (m.count == 0) return;
  NDDR_LAUNCH(kernels::grid_for(m.count), kernels::kBlock, 0, stream,
              kernels::concat_whole_to_part<T>)
  (whole, part, m, accumulate);
  check_launch("concat_whole_to_part");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiations of the concat launchers for element type `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_CONCAT(T)                                                          \
  template void nddr::cuda::launch::concat_part_to_whole<T>(cudaStream_t, const T*, T*,          \
                                                            nddr::cuda::launch::ConcatPart);     \
  template void nddr::cuda::launch::concat_part_add_to_whole<T>(cudaStream_t, const T*, T*,      \
                                                                nddr::cuda::launch::ConcatPart); \
  template void nddr::cuda::launch::concat_whole_to_part<T>(cudaStream_t, const T*, T*,          \
                                                            nddr::cuda::launch::ConcatPart, bool);
