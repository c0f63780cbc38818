#pragma once
// The CUDA emulator's host side, shared by its parts (runtime.cpp: the CUDA runtime API;
// cudnn.cpp and cublas.cpp: the cuDNN and cuBLAS calls nddr makes). Everything runs on the
// calling host thread, in issue order: an asynchronous call runs before it returns, unless its
// stream is being captured into a CUDA graph, in which case it is recorded and runs at each
// cudaGraphLaunch. "Device" memory is host memory that cudaMalloc handed out; the emulator keeps
// a registry of it so copies and kernel arguments can be checked for the wrong kind of pointer.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>

namespace nddr_emu {

/// One lock for the whole emulated device (host threads may share a context).
std::recursive_mutex& device_mutex();

/// Runs `work` now, or records it when `stream` is being captured. Returns cudaSuccess, or the
/// error of an invalid stream.
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work);

/// True while `stream` is being captured into a graph.
bool is_capturing(cudaStream_t stream);

/// Marks the capture in progress on `stream` as invalidated (a call that is illegal while
/// capturing, as cudaStreamSynchronize or a synchronous copy); cudaStreamEndCapture then fails.
void invalidate_capture(cudaStream_t stream);

/// True when [p, p + bytes) lies inside one live cudaMalloc allocation.
bool is_device_range(const void* p, std::size_t bytes);

/// True when p points into (or one past the end of) a live cudaMalloc allocation.
bool is_device_pointer(const void* p);

/// Records the last error for cudaGetLastError / cudaPeekAtLastError, with a message printed to
/// stderr (the emulator's equivalent of a kernel fault or a bad launch).
void report_error(cudaError_t error, const std::string& what);

/// A pointer as text, for the emulator's messages.
inline std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

/// Whether [a, a + a_bytes) and [b, b + b_bytes) share a byte (empty ranges share none).
inline bool ranges_overlap(const void* a, std::size_t a_bytes, const void* b,
                           std::size_t b_bytes) {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a), b0 = reinterpret_cast<std::uintptr_t>(b);
  return a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

/// `v` rounded to TF32 (10 explicit mantissa bits, nearest with ties away from zero, as the
/// tensor cores' operand conversion cvt.rna.tf32.f32): what cuBLAS and cuDNN multiply when they
/// may use TF32 tensor cores on float data. Infinities and NaNs pass through.
inline float round_tf32(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

}  // namespace nddr_emu
