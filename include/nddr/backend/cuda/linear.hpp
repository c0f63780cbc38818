#pragma once
/// \file
/// CUDA fully connected map through cuBLAS GEMM, in full precision by default (no TF32;
/// the context's `matmul_tf32` setting allows TF32 tensor cores for float GEMMs).
/// Our buffers are row-major; cuBLAS is column-major, and a row-major (r, c)
/// matrix is the column-major (c, r) matrix, its transpose. So with x (N, F), w (out, F),
/// dy (N, out):
///   y^T (out, N)  = w^T(F, out)^T * x^T (F, N)      gemm(T, N, out, N, F)
///   dx^T (F, N)  += w^T (F, out)   * dy^T (out, N)  gemm(N, N, F, N, out), beta = 1
///   dw^T (F, out) = x^T (F, N)     * dy^T(out, N)^T gemm(N, T, F, out, N)
/// The bias add and bias gradient (summed in double) are the kernels of the convolution.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/cublas_api.hpp"
#include "nddr/backend/cuda/conv2d.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/linear.hpp"

namespace nddr::cuda {

// TF32 GEMMs (`CUBLAS_TF32_TENSOR_OP_MATH`) are the context's `matmul_tf32` setting
// (core/settings.hpp), like PyTorch's `torch.backends.cuda.matmul.allow_tf32`.

}  // namespace nddr::cuda

namespace nddr::cuda::detail {

/// C (m, n, column-major, ldc) = alpha * op(A) * op(B) + beta * C in float or double; float
/// GEMMs run on TF32 tensor cores when `tf32` (the context's `matmul_tf32` setting; the math
/// mode is set on the handle per call), double ignores it.
inline cublasStatus_t gemm(cublasHandle_t h, bool tf32, cublasOperation_t ta,
                           cublasOperation_t tb, int m, int n, int k, float alpha, const float* a,
                           int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  const CublasApi& api = cublas_api();
  const cublasStatus_t mode =
      api.cublasSetMathMode(h, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
  if (mode != CUBLAS_STATUS_SUCCESS) return mode;
  return api.cublasSgemm_v2(h, ta, tb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc);
}
inline cublasStatus_t gemm(cublasHandle_t h, bool /*tf32*/, cublasOperation_t ta,
                           cublasOperation_t tb, int m, int n, int k, double alpha,
                           const double* a, int lda, const double* b, int ldb, double beta,
                           double* c, int ldc) {
  return cublas_api().cublasDgemm_v2(h, ta, tb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc);
}

/// `v` as a cuBLAS dimension; throws ShapeError naming `who` when it does not fit an int.
inline int blas_dim(const char* who, std::int64_t v) {
  check<ShapeError>(v <= 0x7fffffff, who, ": extent ", v, " is too large for cuBLAS");
  return static_cast<int>(v);
}

}  // namespace nddr::cuda::detail

namespace nddr::ops::backend {

/// Fully connected map on the GPU (front door: nddr/ops/linear.hpp). T = float or double.
template <>
struct Linear<Cuda> {
  template <class T>
  static void linear_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                             TensorView<const T, Cuda> w, TensorView<const T, Cuda> b,
                             TensorView<T, Cuda> y) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::linear_forward: CUDA supports float and double");
    constexpr const char* kWho = "nddr::ops::linear_forward";
    const std::int64_t out = w.shape()[0], features = w.shape()[1];
    const std::int64_t batch = x.shape()[0];
    if (batch == 0 || out == 0) return;
    const int m = cuda::detail::blas_dim(kWho, out), n = cuda::detail::blas_dim(kWho, batch),
              k = cuda::detail::blas_dim(kWho, features);
    NDDR_CUDA_CHECK(
        cuda::detail::gemm(ctx.cublas(), ctx.settings().matmul_tf32(), CUBLAS_OP_T, CUBLAS_OP_N, m,
                           n, k, T(1), w.data(), k, x.data(), k, T(0), y.data(), m),
        kWho, ": cuBLAS GEMM of input ", x.shape().str(), " and weight ", w.shape().str());
    if (!b.empty()) cuda::launch::bias_add<T>(ctx.stream(), b.data(), y.data(), batch, out, 1);
  }

  template <class T>
  static void linear_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                              TensorView<const T, Cuda> w, TensorView<const T, Cuda> dy,
                              TensorView<T, Cuda> dx, TensorView<T, Cuda> dw,
                              TensorView<T, Cuda> db) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::linear_backward: CUDA supports float and double");
    constexpr const char* kWho = "nddr::ops::linear_backward";
    const std::int64_t out = w.shape()[0], features = w.shape()[1];
    const std::int64_t batch = x.shape()[0];
    const int fo = cuda::detail::blas_dim(kWho, out), fn = cuda::detail::blas_dim(kWho, batch),
              ff = cuda::detail::blas_dim(kWho, features);
    if (!dw.empty()) {
      if (batch == 0) {
        NDDR_CUDA_CHECK(
            cudaMemsetAsync(dw.data(), 0, static_cast<std::size_t>(dw.numel()) * sizeof(T),
                            ctx.stream()),
            kWho, ": zeroing dw ", dw.shape().str());
      } else if (dw.numel() > 0) {
        NDDR_CUDA_CHECK(
            cuda::detail::gemm(ctx.cublas(), ctx.settings().matmul_tf32(), CUBLAS_OP_N, CUBLAS_OP_T,
                               ff, fo, fn, T(1), x.data(), ff, dy.data(), fo, T(0), dw.data(), ff),
            kWho, ": cuBLAS GEMM for dw ", dw.shape().str());
      }
    }
    if (!db.empty())
      cuda::launch::channel_sum<T>(ctx.stream(), dy.data(), db.data(), batch, out, 1);
    if (!dx.empty() && dx.numel() > 0 && out > 0)
      NDDR_CUDA_CHECK(
          cuda::detail::gemm(ctx.cublas(), ctx.settings().matmul_tf32(), CUBLAS_OP_N, CUBLAS_OP_N,
                             ff, fn, fo, T(1), w.data(), ff, dy.data(), fo, T(1), dx.data(), ff),
          kWho, ": cuBLAS GEMM for dx ", dx.shape().str());
  }
};

}  // namespace nddr::ops::backend
