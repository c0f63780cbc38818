// PATTERN: L = NotALayer.*nddr::Layer: missing `void backward
// A type without backward() must be rejected with a message naming the type and the member.
#include <nddr/concepts/layer.hpp>

struct NotALayer {
  using value_type = float;
  using device_type = nddr::Cpu;
  nddr::Shape output_shape(const nddr::Shape& s) const { return s; }
  void declare(nddr::ParameterStore<float>&, const std::string&) {}
  void initialize(nddr::Rng&) {}
  void forward(nddr::Context<nddr::Cpu>&, nddr::TensorView<const float>, nddr::TensorView<float>) {}
  void set_training(bool) {}
  bool training() const { return true; }
};

static_assert(nddr::concepts::require_layer<NotALayer>());
int main() {}
