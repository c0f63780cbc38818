#pragma once
/// \file
/// CUDA max, average and global average pooling: our own kernels (kernels/pool.cuh) running
/// the window bodies of nddr/ops/pool.hpp, with the CPU op's shape and option checks.
/// Backward passes gather per dx cell (deterministic, same summation order as the CPU) except
/// the argmax form of max-pool backward, whose indices may point anywhere in a plane: it
/// scatters with atomicAdd after validating every index.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/pool.hpp"

namespace nddr::cuda::launch {

/// y = window max for `planes` (H, W) planes; `argmax` (nullable) receives h * W + w.
template <class T, class I>
void max_pool2d_forward(cudaStream_t stream, const T* x, T* y, I* argmax, std::int64_t planes,
                        Pool2dGeometry g);
/// dx += dy routed to the first maximum of each window, recomputed from x (gather per dx cell).
template <class T>
void max_pool2d_backward(cudaStream_t stream, const T* x, const T* dy, T* dx, std::int64_t planes,
                         Pool2dGeometry g);
/// *first_bad = min(*first_bad, i) over the argmax entries i outside [0, in_plane).
template <class I>
void find_bad_argmax(cudaStream_t stream, const I* argmax, std::int64_t n, std::int64_t in_plane,
                     unsigned long long* first_bad);
/// dx[argmax] += dy per plane (atomicAdd scatter); every index must be valid.
template <class T, class I>
void max_pool2d_backward_argmax(cudaStream_t stream, const I* argmax, const T* dy, T* dx,
                                std::int64_t n, std::int64_t in_plane, std::int64_t out_plane);
/// y = window mean.
template <class T>
void avg_pool2d_forward(cudaStream_t stream, const T* x, T* y, std::int64_t planes,
                        Pool2dGeometry g, bool include_pad);
/// dx += dy / divisor of every window covering each dx cell (gather).
template <class T>
void avg_pool2d_backward(cudaStream_t stream, const T* dy, T* dx, std::int64_t planes,
                         Pool2dGeometry g, bool include_pad);
/// y[p] = mean of plane p (sequential sum per plane, as the CPU).
template <class T>
void global_avg_pool_forward(cudaStream_t stream, const T* x, T* y, std::int64_t planes,
                             std::int64_t cells);
/// dx[p, i] += dy[p] / cells.
template <class T>
void global_avg_pool_backward(cudaStream_t stream, const T* dy, T* dx, std::int64_t planes,
                              std::int64_t cells);

}  // namespace nddr::cuda::launch

namespace nddr::cuda::detail {

/// Runs `launch(slot)` with a device slot initialised to "none" that kernels lower with
/// atomicMin to the smallest flagged index; waits and returns that index, or -1 for none.
template <class F>
std::int64_t first_flagged_index(Context<Cuda>& ctx, F&& launch) {
  auto* slot = static_cast<unsigned long long*>(ctx.workspace_bytes(sizeof(unsigned long long)));
  NDDR_CUDA_CHECK(cudaMemsetAsync(slot, 0xFF, sizeof(unsigned long long), ctx.stream()),
                  "clearing the flag slot");
  launch(slot);
  unsigned long long first = 0;
  NDDR_CUDA_CHECK(cudaMemcpyAsync(&first, slot, sizeof first, cudaMemcpyDeviceToHost, ctx.stream()),
                  "reading the flag slot");
  ctx.synchronize();
  return first == std::numeric_limits<unsigned long long>::max() ? -1
                                                                  : static_cast<std::int64_t>(first);
}

/// One element of a device array, copied to the host (waits).
template <class V>
V read_element(Context<Cuda>& ctx, const V* p) {
  V v{};
  NDDR_CUDA_CHECK(cudaMemcpyAsync(&v, p, sizeof(V), cudaMemcpyDeviceToHost, ctx.stream()),
                  "reading one element of a device tensor");
  ctx.synchronize();
  return v;
}

}  // namespace nddr::cuda::detail

namespace nddr::ops::backend {

/// Pooling on the GPU (front door: nddr/ops/pool.hpp). `g` is the geometry the front door
/// computed while validating. T = float or double.
template <>
struct Pool<Cuda> {
  template <class T, class I>
  static void max_pool2d_forward(Context<Cuda>& ctx, const Pool2dGeometry& g,
                                 TensorView<const T, Cuda> x, TensorView<T, Cuda> y, I* argmax) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::max_pool2d_forward: CUDA supports float and double");
    cuda::launch::max_pool2d_forward<T, I>(ctx.stream(), x.data(), y.data(), argmax,
                                           x.shape().n() * x.shape().c(), g);
  }

  /// Throws ValueError (before touching dx; this waits for the device) for an index outside
  /// its plane, unless `check_argmax` is `ArgmaxCheck::kTrusted`.
  template <class T, class I>
  static void max_pool2d_backward(Context<Cuda>& ctx, TensorView<const I, Cuda> argmax,
                                  TensorView<const T, Cuda> dy, TensorView<T, Cuda> dx,
                                  ArgmaxCheck check_argmax) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::max_pool2d_backward: CUDA supports float and double");
    const char* op = "nddr::ops::max_pool2d_backward";
    const std::int64_t in_plane = dx.shape().h() * dx.shape().w();
    const std::int64_t out_plane = dy.shape().h() * dy.shape().w();
    const std::int64_t n = argmax.numel();
    if (n == 0) return;
    const std::int64_t bad =
        check_argmax == ArgmaxCheck::kTrusted
            ? -1
            : cuda::detail::first_flagged_index(ctx, [&](unsigned long long* slot) {
                cuda::launch::find_bad_argmax<I>(ctx.stream(), argmax.data(), n, in_plane, slot);
              });
    if (bad >= 0)
      throw ValueError(nddr::detail::concat(
          op, ": argmax ", cuda::detail::read_element(ctx, argmax.data() + bad), " at ", bad,
          " is outside a plane of ", in_plane, " cells"));
    cuda::launch::max_pool2d_backward_argmax<T, I>(ctx.stream(), argmax.data(), dy.data(),
                                                   dx.data(), n, in_plane, out_plane);
  }

  template <class T>
  static void max_pool2d_backward(Context<Cuda>& ctx, const Pool2dGeometry& g,
                                  TensorView<const T, Cuda> x, TensorView<const T, Cuda> dy,
                                  TensorView<T, Cuda> dx) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::max_pool2d_backward: CUDA supports float and double");
    cuda::launch::max_pool2d_backward<T>(ctx.stream(), x.data(), dy.data(), dx.data(),
                                         x.shape().n() * x.shape().c(), g);
  }

  template <class T>
  static void avg_pool2d_forward(Context<Cuda>& ctx, const Pool2dGeometry& g,
                                 TensorView<const T, Cuda> x, TensorView<T, Cuda> y,
                                 const Pool2dOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::avg_pool2d_forward: CUDA supports float and double");
    cuda::launch::avg_pool2d_forward<T>(ctx.stream(), x.data(), y.data(),
                                        x.shape().n() * x.shape().c(), g, opt.include_pad);
  }

  template <class T>
  static void avg_pool2d_backward(Context<Cuda>& ctx, const Pool2dGeometry& g,
                                  TensorView<const T, Cuda> x, TensorView<const T, Cuda> dy,
                                  TensorView<T, Cuda> dx, const Pool2dOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::avg_pool2d_backward: CUDA supports float and double");
    cuda::launch::avg_pool2d_backward<T>(ctx.stream(), dy.data(), dx.data(),
                                         x.shape().n() * x.shape().c(), g, opt.include_pad);
  }

  template <class T>
  static void global_avg_pool_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                                      TensorView<T, Cuda> y) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::global_avg_pool_forward: CUDA supports float and double");
    cuda::launch::global_avg_pool_forward<T>(ctx.stream(), x.data(), y.data(),
                                             x.shape().n() * x.shape().c(),
                                             x.shape().h() * x.shape().w());
  }

  template <class T>
  static void global_avg_pool_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                                       TensorView<const T, Cuda> dy, TensorView<T, Cuda> dx) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::global_avg_pool_backward: CUDA supports float and double");
    cuda::launch::global_avg_pool_backward<T>(ctx.stream(), dy.data(), dx.data(),
                                              x.shape().n() * x.shape().c(),
                                              x.shape().h() * x.shape().w());
  }
};

}  // namespace nddr::ops::backend
