#pragma once
// Stand-in for CUDA's <cuda_runtime.h> when the CPU emulator (tests/emulation) compiles nddr's
// kernels (include/nddr/backend/cuda/kernels/*.cuh) with the host compiler: the real runtime
// API header for the types and host functions, plus the device side a kernel body uses
// (threadIdx and friends, __syncthreads, __shfl_down_sync, atomics, __shared__) and the launcher
// NDDR_LAUNCH expands to. Each CUDA thread of a block runs as a fiber on the calling host thread;
// blocks run one after another. See docs/testing.md ("The CUDA emulator").

#include <cuda_runtime_api.h>  // the real header: cudaStream_t, dim3, uint3, the API

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#if !defined(NDDR_CUDA_EMULATION)
#error "tests/emulation/include/cuda_runtime.h is the CPU emulator's; define NDDR_CUDA_EMULATION"
#endif

namespace nddr_emu {

/// The index of the running CUDA thread and block and the launch's dimensions. Plain globals:
/// one host thread runs the emulated device at a time (device_mutex in runtime.hpp).
inline uint3 g_thread_idx{};
inline uint3 g_block_idx{};
inline dim3 g_block_dim{};
inline dim3 g_grid_dim{};

/// __syncthreads(): every thread of the block waits here (runtime.cpp).
void sync_block();
/// __shfl_down_sync on 8 bytes of raw value: the value of lane + delta within `width`, else
/// the caller's own.
std::uint64_t shuffle_down(std::uint64_t bits, unsigned delta, int width);

/// Runs a kernel's grid: `thread` is called once per CUDA thread with the indices set, as a
/// fiber when the kernel synchronizes (learned per kernel at its first launch). Returns the
/// error of an invalid configuration or stream (also recorded for cudaGetLastError).
cudaError_t run_grid(const char* name, const void* kernel, dim3 grid, dim3 block,
                     std::size_t shared_bytes, cudaStream_t stream, std::function<void()> thread);

/// Reports a kernel argument that is a pointer outside emulated device memory (a host pointer
/// handed to a kernel): recorded as cudaErrorInvalidValue with the kernel's name; false then.
bool check_kernel_pointer(const char* name, std::size_t index, const void* p);

/// Copies the launch's arguments into the kernel's parameter types (as a real launch does),
/// checks the pointer ones, and runs the grid.
template <class... P>
struct Launcher {
  const char* name;
  dim3 grid, block;
  std::size_t shared_bytes;
  cudaStream_t stream;
  void (*kernel)(P...);

  template <class... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong argument count");
    auto args = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(a)...);
    if (!check_pointers(*args, std::index_sequence_for<P...>{})) return;  // a GPU would fault
    auto* k = kernel;
    run_grid(name, reinterpret_cast<const void*>(k), grid, block, shared_bytes, stream,
             [k, args] { std::apply(k, *args); });
  }

 private:
  template <class Tuple, std::size_t... I>
  bool check_pointers(const Tuple& t, std::index_sequence<I...>) const {
    return (check_one(I, std::get<I>(t)) & ...);
  }
  template <class V>
  bool check_one(std::size_t i, const V& v) const {
    if constexpr (std::is_pointer_v<V>)
      return check_kernel_pointer(name, i, v);
    else
      return true;
  }
};

template <class... P>
Launcher<P...> launch(const char* name, dim3 grid, dim3 block, std::size_t shared_bytes,
                      cudaStream_t stream, void (*kernel)(P...)) {
  return {name, grid, block, shared_bytes, stream, kernel};
}

}  // namespace nddr_emu

#define threadIdx (::nddr_emu::g_thread_idx)
#define blockIdx (::nddr_emu::g_block_idx)
#define blockDim (::nddr_emu::g_block_dim)
#define gridDim (::nddr_emu::g_grid_dim)
#define warpSize 32

// One block runs at a time and all its fibers share a function's statics: shared memory.
#undef __shared__
#define __shared__ static

inline void __syncthreads() { ::nddr_emu::sync_block(); }

template <class T>
T __shfl_down_sync(unsigned /*mask*/, T value, unsigned delta, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "emulated __shfl_down_sync: values of at most 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = ::nddr_emu::shuffle_down(bits, delta, width);
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// Fibers switch only at barriers, so a read-modify-write is atomic as written.
template <class T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

template <class T>
T atomicMin(T* address, T value) {
  const T old = *address;
  if (value < old) *address = value;
  return old;
}
