#pragma once
/// \file
/// Dropout kernel and its launcher (nvcc only; instantiated in kernels.cu).

#include <cuda_runtime.h>

#include <cstdint>

#include "nddr/backend/cuda/dropout.hpp"
#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/ops/math/dropout.hpp"

namespace nddr::cuda::kernels {

template <class T>
__global__ void dropout(const T* __restrict__ in, T* __restrict__ out, std::int64_t n, double p,
                        std::uint64_t seed, std::uint64_t first_counter, bool accumulate,
                        const std::uint64_t* __restrict__ replay) {
  // A replayed graph draws the counters the same layer reserves n at a time, step after step.
  if (replay != nullptr) first_counter += *replay * static_cast<std::uint64_t>(n);
  const T keep_prob = static_cast<T>(1.0 - p);
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    // p = 0 passes values through unscaled, as the CPU op's copy.
    const T v =
        p == 0.0
            ? in[i]
            : ops::dropout_element(
                  in[i], ops::dropout_keep(seed, first_counter + static_cast<std::uint64_t>(i), p),
                  keep_prob);
    out[i] = accumulate ? out[i] + v : v;
  }
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void dropout(cudaStream_t stream, const T* in, T* out, std::int64_t n, double p, std::uint64_t seed,
             std::uint64_t first_counter, bool accumulate, const std::uint64_t* replay) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::dropout<T>)
  (in, out, n, p, seed, first_counter, accumulate, replay);
  check_launch("dropout");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiation of the dropout launcher for element type `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_DROPOUT(T)                                                         \
  template void nddr::cuda::launch::dropout<T>(cudaStream_t, const T*, T*, std::int64_t, double, \
                                               std::uint64_t, std::uint64_t, bool,               \
                                               const std::uint64_t*);
