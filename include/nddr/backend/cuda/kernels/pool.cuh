#pragma once
/// \file
/// Pooling kernels and their launchers (nvcc only; instantiated in kernels.cu). The launcher
/// declarations live in backend/cuda/pool.hpp, which is not included here because it pulls in
/// the CPU op for its checks.

#include <cuda_runtime.h>

#include <cstdint>

#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/ops/math/pool.hpp"

namespace nddr::cuda::kernels {

/// First output index along one axis whose window (start o * s - pad, length k) can cover
/// input cell `i`, and the last (inclusive), clipped to [0, out).
__device__ inline void covering_outputs(std::int64_t i, std::int64_t k, std::int64_t s,
                                        std::int64_t pad, std::int64_t out, std::int64_t& lo,
                                        std::int64_t& hi) {
  const std::int64_t first = i + pad - k + 1;
  lo = first <= 0 ? 0 : (first + s - 1) / s;
  hi = (i + pad) / s;
  if (hi > out - 1) hi = out - 1;
}

template <class T, class I>
__global__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, I* argmax,
                                   std::int64_t n, Pool2dGeometry g) {
  const std::int64_t out_plane = g.out_h * g.out_w;
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t p = i / out_plane, o = i % out_plane;
    std::int64_t idx = 0;
    y[i] = ops::max_pool_element(x + p * g.in_h * g.in_w, g, o / g.out_w, o % g.out_w, idx);
    if (argmax) argmax[i] = static_cast<I>(idx);
  }
}

// One thread per dx cell visits the outputs whose window covers it in the CPU's order and
// adds dy where the recomputed first maximum is this cell.
template <class T>
__global__ void max_pool2d_backward(const T* __restrict__ x, const T* __restrict__ dy,
                                    T* __restrict__ dx, std::int64_t n, Pool2dGeometry g) {
  const std::int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t p = i / in_plane, cell = i % in_plane;
    const std::int64_t h = cell / g.in_w, w = cell % g.in_w;
    std::int64_t oh0, oh1, ow0, ow1;
    covering_outputs(h, g.kernel_h, g.stride_h, g.pad_top, g.out_h, oh0, oh1);
    covering_outputs(w, g.kernel_w, g.stride_w, g.pad_left, g.out_w, ow0, ow1);
    const T* plane = x + p * in_plane;
    const T* grad = dy + p * out_plane;
    T acc = dx[i];
    for (std::int64_t oh = oh0; oh <= oh1; ++oh)
      for (std::int64_t ow = ow0; ow <= ow1; ++ow) {
        std::int64_t idx = 0;
        ops::max_pool_element(plane, g, oh, ow, idx);
        if (idx == cell) acc += grad[oh * g.out_w + ow];
      }
    dx[i] = acc;
  }
}

template <class I>
__global__ void find_bad_argmax(const I* __restrict__ argmax, std::int64_t n, std::int64_t in_plane,
                                unsigned long long* first_bad) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride())
    if (argmax[i] < 0 || argmax[i] >= in_plane)
      atomicMin(first_bad, static_cast<unsigned long long>(i));
}

template <class T, class I>
__global__ void max_pool2d_backward_argmax(const I* __restrict__ argmax, const T* __restrict__ dy,
                                           T* __restrict__ dx, std::int64_t n,
                                           std::int64_t in_plane, std::int64_t out_plane) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride())
    atomicAdd(dx + (i / out_plane) * in_plane + argmax[i], dy[i]);
}

template <class T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, std::int64_t n,
                                   Pool2dGeometry g, bool include_pad) {
  const std::int64_t out_plane = g.out_h * g.out_w;
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t p = i / out_plane, o = i % out_plane;
    y[i] = ops::avg_pool_element(x + p * g.in_h * g.in_w, g, o / g.out_w, o % g.out_w, include_pad);
  }
}

// Gather form of ops::avg_pool_backward_element: the same shares, added in the CPU's order.
template <class T>
__global__ void avg_pool2d_backward(const T* __restrict__ dy, T* __restrict__ dx, std::int64_t n,
                                    Pool2dGeometry g, bool include_pad) {
  const std::int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t p = i / in_plane, cell = i % in_plane;
    const std::int64_t h = cell / g.in_w, w = cell % g.in_w;
    std::int64_t oh0, oh1, ow0, ow1;
    covering_outputs(h, g.kernel_h, g.stride_h, g.pad_top, g.out_h, oh0, oh1);
    covering_outputs(w, g.kernel_w, g.stride_w, g.pad_left, g.out_w, ow0, ow1);
    const T* grad = dy + p * out_plane;
    T acc = dx[i];
    for (std::int64_t oh = oh0; oh <= oh1; ++oh)
      for (std::int64_t ow = ow0; ow <= ow1; ++ow)
        acc +=
            grad[oh * g.out_w + ow] / static_cast<T>(ops::avg_pool_divisor(g, oh, ow, include_pad));
    dx[i] = acc;
  }
}

template <class T>
__global__ void global_avg_pool_forward(const T* __restrict__ x, T* __restrict__ y,
                                        std::int64_t planes, std::int64_t cells) {
  for (std::int64_t p = first_index(); p < planes; p += grid_stride()) {
    const T* plane = x + p * cells;
    T sum = T(0);
    for (std::int64_t i = 0; i < cells; ++i) sum += plane[i];
    y[p] = sum / static_cast<T>(cells);
  }
}

template <class T>
__global__ void global_avg_pool_backward(const T* __restrict__ dy, T* __restrict__ dx,
                                         std::int64_t n, std::int64_t cells) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride())
    dx[i] += dy[i / cells] / static_cast<T>(cells);
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T, class I>
void max_pool2d_forward(cudaStream_t stream, const T* x, T* y, I* argmax, std::int64_t planes,
                        Pool2dGeometry g) {
  const std::int64_t n = planes * g.out_h * g.out_w;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::max_pool2d_forward<T, I>)
  (x, y, argmax, n, g);
  check_launch("max_pool2d_forward");
}

template <class T>
void max_pool2d_backward(cudaStream_t stream, const T* x, const T* dy, T* dx, std::int64_t planes,
                         Pool2dGeometry g) {
  const std::int64_t n = planes * g.in_h * g.in_w;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::max_pool2d_backward<T>)
  (x, dy, dx, n, g);
  check_launch("max_pool2d_backward");
}

template <class I>
void find_bad_argmax(cudaStream_t stream, const I* argmax, std::int64_t n, std::int64_t in_plane,
                     unsigned long long* first_bad) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::find_bad_argmax<I>)
  (argmax, n, in_plane, first_bad);
  check_launch("find_bad_argmax");
}

template <class T, class I>
void max_pool2d_backward_argmax(cudaStream_t stream, const I* argmax, const T* dy, T* dx,
                                std::int64_t n, std::int64_t in_plane, std::int64_t out_plane) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream,
              kernels::max_pool2d_backward_argmax<T, I>)
  (argmax, dy, dx, n, in_plane, out_plane);
  check_launch("max_pool2d_backward_argmax");
}

template <class T>
void avg_pool2d_forward(cudaStream_t stream, const T* x, T* y, std::int64_t planes,
                        Pool2dGeometry g, bool include_pad) {
  const std::int64_t n = planes * g.out_h * g.out_w;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::avg_pool2d_forward<T>)
  (x, y, n, g, include_pad);
  check_launch("avg_pool2d_forward");
}

template <class T>
void avg_pool2d_backward(cudaStream_t stream, const T* dy, T* dx, std::int64_t planes,
                         Pool2dGeometry g, bool include_pad) {
  const std::int64_t n = planes * g.in_h * g.in_w;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::avg_pool2d_backward<T>)
  (dy, dx, n, g, include_pad);
  check_launch("avg_pool2d_backward");
}

template <class T>
void global_avg_pool_forward(cudaStream_t stream, const T* x, T* y, std::int64_t planes,
                             std::int64_t cells) {
  if (planes == 0) return;
  NDDR_LAUNCH(kernels::grid_for(planes), kernels::kBlock, 0, stream,
              kernels::global_avg_pool_forward<T>)
  (x, y, planes, cells);
  check_launch("global_avg_pool_forward");
}

template <class T>
void global_avg_pool_backward(cudaStream_t stream, const T* dy, T* dx, std::int64_t planes,
                              std::int64_t cells) {
  const std::int64_t n = planes * cells;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream,
              kernels::global_avg_pool_backward<T>)
  (dy, dx, n, cells);
  check_launch("global_avg_pool_backward");
}

}  // namespace nddr::cuda::launch

#define NDDR_CUDA_INSTANTIATE_POOL_INDEX(T, I)                                                    \
  template void nddr::cuda::launch::max_pool2d_forward<T, I>(cudaStream_t, const T*, T*, I*,      \
                                                             std::int64_t, nddr::Pool2dGeometry); \
  template void nddr::cuda::launch::max_pool2d_backward_argmax<T, I>(                             \
      cudaStream_t, const I*, const T*, T*, std::int64_t, std::int64_t, std::int64_t);

/// Explicit instantiations of the pooling launchers for element type `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_POOL(T)                                                            \
  NDDR_CUDA_INSTANTIATE_POOL_INDEX(T, std::int32_t)                                              \
  NDDR_CUDA_INSTANTIATE_POOL_INDEX(T, std::int64_t)                                              \
  template void nddr::cuda::launch::max_pool2d_backward<T>(cudaStream_t, const T*, const T*, T*, \
                                                           std::int64_t, nddr::Pool2dGeometry);  \
  template void nddr::cuda::launch::avg_pool2d_forward<T>(                                       \
      cudaStream_t, const T*, T*, std::int64_t, nddr::Pool2dGeometry, bool);                     \
  template void nddr::cuda::launch::avg_pool2d_backward<T>(                                      \
      cudaStream_t, const T*, T*, std::int64_t, nddr::Pool2dGeometry, bool);                     \
  template void nddr::cuda::launch::global_avg_pool_forward<T>(cudaStream_t, const T*, T*,       \
                                                               std::int64_t, std::int64_t);      \
  template void nddr::cuda::launch::global_avg_pool_backward<T>(cudaStream_t, const T*, T*,      \
                                                                std::int64_t, std::int64_t);

/// The argmax validation launchers (index types, not element types; used once by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_POOL_ARGMAX_CHECK                                            \
  template void nddr::cuda::launch::find_bad_argmax<std::int32_t>(                         \
      cudaStream_t, const std::int32_t*, std::int64_t, std::int64_t, unsigned long long*); \
  template void nddr::cuda::launch::find_bad_argmax<std::int64_t>(                         \
      cudaStream_t, const std::int64_t*, std::int64_t, std::int64_t, unsigned long long*);
