// A whole multi-task network on the GPU equals the same network on the CPU: initialisation,
// forward, both task-loss gradients, backward (every parameter gradient), an SGD step, BN running
// statistics and dropout masks. Self-skips without a device.
#include <catch2/catch.hpp>

#include <nddr/cuda.hpp>
#include <nddr/nddr.hpp>

#include "network_check.hpp"

#include "no_device.hpp"

namespace {

using nddr_test::no_device;

}  // namespace

TEST_CASE("CUDA network: TinyNet NDDR step matches the CPU (double)", "[cuda][network]") {
  if (no_device()) return;
  nddr_test::check_step<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>, double>(
      {11, 3}, nddr::Shape::nchw(2, 3, 33, 29), 1e-9);
}

TEST_CASE("CUDA network: shortcut and split variants match the CPU (double)", "[cuda][network]") {
  if (no_device()) return;
  nddr_test::check_step<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::Shortcut<nddr::NDDR>>, double>(
      {11, 3}, nddr::Shape::nchw(2, 3, 33, 33), 1e-9);
  nddr_test::check_step<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::Shared<3>>, double>(
      {11, 3}, nddr::Shape::nchw(2, 3, 33, 33), 1e-9);
}

// In double: the network amplifies a relative perturbation of its weights about 1e7-fold
// (docs/pytorch-reference.md), so float results of two correct implementations differ by ~1e-1
// in places; double keeps the comparison meaningful.
TEST_CASE("CUDA network: NDDR-VGG16 training step matches the CPU (double)", "[cuda][network]") {
  if (no_device()) return;
  nddr_test::check_step<nddr::MultiTask<nddr::VGG16, nddr::VGG16, nddr::NDDR>, double>(
      {40, 3}, nddr::Shape::nchw(2, 3, 41, 41), 1e-6);
}

// ResNet-101's code (Bottleneck: the residual add + ReLU and its gradient; Aspp: the branch sum)
// at test size: ResNetMini has ResNet-101's structure and names, width 4, units 1, 1, 2, 1.
TEST_CASE("CUDA network: ResNet-101 at test size matches the CPU, every fusion (double)",
          "[cuda][network][resnet]") {
  if (no_device()) return;
  using nddr::ResNetMini;
  const nddr::Shape in = nddr::Shape::nchw(2, 3, 19, 17);
  nddr_test::check_step<nddr::MultiTask<ResNetMini, nddr::None>, double>({5}, in, 1e-9);
  nddr_test::check_step<nddr::MultiTask<ResNetMini, ResNetMini, nddr::Shared<5>>, double>(
      {5, 3}, in, 1e-9);
  nddr_test::check_step<nddr::MultiTask<ResNetMini, ResNetMini, nddr::CrossStitch>, double>(
      {5, 3}, in, 1e-9);
  nddr_test::check_step<nddr::MultiTask<ResNetMini, ResNetMini, nddr::Sluice>, double>(
      {5, 3}, in, 1e-9);
  nddr_test::check_step<nddr::MultiTask<ResNetMini, ResNetMini, nddr::NDDR>, double>(
      {5, 3}, in, 1e-9);
  nddr_test::check_step<nddr::MultiTask<ResNetMini, ResNetMini, nddr::Shortcut<nddr::NDDR>>,
                        double>({5, 3}, in, 1e-9);
}
