#pragma once
/// \file
/// What `Trainer<E, Cuda>` needs beyond the ops: page-locked host buffers and events (RAII),
/// task losses whose values stay on the device until the step is done (no host round trip
/// inside a training step), an SGD update that a bad loss cancels on the device, and
/// double-buffered batch uploads through pinned memory on a copy stream of their own, so the
/// next batch travels while the current step computes.

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/handles.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/backend/cuda/loss.hpp"
#include "nddr/backend/cuda/sgd.hpp"
#include "nddr/backend/cuda/storage.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/loss.hpp"
#include "nddr/optim/sgd.hpp"
#include "nddr/train/device_state.hpp"

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

/// K loss reductions whose totals stay on the device: each task's reduction scratch
/// (launch::kLossBlocks partial results, then the total) in one device buffer, and a pinned host
/// copy of the K totals that `read_async` fills without blocking.
class DeviceLosses {
 public:
  static constexpr std::size_t kSlot = static_cast<std::size_t>(launch::kLossBlocks) + 1;
  static_assert(sizeof(LossStats) == 3 * sizeof(double) && alignof(LossStats) <= alignof(double),
                "nddr::cuda::DeviceLosses stores LossStats in a buffer of doubles");

  explicit DeviceLosses(std::size_t count)
      : count_(count),
        stats_(Shape{static_cast<std::int64_t>(count * kSlot * 3)}),
        host_(count * sizeof(LossStats)),
        ready_(Event::create()) {}

  std::size_t count() const { return count_; }
  /// The reduction scratch of loss `k` (kSlot entries; the total is the last).
  LossStats* scratch(std::size_t k) { return reinterpret_cast<LossStats*>(stats_.data()) + k * kSlot; }
  const LossStats* total(std::size_t k) const {
    return reinterpret_cast<const LossStats*>(stats_.data()) + k * kSlot + (kSlot - 1);
  }
  /// The guard that cancels an SGD step when any of the totals is bad.
  SgdGuard guard() const {
    return {total(0), static_cast<std::int64_t>(count_), static_cast<std::int64_t>(kSlot)};
  }
  /// Queues the copies of every total to the host on `ctx`'s stream.
  void read_async(Context<Cuda>& ctx) {
    auto* host = reinterpret_cast<LossStats*>(host_.data());
    for (std::size_t k = 0; k < count_; ++k)
      NDDR_CUDA_CHECK(cudaMemcpyAsync(host + k, total(k), sizeof(LossStats), cudaMemcpyDeviceToHost,
                                      ctx.stream()),
                      "reading loss total ", k);
    ready_.record(ctx.stream());
  }
  /// Waits for the copies of the last `read_async` and returns total `k`.
  LossStats host_total(std::size_t k) const {
    ready_.synchronize();
    LossStats s;
    std::memcpy(&s, host_.data() + k * sizeof(LossStats), sizeof s);
    return s;
  }

 private:
  std::size_t count_;
  Tensor<double, Cuda> stats_;
  PinnedBuffer host_;
  Event ready_;
};

/// The loss value a finished total stands for: scale * sum / count (0 without valid pixels),
/// rounded to `T` as the synchronous op returns it.
template <class T>
double deferred_loss_value(const LossStats& total, double scale) {
  return total.count == 0.0 ? 0.0 : static_cast<double>(static_cast<T>(scale * total.sum / total.count));
}

/// Softmax cross-entropy and its gradient without a host round trip: the statistics pass
/// reduces into `scratch` (a DeviceLosses slot) and the gradient kernel divides by the count
/// it finds there, so dlogits += scale/count * dCE is queued right behind it. Out-of-range
/// labels are recorded in the total (first_bad) and contribute no gradient.
template <class T>
void deferred_loss(Context<Cuda>& ctx, const SoftmaxCrossEntropyOptions& opt,
                   TensorView<const T, Cuda> logits, TensorView<const std::int32_t, Cuda> labels,
                   TensorView<T, Cuda> dlogits, LossStats* scratch) {
  static_assert(kKernelType<T>, "nddr::cuda::deferred_loss: CUDA supports float and double");
  constexpr const char* kWho = "nddr::cuda::deferred_loss (softmax cross-entropy)";
  const Shape s = ops::detail::check_cross_entropy_shapes(kWho, logits.shape(), labels.shape());
  ops::detail::check_loss_scale(kWho, opt.scale());
  check_shape(kWho, "dlogits", dlogits.shape(), logits.shape());
  const std::int64_t plane = s.h() * s.w();
  launch::cross_entropy_stats<T>(ctx.stream(), logits.data(), labels.data(), s.n() * plane, s.c(),
                                 plane, opt.ignore_label(), true, scratch);
  launch::cross_entropy_backward<T>(ctx.stream(), logits.data(), labels.data(), dlogits.data(),
                                    s.n() * plane, s.c(), plane, opt.ignore_label(),
                                    static_cast<T>(opt.scale()), scratch + launch::kLossBlocks);
}

/// The normal loss and its gradient without a host round trip (see the cross-entropy overload).
template <class T>
void deferred_loss(Context<Cuda>& ctx, const NormalLossOptions& opt, TensorView<const T, Cuda> p,
                   TensorView<const T, Cuda> g, TensorView<T, Cuda> dp, LossStats* scratch) {
  static_assert(kKernelType<T>, "nddr::cuda::deferred_loss: CUDA supports float and double");
  constexpr const char* kWho = "nddr::cuda::deferred_loss (normal loss)";
  ops::detail::check_normal_loss_args(kWho, p.shape(), g.shape(), opt);
  check_shape(kWho, "dp", dp.shape(), p.shape());
  const Shape& s = p.shape();
  const std::int64_t plane = s.h() * s.w();
  const T eps = static_cast<T>(opt.eps());
  launch::normal_loss_stats<T>(ctx.stream(), p.data(), g.data(), s.n() * plane, plane, opt.form(),
                               eps, true, scratch);
  launch::normal_loss_backward<T>(ctx.stream(), p.data(), g.data(), dp.data(), s.n() * plane,
                                  plane, opt.form(), eps, static_cast<T>(opt.scale()),
                                  scratch + launch::kLossBlocks);
}

/// Double-buffered host-to-device batch copies through pinned memory on a copy stream of its
/// own. A slot's upload waits (on the device) for the compute that last read the slot's device
/// buffers, and (on the host) for its own previous copy to leave the pinned buffer; the compute
/// waits (on the device) for the upload. So a step on slot 0 overlaps the upload into slot 1.
class BatchUploader {
 public:
  /// One copy: `bytes` from host memory `host` to device memory `device`.
  struct Piece {
    void* device;
    const void* host;
    std::size_t bytes;
  };

  explicit BatchUploader(std::size_t slots = 2) : stream_(Stream::create()) {
    for (std::size_t i = 0; i < slots; ++i)
      slots_.push_back(Slot{PinnedBuffer{}, Event::create(), Event::create(), false, false});
  }
  BatchUploader(const BatchUploader&) = delete;
  BatchUploader& operator=(const BatchUploader&) = delete;
  /// Waits for queued copies: the device buffers they write may be freed right after.
  ~BatchUploader() { static_cast<void>(cudaStreamSynchronize(stream_)); }

  std::size_t slots() const { return slots_.size(); }

  /// Stages `pieces` into slot `slot` and queues their copies; returns once the host-side
  /// staging copy is done.
  void upload(std::size_t slot, std::span<const Piece> pieces) {
    Slot& s = at(slot);
    if (s.uploading) s.uploaded.synchronize();  // the pinned buffer is free again
    std::size_t total = 0;
    for (const Piece& p : pieces) total += align(p.bytes);
    s.pinned.reserve(total);
    if (s.released_once) s.released.wait_on(stream_);
    std::size_t offset = 0;
    for (const Piece& p : pieces) {
      if (p.bytes == 0) continue;
      std::memcpy(s.pinned.data() + offset, p.host, p.bytes);
      NDDR_CUDA_CHECK(cudaMemcpyAsync(p.device, s.pinned.data() + offset, p.bytes,
                                      cudaMemcpyHostToDevice, stream_),
                      "uploading ", p.bytes, " bytes of a batch");
      offset += align(p.bytes);
    }
    s.uploaded.record(stream_);
    s.uploading = true;
  }
  /// Makes `ctx`'s stream wait for slot `slot`'s upload.
  void acquire(Context<Cuda>& ctx, std::size_t slot) {
    Slot& s = at(slot);
    if (s.uploading) s.uploaded.wait_on(ctx.stream());
  }
  /// Marks the end (in `ctx`'s stream) of the compute that reads slot `slot`'s device buffers.
  void release(Context<Cuda>& ctx, std::size_t slot) {
    Slot& s = at(slot);
    s.released.record(ctx.stream());
    s.released_once = true;
  }

 private:
  struct Slot {
    PinnedBuffer pinned;
    Event uploaded, released;
    bool uploading;
    bool released_once;
  };
  static std::size_t align(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
  Slot& at(std::size_t slot) {
    check<Error>(slot < slots_.size(), "nddr::cuda::BatchUploader: slot ", slot, " of ",
                 slots_.size());
    return slots_[slot];
  }

  Stream stream_;
  std::vector<Slot> slots_;
};

}  // namespace nddr::cuda

namespace nddr::detail {

/// The CUDA side of `Trainer<E, Cuda>`: deferred task losses, the guarded SGD step,
/// double-buffered batch uploads and a host context for target resizing and metrics.
template <>
class TrainerDevice<Cuda> {
 public:
  static constexpr bool available = true;

  TrainerDevice(Context<Cuda>& ctx, std::size_t tasks, int host_threads)
      : losses_((ctx.activate(), tasks)), uploader_(2), host_(host_threads) {}

  Context<Cpu>& host() { return host_; }
  cuda::BatchUploader& uploader() { return uploader_; }
  cuda::DeviceLosses& losses() { return losses_; }

  /// Queues task `k`'s loss (options `opt`) and its gradient, accumulated into `dpred`.
  template <class T, class Options, class U>
  void loss(Context<Cuda>& ctx, std::size_t k, const Options& opt, TensorView<const T, Cuda> pred,
            TensorView<const U, Cuda> target, TensorView<T, Cuda> dpred) {
    cuda::deferred_loss<T>(ctx, opt, pred, target, dpred, losses_.scratch(k));
  }
  /// Queues the SGD step, cancelled on the device if any queued loss went bad.
  template <class T>
  void update(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store, Sgd<T, Cuda>& sgd, double lr) {
    cuda::sgd_step<T>(ctx, store, sgd, lr, losses_.guard());
    losses_.read_async(ctx);
  }
  /// Task `k`'s loss value once the step is done; throws ValueError naming the first
  /// out-of-range label (read from `labels`, shape of the prediction `pred`).
  template <class T>
  double finished_loss(Context<Cuda>& ctx, std::size_t k, const char* task, double scale,
                       const Shape& pred, const std::int32_t* labels, std::int32_t ignore) {
    const cuda::LossStats t = losses_.host_total(k);
    if (labels != nullptr) {
      const Shape four = pred.rank() == 2 ? Shape::nchw(pred[0], pred[1], 1, 1) : pred;
      cuda::detail::check_first_bad_label(ctx, task, four, labels, t, ignore);
    }
    return cuda::deferred_loss_value<T>(t, scale);
  }

 private:
  cuda::DeviceLosses losses_;
  cuda::BatchUploader uploader_;
  Context<Cpu> host_;
};

}  // namespace nddr::detail
