#pragma once
/// \file
/// Shared pieces of the host side of our own kernels: the element types they are instantiated
/// for and the launch-error check. Kernels live in kernels/*.cuh and are compiled once, by
/// nvcc, in kernels.cu; host code (compiled by the C++ compiler) only sees the launcher
/// declarations, one `nddr::cuda::launch` block per op header.

#include <cuda_runtime_api.h>

#include <type_traits>

#include "nddr/backend/cuda/error.hpp"

namespace nddr::cuda {

/// Element types kernels.cu instantiates every launcher for.
template <class T>
inline constexpr bool kKernelType = std::is_same_v<T, float> || std::is_same_v<T, double>;

/// Reports a failed kernel launch (bad configuration, no kernel image for this GPU) as
/// `DeviceError`; faults inside the kernel surface at the next synchronisation.
inline void check_launch(const char* kernel) {
  NDDR_CUDA_CHECK(cudaPeekAtLastError(), "launching the ", kernel, " kernel");
}

}  // namespace nddr::cuda
