// A user's program: one include, one target.
#include <nddr/nddr.hpp>

#include <iostream>

int main() {
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<float> x(nddr::Shape::nchw(1, 2, 2, 2), -1.0f);
  x[3] = 2.0f;
  nddr::Tensor<float> y(x.shape());
  nddr::ops::relu_forward(ctx, x.cview(), y.view());
  if (y[0] != 0.0f || y[3] != 2.0f) return 1;
  std::cout << "nddr consumer ok\n";
  return 0;
}
