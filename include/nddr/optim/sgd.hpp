#pragma once
/// \file
/// `Sgd<T, D>`: momentum SGD over every parameter of a `ParameterStore`, with per-group
/// learning-rate and weight-decay multipliers (TF `MomentumOptimizer` as used by the NDDR-CNN
/// code, equal to PyTorch `SGD(momentum, weight_decay)` with dampening 0).
///
/// Per element, with lr_group = lr * group.lr_mult and
/// wd_e = weight_decay * group.weight_decay_mult (0 for rank < 2 tensors by default):
///   g' = g + wd_e * theta;  v = momentum * v + g';  theta -= lr_group * v.
/// The velocity lives in one flat buffer laid out like `store.values()`; it starts at zero, so
/// the first step gives v = g' (TF's zero-initialised slot and PyTorch's `buf = g` agree).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/storage.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/math/sgd.hpp"
#include "nddr/optim/state.hpp"

namespace nddr {

/// Hyper-parameters of `Sgd`. Fluent: `SgdOptions{}.momentum(0.9).weight_decay(2.5e-4)`; each
/// field reads as `opt.momentum()`.
class SgdOptions {
 public:
  /// Velocity decay, in [0, 1). Default 0.9 (the paper).
  double momentum() const { return momentum_; }
  SgdOptions& momentum(double v) {
    momentum_ = v;
    return *this;
  }
  /// L2 decay coefficient added to the gradient (gradient of wd/2 * |theta|^2), >= 0. Default
  /// 5e-4 (the paper's single-task runs); the multi-task runs halve the decay term, i.e. 2.5e-4.
  double weight_decay() const { return weight_decay_; }
  SgdOptions& weight_decay(double v) {
    weight_decay_ = v;
    return *this;
  }
  /// Nesterov momentum (PyTorch form). Default off.
  bool nesterov() const { return nesterov_; }
  SgdOptions& nesterov(bool v) {
    nesterov_ = v;
    return *this;
  }
  /// Decay only tensors of rank >= 2 (conv and linear kernels), as the TF code decays the
  /// variables named "weights" and not biases or BatchNorm gamma/beta. Off: decay every
  /// parameter (PyTorch's default). Default on.
  bool decay_rank_ge2_only() const { return decay_rank_ge2_only_; }
  SgdOptions& decay_rank_ge2_only(bool v) {
    decay_rank_ge2_only_ = v;
    return *this;
  }

  /// The paper's single-task setting: momentum 0.9, weight decay 5e-4 on kernels.
  static SgdOptions paper_single_task() { return SgdOptions{}; }
  /// The paper's multi-task setting: the loss carries 0.5 * 5e-4 * |w|^2 / 2, i.e. 2.5e-4.
  static SgdOptions paper_multi_task() { return SgdOptions{}.weight_decay(2.5e-4); }

  /// Throws OptionError naming `who`, the field and the value unless 0 <= momentum < 1 and
  /// weight_decay >= 0 (NaN fails both).
  void validate(const char* who) const {
    check<OptionError>(momentum_ >= 0.0 && momentum_ < 1.0, who,
                       ": SgdOptions.momentum must be in [0, 1), got ", momentum_);
    check<OptionError>(weight_decay_ >= 0.0 && std::isfinite(weight_decay_), who,
                       ": SgdOptions.weight_decay must be a finite value >= 0, got ",
                       weight_decay_);
  }

 private:
  double momentum_ = 0.9;
  double weight_decay_ = 5e-4;
  bool nesterov_ = false;
  bool decay_rank_ge2_only_ = true;
};

/// Momentum SGD bound to one allocated `ParameterStore`. Group multipliers are read from the
/// store at every step and never written, so a schedule scales each group's lr (e.g. NDDR
/// x100) rather than replacing it.
template <class T, class D = Cpu>
class Sgd {
 public:
  using value_type = T;
  using device_type = D;
  using options_type = SgdOptions;
  /// The name checkpoints record (metadata 'optimizer') and the command line takes.
  static constexpr const char* kName = "sgd";

  /// Binds to `store`, which must be allocated and must outlive the optimiser.
  Sgd(ParameterStore<T, D>& store, SgdOptions options = {})
      : store_(&store), options_(options) {
    options_.validate("nddr::Sgd");
    check<Error>(store.allocated(), "nddr::Sgd: the parameter store is not allocated");
    velocity_ = Tensor<T, D>(store.values().shape());
    build_chunks();
  }

  const SgdOptions& options() const { return options_; }

  /// One update with scheduled learning rate `lr` (>= 0), on every hardware thread.
  void step(double lr) {
    Context<Cpu> ctx;
    step(ctx, lr);
  }

  /// One update with scheduled learning rate `lr` (>= 0) on `ctx`'s threads.
  void step(const Context<Cpu>& ctx, double lr) {
    static_assert(std::is_same_v<D, Cpu>, "nddr::Sgd::step: only the CPU backend is written");
    check<OptionError>(lr >= 0.0 && std::isfinite(lr),
                       "nddr::Sgd::step: lr must be a finite value >= 0, got ", lr);
    const auto& groups = store_->groups();
    std::vector<T> group_lr(groups.size()), group_wd(groups.size());
    for (std::size_t g = 0; g < groups.size(); ++g) {
      check<OptionError>(groups[g].lr_mult >= 0.0 && groups[g].weight_decay_mult >= 0.0,
                         "nddr::Sgd::step: group '", groups[g].name,
                         "' has negative multipliers (lr_mult ", groups[g].lr_mult,
                         ", weight_decay_mult ", groups[g].weight_decay_mult, ")");
      group_lr[g] = static_cast<T>(lr * groups[g].lr_mult);
      group_wd[g] = static_cast<T>(options_.weight_decay() * groups[g].weight_decay_mult);
    }
    const auto& entries = store_->parameters();
    T* theta = store_->values().data();
    const T* grad = store_->grads().data();
    T* vel = velocity_.view().data();
    const T momentum = static_cast<T>(options_.momentum());
    const bool nesterov = options_.nesterov();
    const bool rank_rule = options_.decay_rank_ge2_only();
    detail::parallel_for(ctx, static_cast<std::int64_t>(chunks_.size()), [&](std::int64_t c) {
      const Chunk& chunk = chunks_[static_cast<std::size_t>(c)];
      const ParamEntry& e = entries[chunk.entry];
      const T lr_e = group_lr[e.group];
      const T wd_e = rank_rule && e.shape.rank() < 2 ? T(0) : group_wd[e.group];
      for (std::size_t i = chunk.begin; i < chunk.end; ++i)
        ops::sgd_momentum_element(theta[i], grad[i], vel[i], lr_e, momentum, wd_e, nesterov);
    });
  }

  /// The learning rate group `group` gets when the scheduled rate is `lr`.
  double group_lr(std::size_t group, double lr) const {
    check<Error>(group < store_->groups().size(), "nddr::Sgd::group_lr: no group ", group);
    return lr * store_->groups()[group].lr_mult;
  }

  /// The whole velocity buffer, laid out like `store.values()` (padding zero).
  TensorView<const T, D> velocity() const { return velocity_.cview(); }
  /// Velocity of one parameter.
  TensorView<const T, D> velocity(ParamId id) const {
    check<Error>(id.index < store_->parameters().size(), "nddr::Sgd::velocity: invalid id");
    const ParamEntry& e = store_->parameters()[id.index];
    return TensorView<const T, D>(velocity_.cview().data() + e.offset, e.shape);
  }
  /// The optimiser state (the velocity buffer), writable, for checkpoints to save and restore
  /// exactly.
  TensorView<T, D> state() { return velocity_.view(); }
  /// The state by name for checkpoints: the velocity as `optim/state` (the name checkpoints
  /// written before Adam existed use, so they still load).
  OptimizerState<T, D> checkpoint_state() {
    OptimizerState<T, D> s{kName, {}, {}};
    s.tensors.emplace_back("optim/state", velocity_.view());
    return s;
  }
  /// Restores the velocity from a buffer of the same shape as `velocity()`.
  void set_velocity(TensorView<const T, D> v) {
    check<ShapeError>(v.shape() == velocity_.shape(), "nddr::Sgd::set_velocity: state has shape ",
                      v.shape(), ", expected ", velocity_.shape());
    Storage<D>::copy(velocity_.view().data(), v.data(),
                     static_cast<std::size_t>(v.numel()) * sizeof(T));
  }
  /// Forgets the momentum (v = 0), as the paper's runs start.
  void reset() { velocity_.zero(); }

 private:
  /// A range of one entry's elements: large kernels are split so the threads share the work.
  struct Chunk {
    std::size_t entry;
    std::size_t begin;  ///< absolute element index into the flat buffers
    std::size_t end;
  };
  static constexpr std::size_t kChunkElems = std::size_t{1} << 16;

  void build_chunks() {
    const auto& entries = store_->parameters();
    for (std::size_t k = 0; k < entries.size(); ++k) {
      const std::size_t begin = entries[k].offset;
      const std::size_t end = begin + static_cast<std::size_t>(entries[k].shape.numel());
      for (std::size_t b = begin; b < end; b += kChunkElems)
        chunks_.push_back(Chunk{k, b, std::min(end, b + kChunkElems)});
    }
  }

  ParameterStore<T, D>* store_;
  SgdOptions options_;
  Tensor<T, D> velocity_;  // (P,) like store.values()
  std::vector<Chunk> chunks_;
};

}  // namespace nddr
