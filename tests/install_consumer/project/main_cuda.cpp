// A user's GPU program against the installed package: nddr::cuda, no CUDA compiler needed.
// On a machine without a GPU it only proves that it compiled and linked.
#include <nddr/cuda.hpp>
#include <nddr/nddr.hpp>

#include <cmath>
#include <iostream>

int main() {
  if (nddr::cuda_device_count() == 0) {
    std::cout << "nddr cuda consumer ok (no CUDA device: compiled and linked only)\n";
    return 0;
  }
  nddr::Context<nddr::Cuda> gpu;
  // One of nddr's own kernels (the static kernel library) ...
  nddr::Tensor<float> x(nddr::Shape::nchw(1, 2, 3, 3), -1.0f);
  x[4] = 2.0f;
  auto xd = nddr::to_device(gpu, x);
  nddr::Tensor<float, nddr::Cuda> yd(x.shape());
  nddr::ops::relu_forward(gpu, xd.cview(), yd.view());
  const auto y = nddr::to_host(gpu, yd);
  // ... and cuDNN: a 1x1 convolution with weight 3 and no bias triples each channel sum.
  nddr::Tensor<float> w(nddr::Shape::nchw(1, 2, 1, 1), 3.0f);
  auto wd = nddr::to_device(gpu, w);
  nddr::Tensor<float, nddr::Cuda> zd(nddr::Shape::nchw(1, 1, 3, 3));
  nddr::ops::conv2d_forward<float>(gpu, yd.cview(), wd.cview(), {}, zd.view(),
                                   nddr::Conv2dOptions{}.bias(false));
  const auto z = nddr::to_host(gpu, zd);
  if (y[0] != 0.0f || y[4] != 2.0f || std::abs(z[4] - 6.0f) > 1e-6f || z[0] != 0.0f) {
    std::cout << "nddr cuda consumer: wrong results\n";
    return 1;
  }
  std::cout << "nddr cuda consumer ok (ran on the GPU)\n";
  return 0;
}
