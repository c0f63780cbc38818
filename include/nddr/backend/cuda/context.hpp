#pragma once
/// \file
/// `Context<Cuda>`: one device, one stream, the cuDNN and cuBLAS handles bound to it and a
/// growable device workspace. Every CUDA op takes it first and queues its work on `stream()`.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cudnn.h>

#include <cstddef>
#include <string>

#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/handles.hpp"
#include "nddr/backend/cuda/storage.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/device.hpp"

namespace nddr {

namespace cuda::detail {

/// The runtime's answer to "how many devices?", with the error it gave instead, if any.
struct DeviceQuery {
  int count = 0;
  cudaError_t status = cudaSuccess;
};

inline DeviceQuery query_devices() noexcept {
  DeviceQuery q;
  q.status = cudaGetDeviceCount(&q.count);
  if (q.status != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    q.count = 0;
  }
  return q;
}

}  // namespace cuda::detail

/// Number of usable CUDA devices; 0 (never an exception) when there is no device or no driver,
/// or the driver is older than the runtime ("driver version is insufficient").
inline int cuda_device_count() noexcept { return cuda::detail::query_devices().count; }

/// Whether at least one CUDA device can be used.
inline bool cuda_available() noexcept { return cuda_device_count() > 0; }

/// Execution state of one CUDA device. Not copyable or movable: ops and layers keep references.
template <>
class Context<Cuda> {
 public:
  using device_type = Cuda;

  /// Makes `device` current on the calling thread and creates the stream and handles there.
  /// Throws `DeviceError` naming the index and the device count when it is out of range.
  explicit Context(int device = 0) : device_(checked_device(device)) {
    NDDR_CUDA_CHECK(cudaSetDevice(device_), "selecting CUDA device ", device_);
    stream_ = cuda::Stream::create();
    cudnn_ = cuda::CudnnHandle::create(stream_);
    cublas_ = cuda::CublasHandle::create(stream_);
  }

  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  /// Waits for the queued work, so the workspace is idle when it goes back to the pool.
  ~Context() {
    static_cast<void>(cudaStreamSynchronize(stream_));
    Storage<Cuda>::deallocate(workspace_);
  }

  int device() const { return device_; }
  /// How this context computes (core/settings.hpp: TF32 or BF16 convolutions, TF32 GEMMs,
  /// deterministic or benchmarked cuDNN algorithms); every op run on it reads them, and the
  /// algorithm caches and captured training steps key on them.
  const NumericSettings& settings() const { return settings_; }
  void set_settings(const NumericSettings& s) { settings_ = s; }
  cudaStream_t stream() const { return stream_; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  cublasHandle_t cublas() const { return cublas_; }

  /// Makes this context's device current on the calling thread (needed only when one thread
  /// drives several devices).
  void activate() const {
    NDDR_CUDA_CHECK(cudaSetDevice(device_), "selecting CUDA device ", device_);
  }

  /// Blocks until all work queued on `stream()` has finished; reports asynchronous errors
  /// (a faulting kernel, say) as `DeviceError`.
  void synchronize() {
    NDDR_CUDA_CHECK(cudaStreamSynchronize(stream_), "waiting for the work queued on device ",
                    device_);
  }

  /// Device scratch memory of at least `count` elements of `T`, valid until the next call and
  /// only for work queued on `stream()`. Contents are unspecified. Grows, never shrinks.
  template <class T>
  T* workspace(std::size_t count) {
    return static_cast<T*>(workspace_bytes(count * sizeof(T)));
  }

  /// Device scratch memory of at least `bytes` bytes (see `workspace`).
  void* workspace_bytes(std::size_t bytes) {
    if (bytes > workspace_size_) {
      // The old block may still be read by queued work; it must be idle before the pool can
      // hand it to someone else.
      synchronize();
      Storage<Cuda>::deallocate(workspace_);
      workspace_ = nullptr;
      workspace_size_ = 0;
      workspace_ = Storage<Cuda>::allocate(bytes);
      workspace_size_ = bytes;
    }
    return workspace_;
  }

  /// Current workspace capacity in bytes.
  std::size_t workspace_size() const { return workspace_size_; }
  /// The workspace block (null before the first request); it changes when the workspace grows.
  const void* workspace_data() const { return workspace_; }

  /// While a training step is captured as a CUDA Graph: the device address of the graph's
  /// replay index r, which random ops read so that replay r draws the counters a step run
  /// r steps after the captured one would (null when not capturing).
  const std::uint64_t* replay_index() const { return replay_index_; }
  void set_replay_index(const std::uint64_t* p) { replay_index_ = p; }

 private:
  static int checked_device(int device) {
    const cuda::detail::DeviceQuery q = cuda::detail::query_devices();
    if (device >= 0 && device < q.count) return device;
    std::string reason;
    if (q.status != cudaSuccess)
      reason = nddr::detail::concat(" (cudaGetDeviceCount: ", cudaGetErrorName(q.status), ": ",
                                    cudaGetErrorString(q.status), ")");
    throw DeviceError(nddr::detail::concat("nddr::Context<Cuda>: device index ", device,
                                           " is out of range: ", q.count,
                                           " CUDA device(s) available", reason));
  }

  int device_;
  NumericSettings settings_{};
  cuda::Stream stream_;
  cuda::CudnnHandle cudnn_;
  cuda::CublasHandle cublas_;
  void* workspace_ = nullptr;
  std::size_t workspace_size_ = 0;
  const std::uint64_t* replay_index_ = nullptr;
};

}  // namespace nddr
