#pragma once
/// \file
/// `CrossStitchLayer<T, D>` (Misra et al., CVPR 2016): per fusion point a K x K matrix of
/// scalars A mixes the task features, out_k = sum_j A[k][j] x_j; no BN, no activation, no bias
/// (paper-spec.md §4.3). Spec `CrossStitch`. Also the subspace-mixing kernels shared with the
/// sluice layer (nddr/fusion/sluice.hpp), of which the cross-stitch unit is the S = 1 case.
/// The mixing itself is the op nddr/ops/subspace_mix.hpp.

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
#include "nddr/ops/subspace_mix.hpp"

namespace nddr {

namespace detail {

/// The state and passes shared by the cross-stitch and sluice layers: K tasks of C channels,
/// each split into S subspaces mixed by one parameter `prefix.alpha` (K S, K S) in group "nddr".
/// `who` names the layer in error messages.
template <class T, class D>
class SubspaceMixLayer {
 public:
  using value_type = T;
  using device_type = D;
  using Views = std::span<const TensorView<const T, D>>;
  using Outs = std::span<const TensorView<T, D>>;

  std::size_t tasks() const { return tasks_; }
  std::int64_t channels() const { return channels_; }

  std::vector<Shape> output_shapes(std::span<const Shape> inputs) const {
    return fusion_output_shapes(who_, tasks_, channels_, inputs);
  }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    store_ = &store;
    alpha_ = store.declare(prefix + ".alpha", Shape{count(), count()}, "nddr");
  }

  /// The (K S, K S) mixing matrix, row p = the weights of subspace p's output.
  TensorView<T, D> alpha() {
    check<Error>(store_ != nullptr, who_, ": used before declare()");
    return store_->value(alpha_);
  }

  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, Views xs, Outs ys) {
    const Shape s = check_fusion_views(who_, tasks_, channels_, xs, ys, "output", false);
    ops::subspace_mix_forward<T>(ctx, SubspaceLayout(s, tasks_, subspaces_), xs, alpha().data(),
                                 ys);
  }

  void backward(Context<D>& ctx, Views xs, Views, Views dys, Outs dxs) {
    const Shape s = check_fusion_views(who_, tasks_, channels_, xs, dys, "dy", false);
    check_fusion_views(who_, tasks_, channels_, xs, dxs, "dx", true);
    ops::subspace_mix_backward<T>(ctx, SubspaceLayout(s, tasks_, subspaces_), xs, dys,
                                  alpha().data(), store_->grad(alpha_).data(), dxs);
  }

 protected:
  /// Throws OptionError unless tasks >= 1 and channels >= 1; `subspaces` is checked by the
  /// layer that has more than one.
  SubspaceMixLayer(const char* who, std::size_t tasks, std::int64_t channels,
                   std::int64_t subspaces)
      : who_(who), tasks_(tasks), channels_(channels), subspaces_(subspaces) {
    check_fusion_sizes(who_, tasks_, channels_);
  }

  /// P = K S, the side of the mixing matrix.
  std::int64_t count() const { return static_cast<std::int64_t>(tasks_) * subspaces_; }

 private:
  const char* who_;
  std::size_t tasks_;
  std::int64_t channels_;
  std::int64_t subspaces_;
  ParameterStore<T, D>* store_ = nullptr;
  ParamId alpha_{};
  bool training_ = true;
};

}  // namespace detail

/// Options of `CrossStitchLayer`: the initial matrix, `alpha` on the diagonal (own task) and
/// `beta` everywhere else (every other task), as the NDDR diagonal initialisation.
struct CrossStitchOptions {
  double alpha_init = 0.9;
  double beta_init = 0.1;

  CrossStitchOptions& init(double alpha, double beta) {
    alpha_init = alpha;
    beta_init = beta;
    return *this;
  }
};

/// Parameter `prefix.alpha` (K, K) in group "nddr": out_k = sum_j alpha[k][j] x_j, one scalar
/// per task pair shared by every channel and pixel.
template <class T, class D = Cpu>
class CrossStitchLayer : public detail::SubspaceMixLayer<T, D> {
 public:
  /// Mixes `tasks` (>= 1) features of `channels` (>= 1) channels; throws OptionError otherwise.
  CrossStitchLayer(std::size_t tasks, std::int64_t channels, const CrossStitchOptions& opt = {})
      : detail::SubspaceMixLayer<T, D>(kWho, tasks, channels, 1), opt_(opt) {}

  const CrossStitchOptions& options() const { return opt_; }

  void initialize(Rng&) {
    static_assert(std::is_same_v<D, Cpu>,
                  "nddr::CrossStitchLayer::initialize: initialise on nddr::Cpu and copy the store");
    const std::size_t K = this->tasks();
    auto a = this->alpha();
    for (std::size_t k = 0; k < K; ++k)
      for (std::size_t j = 0; j < K; ++j)
        a[static_cast<std::int64_t>(k * K + j)] =
            static_cast<T>(k == j ? opt_.alpha_init : opt_.beta_init);
  }

 private:
  static constexpr const char* kWho = "nddr::CrossStitchLayer";
  CrossStitchOptions opt_;
};

/// FusionSpec of the cross-stitch network (paper-spec.md §4.3).
struct CrossStitch {
  static constexpr const char* name = "cross_stitch";
  using options = CrossStitchOptions;
  template <class T, class D>
  using layer = CrossStitchLayer<T, D>;
  static constexpr std::size_t shared_stages = 0;
  static constexpr bool shortcut = false;
};

}  // namespace nddr
