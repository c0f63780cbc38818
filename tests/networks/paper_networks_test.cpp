// The paper's networks are one type away: exact parameter counts of every DeepLab-VGG16 variant
// (paper-spec.md §9.3), and the NDDR layers' share of them (§9.2).
#include <catch2/catch.hpp>

#include <nddr/nddr.hpp>
#include <nddr/backbones/vgg16.hpp>
#include <nddr/fusion/cross_stitch.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/fusion/none.hpp>
#include <nddr/multitask/network.hpp>

namespace {

template <class Spec, std::size_t K>
void check_counts(const std::array<std::int64_t, K>& outputs, std::int64_t trainable,
                  std::int64_t running) {
  nddr::Network<Spec> net(outputs);
  CHECK(net.parameters().parameter_count() == trainable);
  CHECK(net.parameters().buffer_count() == running);
}

std::int64_t group_count(const nddr::ParameterStore<float>& store, const std::string& group) {
  std::int64_t n = 0;
  for (const auto& e : store.parameters())
    if (store.groups()[e.group].name == group) n += e.shape.numel();
  return n;
}

}  // namespace

TEST_CASE("Paper networks: exact parameter counts of the DeepLab-VGG16 variants",
          "[networks][paper]") {
  using nddr::VGG16;
  // Single-task columns: segmentation (40 classes) and normals (3 outputs).
  check_counts<nddr::MultiTask<VGG16, nddr::None>, 1>({40}, 20'531'176, 12'544);
  check_counts<nddr::MultiTask<VGG16, nddr::None>, 1>({3}, 20'493'251, 12'544);
  check_counts<nddr::MultiTask<VGG16, nddr::Shortcut<nddr::None>>, 1>({40}, 21'285'864, 13'568);
  // Split-style multi-task baseline: trunk shared through pool5, two LargeFOV heads.
  check_counts<nddr::MultiTask<VGG16, VGG16, nddr::Shared<5>>, 2>({40, 3}, 26'305'515, 16'640);
  check_counts<nddr::MultiTask<VGG16, VGG16, nddr::Shortcut<nddr::Shared<5>>>, 2>(
      {40, 3}, 27'060'203, 17'664);
  // NDDR-CNN and NDDR-CNN-Shortcut.
  check_counts<nddr::MultiTask<VGG16, VGG16, nddr::NDDR>, 2>({40, 3}, 43'471'531, 30'976);
  check_counts<nddr::MultiTask<VGG16, VGG16, nddr::Shortcut<nddr::NDDR>>, 2>({40, 3}, 44'980'907,
                                                                            33'024);
  // Cross-stitch: the two columns plus 4 scalars per stage.
  check_counts<nddr::MultiTask<VGG16, VGG16, nddr::CrossStitch>, 2>(
      {40, 3}, 20'531'176 + 20'493'251 + 5 * 4, 2 * 12'544);
}

TEST_CASE("Paper networks: the NDDR layers' own parameters", "[networks][paper]") {
  nddr::Network<nddr::MultiTask<nddr::VGG16, nddr::VGG16, nddr::NDDR>> net({40, 3});
  const auto& store = net.parameters();
  // 2,441,216 1x1 kernel weights + 5,888 BN gamma/beta, all trained at lr x100.
  CHECK(group_count(store, "nddr") == 2'441'216 + 5'888);
  CHECK(store.groups()[*store.find_group("nddr")].lr_mult == 100.0);
  std::int64_t kernels = 0;
  for (const auto& e : store.parameters())
    if (e.name.starts_with("fusion.") && e.name.ends_with(".conv.weight")) kernels += e.shape.numel();
  // Per task 1,220,608: the paper's "1.2M, 0.8% of VGG-16's 138M" (= 0.88% of 138,357,544).
  CHECK(kernels == 2 * 1'220'608);
  CHECK(group_count(store, "fc8.weight") == 1024 * 40 + 1024 * 3);
  CHECK(group_count(store, "fc8.bias") == 43);
}

TEST_CASE("Paper networks: NDDR-VGG16 forward and backward at a small input",
          "[networks][paper]") {
  nddr::Network<nddr::MultiTask<nddr::VGG16, nddr::VGG16, nddr::NDDR>> net({40, 3});
  nddr::Context<nddr::Cpu> ctx;
  nddr::Tensor<float> x(nddr::Shape::nchw(2, 3, 33, 33));
  nddr::Rng rng(1);
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(rng.uniform(-1, 1));
  auto out = net.forward(ctx, x.cview());
  CHECK(out[0].shape() == nddr::Shape::nchw(2, 40, 5, 5));
  CHECK(out[1].shape() == nddr::Shape::nchw(2, 3, 5, 5));
  nddr::Tensor<float> d0(out[0].shape(), 1.0f), d1(out[1].shape(), 1.0f);
  std::vector<nddr::TensorView<const float>> douts{d0.cview(), d1.cview()};
  net.backward(ctx, x.cview(), douts);
  double norm = 0.0;
  std::int64_t non_finite = 0;
  auto g = net.parameters().grads();
  for (std::int64_t i = 0; i < g.numel(); ++i) {
    non_finite += std::isfinite(g[i]) ? 0 : 1;
    norm += double(g[i]) * g[i];
  }
  CHECK(non_finite == 0);
  CHECK(norm > 0.0);
}
