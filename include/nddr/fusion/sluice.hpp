#pragma once
/// \file
/// `SluiceLayer<T, D>` (Ruder et al., AAAI 2019, as used in the NDDR-CNN paper): each task's C
/// channels are split into S contiguous subspaces of C / S channels; a (K S) x (K S) matrix A
/// mixes the K S subspace tensors, G'_p = sum_q A[p][q] G_q, and task k's output is the channel
/// concatenation of its mixed subspaces p = k S, ..., k S + S - 1 (paper-spec.md §4.4). Spec
/// `Sluice`. Only the subspace mixing: no layer-stitch weights, no orthogonality penalty.

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
#include "nddr/fusion/cross_stitch.hpp"
#include "nddr/fusion/none.hpp"

namespace nddr {

/// Options of `SluiceLayer`. Initial matrix: `alpha_init` on the diagonal (own task, same
/// subspace); the remaining mass `rest_init` of each row spread evenly over its other
/// K S - 1 entries (nothing to spread when K S = 1).
struct SluiceOptions {
  std::int64_t subspaces = 2;  ///< S, must divide the channel count
  double alpha_init = 0.9;
  double rest_init = 0.1;

  SluiceOptions& subspace_count(std::int64_t s) {
    subspaces = s;
    return *this;
  }
  SluiceOptions& init(double alpha, double rest) {
    alpha_init = alpha;
    rest_init = rest;
    return *this;
  }
};

/// Parameter `prefix.alpha` (K S, K S) in group "nddr"; row p = the weights of subspace
/// p = k S + s (task k, channels [s C / S, (s + 1) C / S)).
template <class T, class D = Cpu>
class SluiceLayer : public detail::SubspaceMixLayer<T, D> {
 public:
  /// Throws OptionError unless tasks >= 1, channels >= 1, subspaces >= 1 and channels %
  /// subspaces == 0.
  SluiceLayer(std::size_t tasks, std::int64_t channels, const SluiceOptions& opt = {})
      : detail::SubspaceMixLayer<T, D>(kWho, tasks, channels, opt.subspaces), opt_(opt) {
    check<OptionError>(opt_.subspaces >= 1, kWho, ": SluiceOptions.subspaces must be >= 1, got ",
                       opt_.subspaces);
    check<OptionError>(channels % opt_.subspaces == 0, kWho, ": channels ", channels,
                       " are not divisible by SluiceOptions.subspaces ", opt_.subspaces);
  }

  std::int64_t subspaces() const { return opt_.subspaces; }
  const SluiceOptions& options() const { return opt_; }

  void initialize(Rng&) {
    static_assert(std::is_same_v<D, Cpu>,
                  "nddr::SluiceLayer::initialize: initialise on nddr::Cpu and copy the store");
    const std::int64_t P = this->count();
    const double off = P > 1 ? opt_.rest_init / static_cast<double>(P - 1) : 0.0;
    auto a = this->alpha();
    for (std::int64_t p = 0; p < P; ++p)
      for (std::int64_t q = 0; q < P; ++q)
        a[p * P + q] = static_cast<T>(p == q ? opt_.alpha_init : off);
  }

 private:
  static constexpr const char* kWho = "nddr::SluiceLayer";
  SluiceOptions opt_;
};

/// FusionSpec of the sluice network (paper-spec.md §4.4; 2 subspaces by default).
struct Sluice {
  static constexpr const char* name = "sluice";
  using options = SluiceOptions;
  template <class T, class D>
  using layer = SluiceLayer<T, D>;
  static constexpr std::size_t shared_stages = 0;
  static constexpr bool shortcut = false;
};

}  // namespace nddr
