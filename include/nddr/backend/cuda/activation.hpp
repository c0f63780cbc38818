#pragma once
/// \file
/// CUDA ReLU: our own element-wise kernels (kernels/activation.cuh) running the element bodies
/// of nddr/ops/math/activation.hpp, so the CPU and GPU share one definition of the math.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"

namespace nddr::cuda::launch {

/// y[i] = relu(x[i]) for i < n, queued on `stream`. Defined in kernels/activation.cuh.
template <class T>
void relu_forward(cudaStream_t stream, const T* x, T* y, std::int64_t n);

/// dx[i] += dy[i] * [x[i] > 0] for i < n, queued on `stream`.
template <class T>
void relu_backward(cudaStream_t stream, const T* x, const T* dy, T* dx, std::int64_t n);

/// g[i] = dy[i] * [y[i] > 0] for i < n (assigned), queued on `stream`.
template <class T>
void relu_gradient(cudaStream_t stream, const T* y, const T* dy, T* g, std::int64_t n);

}  // namespace nddr::cuda::launch

namespace nddr::ops::backend {

/// ReLU on the GPU (front door: nddr/ops/math/activation.hpp). T = float or double.
template <>
struct Activation<Cuda> {
  template <class T>
  static void relu_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> x, TensorView<T, Cuda> y) {
    static_assert(cuda::kKernelType<T>, "nddr::ops::relu_forward: CUDA supports float and double");
    cuda::launch::relu_forward<T>(ctx.stream(), x.data(), y.data(), x.numel());
  }

  template <class T>
  static void relu_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                            TensorView<const T, Cuda> dy, TensorView<T, Cuda> dx) {
    static_assert(cuda::kKernelType<T>, "nddr::ops::relu_backward: CUDA supports float and double");
    cuda::launch::relu_backward<T>(ctx.stream(), x.data(), dy.data(), dx.data(), x.numel());
  }

  template <class T>
  static void relu_gradient(Context<Cuda>& ctx, TensorView<const T, Cuda> y,
                            TensorView<const T, Cuda> dy, TensorView<T, Cuda> g) {
    static_assert(cuda::kKernelType<T>, "nddr::ops::relu_gradient: CUDA supports float and double");
    cuda::launch::relu_gradient<T>(ctx.stream(), y.data(), dy.data(), g.data(), y.numel());
  }
};

}  // namespace nddr::ops::backend
