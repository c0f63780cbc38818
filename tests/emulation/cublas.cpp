/// \file
/// The CUDA emulator's cuBLAS: the handle calls and the float/double GEMMs and SCALs that nddr's
/// CUDA backend makes (include/nddr/backend/cuda/handles.hpp, linear.hpp, training.hpp,
/// error.hpp), defined against the real <cublas_v2.h> (whose macros map cublasCreate to
/// cublasCreate_v2 and so on) so that nddr's CUDA tests link here instead of libcublas and run
/// on the CPU.
///
/// What is emulated:
///  - A handle is a plain struct (the header's opaque `cublasContext`) holding its stream, math
///    mode and pointer mode, kept in a registry of live handles so that a destroyed one is
///    reported (CUBLAS_STATUS_NOT_INITIALIZED) instead of used.
///  - GEMM is column-major C = alpha op(A) op(B) + beta C with op N, T or C (C is T for real
///    data), leading dimensions respected, alpha and beta read from host memory when the call
///    is made (CUBLAS_POINTER_MODE_HOST, the only mode). Products are accumulated in double and
///    each element of C rounded once; C is not read when beta == 0, and A and B are not read
///    when alpha == 0 or k == 0, as in cuBLAS. Under CUBLAS_TF32_TENSOR_OP_MATH float operands
///    are rounded to TF32 first (nddr_emu::round_tf32), so TF32 results differ from FP32 ones
///    as on a GPU; other math modes compute exactly.
///  - Arguments are validated as cuBLAS does (CUBLAS_STATUS_INVALID_VALUE for a bad operation,
///    a negative size or a too small leading dimension); the matrices must also lie inside live
///    emulated device allocations and C must not overlap A or B (INVALID_VALUE, with a line on
///    stderr).
///  - The product is queued with nddr_emu::enqueue on the handle's stream: validated when the
///    call is made, computed when the stream runs it (now, or at each launch of a captured
///    graph).
///  - SCAL (x = alpha x, n elements at stride incx; nothing happens for n <= 0 or incx <= 0, as
///    in cuBLAS) with alpha read from host memory, x checked to lie inside one live allocation
///    and scaled when the stream runs the call.

#include <cublas_v2.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_set>

#include "runtime.hpp"

/// A cuBLAS handle.
struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math_mode = CUBLAS_DEFAULT_MATH;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};

namespace {

using Lock = std::lock_guard<std::recursive_mutex>;

/// Handles created and not yet destroyed. Never freed, so that a handle destroyed during
/// static destruction still finds it.
std::unordered_set<const void*>& live_handles() {
  static auto* live = new std::unordered_set<const void*>;
  return *live;
}

bool is_live(cublasHandle_t h) { return h != nullptr && live_handles().count(h) != 0; }

/// Prints why `fn` fails and returns `status` (cuBLAS has no last-error string to keep it in).
cublasStatus_t fail(cublasStatus_t status, const char* fn, const std::string& why) {
  std::fprintf(stderr, "[nddr CUDA emulator] cuBLAS %s: %s\n", fn, why.c_str());
  return status;
}

using nddr_emu::hex;

/// A matrix of a GEMM as stored: `rows` x `cols`, column-major with leading dimension `ld`.
struct Matrix {
  const char* name;
  const void* p;
  std::int64_t rows, cols, ld;
  std::size_t element;

  /// Bytes from the first element to one past the last: ld * (cols - 1) + rows elements.
  std::size_t bytes() const {
    if (rows == 0 || cols == 0) return 0;
    return static_cast<std::size_t>(ld * (cols - 1) + rows) * element;
  }
};

/// Checks that `m` lies inside one live emulated device allocation.
cublasStatus_t check_matrix(const char* fn, const Matrix& m) {
  if (m.p == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE, fn, std::string(m.name) + " is null");
  if (!nddr_emu::is_device_range(m.p, m.bytes()))
    return fail(CUBLAS_STATUS_INVALID_VALUE, fn,
                std::string(m.name) + " (" + hex(m.p) + ", " + std::to_string(m.rows) + " x " +
                    std::to_string(m.cols) + ", leading dimension " + std::to_string(m.ld) + ": " +
                    std::to_string(m.bytes()) +
                    " bytes) does not lie inside one live cudaMalloc allocation (a host "
                    "pointer, a freed buffer, or a buffer too small for its dimensions)");
  return CUBLAS_STATUS_SUCCESS;
}

bool overlap(const Matrix& a, const Matrix& b) {
  return nddr_emu::ranges_overlap(a.p, a.bytes(), b.p, b.bytes());
}

bool is_transposed(cublasOperation_t op) { return op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

/// cublas{S,D}gemm_v2 for T = float, double.
template <class T>
cublasStatus_t gemm(const char* fn, cublasHandle_t handle, cublasOperation_t transa,
                    cublasOperation_t transb, int m, int n, int k, const T* alpha, const T* A,
                    int lda, const T* B, int ldb, const T* beta, T* C, int ldc) {
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(handle))
    return fail(
        CUBLAS_STATUS_NOT_INITIALIZED, fn,
        handle == nullptr ? "the handle is null" : "the handle is not a live cuBLAS handle");
  const auto valid_op = [](cublasOperation_t op) {
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
  };
  if (!valid_op(transa) || !valid_op(transb))
    return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "transa or transb is not N, T or C");
  if (m < 0 || n < 0 || k < 0)
    return fail(CUBLAS_STATUS_INVALID_VALUE, fn,
                "negative size m = " + std::to_string(m) + ", n = " + std::to_string(n) +
                    ", k = " + std::to_string(k));
  const bool ta = is_transposed(transa), tb = is_transposed(transb);
  // op(A) is m x k and op(B) k x n; as stored, A is (ta ? k x m : m x k), B (tb ? n x k : k x n).
  const Matrix a{"A", A, ta ? k : m, ta ? m : k, lda, sizeof(T)};
  const Matrix b{"B", B, tb ? n : k, tb ? k : n, ldb, sizeof(T)};
  const Matrix c{"C", C, m, n, ldc, sizeof(T)};
  for (const Matrix* x : {&a, &b, &c})
    if (x->ld < std::max<std::int64_t>(1, x->rows))
      return fail(CUBLAS_STATUS_INVALID_VALUE, fn,
                  std::string("the leading dimension of ") + x->name + " is " +
                      std::to_string(x->ld) + ", less than max(1, " + std::to_string(x->rows) +
                      " rows)");
  if (alpha == nullptr || beta == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "alpha or beta is null");
  const T al = *alpha, be = *beta;  // host pointer mode: read now, also when captured
  // cuBLAS's quick return: nothing to compute, nothing read or written.
  if (m == 0 || n == 0 || ((al == T(0) || k == 0) && be == T(1))) return CUBLAS_STATUS_SUCCESS;
  const bool reads_ab = al != T(0) && k > 0;
  if (cublasStatus_t s = check_matrix(fn, c); s != CUBLAS_STATUS_SUCCESS) return s;
  if (reads_ab) {
    for (const Matrix* x : {&a, &b})
      if (cublasStatus_t s = check_matrix(fn, *x); s != CUBLAS_STATUS_SUCCESS) return s;
    for (const Matrix* x : {&a, &b})
      if (overlap(c, *x))
        return fail(CUBLAS_STATUS_INVALID_VALUE, fn,
                    std::string("C (") + hex(C) + ", " + std::to_string(c.bytes()) +
                        " bytes) overlaps " + x->name + " (" + hex(x->p) + ", " +
                        std::to_string(x->bytes()) + " bytes)");
  }
  // TF32 tensor-op math on float data multiplies operands rounded to TF32.
  const bool tf32 = std::is_same_v<T, float> &&
                    (handle->math_mode & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH;
  const auto operand = [tf32](T v) {
    if constexpr (std::is_same_v<T, float>)
      return static_cast<double>(tf32 ? nddr_emu::round_tf32(v) : v);
    else
      return static_cast<double>(v);
  };
  const cudaError_t e = nddr_emu::enqueue(handle->stream, [=] {
    if (!nddr_emu::is_device_range(C, c.bytes()) ||
        (reads_ab &&
         (!nddr_emu::is_device_range(A, a.bytes()) || !nddr_emu::is_device_range(B, b.bytes())))) {
      nddr_emu::report_error(
          cudaErrorIllegalAddress,
          std::string("cuBLAS ") + fn + " ran with a matrix no longer in a live device allocation");
      return;
    }
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t i = 0; i < m; ++i) {
        double sum = 0.0;
        if (reads_ab)
          for (std::int64_t l = 0; l < k; ++l) {
            const double av =
                operand(ta ? A[l + i * std::int64_t{lda}] : A[i + l * std::int64_t{lda}]);
            const double bv =
                operand(tb ? B[j + l * std::int64_t{ldb}] : B[l + j * std::int64_t{ldb}]);
            sum += av * bv;
          }
        T& out = C[i + j * std::int64_t{ldc}];
        double v = reads_ab ? static_cast<double>(al) * sum : 0.0;
        if (be != T(0)) v += static_cast<double>(be) * static_cast<double>(out);
        out = static_cast<T>(v);
      }
  });
  if (e != cudaSuccess)
    return fail(
        CUBLAS_STATUS_EXECUTION_FAILED, fn,
        std::string("queueing the work on the handle's stream failed: ") + cudaGetErrorName(e));
  return CUBLAS_STATUS_SUCCESS;
}

/// cublas{S,D}scal_v2 for T = float, double.
template <class T>
cublasStatus_t scal(const char* fn, cublasHandle_t handle, int n, const T* alpha, T* x,
                    int incx) {
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(handle))
    return fail(
        CUBLAS_STATUS_NOT_INITIALIZED, fn,
        handle == nullptr ? "the handle is null" : "the handle is not a live cuBLAS handle");
  if (alpha == nullptr) return fail(CUBLAS_STATUS_INVALID_VALUE, fn, "alpha is null");
  if (n <= 0 || incx <= 0) return CUBLAS_STATUS_SUCCESS;  // cuBLAS's quick return
  // x as a 1 x n matrix with leading dimension incx: (n - 1) * incx + 1 elements.
  const Matrix m{"x", x, 1, n, incx, sizeof(T)};
  if (cublasStatus_t s = check_matrix(fn, m); s != CUBLAS_STATUS_SUCCESS) return s;
  const T al = *alpha;
  const std::size_t bytes = m.bytes();
  const cudaError_t e = nddr_emu::enqueue(handle->stream, [=] {
    if (!nddr_emu::is_device_range(x, bytes)) {
      nddr_emu::report_error(
          cudaErrorIllegalAddress,
          std::string("cuBLAS ") + fn + " ran with a vector no longer in a live device allocation");
      return;
    }
    for (std::int64_t i = 0; i < n; ++i) x[i * std::int64_t{incx}] *= al;
  });
  if (e != cudaSuccess)
    return fail(
        CUBLAS_STATUS_EXECUTION_FAILED, fn,
        std::string("queueing the work on the handle's stream failed: ") + cudaGetErrorName(e));
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  Lock lock(nddr_emu::device_mutex());
  if (handle == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasCreate_v2", "the output pointer is null");
  auto* h = new cublasContext;
  live_handles().insert(h);
  *handle = h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasDestroy_v2",
                handle == nullptr ? "the handle is null"
                                  : "the handle was never created or was already destroyed");
  live_handles().erase(handle);
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetStream_v2", "not a live cuBLAS handle");
  handle->stream = streamId;
  return CUBLAS_STATUS_SUCCESS;
}

/// Not in the brief's list: tests/cuda/cuda_test.cpp reads the handle's stream back.
cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* streamId) {
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasGetStream_v2", "not a live cuBLAS handle");
  if (streamId == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasGetStream_v2", "streamId is null");
  *streamId = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

/// Accepts one of the header's math modes, optionally with
/// CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION; the mode is recorded, not emulated.
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(handle))
    return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetMathMode", "not a live cuBLAS handle");
  const int base =
      static_cast<int>(mode) & ~static_cast<int>(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TENSOR_OP_MATH &&
      base != CUBLAS_PEDANTIC_MATH && base != CUBLAS_TF32_TENSOR_OP_MATH &&
      base != CUBLAS_FP32_EMULATED_BF16X9_MATH && base != CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasSetMathMode",
                "mode " + std::to_string(static_cast<int>(mode)) + " is not a cublasMath_t value");
  handle->math_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "error detected trying to check the license";
  }
  return "unknown error";
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                              cublasOperation_t transb, int m, int n, int k, const float* alpha,
                              const float* A, int lda, const float* B, int ldb, const float* beta,
                              float* C, int ldc) {
  return gemm("cublasSgemm_v2", handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C,
              ldc);
}

cublasStatus_t cublasDgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                              cublasOperation_t transb, int m, int n, int k, const double* alpha,
                              const double* A, int lda, const double* B, int ldb,
                              const double* beta, double* C, int ldc) {
  return gemm("cublasDgemm_v2", handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C,
              ldc);
}

cublasStatus_t cublasSscal_v2(cublasHandle_t handle, int n, const float* alpha, float* x,
                              int incx) {
  return scal("cublasSscal_v2", handle, n, alpha, x, incx);
}

cublasStatus_t cublasDscal_v2(cublasHandle_t handle, int n, const double* alpha, double* x,
                              int incx) {
  return scal("cublasDscal_v2", handle, n, alpha, x, incx);
}

}  // extern "C"
