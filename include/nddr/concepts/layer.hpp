#pragma once
/// \file
/// Concept `Layer`: a differentiable computation with explicit forward and backward passes.
///
/// What it represents: a map y = f(x; theta) from one tensor to one tensor on device
/// `L::device_type` with element type `L::value_type`, whose parameters theta live in a
/// `ParameterStore`.
///
/// Minimal complete definition (with `V = L::value_type`, `D = L::device_type`):
///  - `Shape output_shape(const Shape& in) const`: the output shape for input shape `in`;
///    throws `nddr::ShapeError` naming the layer and the shape when `in` is not accepted.
///  - `void declare(ParameterStore<V, D>& store, const std::string& prefix)`: declares the
///    parameters as `prefix + ".weight"` etc. Called once, before `store.allocate()`.
///  - `void initialize(Rng& rng)`: writes initial parameter values; after `allocate()`.
///  - `void forward(Context<D>& ctx, TensorView<const V, D> x, TensorView<V, D> y)`:
///    requires `y.shape() == output_shape(x.shape())`; ensures y = f(x) (assigned). May cache
///    what backward needs (the layer is stateful between forward and backward).
///  - `void backward(Context<D>& ctx, TensorView<const V, D> x, TensorView<const V, D> y,
///    TensorView<const V, D> dy, TensorView<V, D> dx)`: requires the preceding `forward` was
///    called with the same x and produced y. Ensures (the dlib contract):
///      * parameter gradients are **assigned**: grad(theta) = (df/dtheta)^T dy;
///      * the data gradient is **accumulated**: dx += (df/dx)^T dy. An empty `dx`
///        (null data) means "not needed" and is skipped.
///  - `void set_training(bool)`, `bool training() const`: train vs. inference behaviour
///    (BatchNorm statistics, dropout).
///
/// Models: every class in `nddr/layers/`. Check your own with `nddr::testing::check_layer_laws`
/// (nddr/testing/layer_laws.hpp); diagnose a failing type with `nddr::concepts::require_layer<L>()`.

#include <concepts>
#include <string>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr::concepts {

namespace detail {

template <class L>
concept HasLayerTypes = requires {
  typename L::value_type;
  typename L::device_type;
};

template <class L>
concept HasOutputShape = requires(const L& l, const Shape& s) {
  { l.output_shape(s) } -> std::same_as<Shape>;
};

template <class L>
concept HasDeclare = requires(L& l, ParameterStore<typename L::value_type, typename L::device_type>& store,
                              const std::string& prefix, Rng& rng) {
  l.declare(store, prefix);
  l.initialize(rng);
};

template <class L>
concept HasForward = requires(L& l, Context<typename L::device_type>& ctx,
                              TensorView<const typename L::value_type, typename L::device_type> x,
                              TensorView<typename L::value_type, typename L::device_type> y) {
  l.forward(ctx, x, y);
};

template <class L>
concept HasBackward =
    requires(L& l, Context<typename L::device_type>& ctx,
             TensorView<const typename L::value_type, typename L::device_type> x,
             TensorView<typename L::value_type, typename L::device_type> dx) {
      l.backward(ctx, x, x, x, dx);
    };

template <class L>
concept HasMode = requires(L& l, const L& cl, bool b) {
  l.set_training(b);
  { cl.training() } -> std::same_as<bool>;
};

}  // namespace detail

template <class L>
concept Layer = detail::HasLayerTypes<L> && detail::HasOutputShape<L> && detail::HasDeclare<L> &&
                detail::HasForward<L> && detail::HasBackward<L> && detail::HasMode<L>;

/// Diagnoses, requirement by requirement, why `L` is not a `Layer`. The compiler's
/// "required from" line names `L`; the message names the missing member and the fix.
template <class L>
constexpr bool require_layer() {
  static_assert(detail::HasLayerTypes<L>,
                "nddr::Layer: missing member types; fix: add `using value_type = float;` (or "
                "double) and `using device_type = nddr::Cpu;` to the layer");
  if constexpr (detail::HasLayerTypes<L>) {
    static_assert(detail::HasOutputShape<L>,
                  "nddr::Layer: missing `Shape output_shape(const Shape&) const`");
    static_assert(detail::HasDeclare<L>,
                  "nddr::Layer: missing `void declare(ParameterStore<V, D>&, const std::string&)` "
                  "or `void initialize(Rng&)`");
    static_assert(detail::HasForward<L>,
                  "nddr::Layer: missing `void forward(Context<D>&, TensorView<const V, D> x, "
                  "TensorView<V, D> y)`");
    static_assert(detail::HasBackward<L>,
                  "nddr::Layer: missing `void backward(Context<D>&, TensorView<const V, D> x, "
                  "TensorView<const V, D> y, TensorView<const V, D> dy, TensorView<V, D> dx)`");
    static_assert(detail::HasMode<L>,
                  "nddr::Layer: missing `void set_training(bool)` or `bool training() const`");
  }
  return Layer<L>;
}

}  // namespace nddr::concepts
