#pragma once
/// \file
/// Resize kernels and their launchers (nvcc only; instantiated in kernels.cu). The launcher
/// declarations live in backend/cuda/resize.hpp (not included: it pulls in the CPU op).

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/ops/math/resize.hpp"

namespace nddr::cuda::launch {

struct ResizeGeometry {
  std::int64_t planes, in_h, in_w, out_h, out_w;
  ResizeMode mode;
};

}  // namespace nddr::cuda::launch

namespace nddr::cuda::kernels {

template <class T>
__global__ void resize_forward(const T* __restrict__ x, T* __restrict__ y, std::int64_t n,
                               launch::ResizeGeometry g) {
  // Coordinate type as on the CPU: T for floating tensors, float (as TF) for label maps.
  using S = std::conditional_t<std::is_floating_point_v<T>, T, float>;
  const std::int64_t out_plane = g.out_h * g.out_w;
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t p = i / out_plane, o = i % out_plane;
    const ops::ResizeTap<S> th = ops::resize_tap<S>(g.mode, o / g.out_w, g.in_h, g.out_h);
    const ops::ResizeTap<S> tw = ops::resize_tap<S>(g.mode, o % g.out_w, g.in_w, g.out_w);
    const T* plane = x + p * g.in_h * g.in_w;
    if constexpr (std::is_floating_point_v<T>) {
      if (g.mode != ResizeMode::kNearestTfLegacy) {
        y[i] = ops::resize_bilinear_element(plane, g.in_w, th, tw);
        continue;
      }
    }
    y[i] = plane[th.i0 * g.in_w + tw.i0];
  }
}

// Atomic form of ops::resize_bilinear_backward_element (same four weights); nearest sends dy
// to its single source.
template <class T>
__global__ void resize_backward(const T* __restrict__ dy, T* __restrict__ dx, std::int64_t n,
                                launch::ResizeGeometry g) {
  const std::int64_t out_plane = g.out_h * g.out_w;
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t p = i / out_plane, o = i % out_plane;
    const ops::ResizeTap<T> th = ops::resize_tap<T>(g.mode, o / g.out_w, g.in_h, g.out_h);
    const ops::ResizeTap<T> tw = ops::resize_tap<T>(g.mode, o % g.out_w, g.in_w, g.out_w);
    T* plane = dx + p * g.in_h * g.in_w;
    const T d = dy[i];
    if (g.mode == ResizeMode::kNearestTfLegacy) {
      atomicAdd(plane + th.i0 * g.in_w + tw.i0, d);
      continue;
    }
    const T wh = th.w, ww = tw.w;
    T* r0 = plane + th.i0 * g.in_w;
    T* r1 = plane + th.i1 * g.in_w;
    atomicAdd(r0 + tw.i0, (T(1) - wh) * (T(1) - ww) * d);
    atomicAdd(r0 + tw.i1, (T(1) - wh) * ww * d);
    atomicAdd(r1 + tw.i0, wh * (T(1) - ww) * d);
    atomicAdd(r1 + tw.i1, wh * ww * d);
  }
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void resize_forward(cudaStream_t stream, const T* x, T* y, ResizeGeometry g) {
  const std::int64_t n = g.planes * g.out_h * g.out_w;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::resize_forward<T>)
  (x, y, n, g);
  check_launch("resize_forward");
}

template <class T>
void resize_backward(cudaStream_t stream, const T* dy, T* dx, ResizeGeometry g) {
  const std::int64_t n = g.planes * g.out_h * g.out_w;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::resize_backward<T>)
  (dy, dx, n, g);
  check_launch("resize_backward");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiations of the resize launchers for element type `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_RESIZE(T)                                                    \
  template void nddr::cuda::launch::resize_forward<T>(cudaStream_t, const T*, T*,          \
                                                      nddr::cuda::launch::ResizeGeometry); \
  template void nddr::cuda::launch::resize_backward<T>(cudaStream_t, const T*, T*,         \
                                                       nddr::cuda::launch::ResizeGeometry);

/// Nearest-neighbour forward for an integer label-map type `T`.
#define NDDR_CUDA_INSTANTIATE_RESIZE_LABELS(T)                                    \
  template void nddr::cuda::launch::resize_forward<T>(cudaStream_t, const T*, T*, \
                                                      nddr::cuda::launch::ResizeGeometry);
