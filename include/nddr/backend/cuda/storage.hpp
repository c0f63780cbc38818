#pragma once
/// \file
/// `Storage<Cuda>`: device memory through a process-wide caching pool, so that the tensors a
/// training step frees are reused by the next step instead of going through cudaMalloc and the
/// device-wide synchronisation of cudaFree.
///
/// Ordering: a cached block is handed out again without waiting for the work that last used
/// it. That is safe because nddr queues all device work either on the legacy default stream
/// (zeroing and copies here) or on blocking streams (`Context<Cuda>`), and the legacy stream
/// orders itself after, and before, all of them: a new `Tensor` is zero-filled on it before any
/// op can touch the reused memory. Raw `allocate` callers that skip the zeroing (the context
/// workspace) synchronise their stream before giving memory back.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "nddr/backend/cuda/error.hpp"
#include "nddr/core/device.hpp"
#include "nddr/core/storage.hpp"

namespace nddr {

template <>
inline constexpr bool kDeviceAvailable<Cuda> = true;

namespace cuda {

/// Caching allocator of device memory: exact-size free lists per (device, rounded size).
/// Thread-safe. Blocks are returned to CUDA only by `release_cached` (or when an allocation
/// fails, before retrying it).
class MemoryPool {
 public:
  /// Rounding granularity; also the alignment cudaMalloc already guarantees.
  static constexpr std::size_t kSmallRound = 512;
  /// Above this, sizes round to whole MiB so that slightly different shapes share blocks.
  static constexpr std::size_t kLargeThreshold = std::size_t{1} << 20;

  /// The process-wide pool. Deliberately never destroyed: device memory goes back with the
  /// process, and tensors in static storage may be freed after any destructor would have run.
  static MemoryPool& instance() {
    static MemoryPool* pool = new MemoryPool;
    return *pool;
  }

  /// At least `bytes` of device memory on the current device (nullptr for 0 bytes).
  void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    const std::size_t size = round_size(bytes);
    int device = 0;
    NDDR_CUDA_CHECK(cudaGetDevice(&device), "querying the current device to allocate ", bytes,
                    " bytes");
    {
      std::lock_guard lock(mutex_);
      auto it = free_.find({device, size});
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= size;
        live_.emplace(p, Block{device, size});
        note_peak();
        return p;
      }
    }
    void* p = nullptr;
    if (cudaMalloc(&p, size) != cudaSuccess) {
      static_cast<void>(cudaGetLastError());
      release_cached();
      NDDR_CUDA_CHECK(cudaMalloc(&p, size), "allocating ", size, " bytes on device ", device, " (",
                      allocated_bytes(), " bytes already in use by nddr tensors)");
    }
    std::lock_guard lock(mutex_);
    live_.emplace(p, Block{device, size});
    allocated_bytes_ += size;
    note_peak();
    return p;
  }

  /// Returns `p` (from `allocate`, or nullptr) to the cache.
  void deallocate(void* p) noexcept {
    if (p == nullptr) return;
    std::lock_guard lock(mutex_);
    auto it = live_.find(p);
    if (it == live_.end()) return;
    const Block b = it->second;
    live_.erase(it);
    free_[{b.device, b.size}].push_back(p);
    cached_bytes_ += b.size;
  }

  /// Gives every cached (unused) block back to CUDA. Synchronises the device (cudaFree does).
  void release_cached() noexcept {
    std::lock_guard lock(mutex_);
    int current = 0;
    static_cast<void>(cudaGetDevice(&current));
    for (auto& [key, blocks] : free_) {
      static_cast<void>(cudaSetDevice(key.first));
      for (void* p : blocks) {
        static_cast<void>(cudaFree(p));
        allocated_bytes_ -= key.second;
      }
    }
    free_.clear();
    cached_bytes_ = 0;
    static_cast<void>(cudaSetDevice(current));
  }

  /// Bytes obtained from cudaMalloc and not released (live + cached).
  std::size_t allocated_bytes() const {
    std::lock_guard lock(mutex_);
    return allocated_bytes_;
  }
  /// Bytes held in the cache, ready for reuse.
  std::size_t cached_bytes() const {
    std::lock_guard lock(mutex_);
    return cached_bytes_;
  }

  /// The most bytes in use by tensors (live blocks, rounded sizes) at once since the last
  /// `reset_peak` (or the start), over all devices.
  std::size_t peak_bytes() const {
    std::lock_guard lock(mutex_);
    return peak_bytes_;
  }
  /// Starts a new peak from the bytes in use now (e.g. before each run of a comparison).
  void reset_peak() {
    std::lock_guard lock(mutex_);
    peak_bytes_ = allocated_bytes_ - cached_bytes_;
  }

  /// The size a request of `bytes` is served with.
  static constexpr std::size_t round_size(std::size_t bytes) {
    const std::size_t unit = bytes < kLargeThreshold ? kSmallRound : kLargeThreshold;
    return (bytes + unit - 1) / unit * unit;
  }

 private:
  struct Block {
    int device;
    std::size_t size;
  };

  MemoryPool() = default;

  mutable std::mutex mutex_;
  std::map<std::pair<int, std::size_t>, std::vector<void*>> free_;
  std::map<void*, Block> live_;
  std::size_t allocated_bytes_ = 0;
  std::size_t cached_bytes_ = 0;
  std::size_t peak_bytes_ = 0;
  void note_peak() { peak_bytes_ = std::max(peak_bytes_, allocated_bytes_ - cached_bytes_); }
};

}  // namespace cuda

namespace cuda {

/// While alive, `Storage<Cuda>::zero` and `copy` of the calling thread are queued on `stream`
/// instead of the legacy default stream: stream-ordered, so that a training step can be
/// captured as a CUDA Graph (the legacy stream cannot take part in a capture). Only for code
/// whose device work is all on `stream`, which then also orders the pool's block reuse.
class StorageStreamScope {
 public:
  explicit StorageStreamScope(cudaStream_t stream) : previous_(current()) { current() = stream; }
  ~StorageStreamScope() { current() = previous_; }
  StorageStreamScope(const StorageStreamScope&) = delete;
  StorageStreamScope& operator=(const StorageStreamScope&) = delete;

  /// The stream of the innermost live scope of this thread, or nullptr.
  static cudaStream_t& current() {
    thread_local cudaStream_t stream = nullptr;
    return stream;
  }

 private:
  cudaStream_t previous_;
};

}  // namespace cuda

/// Device memory of the current CUDA device, served by `cuda::MemoryPool`.
template <>
struct Storage<Cuda> {
  static void* allocate(std::size_t bytes) { return cuda::MemoryPool::instance().allocate(bytes); }
  static void deallocate(void* p) noexcept { cuda::MemoryPool::instance().deallocate(p); }
  /// Queued on the legacy default stream (see the ordering note at the top of this file), or on
  /// the stream of a live `cuda::StorageStreamScope`.
  static void zero(void* p, std::size_t bytes) {
    if (!bytes) return;
    if (cudaStream_t s = cuda::StorageStreamScope::current())
      NDDR_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, s), "zeroing ", bytes, " bytes of device memory");
    else
      NDDR_CUDA_CHECK(cudaMemset(p, 0, bytes), "zeroing ", bytes, " bytes of device memory");
  }
  /// Device-to-device copy, queued like `zero`.
  static void copy(void* dst, const void* src, std::size_t bytes) {
    if (!bytes) return;
    if (cudaStream_t s = cuda::StorageStreamScope::current())
      NDDR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "copying ",
                      bytes, " bytes between device buffers");
    else
      NDDR_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "copying ", bytes,
                      " bytes between device buffers");
  }
  /// Host-to-device copy (synchronous).
  static void upload(void* dst, const void* host_src, std::size_t bytes) {
    if (bytes)
      NDDR_CUDA_CHECK(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice), "uploading ",
                      bytes, " bytes to the device");
  }
  /// Device-to-host copy (synchronous).
  static void download(void* host_dst, const void* src, std::size_t bytes) {
    if (bytes)
      NDDR_CUDA_CHECK(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost), "downloading ",
                      bytes, " bytes from the device");
  }
};

}  // namespace nddr
