#pragma once
/// \file
/// Checked calls into the CUDA runtime, cuDNN and cuBLAS. A failing status becomes an
/// `nddr::DeviceError` whose message names the call, the library's error name and text, and
/// what nddr was doing:
///
/// \code
/// NDDR_CUDA_CHECK(cudaMalloc(&p, bytes), "allocating ", bytes, " bytes");
/// // nddr: CUDA runtime call failed while allocating 64 bytes: cudaMalloc(&p, bytes) returned
/// //   cudaErrorMemoryAllocation (out of memory) [storage.hpp:41]
/// \endcode

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <array>
#include <cstring>
#include <string>
#include <string_view>

#include "nddr/backend/cuda/cublas_api.hpp"
#include "nddr/core/error.hpp"

namespace nddr::cuda {

namespace detail {

inline bool succeeded(cudaError_t s) { return s == cudaSuccess; }
inline bool succeeded(cudnnStatus_t s) { return s == CUDNN_STATUS_SUCCESS; }
inline bool succeeded(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }

inline const char* library_name(cudaError_t) { return "CUDA runtime"; }
inline const char* library_name(cudnnStatus_t) { return "cuDNN"; }
inline const char* library_name(cublasStatus_t) { return "cuBLAS"; }

inline std::string describe(cudaError_t s) {
  return nddr::detail::concat(cudaGetErrorName(s), " (", cudaGetErrorString(s), ")");
}
inline std::string describe(cudnnStatus_t s) {
  // cuDNN 9 keeps a thread-local explanation of the last failure; it often names the bad
  // descriptor field, which the status alone does not.
  std::array<char, 512> last{};
  cudnnGetLastErrorString(last.data(), last.size());
  std::string out = cudnnGetErrorString(s);
  if (last[0] != '\0') out += nddr::detail::concat(" (", last.data(), ")");
  return out;
}
inline std::string describe(cublasStatus_t s) {
  // A status comes from a cuBLAS call, so the library is loaded; without it, the number.
  const CublasLoad& l = cublas_load();
  if (!l.error.empty()) return nddr::detail::concat("cuBLAS status ", static_cast<int>(s));
  return nddr::detail::concat(l.api.cublasGetStatusName(s), " (", l.api.cublasGetStatusString(s),
                              ")");
}

/// Clears a non-sticky runtime error so that the next unrelated call does not report it again.
inline void reset_last_error(cudaError_t) { static_cast<void>(cudaGetLastError()); }
inline void reset_last_error(cudnnStatus_t) {}
inline void reset_last_error(cublasStatus_t) {}

inline const char* base_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

/// Throws the `DeviceError` for a failed `call`; kept out of line of the fast path.
template <class Status>
[[noreturn]] void throw_device_error(Status status, const char* call, std::string_view what,
                                     const char* file, int line) {
  reset_last_error(status);
  throw DeviceError(nddr::detail::concat("nddr: ", library_name(status), " call failed while ",
                                         what, ": ", call, " returned ", describe(status), " [",
                                         base_name(file), ":", line, "]"));
}

/// The body of `NDDR_CUDA_CHECK`; `what()` builds the message only on failure.
template <class Status, class What>
void check_call(Status status, const char* call, const char* file, int line, What&& what) {
  if (!succeeded(status)) [[unlikely]]
    throw_device_error(status, call, what(), file, line);
}

}  // namespace detail

/// Throws `DeviceError` unless `status` (a `cudaError_t`, `cudnnStatus_t` or `cublasStatus_t`)
/// is success. `call` is the text of the call, `what` what was being done.
template <class Status>
void check_status(Status status, const char* call, std::string_view what, const char* file = "nddr",
                  int line = 0) {
  if (!detail::succeeded(status)) detail::throw_device_error(status, call, what, file, line);
}

}  // namespace nddr::cuda

/// Evaluates `call` (a CUDA runtime, cuDNN or cuBLAS call) and throws `nddr::DeviceError` if it
/// fails. The remaining arguments are streamed into the "while ..." part of the message and
/// are only evaluated on failure. An expression of type void.
#define NDDR_CUDA_CHECK(call, ...)                                    \
  ::nddr::cuda::detail::check_call((call), #call, __FILE__, __LINE__, \
                                   [&] { return ::nddr::detail::concat(__VA_ARGS__); })
