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

/// Fully unrolls the loop that follows (small fixed trip counts in element bodies, so that
/// local arrays indexed by the loop variable become registers and the body vectorises across
/// the calling loop).
#if defined(__CUDACC__) || defined(__clang__)
#define NDDR_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define NDDR_UNROLL _Pragma("GCC unroll 16")
#else
#define NDDR_UNROLL
#endif
