#pragma once
/// \file
/// CUDA element-wise sums (front door: nddr/ops/elementwise.hpp): our own kernels
/// (kernels/elementwise.cuh) running the element bodies of nddr/ops/math/elementwise.hpp.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"

namespace nddr::cuda::launch {

/// y[i] += x[i] for i < n, queued on `stream`. Defined in kernels/elementwise.cuh.
template <class T>
void accumulate(cudaStream_t stream, const T* x, T* y, std::int64_t n);

/// y[i] = relu(a[i] + b[i]) for i < n (y may be a or b), queued on `stream`.
template <class T>
void add_relu(cudaStream_t stream, const T* a, const T* b, T* y, std::int64_t n);

}  // namespace nddr::cuda::launch

namespace nddr::ops::backend {

/// Element-wise sums on the GPU. T = float or double.
template <>
struct Elementwise<Cuda> {
  template <class T>
  static void accumulate(Context<Cuda>& ctx, TensorView<const T, Cuda> x, TensorView<T, Cuda> y) {
    static_assert(cuda::kKernelType<T>, "nddr::ops::accumulate: CUDA supports float and double");
    cuda::launch::accumulate<T>(ctx.stream(), x.data(), y.data(), y.numel());
  }

  template <class T>
  static void add_relu(Context<Cuda>& ctx, TensorView<const T, Cuda> a, TensorView<const T, Cuda> b,
                       TensorView<T, Cuda> y) {
    static_assert(cuda::kKernelType<T>, "nddr::ops::add_relu: CUDA supports float and double");
    cuda::launch::add_relu<T>(ctx.stream(), a.data(), b.data(), y.data(), y.numel());
  }
};

}  // namespace nddr::ops::backend
