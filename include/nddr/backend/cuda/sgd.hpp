#pragma once
/// \file
/// Fused momentum-SGD step on the GPU (kernels/sgd.cuh): one launch updates every parameter of
/// a flat `ParameterStore` buffer with ops::sgd_momentum_element, the CPU `Sgd`'s element body.
/// `Sgd<T, Cuda>` keeps the velocity; `cuda::sgd_step(ctx, store, sgd, lr)` runs its step.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/backend/cuda/loss.hpp"
#include "nddr/backend/cuda/pinned.hpp"
#include "nddr/backend/cuda/storage.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/optim/sgd.hpp"
#include "nddr/ops/math/sgd.hpp"

namespace nddr::cuda {

/// Elements [begin, end) of the flat buffers share learning rate `lr` and decay `wd`.
template <class T>
struct SgdSpan {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  T lr = T(0);
  T wd = T(0);
};

}  // namespace nddr::cuda

namespace nddr::cuda::launch {

/// Updates the elements of every span (device table of `count` spans, each at most
/// kSgdSpanElems long) with ops::sgd_momentum_element; one block per span.
template <class T>
void sgd_step(cudaStream_t stream, T* values, const T* grads, T* velocity,
              const SgdSpan<T>* spans, std::int64_t count, T momentum, bool nesterov,
              const LossStats* guard = nullptr, std::int64_t guards = 0,
              std::int64_t guard_stride = 0, const T* lr_scale = nullptr);

/// Longest span one block updates.
inline constexpr std::int64_t kSgdSpanElems = 8192;

}  // namespace nddr::cuda::launch

namespace nddr::cuda {

/// values -= lr_e * v after v = momentum * v + g + wd_e * values, for the elements of every
/// span of `table` (host memory; spans lie inside the buffers and may be of any length).
/// The three flat buffers have the same shape. Elements outside the spans are untouched.
/// Device loss totals that cancel an update: if any of the `count` totals at `first`,
/// `first + stride`, ... is not finite or met an out-of-range label, the step changes nothing.
struct SgdGuard {
  const LossStats* first = nullptr;
  std::int64_t count = 0;
  std::int64_t stride = 0;
};

template <class T>
void sgd_step(Context<Cuda>& ctx, TensorView<T, Cuda> values, TensorView<const T, Cuda> grads,
              TensorView<T, Cuda> velocity, std::span<const SgdSpan<T>> table, T momentum,
              bool nesterov = false, SgdGuard guard = {}) {
  static_assert(kKernelType<T>, "nddr::cuda::sgd_step: CUDA supports float and double");
  constexpr const char* kWho = "nddr::cuda::sgd_step";
  check_shape(kWho, "grads", grads.shape(), values.shape());
  check_shape(kWho, "velocity", velocity.shape(), values.shape());
  // Split long spans so that every block gets a bounded share of the work.
  std::vector<SgdSpan<T>> pieces;
  for (const SgdSpan<T>& s : table) {
    check<ShapeError>(s.begin >= 0 && s.begin <= s.end && s.end <= values.numel(), kWho,
                      ": span [", s.begin, ", ", s.end, ") is outside buffers of ",
                      values.numel(), " elements");
    for (std::int64_t b = s.begin; b < s.end; b += launch::kSgdSpanElems)
      pieces.push_back({b, std::min(s.end, b + launch::kSgdSpanElems), s.lr, s.wd});
  }
  if (pieces.empty()) return;
  const std::size_t bytes = pieces.size() * sizeof(SgdSpan<T>);
  auto* dev = static_cast<SgdSpan<T>*>(ctx.workspace_bytes(bytes));
  // From pageable memory the call returns once `pieces` has been staged, so it may go away.
  NDDR_CUDA_CHECK(cudaMemcpyAsync(dev, pieces.data(), bytes, cudaMemcpyHostToDevice, ctx.stream()),
                  "uploading the SGD span table");
  launch::sgd_step<T>(ctx.stream(), values.data(), grads.data(), velocity.data(), dev,
                      static_cast<std::int64_t>(pieces.size()), momentum, nesterov, guard.first,
                      guard.count, guard.stride);
}

/// The span table of one `Sgd` step with scheduled rate `lr`: per parameter entry,
/// lr * group.lr_mult and weight_decay * group.weight_decay_mult (0 for rank < 2 tensors under
/// decay_rank_ge2_only), rounded to T as the CPU `Sgd::step` does. Same checks and messages.
template <class T, class D>
std::vector<SgdSpan<T>> sgd_table(const ParameterStore<T, D>& store, const SgdOptions& options,
                                  double lr) {
  check<OptionError>(lr >= 0.0 && std::isfinite(lr),
                     "nddr::Sgd::step: lr must be a finite value >= 0, got ", lr);
  const auto& groups = store.groups();
  std::vector<SgdSpan<T>> table;
  for (const ParamEntry& e : store.parameters()) {
    const ParamGroup& g = groups[e.group];
    check<OptionError>(g.lr_mult >= 0.0 && g.weight_decay_mult >= 0.0, "nddr::Sgd::step: group '",
                       g.name, "' has negative multipliers (lr_mult ", g.lr_mult,
                       ", weight_decay_mult ", g.weight_decay_mult, ")");
    const T wd = options.decay_rank_ge2_only() && e.shape.rank() < 2
                     ? T(0)
                     : static_cast<T>(options.weight_decay() * g.weight_decay_mult);
    const auto begin = static_cast<std::int64_t>(e.offset);
    table.push_back({begin, begin + e.shape.numel(), static_cast<T>(lr * g.lr_mult), wd});
  }
  return table;
}

/// One step of `sgd` (bound to `store`) on the GPU with scheduled learning rate `lr`: the
/// CUDA counterpart of `Sgd<T, Cpu>::step`, same update, same checks.
template <class T>
void sgd_step(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store, Sgd<T, Cuda>& sgd, double lr,
              SgdGuard guard = {}) {
  const std::vector<SgdSpan<T>> table = sgd_table<T>(store, sgd.options(), lr);
  sgd_step<T>(ctx, store.values(), store.grads(), sgd.state(), table,
              static_cast<T>(sgd.options().momentum()), sgd.options().nesterov(), guard);
}

/// A persistent SGD launch for a training loop: the span table (lr = the group multipliers,
/// split like `sgd_step` does) lives in device memory and the scheduled rate in a device scalar
/// that `set_lr` fills before each step, so `launch` queues one kernel and no host data, and can
/// be captured in a CUDA Graph. Matches `sgd_step` up to the rounding of lr * multiplier.
template <class T>
class SgdPlan {
 public:
  SgdPlan() : lr_(Shape{1}), ring_(kRing * sizeof(T)) {}

  /// Rebuilds and uploads the table if the store's groups or the options changed since the last
  /// call (waits for the device then); returns whether it did.
  bool prepare(const ParameterStore<T, Cuda>& store, const SgdOptions& options) {
    std::vector<SgdSpan<T>> pieces;
    for (const SgdSpan<T>& s : sgd_table<T>(store, options, 1.0))
      for (std::int64_t b = s.begin; b < s.end; b += launch::kSgdSpanElems)
        pieces.push_back({b, std::min(s.end, b + launch::kSgdSpanElems), s.lr, s.wd});
    const bool same = pieces.size() == pieces_.size() &&
                      std::equal(pieces.begin(), pieces.end(), pieces_.begin(),
                                 [](const SgdSpan<T>& a, const SgdSpan<T>& b) {
                                   return a.begin == b.begin && a.end == b.end && a.lr == b.lr &&
                                          a.wd == b.wd;
                                 });
    if (same && momentum_ == options.momentum() && nesterov_ == options.nesterov()) return false;
    pieces_ = std::move(pieces);
    momentum_ = options.momentum();
    nesterov_ = options.nesterov();
    const std::size_t bytes = pieces_.size() * sizeof(SgdSpan<T>);
    table_ = Tensor<std::int64_t, Cuda>(Shape{static_cast<std::int64_t>((bytes + 7) / 8)});
    Storage<Cuda>::upload(table_.data(), pieces_.data(), bytes);
    return true;
  }
  /// Queues the copy of the scheduled rate into the device scalar (through a pinned ring, so
  /// the host may go on at once).
  void set_lr(Context<Cuda>& ctx, double lr) {
    check<OptionError>(lr >= 0.0 && std::isfinite(lr),
                       "nddr::Sgd::step: lr must be a finite value >= 0, got ", lr);
    T* slot = reinterpret_cast<T*>(ring_.data()) + next_;
    next_ = (next_ + 1) % kRing;
    *slot = static_cast<T>(lr);
    NDDR_CUDA_CHECK(cudaMemcpyAsync(lr_.data(), slot, sizeof(T), cudaMemcpyHostToDevice, ctx.stream()),
                    "setting the learning rate");
  }
  /// Queues the update with the rate of the last `set_lr` (cancelled by a bad `guard`).
  void launch(Context<Cuda>& ctx, ParameterStore<T, Cuda>& store, Sgd<T, Cuda>& sgd,
              SgdGuard guard = {}) {
    check<Error>(!pieces_.empty() || store.parameters().empty(),
                 "nddr::cuda::SgdPlan::launch: call prepare first");
    launch::sgd_step<T>(ctx.stream(), store.values().data(), store.grads().data(),
                        sgd.state().data(), reinterpret_cast<const SgdSpan<T>*>(table_.data()),
                        static_cast<std::int64_t>(pieces_.size()), static_cast<T>(momentum_),
                        nesterov_, guard.first, guard.count, guard.stride, lr_.data());
  }

 private:
  // Steps queue at most a couple of rates ahead of the device; 8 is ample.
  static constexpr std::size_t kRing = 8;
  std::vector<SgdSpan<T>> pieces_;
  double momentum_ = -1.0;
  bool nesterov_ = false;
  Tensor<std::int64_t, Cuda> table_;
  Tensor<T, Cuda> lr_;
  PinnedBuffer ring_;
  std::size_t next_ = 0;
};

}  // namespace nddr::cuda
