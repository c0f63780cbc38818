#pragma once
/// \file
/// `Adam<T, D>` and `AdamW<T, D>`: `torch.optim.Adam` (L2 decay folded into the gradient) and
/// `torch.optim.AdamW` (decoupled decay theta *= 1 - lr_group * wd_group) over every parameter
/// of a `ParameterStore`, with the store's per-group lr and decay multipliers (docs/optim.md;
/// weighting-spec section 13). Element body: ops::adam_element; CUDA: backend/cuda/adam.hpp.
///
/// State: the step count t (an int64 on the optimiser's device, so a captured CUDA Graph reads
/// the current value) and the moments m (`exp_avg`), v (`exp_avg_sq`) and, with amsgrad, vmax
/// (`max_exp_avg_sq`), flat buffers laid out like `store.values()`, all starting at zero.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/storage.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/math/adam.hpp"
#include "nddr/optim/groups.hpp"
#include "nddr/optim/state.hpp"

namespace nddr {

/// Hyper-parameters shared by `AdamOptions` and `AdamWOptions` (fluent setters returning the
/// derived type: `AdamWOptions{}.betas(0.9, 0.99).weight_decay(0.05)`).
template <class Self>
class BasicAdamOptions {
 public:
  /// Decay rate of the first moment, in [0, 1). Default 0.9.
  double beta1() const { return beta1_; }
  Self& beta1(double v) { return set(beta1_, v); }
  /// Decay rate of the second moment, in [0, 1). Default 0.999.
  double beta2() const { return beta2_; }
  Self& beta2(double v) { return set(beta2_, v); }
  Self& betas(double b1, double b2) {
    beta1_ = b1;
    return set(beta2_, b2);
  }
  /// Added to sqrt(vhat) (after bias correction, as torch), > 0. Default 1e-8.
  double eps() const { return eps_; }
  Self& eps(double v) { return set(eps_, v); }
  /// Decay coefficient, >= 0: L2 in the gradient (Adam) or decoupled (AdamW).
  double weight_decay() const { return weight_decay_; }
  Self& weight_decay(double v) { return set(weight_decay_, v); }
  /// Keep the element-wise maximum of v and divide by it (Reddi et al. 2018). Default off.
  bool amsgrad() const { return amsgrad_; }
  Self& amsgrad(bool v) { return set(amsgrad_, v); }
  /// Decay only tensors of rank >= 2 (kernels), as SgdOptions; default off (torch decays every
  /// parameter of a group).
  bool decay_rank_ge2_only() const { return decay_rank_ge2_only_; }
  Self& decay_rank_ge2_only(bool v) { return set(decay_rank_ge2_only_, v); }

  /// Throws OptionError naming `who`, the field and the value unless beta1, beta2 are in
  /// [0, 1), eps > 0 and weight_decay >= 0, all finite.
  void validate(const char* who) const {
    const char* type = Self::kTypeName;
    check<OptionError>(beta1_ >= 0.0 && beta1_ < 1.0, who, ": ", type,
                       ".beta1 must be in [0, 1), got ", beta1_);
    check<OptionError>(beta2_ >= 0.0 && beta2_ < 1.0, who, ": ", type,
                       ".beta2 must be in [0, 1), got ", beta2_);
    check<OptionError>(eps_ > 0.0 && std::isfinite(eps_), who, ": ", type,
                       ".eps must be a finite value > 0, got ", eps_);
    check<OptionError>(weight_decay_ >= 0.0 && std::isfinite(weight_decay_), who, ": ", type,
                       ".weight_decay must be a finite value >= 0, got ", weight_decay_);
  }

 protected:
  explicit BasicAdamOptions(double weight_decay) : weight_decay_(weight_decay) {}

 private:
  template <class V>
  Self& set(V& field, V v) {
    field = v;
    return static_cast<Self&>(*this);
  }
  double beta1_ = 0.9;
  double beta2_ = 0.999;
  double eps_ = 1e-8;
  double weight_decay_;
  bool amsgrad_ = false;
  bool decay_rank_ge2_only_ = false;
};

/// Options of `Adam`: torch's defaults (betas 0.9, 0.999; eps 1e-8; weight decay 0).
class AdamOptions : public BasicAdamOptions<AdamOptions> {
 public:
  static constexpr const char* kTypeName = "AdamOptions";
  AdamOptions() : BasicAdamOptions(0.0) {}
};

/// Options of `AdamW`: torch's defaults (betas 0.9, 0.999; eps 1e-8; weight decay 1e-2).
class AdamWOptions : public BasicAdamOptions<AdamWOptions> {
 public:
  static constexpr const char* kTypeName = "AdamWOptions";
  AdamWOptions() : BasicAdamOptions(1e-2) {}
};

namespace detail {

/// Adam (Decoupled = false) or AdamW (true) bound to one allocated store; see the file comment.
template <class T, class D, class Options, bool Decoupled>
class AdamImpl {
 public:
  using value_type = T;
  using device_type = D;
  using options_type = Options;
  static constexpr bool decoupled = Decoupled;
  /// The name checkpoints record (metadata 'optimizer') and the command line takes.
  static constexpr const char* kName = Decoupled ? "adamw" : "adam";

  /// Binds to `store`, which must be allocated and must outlive the optimiser.
  AdamImpl(ParameterStore<T, D>& store, Options options = {}) : store_(&store), options_(options) {
    options_.validate(who());
    check<Error>(store.allocated(), who(), ": the parameter store is not allocated");
    const Shape flat = store.values().shape();
    exp_avg_ = Tensor<T, D>(flat);
    exp_avg_sq_ = Tensor<T, D>(flat);
    if (options_.amsgrad()) max_exp_avg_sq_ = Tensor<T, D>(flat);
    step_ = Tensor<std::int64_t, D>(Shape{1});
    chunks_ = param_chunks(store.parameters());
  }

  const Options& options() const { return options_; }

  /// One update with scheduled learning rate `lr` (>= 0), on every hardware thread.
  void step(double lr) {
    Context<Cpu> ctx;
    step(ctx, lr);
  }

  /// One update with scheduled learning rate `lr` (>= 0) on `ctx`'s threads; t advances by one.
  void step(const Context<Cpu>& ctx, double lr) {
    static_assert(std::is_same_v<D, Cpu>,
                  "nddr::Adam::step: on a GPU, step with nddr::cuda::adam_step (or the Trainer)");
    const auto rates = group_rates<T>(who(), *store_, lr, options_.weight_decay());
    const std::int64_t t = step_[0] + 1;
    const ops::AdamBias bias = ops::adam_bias(options_.beta1(), options_.beta2(), t);
    const auto& entries = store_->parameters();
    T* theta = store_->values().data();
    const T* grad = store_->grads().data();
    T* m = exp_avg_.data();
    T* v = exp_avg_sq_.data();
    T* vmax = options_.amsgrad() ? max_exp_avg_sq_.data() : nullptr;
    const bool rank_rule = options_.decay_rank_ge2_only();
    parallel_for(ctx, static_cast<std::int64_t>(chunks_.size()), [&](std::int64_t c) {
      const ParamChunk& chunk = chunks_[static_cast<std::size_t>(c)];
      const ParamEntry& e = entries[chunk.entry];
      const GroupRates<T>& r = rates[e.group];
      const ops::AdamElementArgs<T> a = element_args(r.lr, rank_rule && e.shape.rank() < 2 ? T(0) : r.wd, bias);
      for (std::size_t i = chunk.begin; i < chunk.end; ++i)
        ops::adam_element(theta[i], grad[i], m[i], v[i], vmax ? vmax + i : nullptr, a);
    });
    step_[0] = t;
  }

  /// The arguments of ops::adam_element for group rates `lr`, `wd` at bias factors `bias`.
  ops::AdamElementArgs<T> element_args(T lr, T wd, const ops::AdamBias& bias) const {
    return {lr,
            wd,
            static_cast<T>(options_.beta1()),
            static_cast<T>(options_.beta2()),
            static_cast<T>(options_.eps()),
            static_cast<T>(bias.bc1),
            static_cast<T>(bias.bc2_sqrt),
            Decoupled};
  }

  /// The learning rate group `group` gets when the scheduled rate is `lr`.
  double group_lr(std::size_t group, double lr) const {
    check<Error>(group < store_->groups().size(), who(), "::group_lr: no group ", group);
    return lr * store_->groups()[group].lr_mult;
  }

  /// Steps taken (t); on a GPU this waits for the device.
  std::int64_t steps() const {
    std::int64_t t = 0;
    Storage<D>::download(&t, step_.data(), sizeof t);
    return t;
  }
  /// m, v and (with amsgrad) vmax, laid out like `store.values()`.
  TensorView<const T, D> exp_avg() const { return exp_avg_.cview(); }
  TensorView<const T, D> exp_avg_sq() const { return exp_avg_sq_.cview(); }
  TensorView<const T, D> max_exp_avg_sq() const { return max_exp_avg_sq_.cview(); }

  /// Writable views of the whole state, by name, for checkpoints (the names are torch's).
  OptimizerState<T, D> checkpoint_state() {
    OptimizerState<T, D> s{kName, {}, {}};
    s.tensors.emplace_back("optim/exp_avg", exp_avg_.view());
    s.tensors.emplace_back("optim/exp_avg_sq", exp_avg_sq_.view());
    if (options_.amsgrad()) s.tensors.emplace_back("optim/max_exp_avg_sq", max_exp_avg_sq_.view());
    s.counters.emplace_back("optim/step", step_.view());
    return s;
  }
  /// Device views the fused GPU step works on (backend/cuda/adam.hpp).
  TensorView<T, D> exp_avg_view() { return exp_avg_.view(); }
  TensorView<T, D> exp_avg_sq_view() { return exp_avg_sq_.view(); }
  T* max_exp_avg_sq_data() { return options_.amsgrad() ? max_exp_avg_sq_.data() : nullptr; }
  std::int64_t* step_data() { return step_.data(); }

  /// Forgets everything (t = 0, moments zero).
  void reset() {
    exp_avg_.zero();
    exp_avg_sq_.zero();
    if (options_.amsgrad()) max_exp_avg_sq_.zero();
    step_.zero();
  }

 private:
  static const char* who() { return Decoupled ? "nddr::AdamW" : "nddr::Adam"; }

  ParameterStore<T, D>* store_;
  Options options_;
  Tensor<T, D> exp_avg_;            // (P,) like store.values()
  Tensor<T, D> exp_avg_sq_;         // (P,)
  Tensor<T, D> max_exp_avg_sq_;     // (P,) with amsgrad, else empty
  Tensor<std::int64_t, D> step_;    // (1,) t
  std::vector<ParamChunk> chunks_;
};

}  // namespace detail

/// `torch.optim.Adam`: the decay is an L2 term in the gradient (it enters m and v).
template <class T, class D = Cpu>
class Adam : public detail::AdamImpl<T, D, AdamOptions, false> {
 public:
  using detail::AdamImpl<T, D, AdamOptions, false>::AdamImpl;
};

/// `torch.optim.AdamW`: decoupled decay theta *= 1 - lr_group * wd_group before the update.
template <class T, class D = Cpu>
class AdamW : public detail::AdamImpl<T, D, AdamWOptions, true> {
 public:
  using detail::AdamImpl<T, D, AdamWOptions, true>::AdamImpl;
};

}  // namespace nddr
