#pragma once
/// \file
/// `NddrLayer<T, D>`: the NDDR layer of NDDR-CNN (Gao et al., CVPR 2019) for K >= 1 tasks, as
/// the authors' TF code builds it (paper-spec.md §1.2, §1.4): X = [x_1, ..., x_K] along the
/// channels (task order, shared by every branch); for each task k, y_k = ReLU(BN_k(W_k * X)),
/// W_k a 1x1 convolution from K C to C channels without bias. Spec `NDDR`.
///
/// On the CPU the concatenation is never formed: with W_k = [W_k1, ..., W_kK] in C x C blocks,
/// W_k X = sum_j W_kj x_j, so the 1x1 convolution is K accumulated GEMMs straight from the task
/// buffers; backward writes dx_j += W_kj^T dz_k into each task's gradient and dW_kj = dz_k x_j^T
/// per block. Other devices keep the concatenate + Conv2d formulation. On both, BatchNorm and
/// ReLU run as one op (BatchNormOptions::relu) writing the output, whose backward reads the
/// ReLU's mask from the output (y > 0 exactly where its input is > 0).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/fusion/none.hpp"
#include "nddr/layers/batch_norm.hpp"
#include "nddr/layers/conv2d.hpp"
#include "nddr/ops/activation.hpp"
#include "nddr/ops/concat.hpp"
#include "nddr/ops/nddr_mix.hpp"

namespace nddr {

/// Initialisation of the NDDR 1x1 kernels.
enum class NddrInit {
  kDiagonal,  ///< block (k, k) of W_k = alpha I, every other block beta I (paper Eq. 3)
  kXavier,    ///< Glorot uniform over the whole kernel, fan_in = K C, fan_out = C
};

/// Options of `NddrLayer`; defaults are the paper code's: diagonal (0.9, 0.1), no bias,
/// BatchNorm with TF-slim settings, ReLU.
struct NddrOptions {
  NddrInit init_method = NddrInit::kDiagonal;
  double alpha_init = 0.9;  ///< own-task block of the diagonal initialisation
  double beta_init = 0.1;   ///< every other task's block
  bool use_bias = false;    ///< bias of the 1x1 convolution (initialised to 0)
  bool use_batch_norm = true;
  BatchNormOptions batch_norm_options = BatchNormOptions::tf_slim();
  bool use_relu = true;

  NddrOptions& diagonal(double alpha, double beta) {
    init_method = NddrInit::kDiagonal;
    alpha_init = alpha;
    beta_init = beta;
    return *this;
  }
  NddrOptions& xavier() {
    init_method = NddrInit::kXavier;
    return *this;
  }
  NddrOptions& bias(bool on) {
    use_bias = on;
    return *this;
  }
  NddrOptions& batch_norm(bool on) {
    use_batch_norm = on;
    return *this;
  }
  NddrOptions& batch_norm(const BatchNormOptions& bn) {
    use_batch_norm = true;
    batch_norm_options = bn;
    return *this;
  }
  NddrOptions& relu(bool on) {
    use_relu = on;
    return *this;
  }
};

/// Parameters, all in group "nddr": `prefix.task{k}.conv.weight` (C, K C, 1, 1),
/// `prefix.task{k}.conv.bias` (C, with `bias(true)`), `prefix.task{k}.bn.weight|bias` (C);
/// buffers `prefix.task{k}.bn.running_mean|running_var` (C).
template <class T, class D = Cpu>
class NddrLayer {
 public:
  using value_type = T;
  using device_type = D;
  using Views = std::span<const TensorView<const T, D>>;
  using Outs = std::span<const TensorView<T, D>>;

  /// Fuses `tasks` (>= 1) features of `channels` (>= 1) channels; throws OptionError on bad
  /// sizes or BatchNorm options.
  NddrLayer(std::size_t tasks, std::int64_t channels, const NddrOptions& opt = {})
      : tasks_(tasks), channels_(channels), opt_(opt) {
    detail::check_fusion_sizes(kWho, tasks_, channels_);
    if (opt_.use_batch_norm) opt_.batch_norm_options.validate(kWho);
    const auto in = static_cast<std::int64_t>(tasks_) * channels_;
    for (std::size_t k = 0; k < tasks_; ++k) {
      convs_.emplace_back(in, channels_, 1, Conv2dOptions{}.bias(opt_.use_bias));
      if (opt_.use_batch_norm)
        bns_.emplace_back(channels_, BatchNormOptions(opt_.batch_norm_options).relu(opt_.use_relu));
    }
    conv_out_.resize(tasks_);
  }

  std::size_t tasks() const { return tasks_; }
  std::int64_t channels() const { return channels_; }
  const NddrOptions& options() const { return opt_; }

  /// Task k's 1x1 convolution and BatchNorm (the latter only with `batch_norm(true)`).
  Conv2d<T, D>& conv(std::size_t k) { return convs_.at(k); }
  BatchNorm2d<T, D>& batch_norm(std::size_t k) { return bns_.at(k); }

  /// Task k's kernel (C, K C, 1, 1); input channel j C + c is channel c of task j.
  TensorView<T, D> weight(std::size_t k) {
    check<Error>(store_ != nullptr, kWho, ": used before declare()");
    return store_->value(weights_.at(k));
  }

  std::vector<Shape> output_shapes(std::span<const Shape> inputs) const {
    return detail::fusion_output_shapes(kWho, tasks_, channels_, inputs);
  }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    store_ = &store;
    typename ParameterStore<T, D>::GroupScope scope(store, "nddr");
    weights_.clear();
    biases_.clear();
    for (std::size_t k = 0; k < tasks_; ++k) {
      const std::string p = prefix + ".task" + std::to_string(k);
      convs_[k].declare(store, p + ".conv");
      weights_.push_back(*store.find(p + ".conv.weight"));
      if (opt_.use_bias) biases_.push_back(*store.find(p + ".conv.bias"));
      if (opt_.use_batch_norm) bns_[k].declare(store, p + ".bn");
    }
  }

  void initialize(Rng& rng) {
    static_assert(std::is_same_v<D, Cpu>,
                  "nddr::NddrLayer::initialize: initialise on nddr::Cpu and copy the store");
    for (std::size_t k = 0; k < tasks_; ++k) {
      convs_[k].set_init(Conv2dInit::kGlorotUniform);
      convs_[k].initialize(rng);
      if (opt_.init_method == NddrInit::kDiagonal) set_diagonal(k);
      if (opt_.use_batch_norm) bns_[k].initialize(rng);
    }
  }

  void set_training(bool on) {
    training_ = on;
    for (auto& bn : bns_) bn.set_training(on);
  }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, Views xs, Outs ys) {
    const Shape s = detail::check_fusion_views(kWho, tasks_, channels_, xs, ys, "output", false);
    // The CPU's split GEMMs are FP32 only; under BF16 convolutions (the context's `conv_bf16`
    // setting) the CPU takes the concatenate + Conv2d route too, so that it rounds exactly where
    // the GPU does.
    split_ = std::is_same_v<D, Cpu> && !(std::is_same_v<T, float> && ctx.settings().conv_bf16());
    if constexpr (std::is_same_v<D, Cpu>)
      if (split_) return forward_split(ctx, xs, ys, s);
    forward_concat(ctx, xs, ys, s);
  }

  /// With ReLU, `ys` must be forward's outputs: ReLU's backward reads its mask there.
  void backward(Context<D>& ctx, Views xs, Views ys, Views dys, Outs dxs) {
    const Shape s = detail::check_fusion_views(kWho, tasks_, channels_, xs, dys, "dy", false);
    detail::check_fusion_views(kWho, tasks_, channels_, xs, dxs, "dx", true);
    if (opt_.use_relu)
      detail::check_fusion_views(kWho, tasks_, channels_, xs, ys, "y (the ReLU mask)", false);
    if constexpr (std::is_same_v<D, Cpu>)
      if (split_) return backward_split(ctx, xs, ys, dys, dxs, s);
    backward_concat(ctx, ys, dys, dxs, s);
  }

 private:
  static constexpr const char* kWho = "nddr::NddrLayer";

  // The concatenate + Conv2d formulation (devices other than the CPU, and the CPU under BF16).
  void forward_concat(Context<D>& ctx, Views xs, Outs ys, const Shape& s) {
    concat_.resize(Shape::nchw(s.n(), static_cast<std::int64_t>(tasks_) * s.c(), s.h(), s.w()));
    ops::concat_channels_forward<T>(ctx, xs, concat_.view());
    for (std::size_t k = 0; k < tasks_; ++k) {
      // Each stage writes straight into ys[k] when it is the last one; the intermediate
      // tensors are kept for backward.
      TensorView<T, D> z = ys[k];  // (N, C, H, W)
      if (opt_.use_batch_norm || opt_.use_relu) {
        conv_out_[k].resize(s);
        z = conv_out_[k].view();
      }
      convs_[k].forward(ctx, concat_.cview(), z);
      if (opt_.use_batch_norm)
        bns_[k].forward(ctx, z, ys[k]);  // with the ReLU fused when use_relu
      else if (opt_.use_relu)
        ops::relu_forward<T>(ctx, z, ys[k]);
    }
  }

  void backward_concat(Context<D>& ctx, Views ys, Views dys, Outs dxs, const Shape& s) {
    d_concat_.resize(concat_.shape());
    d_concat_.zero();
    for (std::size_t k = 0; k < tasks_; ++k) {
      TensorView<const T, D> g = dys[k];  // (N, C, H, W) gradient w.r.t. the current stage output
      if (opt_.use_batch_norm) {
        d_bn_.resize(s);
        d_bn_.zero();
        bns_[k].backward(ctx, conv_out_[k].cview(), ys[k], g, d_bn_.view());  // ReLU mask from y
        g = d_bn_.cview();
      } else if (opt_.use_relu) {
        d_relu_.resize(s);
        d_relu_.zero();
        ops::relu_backward<T>(ctx, conv_out_[k].cview(), g, d_relu_.view());
        g = d_relu_.cview();
      }
      convs_[k].backward(ctx, concat_.cview(), {}, g, d_concat_.view());
    }
    // concat_channels_backward needs the shape of every part, also of a skipped one.
    std::vector<TensorView<T, D>> parts;
    parts.reserve(tasks_);
    for (std::size_t k = 0; k < tasks_; ++k)
      parts.push_back(dxs[k].empty() ? TensorView<T, D>(nullptr, s) : dxs[k]);
    ops::concat_channels_backward<T>(ctx, d_concat_.cview(), parts);
  }

  // z_k = sum_j W_kj x_j [+ b_k] (the concat-free mix, nddr/ops/nddr_mix.hpp); then BN (+ ReLU,
  // fused) into ys[k], or z_k is ys[k] itself and ReLU runs in place there.
  void forward_split(Context<Cpu>& ctx, Views xs, Outs ys, const Shape& s) {
    std::vector<TensorView<const T, D>> w(tasks_), b(tasks_);
    std::vector<TensorView<T, D>> z(tasks_);
    for (std::size_t k = 0; k < tasks_; ++k) {
      w[k] = store_->value(weights_[k]);
      if (opt_.use_bias) b[k] = store_->value(biases_[k]);
      z[k] = ys[k];
      if (opt_.use_batch_norm) {
        conv_out_[k].resize(s);
        z[k] = conv_out_[k].view();
      }
    }
    ops::nddr_mix_forward<T>(ctx, xs, w, b, z);
    for (std::size_t k = 0; k < tasks_; ++k) {
      if (opt_.use_batch_norm)
        bns_[k].forward(ctx, conv_out_[k].cview(), ys[k]);  // with the ReLU fused when use_relu
      else if (opt_.use_relu)
        ops::relu_forward<T>(ctx, ys[k], ys[k]);
    }
  }

  // Per task k: g = dL/dz_k through ReLU (mask from ys[k]) and BN; then task k's share of the
  // mix's backward: dW_k, db_k assigned, dx_j += W_kj^T g for every non-empty dx_j.
  void backward_split(Context<Cpu>& ctx, Views xs, Views ys, Views dys, Outs dxs, const Shape& s) {
    for (std::size_t k = 0; k < tasks_; ++k) {
      TensorView<const T, D> g = dys[k];  // (N, C, H, W) gradient w.r.t. the stage's output
      if (opt_.use_batch_norm) {
        d_bn_.resize(s);
        d_bn_.zero();
        bns_[k].backward(ctx, conv_out_[k].cview(), ys[k], dys[k], d_bn_.view());  // ReLU mask from y
        g = d_bn_.cview();
      } else if (opt_.use_relu) {
        d_relu_.resize(s);
        ops::relu_gradient<T>(ctx, ys[k], dys[k], d_relu_.view());
        g = d_relu_.cview();
      }
      const TensorView<T, D> db = opt_.use_bias ? store_->grad(biases_[k]) : TensorView<T, D>{};
      ops::nddr_mix_backward<T>(ctx, xs, store_->value(weights_[k]), g, store_->grad(weights_[k]),
                                db, dxs);
    }
  }

  void set_diagonal(std::size_t k) {
    auto w = store_->value(weights_[k]);  // (C, K C, 1, 1)
    const std::int64_t C = channels_, in = static_cast<std::int64_t>(tasks_) * C;
    for (std::int64_t i = 0; i < w.numel(); ++i) w[i] = T(0);
    for (std::size_t j = 0; j < tasks_; ++j) {
      const T v = static_cast<T>(j == k ? opt_.alpha_init : opt_.beta_init);
      for (std::int64_t c = 0; c < C; ++c) w[c * in + static_cast<std::int64_t>(j) * C + c] = v;
    }
  }

  std::size_t tasks_;
  std::int64_t channels_;
  NddrOptions opt_;
  std::vector<Conv2d<T, D>> convs_;
  bool split_ = std::is_same_v<D, Cpu>;  ///< the formulation the last forward used
  std::vector<BatchNorm2d<T, D>> bns_;
  ParameterStore<T, D>* store_ = nullptr;
  std::vector<ParamId> weights_;
  std::vector<ParamId> biases_;  // with bias(true)
  bool training_ = true;
  // Not on the CPU: the concatenated input, kept for backward, and its gradient.
  Tensor<T, D> concat_;                 // (N, K C, H, W)
  Tensor<T, D> d_concat_;               // (N, K C, H, W)
  // (N, C, H, W) per task: the convolution's output (kept for BN's backward); on the CPU only
  // with BN, elsewhere when BN or ReLU follows.
  std::vector<Tensor<T, D>> conv_out_;
  Tensor<T, D> d_relu_;                 // (N, C, H, W) scratch
  Tensor<T, D> d_bn_;                   // (N, C, H, W) scratch
};

/// FusionSpec of NDDR-CNN (paper-spec.md §1-§2).
struct NDDR {
  static constexpr const char* name = "nddr";
  using options = NddrOptions;
  template <class T, class D>
  using layer = NddrLayer<T, D>;
  static constexpr std::size_t shared_stages = 0;
  static constexpr bool shortcut = false;
};

}  // namespace nddr
