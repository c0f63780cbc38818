#pragma once
/// \file
/// `Resize<T, D>`: spatial resizing to a fixed output size as a `Layer` (no parameters).

#include <string>

#include "nddr/ops/resize.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

/// Resizes (N, C, H, W) to (N, C, out_h, out_w), e.g. the NDDR-shortcut fusion
/// `Resize<float>(ResizeOptions{}.size(41, 41))` (TF legacy bilinear by default).
template <class T, class D = Cpu>
class Resize {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward never reads the output (nddr/layers/layer_traits.hpp).
  static constexpr bool backward_reads_output = false;

  explicit Resize(const ResizeOptions& opt) : opt_(opt) {}

  const ResizeOptions& options() const { return opt_; }
  Shape output_shape(const Shape& in) const {
    return resize_output_shape("nddr::Resize", in, opt_);
  }
  void declare(ParameterStore<T, D>&, const std::string&) {}
  void initialize(Rng&) {}
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    ops::resize_forward(ctx, x, y, opt_);
  }
  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D>,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    ops::resize_backward(ctx, x, dy, dx, opt_);
  }

 private:
  ResizeOptions opt_;
  bool training_ = true;
};

}  // namespace nddr
