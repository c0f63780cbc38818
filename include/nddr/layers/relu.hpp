#pragma once
/// \file
/// `ReLU<T, D>`: the rectified linear unit as a `Layer`. It runs in place (see
/// nddr/layers/layer_traits.hpp): backward reads its mask from the output, since y > 0 exactly
/// where x > 0 (NaN is neither, in x or in y = NaN).

#include <string>

#include "nddr/ops/activation.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

template <class T, class D = Cpu>
class ReLU {
 public:
  using value_type = T;
  using device_type = D;
  static constexpr bool runs_in_place = true;
  static constexpr bool backward_reads_output = true;

  Shape output_shape(const Shape& in) const { return in; }
  void declare(ParameterStore<T, D>&, const std::string&) {}
  void initialize(Rng&) {}
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    ops::relu_forward(ctx, x, y);
  }
  /// Reads only `y` (forward's output) and `dy`; `x` may be `y`'s memory.
  void backward(Context<D>& ctx, TensorView<const T, D>, TensorView<const T, D> y,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    ops::relu_backward(ctx, y, dy, dx);
  }

 private:
  bool training_ = true;
};

}  // namespace nddr
