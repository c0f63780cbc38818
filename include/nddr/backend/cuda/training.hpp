#pragma once
/// \file
/// What `Trainer<E, Cuda>` needs beyond the ops: page-locked host buffers and events (RAII),
/// task losses whose values stay on the device until the step is done (no host round trip
/// inside a training step), an optimiser update (SGD, Adam, AdamW) that a bad loss cancels on
/// the device, and
/// double-buffered batch uploads through pinned memory on a copy stream of their own, so the
/// next batch travels while the current step computes, and the per-parameter work of a
/// multi-task weighting method (the rows of per-task gradients, their Gram matrix and the
/// combination, with cuBLAS).

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <span>
#include <utility>
#include <vector>

#include "nddr/backend/cuda/adam.hpp"
#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/handles.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/backend/cuda/linear.hpp"
#include "nddr/backend/cuda/loss.hpp"
#include "nddr/backend/cuda/pinned.hpp"
#include "nddr/backend/cuda/sgd.hpp"
#include "nddr/backend/cuda/storage.hpp"
#include "nddr/backend/cuda/task_loss.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/math/loss.hpp"
#include "nddr/optim/adam.hpp"
#include "nddr/optim/any.hpp"
#include "nddr/optim/sgd.hpp"
#include "nddr/train/device_state.hpp"

namespace nddr::cuda {

/// K loss reductions whose totals stay on the device: each task's reduction scratch
/// (launch::kLossBlocks partial results, then the total) in one device buffer, and a pinned host
/// copy of the K totals that `read_async` fills without blocking.
class DeviceLosses {
 public:
  static constexpr std::size_t kSlot = static_cast<std::size_t>(launch::kLossBlocks) + 1;
  static_assert(sizeof(LossStats) == 3 * sizeof(double) && alignof(LossStats) <= alignof(double),
                "nddr::cuda::DeviceLosses stores LossStats in a buffer of doubles");

  /// Every total starts as "no loss" (sum 0, count 0, no bad label), so a slot that no term
  /// uses never cancels an update.
  explicit DeviceLosses(std::size_t count)
      : count_(count),
        stats_(Shape{static_cast<std::int64_t>(count * kSlot * 3)}),
        host_(count * sizeof(LossStats)),
        ready_(Event::create()) {
    constexpr auto kNone = std::numeric_limits<unsigned long long>::max();
    const std::vector<LossStats> none(count * kSlot, LossStats{0.0, 0.0, kNone});
    NDDR_CUDA_CHECK(cudaMemcpy(stats_.data(), none.data(), none.size() * sizeof(LossStats),
                               cudaMemcpyHostToDevice),
                    "initialising the loss totals");
  }

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
  /// Queues the copies of every total to the host on `ctx`'s stream (capturable).
  void queue_reads(Context<Cuda>& ctx) {
    auto* host = reinterpret_cast<LossStats*>(host_.data());
    for (std::size_t k = 0; k < count_; ++k)
      NDDR_CUDA_CHECK(cudaMemcpyAsync(host + k, total(k), sizeof(LossStats), cudaMemcpyDeviceToHost,
                                      ctx.stream()),
                      "reading loss total ", k);
  }
  /// Marks the queued copies as the ones `host_total` waits for.
  void mark_ready(Context<Cuda>& ctx) { ready_.record(ctx.stream()); }
  /// Waits for the copies before the last `mark_ready` and returns total `k`.
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
    wait_slot(slot);  // the pinned buffer is free again
    Slot& s = at(slot);
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
  /// Blocks until slot `slot`'s last upload is done, so its device buffers may be reallocated.
  void wait_slot(std::size_t slot) {
    Slot& s = at(slot);
    if (s.uploading) s.uploaded.synchronize();
    s.uploading = false;
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

namespace nddr::cuda {

namespace detail {
struct GraphExecTraits {
  static void destroy(cudaGraphExec_t g) noexcept { static_cast<void>(cudaGraphExecDestroy(g)); }
};
struct GraphTraits {
  static void destroy(cudaGraph_t g) noexcept { static_cast<void>(cudaGraphDestroy(g)); }
};
}  // namespace detail

/// An instantiated CUDA Graph.
using GraphExec = UniqueHandle<cudaGraphExec_t, detail::GraphExecTraits>;
/// A CUDA Graph (the captured form, before instantiation).
using Graph = UniqueHandle<cudaGraph_t, detail::GraphTraits>;

/// What a captured training step depends on besides its (fixed) parameter buffers: when any
/// of it changes, the step must be captured again.
struct StepGraphKey {
  Shape image{};
  std::uint64_t layout = 0;         ///< Network::layout_version()
  const void* workspace = nullptr;  ///< Context<Cuda>::workspace_data()
  std::uint64_t plan = 0;           ///< SGD table version
  NumericSettings settings{};       ///< Context<Cuda>::settings(): kernels and math are baked in
  bool operator==(const StepGraphKey&) const = default;
};

/// Captures a training step as a CUDA Graph once per upload slot and replays it. A step is
/// captured only after an eager step with the same key (so every buffer, workspace and cuDNN
/// algorithm choice exists) and replayed while the key holds. Random ops read the replay index
/// r (steps since the capture) from device memory, and the host's random streams are advanced
/// by what the captured step reserved, so masks and checkpoints equal eager training's. A
/// capture that fails (an op that cannot be captured) turns graphs off for good, with the
/// reason in `disabled_reason()`, and the step runs eagerly.
class StepGraphs {
 public:
  using key_type = StepGraphKey;

  explicit StepGraphs(std::size_t slots) : replay_(Shape{1}), ring_(kRing * sizeof(std::uint64_t)) {
    graphs_.resize(slots);
  }

  bool disabled() const { return !disabled_reason_.empty(); }
  const std::string& disabled_reason() const { return disabled_reason_; }
  std::int64_t captures() const { return captures_; }
  std::int64_t replays() const { return replays_; }
  /// Forgets every captured step (their buffers may be gone).
  void invalidate() {
    for (auto& g : graphs_) g = Captured{};
    warm_.reset();
  }

  /// Runs `body` (which queues one training step on `ctx`'s stream) for slot `slot` at step
  /// `step`: replayed, captured and launched, or eagerly. `key_of()` gives the current key
  /// (asked again after an eager step, whose allocations change it).
  template <class KeyOf, class Body>
  void run(Context<Cuda>& ctx, std::size_t slot, KeyOf&& key_of, std::int64_t step,
           const std::vector<Rng*>& rngs, Body&& body) {
    const StepGraphKey key = key_of();
    Captured& g = graphs_.at(slot);
    if (!disabled() && g.exec && g.key == key) {
      launch(ctx, g, step);
      for (std::size_t i = 0; i < rngs.size() && i < delta_.size(); ++i) {
        Rng::State st = rngs[i]->state();
        st.counter += delta_[i];
        rngs[i]->set_state(st);
      }
      ++replays_;
      return;
    }
    if (disabled() || !(warm_ && *warm_ == key)) {
      StorageStreamScope scope(ctx.stream());
      body();
      warm_ = key_of();
      return;
    }
    capture(ctx, g, key, step, rngs, body);
  }

 private:
  struct Captured {
    StepGraphKey key{};
    GraphExec exec;
    std::int64_t step = 0;
  };
  static constexpr std::size_t kRing = 8;

  void launch(Context<Cuda>& ctx, const Captured& g, std::int64_t step) {
    auto* slot = reinterpret_cast<std::uint64_t*>(ring_.data()) + next_;
    next_ = (next_ + 1) % kRing;
    *slot = static_cast<std::uint64_t>(step - g.step);
    NDDR_CUDA_CHECK(cudaMemcpyAsync(replay_.data(), slot, sizeof(std::uint64_t),
                                    cudaMemcpyHostToDevice, ctx.stream()),
                    "setting the graph replay index");
    NDDR_CUDA_CHECK(cudaGraphLaunch(g.exec, ctx.stream()), "launching a captured training step");
  }

  template <class Body>
  void capture(Context<Cuda>& ctx, Captured& g, const StepGraphKey& key, std::int64_t step,
               const std::vector<Rng*>& rngs, Body& body) {
    std::vector<Rng::State> before;
    for (Rng* r : rngs) before.push_back(r->state());
    auto give_up = [&](const std::string& why) {
      ctx.set_replay_index(nullptr);
      static_cast<void>(cudaGetLastError());
      for (std::size_t i = 0; i < rngs.size(); ++i) rngs[i]->set_state(before[i]);
      disabled_reason_ = why;
      invalidate();
      StorageStreamScope scope(ctx.stream());
      body();  // the step, eagerly
    };
    cudaGraph_t raw = nullptr;
    cudaError_t status = cudaSuccess;
    std::string what;
    {
      StorageStreamScope scope(ctx.stream());
      ctx.set_replay_index(reinterpret_cast<const std::uint64_t*>(replay_.data()));
      NDDR_CUDA_CHECK(cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal),
                      "beginning the capture of a training step");
      try {
        body();
      } catch (const std::exception& e) {
        what = e.what();
      }
      status = cudaStreamEndCapture(ctx.stream(), &raw);
      ctx.set_replay_index(nullptr);
    }
    Graph graph(raw);
    if (!what.empty() || status != cudaSuccess || raw == nullptr) {
      give_up(what.empty() ? std::string("cudaStreamEndCapture: ") + cudaGetErrorString(status) : what);
      return;
    }
    cudaGraphExec_t exec = nullptr;
    status = cudaGraphInstantiate(&exec, graph.get(), 0);
    if (status != cudaSuccess) {
      give_up(std::string("cudaGraphInstantiate: ") + cudaGetErrorString(status));
      return;
    }
    g.exec = GraphExec(exec);
    g.key = key;
    g.step = step;
    delta_.assign(rngs.size(), 0);
    for (std::size_t i = 0; i < rngs.size(); ++i)
      delta_[i] = rngs[i]->state().counter - before[i].counter;
    ++captures_;
    launch(ctx, g, step);  // the captured step itself (replay index 0)
  }

  std::vector<Captured> graphs_;
  std::optional<StepGraphKey> warm_;
  std::vector<std::uint64_t> delta_;
  Tensor<std::int64_t, Cuda> replay_;
  PinnedBuffer ring_;
  std::size_t next_ = 0;
  std::string disabled_reason_;
  std::int64_t captures_ = 0, replays_ = 0;
};

}  // namespace nddr::cuda

namespace nddr::detail {

/// The CUDA side of `Trainer<E, Cuda, T>`: deferred task losses, the guarded optimiser plans
/// (one fused kernel per library optimiser: Sgd, Adam, AdamW, and AnyOptimizer holding one),
/// double-buffered batch uploads, CUDA Graph capture of the step and a host context for target
/// resizing and metrics.
template <class T>
class TrainerDevice<Cuda, T> {
 public:
  static constexpr bool available = true;

  /// The most loss terms one task may add on the GPU (nddr/ops/task_loss.hpp).
  static constexpr std::size_t kTermsPerTask = 4;

  TrainerDevice(Context<Cuda>& ctx, std::size_t tasks, int host_threads)
      : losses_((ctx.activate(), tasks * kTermsPerTask)), terms_(tasks), uploader_(2),
        graphs_(2), host_(host_threads) {}

  Context<Cpu>& host() { return host_; }
  cuda::BatchUploader& uploader() { return uploader_; }
  cuda::DeviceLosses& losses() { return losses_; }
  cuda::StepGraphs& graphs() { return graphs_; }
  const cuda::StepGraphs& graphs() const { return graphs_; }

  /// The sink of task `k`'s loss terms this step (weight `weight`, task name `task`; `target`
  /// is the task target's device data, against which the terms' labels are recorded).
  LossSink<T, Cuda> loss_sink(Context<Cuda>& ctx, std::size_t k, double weight, const char* task,
                              const void* target) {
    return LossSink<T, Cuda>(ctx, weight, task, losses_.scratch(k * kTermsPerTask),
                             kTermsPerTask, cuda::DeviceLosses::kSlot, target, terms_.at(k));
  }
  /// Brings the optimiser's table up to date and queues the scheduled rate; outside any
  /// capture.
  void prepare_update(Context<Cuda>& ctx, const ParameterStore<T, Cuda>& store,
                      const Sgd<T, Cuda>& sgd, double lr) {
    if (sgd_.prepare(store, sgd.options())) ++plan_version_;
    sgd_.set_lr(ctx, lr);
  }
  template <class Options, bool Decoupled>
  void prepare_update(Context<Cuda>& ctx, const ParameterStore<T, Cuda>& store,
                      const nddr::detail::AdamImpl<T, Cuda, Options, Decoupled>& adam, double lr) {
    if (adam_.prepare(store, adam)) ++plan_version_;
    adam_.set_lr(ctx, lr);
  }
  void prepare_update(Context<Cuda>& ctx, const ParameterStore<T, Cuda>& store,
                      const AnyOptimizer<T, Cuda>& any, double lr) {
    std::visit([&](const auto& o) { prepare_update(ctx, store, o, lr); }, any.get());
  }
  std::uint64_t plan_version() const { return plan_version_; }
  /// Runs `f` (which queues device work on `ctx`'s stream only) with tensor zeroing and copies
  /// on that stream too, so the step does not serialise with the upload stream.
  template <class F>
  void eager(Context<Cuda>& ctx, F&& f) {
    cuda::StorageStreamScope scope(ctx.stream());
    f();
  }
  /// Queues the optimiser's step (cancelled on the device if a queued loss went bad) and the
  /// loss reads.
  template <class Optimizer>
  void update(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store, Optimizer& optimizer) {
    queue_update(ctx, store, optimizer);
    losses_.queue_reads(ctx);
  }
  // ---- multi-task weighting (TrainerOptions::weighting; docs/weighting.md, "On a GPU") -----

  /// Queues a copy of the `p` gradients at `grads` into `row` (a row of the (K, P) buffer).
  void copy_row(Context<Cuda>& ctx, const T* grads, T* row, std::int64_t p) {
    NDDR_CUDA_CHECK(cudaMemcpyAsync(row, grads, static_cast<std::size_t>(p) * sizeof(T),
                                    cudaMemcpyDeviceToDevice, ctx.stream()),
                    "copying ", p, " task gradients into the weighting buffer");
  }

  /// The K x K Gram matrix `G G^T` of the rows of `rows` ((k, p), row-major) restricted to the
  /// shared ranges (owner < 0), accumulated on the device by cuBLAS GEMMs in T (no TF32), then
  /// copied to the host (waits for the stream): column-major k x k.
  std::vector<double> gram(Context<Cuda>& ctx, const T* rows, std::int64_t k, std::int64_t p,
                           std::span<const GradientRange> ranges) {
    constexpr const char* kWho = "nddr::Trainer (weighting Gram matrix)";
    const int kk = cuda::detail::blas_dim(kWho, k), ld = cuda::detail::blas_dim(kWho, p);
    gram_.resize(Shape{k * k});
    NDDR_CUDA_CHECK(cudaMemsetAsync(gram_.data(), 0, static_cast<std::size_t>(k * k) * sizeof(T),
                                    ctx.stream()),
                    "zeroing the Gram matrix");
    for (const GradientRange& r : ranges) {
      if (r.owner >= 0) continue;
      for (std::int64_t done = 0; done < r.size; done += kMaxChunk) {
        const int n = static_cast<int>(std::min(kMaxChunk, r.size - done));
        // A: the range's columns as a column-major (n, k) matrix (column j = task j's row).
        const T* a = rows + static_cast<std::int64_t>(r.offset) + done;
        NDDR_CUDA_CHECK(cuda::detail::gemm(ctx.cublas(), false, CUBLAS_OP_T, CUBLAS_OP_N, kk, kk,
                                           n, T(1), a, ld, a, ld, T(1), gram_.data(), kk),
                        kWho, ": ", k, " x ", k, " product over ", n, " parameters");
      }
    }
    std::vector<T> host(static_cast<std::size_t>(k * k));
    NDDR_CUDA_CHECK(cudaMemcpyAsync(host.data(), gram_.data(), host.size() * sizeof(T),
                                    cudaMemcpyDeviceToHost, ctx.stream()),
                    "reading the Gram matrix");
    NDDR_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()), "waiting for the Gram matrix");
    return std::vector<double>(host.begin(), host.end());
  }

  /// Writes the combined gradient into `out` (the network's gradient buffer): on each shared
  /// range sum_j shared[j] * rows[j, range], on task j's head range heads[j] * rows[j, range]
  /// (cuBLAS GEMMs with the coefficients rounded to T; no TF32).
  void combine(Context<Cuda>& ctx, const T* rows, std::int64_t k, std::int64_t p,
               std::span<const GradientRange> ranges, std::span<const double> shared,
               std::span<const double> heads, T* out) {
    constexpr const char* kWho = "nddr::Trainer (weighting combination)";
    const int kk = cuda::detail::blas_dim(kWho, k), ld = cuda::detail::blas_dim(kWho, p);
    // The coefficients live in a member: the copy reads them when the stream runs it.
    coef_host_.resize(static_cast<std::size_t>(2 * k));
    for (std::int64_t j = 0; j < k; ++j) {
      coef_host_[static_cast<std::size_t>(j)] = static_cast<T>(shared[static_cast<std::size_t>(j)]);
      coef_host_[static_cast<std::size_t>(k + j)] =
          static_cast<T>(heads[static_cast<std::size_t>(j)]);
    }
    coef_.resize(Shape{2 * k});
    NDDR_CUDA_CHECK(cudaMemcpyAsync(coef_.data(), coef_host_.data(), coef_host_.size() * sizeof(T),
                                    cudaMemcpyHostToDevice, ctx.stream()),
                    "uploading the weighting coefficients");
    for (const GradientRange& r : ranges) {
      const bool head = r.owner >= 0;
      for (std::int64_t done = 0; done < r.size; done += kMaxChunk) {
        const int n = static_cast<int>(std::min(kMaxChunk, r.size - done));
        const std::int64_t at = static_cast<std::int64_t>(r.offset) + done;
        // out (n, 1) = A (n, k') * c (k', 1): every task's row, or only the head's owner.
        const T* a = rows + at + (head ? r.owner * p : 0);
        const T* c = coef_.data() + (head ? k + r.owner : 0);
        NDDR_CUDA_CHECK(cuda::detail::gemm(ctx.cublas(), false, CUBLAS_OP_N, CUBLAS_OP_N, n, 1,
                                           head ? 1 : kk, T(1), a, ld, c, head ? 1 : kk, T(0),
                                           out + at, n),
                        kWho, ": ", n, " parameters");
      }
    }
  }

  /// Queues x *= s (cuBLAS SCAL; `s` rounded to T).
  void scale(Context<Cuda>& ctx, TensorView<T, Cuda> x, double s) {
    const T a = static_cast<T>(s);
    const cuda::CublasApi& api = cuda::cublas_api();
    for (std::int64_t done = 0; done < x.numel(); done += kMaxChunk) {
      const int n = static_cast<int>(std::min(kMaxChunk, x.numel() - done));
      if constexpr (std::is_same_v<T, float>)
        NDDR_CUDA_CHECK(api.cublasSscal_v2(ctx.cublas(), n, &a, x.data() + done, 1),
                        "scaling a loss gradient");
      else
        NDDR_CUDA_CHECK(api.cublasDscal_v2(ctx.cublas(), n, &a, x.data() + done, 1),
                        "scaling a loss gradient");
    }
  }

  /// Task `k`'s loss value once the step is done: the sum of its terms. Throws ValueError
  /// naming the first out-of-range label of a cross-entropy term (read from the labels at the
  /// same place in `target`, the task target's device data of the step being finished).
  double finished_loss(Context<Cuda>& ctx, std::size_t k, const char* task, const void* target) {
    double value = 0.0;
    const std::vector<cuda::LossTerm>& terms = terms_.at(k);
    for (std::size_t j = 0; j < terms.size(); ++j) {
      const cuda::LossTerm& term = terms[j];
      const cuda::LossStats t = losses_.host_total(k * kTermsPerTask + j);
      if (term.labels != nullptr) {
        const auto offset = reinterpret_cast<const char*>(term.labels) -
                            static_cast<const char*>(term.target);
        const auto* labels =
            reinterpret_cast<const std::int32_t*>(static_cast<const char*>(target) + offset);
        cuda::detail::check_first_bad_label(ctx, task, term.logits, labels, t, term.ignore);
      }
      value += cuda::deferred_loss_value<T>(t, term.scale);
    }
    return static_cast<double>(static_cast<T>(value));
  }

 private:
  cuda::DeviceLosses losses_;
  std::vector<std::vector<cuda::LossTerm>> terms_;  ///< per task, its terms of the last step
  cuda::BatchUploader uploader_;
  cuda::StepGraphs graphs_;
  void queue_update(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store, Sgd<T, Cuda>& sgd) {
    sgd_.launch(ctx, store, sgd, losses_.guard());
  }
  template <class Options, bool Decoupled>
  void queue_update(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store,
                    nddr::detail::AdamImpl<T, Cuda, Options, Decoupled>& adam) {
    adam_.launch(ctx, store, adam, losses_.guard());
  }
  void queue_update(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store, AnyOptimizer<T, Cuda>& any) {
    std::visit([&](auto& o) { queue_update(ctx, store, o); }, any.get());
  }

  /// The most columns one cuBLAS call of the weighting gets (its sizes are ints).
  static constexpr std::int64_t kMaxChunk = std::int64_t{1} << 30;

  cuda::SgdPlan<T> sgd_;
  cuda::AdamPlan<T> adam_;
  std::uint64_t plan_version_ = 0;
  Context<Cpu> host_;
  Tensor<T, Cuda> gram_;      ///< the weighting's K x K Gram matrix
  Tensor<T, Cuda> coef_;      ///< the weighting's 2K coefficients (shared, then heads)
  std::vector<T> coef_host_;  ///< their host copy, alive until the next step
};

}  // namespace nddr::detail
