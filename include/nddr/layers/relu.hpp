#pragma once
/// \file
/// `ReLU<T, D>`: the rectified linear unit as a `Layer`.

#include <string>

#include "nddr/backend/cpu/activation.hpp"
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

  Shape output_shape(const Shape& in) const { return in; }
  void declare(ParameterStore<T, D>&, const std::string&) {}
  void initialize(Rng&) {}
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    ops::relu_forward(ctx, x, y);
  }
  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D>,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    ops::relu_backward(ctx, x, dy, dx);
  }

 private:
  bool training_ = true;
};

}  // namespace nddr
