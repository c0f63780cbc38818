#pragma once
/// \file
/// `Dropout<T, D>`: inverted dropout as a `Layer` (PyTorch `nn.Dropout(p)`, TF
/// `dropout(keep_prob = 1 - p)`), identity in inference mode.

#include <cstdint>
#include <string>

#include "nddr/ops/dropout.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

/// Each training forward reserves numel(x) counters of the layer's own `Rng`, so every step
/// draws a fresh mask and the layer's whole random state is `rng().state()` (checkpoint it
/// with `state()` / `set_state()`). Backward reuses the mask of the last forward.
template <class T, class D = Cpu>
class Dropout {
 public:
  using value_type = T;
  using device_type = D;
  /// Backward never reads the output (nddr/layers/layer_traits.hpp).
  static constexpr bool backward_reads_output = false;

  /// Throws OptionError unless 0 <= p < 1.
  explicit Dropout(DropoutOptions opt = {}) : opt_(opt) { opt_.validate("nddr::Dropout"); }

  const DropoutOptions& options() const { return opt_; }

  Shape output_shape(const Shape& in) const { return in; }
  void declare(ParameterStore<T, D>&, const std::string&) {}
  /// Seeds the layer's stream from `rng.next_bits()`.
  void initialize(Rng& rng) { rng_ = Rng(rng.next_bits()); }
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  /// The layer's random stream.
  Rng& rng() { return rng_; }
  const Rng& rng() const { return rng_; }
  Rng::State state() const { return rng_.state(); }
  void set_state(Rng::State s) { rng_.set_state(s); }

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    last_p_ = training_ ? opt_.p() : 0.0;
    last_seed_ = rng_.seed();
    last_first_ = last_p_ > 0.0 ? rng_.reserve(static_cast<std::uint64_t>(x.numel())) : 0;
    ops::dropout_forward(ctx, x, y, last_p_, last_seed_, last_first_);
  }

  void backward(Context<D>& ctx, TensorView<const T, D>, TensorView<const T, D>,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    ops::dropout_backward(ctx, dy, dx, last_p_, last_seed_, last_first_);
  }

 private:
  DropoutOptions opt_;
  bool training_ = true;
  Rng rng_;
  // The mask of the last forward: drop probability (0 in inference), seed, first counter.
  double last_p_ = 0.0;
  std::uint64_t last_seed_ = 0;
  std::uint64_t last_first_ = 0;
};

}  // namespace nddr
