#pragma once
/// \file
/// `BatchNorm2d<T, D>`: batch normalisation of (N, C, H, W) tensors per channel as a `Layer`
/// (PyTorch `nn.BatchNorm2d`; `BatchNormOptions::tf_slim()` for the NDDR-CNN TF code).
/// `ScopedBatchNormSync` turns every BatchNorm2d into synchronized (cross-replica) batch norm
/// while it lives, which is how data-parallel training reaches the layers inside a network.

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "nddr/ops/batch_norm.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

namespace detail {
/// The reduction of the innermost live ScopedBatchNormSync of this thread, or null.
inline thread_local const BatchNormAllReduce* batch_norm_sync = nullptr;
}  // namespace detail

/// While alive, every BatchNorm2d whose training forward runs on this thread (the one
/// that runs the network) normalises with the statistics of the global batch, summed over the
/// replicas by `all_reduce`, and its backward reduces sum(dy) and sum(dy * xhat) the same way
/// (synchronized batch norm; see ops::batch_norm_forward_training_sync, on the CPU and the GPU).
/// Scopes nest.
class ScopedBatchNormSync {
 public:
  explicit ScopedBatchNormSync(BatchNormAllReduce all_reduce)
      : reduce_(std::move(all_reduce)), previous_(detail::batch_norm_sync) {
    detail::batch_norm_sync = &reduce_;
  }
  ~ScopedBatchNormSync() { detail::batch_norm_sync = previous_; }
  ScopedBatchNormSync(const ScopedBatchNormSync&) = delete;
  ScopedBatchNormSync& operator=(const ScopedBatchNormSync&) = delete;

 private:
  BatchNormAllReduce reduce_;
  const BatchNormAllReduce* previous_;
};

/// Parameters `prefix.weight` (gamma, init 1) and `prefix.bias` (beta, init 0) when affine;
/// buffers `prefix.running_mean` (init 0) and `prefix.running_var` (init 1). Training mode
/// normalises with batch statistics and updates the running ones; inference mode uses the
/// running statistics, and its backward treats them as constants. With
/// `BatchNormOptions::relu(true)` the layer is BatchNorm2d followed by ReLU in one pass each
/// way (the conv units of every backbone here); its backward then reads its output.
template <class T, class D = Cpu>
class BatchNorm2d {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward reads the output only for the fused ReLU's mask (nddr/layers/layer_traits.hpp).
  bool reads_output_in_backward() const { return opt_.relu(); }

  /// Normalises `channels` (>= 1) channels; throws OptionError on bad options.
  explicit BatchNorm2d(std::int64_t channels, BatchNormOptions opt = {})
      : channels_(checked_channels(channels)),
        opt_(opt),
        save_mean_(Shape{channels_}),
        save_inv_std_(Shape{channels_}) {
    opt_.validate("nddr::BatchNorm2d");
  }

  std::int64_t channels() const { return channels_; }
  const BatchNormOptions& options() const { return opt_; }

  Shape output_shape(const Shape& in) const {
    check<ShapeError>(in.rank() == 4 && in.c() == channels_, "nddr::BatchNorm2d: input has shape ",
                      in, ", expected (N, ", channels_, ", H, W)");
    return in;
  }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    store_ = &store;
    const Shape s{channels_};
    if (opt_.affine()) {
      weight_ = store.declare(prefix + ".weight", s);
      bias_ = store.declare(prefix + ".bias", s);
    }
    running_mean_ = store.declare_buffer(prefix + ".running_mean", s);
    running_var_ = store.declare_buffer(prefix + ".running_var", s);
  }

  void initialize(Rng&) {
    if (opt_.affine()) {
      fill(store().value(weight_), T(1));
      fill(store().value(bias_), T(0));
    }
    fill(running_mean(), T(0));
    fill(running_var(), T(1));
  }

  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  /// The running statistics (C), e.g. to load or inspect them.
  TensorView<T, D> running_mean() { return store().buffer(running_mean_); }
  TensorView<T, D> running_var() { return store().buffer(running_var_); }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    output_shape(x.shape());
    synced_ = nullptr;
    if (training_ && detail::batch_norm_sync != nullptr) {
      synced_ = detail::batch_norm_sync;
      ops::batch_norm_forward_training_sync(ctx, x, gamma(), beta(), running_mean(),
                                            running_var(), y, save_mean_.view(),
                                            save_inv_std_.view(), opt_, *synced_);
    } else if (training_) {
      ops::batch_norm_forward_training(ctx, x, gamma(), beta(), running_mean(), running_var(), y,
                                       save_mean_.view(), save_inv_std_.view(), opt_);
    } else {
      ops::batch_norm_forward_inference(ctx, x, gamma(), beta(), running_mean(), running_var(), y,
                                        opt_);
    }
  }

  /// `y` is forward's output; the ops read it only for the fused ReLU.
  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D> y,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    output_shape(x.shape());
    if (training_ && synced_ != nullptr) {
      ops::batch_norm_backward_training_sync(ctx, x, dy, gamma(), save_mean_.cview(),
                                             save_inv_std_.cview(), dx, dgamma(), dbeta(), opt_,
                                             *synced_, y);
    } else if (training_) {
      ops::batch_norm_backward_training(ctx, x, dy, gamma(), save_mean_.cview(),
                                        save_inv_std_.cview(), dx, dgamma(), dbeta(), opt_, y);
    } else {
      ops::batch_norm_backward_inference(ctx, x, dy, gamma(), running_mean(), running_var(), dx,
                                         dgamma(), dbeta(), opt_, y);
    }
  }

 private:
  static std::int64_t checked_channels(std::int64_t c) {
    check<OptionError>(c >= 1, "nddr::BatchNorm2d: channels must be >= 1, got ", c);
    return c;
  }
  static void fill(TensorView<T, D> v, T value) {
    for (std::int64_t i = 0; i < v.numel(); ++i) v[i] = value;
  }
  ParameterStore<T, D>& store() {
    check<Error>(store_ != nullptr, "nddr::BatchNorm2d: used before declare()");
    return *store_;
  }
  TensorView<const T, D> gamma() {
    return opt_.affine() ? TensorView<const T, D>(store().value(weight_))
                         : TensorView<const T, D>{};
  }
  TensorView<const T, D> beta() {
    return opt_.affine() ? TensorView<const T, D>(store().value(bias_)) : TensorView<const T, D>{};
  }
  TensorView<T, D> dgamma() { return opt_.affine() ? store().grad(weight_) : TensorView<T, D>{}; }
  TensorView<T, D> dbeta() { return opt_.affine() ? store().grad(bias_) : TensorView<T, D>{}; }

  std::int64_t channels_;
  BatchNormOptions opt_;
  bool training_ = true;
  ParameterStore<T, D>* store_ = nullptr;
  ParamId weight_, bias_, running_mean_, running_var_;
  Tensor<T, D> save_mean_;     // (C) batch mean of the last training forward
  Tensor<T, D> save_inv_std_;  // (C) its 1 / sqrt(var + eps)
  // The reduction the last training forward synchronized with (its backward must use it too).
  const BatchNormAllReduce* synced_ = nullptr;
};

}  // namespace nddr
