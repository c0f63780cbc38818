#pragma once
/// \file
/// Move-only RAII owners of page-locked host memory (`cuda::PinnedBuffer`, the source of truly
/// asynchronous copies) and of CUDA events (`cuda::Event`).

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/handles.hpp"

namespace nddr::cuda {

/// Page-locked host memory (cudaHostAlloc): copies from and to it are truly asynchronous.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t bytes) { reserve(bytes); }
  PinnedBuffer(PinnedBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { release(); }

  /// Grows to at least `bytes` (the contents are lost when it grows). The caller makes sure no
  /// queued copy still uses the old memory.
  void reserve(std::size_t bytes) {
    if (bytes <= bytes_) return;
    release();
    void* p = nullptr;
    NDDR_CUDA_CHECK(cudaHostAlloc(&p, bytes, cudaHostAllocDefault), "allocating ", bytes,
                    " bytes of pinned host memory");
    p_ = static_cast<std::byte*>(p);
    bytes_ = bytes;
  }
  std::byte* data() const { return p_; }
  std::size_t size() const { return bytes_; }

 private:
  void release() noexcept {
    if (p_ != nullptr) static_cast<void>(cudaFreeHost(p_));
    p_ = nullptr;
    bytes_ = 0;
  }

  std::byte* p_ = nullptr;
  std::size_t bytes_ = 0;
};

namespace detail {
struct EventTraits {
  static void destroy(cudaEvent_t e) noexcept { static_cast<void>(cudaEventDestroy(e)); }
};
}  // namespace detail

/// A CUDA event without timing (the cheapest kind), on the current device.
class Event : public UniqueHandle<cudaEvent_t, detail::EventTraits> {
 public:
  using UniqueHandle::UniqueHandle;
  static Event create() {
    cudaEvent_t e = nullptr;
    NDDR_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "creating a CUDA event");
    return Event(e);
  }
  /// Marks the current end of `stream`'s queue.
  void record(cudaStream_t stream) const {
    NDDR_CUDA_CHECK(cudaEventRecord(get(), stream), "recording a CUDA event");
  }
  /// Makes `stream` wait (on the device) for the recorded work.
  void wait_on(cudaStream_t stream) const {
    NDDR_CUDA_CHECK(cudaStreamWaitEvent(stream, get(), 0), "making a stream wait for an event");
  }
  /// Blocks the host until the recorded work is done (reports asynchronous errors).
  void synchronize() const {
    NDDR_CUDA_CHECK(cudaEventSynchronize(get()), "waiting for a CUDA event");
  }
};

}  // namespace nddr::cuda
