#pragma once
/// \file
/// Fused Adam/AdamW step on the GPU (kernels/adam.cuh): one launch updates every parameter of
/// a flat `ParameterStore` buffer with ops::adam_element, the CPU optimisers' element body, and
/// a second one-thread launch advances the device step counter t. `Adam<T, Cuda>` and
/// `AdamW<T, Cuda>` keep the moments and t; `cuda::adam_step(ctx, store, adam, lr)` runs one
/// step eagerly, `AdamPlan` is the capturable form the Trainer uses.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/backend/cuda/loss.hpp"
#include "nddr/backend/cuda/pinned.hpp"
#include "nddr/backend/cuda/sgd.hpp"
#include "nddr/backend/cuda/storage.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/optim/adam.hpp"
#include "nddr/optim/groups.hpp"

namespace nddr::cuda {

/// Elements [begin, end) of the flat buffers share learning rate `lr` and decay `wd`.
template <class T>
struct AdamSpan {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  T lr = T(0);
  T wd = T(0);
};

}  // namespace nddr::cuda

namespace nddr::cuda::launch {

/// Updates the elements of every span (device table of `count` spans, each at most
/// kAdamSpanElems long) with ops::adam_element at step t = *step + 1, then sets *step = t;
/// a bad `guard` total cancels both.
template <class T>
void adam_step(cudaStream_t stream, T* values, const T* grads, T* exp_avg, T* exp_avg_sq,
               T* max_exp_avg_sq, const AdamSpan<T>* spans, std::int64_t count, double beta1,
               double beta2, double eps, bool decoupled, std::int64_t* step,
               const LossStats* guard = nullptr, std::int64_t guards = 0,
               std::int64_t guard_stride = 0, const T* lr_scale = nullptr);

/// Longest span one block updates.
inline constexpr std::int64_t kAdamSpanElems = 8192;

}  // namespace nddr::cuda::launch

namespace nddr::cuda {

/// The span table of one Adam/AdamW step with scheduled rate `lr`, split into pieces of at most
/// launch::kAdamSpanElems: per parameter entry lr * group.lr_mult and weight_decay *
/// group.weight_decay_mult (0 for rank < 2 tensors under decay_rank_ge2_only), rounded to T as
/// the CPU step does. Same checks and messages.
template <class T, class Options>
std::vector<AdamSpan<T>> adam_table(const char* who, const ParameterStore<T, Cuda>& store,
                                    const Options& options, double lr) {
  const auto rates = nddr::detail::group_rates<T>(who, store, lr, options.weight_decay());
  std::vector<AdamSpan<T>> pieces;
  for (const ParamEntry& e : store.parameters()) {
    const auto& r = rates[e.group];
    const T wd = options.decay_rank_ge2_only() && e.shape.rank() < 2 ? T(0) : r.wd;
    const auto begin = static_cast<std::int64_t>(e.offset);
    const std::int64_t end = begin + e.shape.numel();
    for (std::int64_t b = begin; b < end; b += launch::kAdamSpanElems)
      pieces.push_back({b, std::min(end, b + launch::kAdamSpanElems), r.lr, wd});
  }
  return pieces;
}

namespace detail {

template <class T, class Options, bool Decoupled>
void queue_adam(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store,
                nddr::detail::AdamImpl<T, Cuda, Options, Decoupled>& adam,
                const AdamSpan<T>* spans, std::int64_t count, SgdGuard guard, const T* lr_scale) {
  const Options& o = adam.options();
  launch::adam_step<T>(ctx.stream(), store.values().data(), store.grads().data(),
                       adam.exp_avg_view().data(), adam.exp_avg_sq_view().data(),
                       adam.max_exp_avg_sq_data(), spans, count, o.beta1(), o.beta2(), o.eps(),
                       Decoupled, adam.step_data(), guard.first, guard.count, guard.stride,
                       lr_scale);
}

}  // namespace detail

/// One step of `adam` (Adam or AdamW bound to `store`) on the GPU with scheduled learning rate
/// `lr`: the CUDA counterpart of its CPU `step`, same update, same checks; a bad `guard`
/// cancels it (t included).
template <class T, class Options, bool Decoupled>
void adam_step(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store,
               nddr::detail::AdamImpl<T, Cuda, Options, Decoupled>& adam, double lr,
               SgdGuard guard = {}) {
  static_assert(kKernelType<T>, "nddr::cuda::adam_step: CUDA supports float and double");
  const char* who = Decoupled ? "nddr::AdamW::step" : "nddr::Adam::step";
  const std::vector<AdamSpan<T>> pieces = adam_table<T>(who, store, adam.options(), lr);
  AdamSpan<T>* dev = nullptr;
  if (!pieces.empty()) {
    const std::size_t bytes = pieces.size() * sizeof(AdamSpan<T>);
    dev = static_cast<AdamSpan<T>*>(ctx.workspace_bytes(bytes));
    // From pageable memory the call returns once `pieces` has been staged, so it may go away.
    NDDR_CUDA_CHECK(
        cudaMemcpyAsync(dev, pieces.data(), bytes, cudaMemcpyHostToDevice, ctx.stream()),
        "uploading the Adam span table");
  }
  detail::queue_adam(ctx, store, adam, dev, static_cast<std::int64_t>(pieces.size()), guard,
                     static_cast<const T*>(nullptr));
}

/// A persistent Adam/AdamW launch for a training loop (the counterpart of SgdPlan): the span
/// table (lr = the group multipliers) in device memory, the scheduled rate in a device scalar
/// that `set_lr` fills before each step, t in the optimiser's device counter; `launch` queues
/// two kernels and no host data, and can be captured in a CUDA Graph.
template <class T>
class AdamPlan {
 public:
  AdamPlan() : lr_(Shape{1}), ring_(kRing * sizeof(T)) {}

  /// Rebuilds and uploads the table if the store's groups or the options changed since the last
  /// call (waits for the device then); returns whether it did.
  template <class Options, bool Decoupled>
  bool prepare(const ParameterStore<T, Cuda>& store,
               const nddr::detail::AdamImpl<T, Cuda, Options, Decoupled>& adam) {
    const Options& o = adam.options();
    std::vector<AdamSpan<T>> pieces =
        adam_table<T>(Decoupled ? "nddr::AdamW::step" : "nddr::Adam::step", store, o, 1.0);
    const Scalars scalars{o.beta1(), o.beta2(), o.eps(), Decoupled};
    const bool same = scalars == scalars_ && pieces.size() == pieces_.size() &&
                      std::equal(pieces.begin(), pieces.end(), pieces_.begin(),
                                 [](const AdamSpan<T>& a, const AdamSpan<T>& b) {
                                   return a.begin == b.begin && a.end == b.end && a.lr == b.lr &&
                                          a.wd == b.wd;
                                 });
    if (same && prepared_) return false;
    pieces_ = std::move(pieces);
    scalars_ = scalars;
    prepared_ = true;
    const std::size_t bytes = pieces_.size() * sizeof(AdamSpan<T>);
    table_ = Tensor<std::int64_t, Cuda>(Shape{static_cast<std::int64_t>((bytes + 7) / 8)});
    Storage<Cuda>::upload(table_.data(), pieces_.data(), bytes);
    return true;
  }
  /// Queues the copy of the scheduled rate into the device scalar (through a pinned ring).
  void set_lr(Context<Cuda>& ctx, double lr) {
    check<OptionError>(lr >= 0.0 && std::isfinite(lr),
                       "nddr::Adam::step: lr must be a finite value >= 0, got ", lr);
    T* slot = reinterpret_cast<T*>(ring_.data()) + next_;
    next_ = (next_ + 1) % kRing;
    *slot = static_cast<T>(lr);
    NDDR_CUDA_CHECK(
        cudaMemcpyAsync(lr_.data(), slot, sizeof(T), cudaMemcpyHostToDevice, ctx.stream()),
        "setting the learning rate");
  }
  /// Queues the update with the rate of the last `set_lr` (cancelled by a bad `guard`).
  template <class Options, bool Decoupled>
  void launch(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store,
              nddr::detail::AdamImpl<T, Cuda, Options, Decoupled>& adam, SgdGuard guard = {}) {
    check<Error>(prepared_, "nddr::cuda::AdamPlan::launch: call prepare first");
    detail::queue_adam(ctx, store, adam, reinterpret_cast<const AdamSpan<T>*>(table_.data()),
                       static_cast<std::int64_t>(pieces_.size()), guard, lr_.data());
  }

 private:
  struct Scalars {
    double beta1 = -1.0, beta2 = -1.0, eps = -1.0;
    bool decoupled = false;
    bool operator==(const Scalars&) const = default;
  };
  static constexpr std::size_t kRing = 8;
  std::vector<AdamSpan<T>> pieces_;
  Scalars scalars_;
  bool prepared_ = false;
  Tensor<std::int64_t, Cuda> table_;
  Tensor<T, Cuda> lr_;
  PinnedBuffer ring_;
  std::size_t next_ = 0;
};

}  // namespace nddr::cuda
