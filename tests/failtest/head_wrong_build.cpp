// PATTERN: H = FloatOnlyHead.*nddr::Head: missing .template <class T, class D> static Sequential
// A head spec whose build returns the wrong type is rejected by the laws kit naming the type.
#include <nddr/layers/conv2d.hpp>
#include <nddr/testing/network_laws.hpp>

struct FloatOnlyHead {
  static constexpr const char* name = "float_only";
  template <class T, class D>
  static nddr::Sequential<float, D> build(std::int64_t in, std::int64_t outputs) {
    nddr::Sequential<float, D> s;
    s.add("fc8", nddr::Conv2d<float, D>(in, outputs, 1));
    return s;
  }
};
int main() {
  auto r = nddr::testing::check_head_laws<FloatOnlyHead>(4, 3, nddr::Shape::nchw(2, 4, 5, 5));
  return r.ok ? 0 : 1;
}
