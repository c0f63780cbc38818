#pragma once
/// \file
/// Raw memory per device. The CPU model lives here; the CUDA model in <nddr/cuda.hpp>.

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

#include "nddr/core/device.hpp"

namespace nddr {

/// Memory primitives of device `D`: allocate, deallocate, zero, copy (same device).
/// The primary template is never defined; a backend header specialises it.
template <class D>
struct Storage {
  static_assert(kDeviceAvailable<D>,
                "nddr::Storage: no backend for this device; for nddr::Cuda add "
                "#include <nddr/cuda.hpp> and link nddr::cuda");
};

template <>
struct Storage<Cpu> {
  /// Every CPU buffer is 64-byte aligned (one cache line, one AVX-512 register).
  static constexpr std::size_t kAlignment = 64;

  static void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  static void deallocate(void* p) noexcept { std::free(p); }
  static void zero(void* p, std::size_t bytes) {
    if (bytes) std::memset(p, 0, bytes);
  }
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  /// Host-to-device and device-to-host copies; on the CPU both are plain copies.
  static void upload(void* dst, const void* host_src, std::size_t bytes) { copy(dst, host_src, bytes); }
  static void download(void* host_dst, const void* src, std::size_t bytes) {
    copy(host_dst, src, bytes);
  }
};

}  // namespace nddr
