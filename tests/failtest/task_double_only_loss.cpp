// PATTERN: X = DoubleOnlyTask.*nddr::Task: missing .template <class T, class D> static void loss
// A task whose loss exists only for double (not a template over float and double) is rejected
// naming the type and the expected signature.
#include <nddr/concepts/task.hpp>

struct DoubleOnlyTask {
  static constexpr const char* name = "double_only";
  static constexpr std::int64_t outputs = 2;
  template <class T>
  using target_t = T;
  static void loss(nddr::LossSink<double, nddr::Cpu>&, nddr::TensorView<const double>,
                   nddr::TensorView<const double>, nddr::TensorView<double>) {}
};
static_assert(nddr::concepts::require_task<DoubleOnlyTask>());
int main() {}
