#pragma once
/// \file
/// Portability macros shared by host and device code.

#if defined(__CUDACC__)
/// Marks a function body that runs on the CPU and inside CUDA kernels alike.
#define NDDR_HOST_DEVICE __host__ __device__
#else
#define NDDR_HOST_DEVICE
#endif

#if defined(__CUDACC__)
#define NDDR_RESTRICT __restrict__
#else
#define NDDR_RESTRICT __restrict
#endif
