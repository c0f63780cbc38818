#pragma once
/// \file
/// Concepts `FusionLayer` (a run-time module joining K task features of one stage) and
/// `FusionSpec` (the compile-time tag that names it in `MultiTask<B1, ..., BK, F>`).
///
/// FusionLayer, minimal complete definition (with V = value_type, D = device_type,
/// `Views = std::span<const TensorView<const V, D>>`, `Outs = std::span<const TensorView<V, D>>`):
///  - constructor `F(std::size_t tasks, std::int64_t channels, const Options& = {})`;
///  - `std::size_t tasks() const`;
///  - `std::vector<Shape> output_shapes(std::span<const Shape> inputs) const`: K shapes in, K out
///    (ShapeError naming the task index when the inputs disagree);
///  - `void declare(ParameterStore<V, D>&, const std::string& prefix)` (names such as
///    `prefix.task1.conv.weight`), `void initialize(Rng&)`;
///  - `void forward(Context<D>&, Views xs, Outs ys)`: ys[k] assigned;
///  - `void backward(Context<D>&, Views xs, Views ys, Views dys, Outs dxs)`: parameter gradients
///    assigned, every non-empty dxs[k] accumulated (+=) — each task's input receives the
///    contributions of all K outputs;
///  - `void set_training(bool)`, `bool training() const`.
/// FusionSpec (a stateless struct `F`): `static constexpr const char* name`,
/// `using options = ...` (default-constructible), `template <class T, class D> using layer = ...`
/// (a FusionLayer), `static constexpr std::size_t shared_stages` (0, or S for split-style
/// networks sharing stages 1..S), `static constexpr bool shortcut` (NDDR-CNN-Shortcut style).

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr::concepts {

template <class F>
concept FusionLayer =
    requires {
      typename F::value_type;
      typename F::device_type;
    } &&
    requires(F& f, const F& cf, std::span<const Shape> shapes,
             ParameterStore<typename F::value_type, typename F::device_type>& store,
             const std::string& prefix, Rng& rng, Context<typename F::device_type>& ctx,
             std::span<const TensorView<const typename F::value_type, typename F::device_type>> xs,
             std::span<const TensorView<typename F::value_type, typename F::device_type>> ys,
             bool on) {
      { cf.tasks() } -> std::convertible_to<std::size_t>;
      { cf.output_shapes(shapes) } -> std::same_as<std::vector<Shape>>;
      f.declare(store, prefix);
      f.initialize(rng);
      f.forward(ctx, xs, ys);
      f.backward(ctx, xs, xs, xs, ys);
      f.set_training(on);
      { cf.training() } -> std::same_as<bool>;
    };

template <class F>
concept FusionSpec = requires {
  { F::name } -> std::convertible_to<const char*>;
  { F::shared_stages } -> std::convertible_to<std::size_t>;
  { F::shortcut } -> std::convertible_to<bool>;
  typename F::options;
  typename F::template layer<double, Cpu>;
} && FusionLayer<typename F::template layer<double, Cpu>> &&
    std::constructible_from<typename F::template layer<double, Cpu>, std::size_t, std::int64_t,
                            const typename F::options&>;

/// Diagnoses why `F` is not a `FusionSpec`, one requirement at a time; the compiler's
/// "required from" line names `F`.
template <class F>
constexpr bool require_fusion_spec() {
  static_assert(requires { { F::name } -> std::convertible_to<const char*>; },
                "nddr::FusionSpec: missing `static constexpr const char* name`");
  static_assert(requires { typename F::options; },
                "nddr::FusionSpec: missing `using options = ...` (a default-constructible options "
                "struct; use nddr::IdentityFusionOptions if there are none)");
  static_assert(requires { { F::shared_stages } -> std::convertible_to<std::size_t>; },
                "nddr::FusionSpec: missing `static constexpr std::size_t shared_stages` (0 unless "
                "stages are shared)");
  static_assert(requires { { F::shortcut } -> std::convertible_to<bool>; },
                "nddr::FusionSpec: missing `static constexpr bool shortcut`");
  static_assert(requires { typename F::template layer<double, Cpu>; },
                "nddr::FusionSpec: missing `template <class T, class D> using layer = ...`");
  if constexpr (requires { typename F::template layer<double, Cpu>; })
    static_assert(FusionLayer<typename F::template layer<double, Cpu>>,
                  "nddr::FusionSpec: `layer<T, D>` does not model nddr::concepts::FusionLayer "
                  "(see <nddr/concepts/fusion_layer.hpp> for the members it needs)");
  return FusionSpec<F>;
}

}  // namespace nddr::concepts
