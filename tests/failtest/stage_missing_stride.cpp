// PATTERN: S = NoStrideStage.*nddr::Stage: missing .static constexpr std::int64_t stride.
// A stage spec that does not declare its down-sampling factor is rejected naming the type.
#include <nddr/concepts/stage.hpp>
#include <nddr/layers/conv2d.hpp>

struct NoStrideStage {
  static constexpr const char* name = "no_stride";
  static constexpr std::int64_t in_channels = 3, out_channels = 8;
  template <class T, class D>
  static nddr::Sequential<T, D> build() {
    nddr::Sequential<T, D> s;
    s.add("conv", nddr::Conv2d<T, D>(3, 8, 3, nddr::Conv2dOptions{}.same()));
    return s;
  }
};
static_assert(nddr::concepts::require_stage<NoStrideStage>());
int main() {}
