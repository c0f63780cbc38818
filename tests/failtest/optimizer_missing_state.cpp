// PATTERN: NoStateOptimizer.*nddr::Optimizer: missing .OptimizerState<T, D> checkpoint_state
// An optimiser without a checkpointable state is rejected naming the type and the member it
// lacks (it could not be resumed exactly).
#include <nddr/concepts/optimizer.hpp>

struct NoStateOptions {
  void validate(const char*) const {}
};

template <class T, class D>
struct NoStateOptimizer {
  using value_type = T;
  using device_type = D;
  using options_type = NoStateOptions;
  NoStateOptimizer(nddr::ParameterStore<T, D>&, const NoStateOptions&) {}
  const NoStateOptions& options() const { return options_; }
  void step(const nddr::Context<nddr::Cpu>&, double) {}
  double group_lr(std::size_t, double lr) const { return lr; }
  NoStateOptions options_;
};
static_assert(nddr::concepts::require_optimizer<NoStateOptimizer, float, nddr::Cpu>());
int main() {}
