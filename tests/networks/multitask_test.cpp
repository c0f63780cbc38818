// MultiTask specs and Network: whole-network gradients for every fusion type and K = 1, 2, 3,
// shared trunks, shortcuts, parameter naming and groups, closed forms.
#include <catch2/catch.hpp>

#include <nddr/nddr.hpp>
#include <nddr/fusion/cross_stitch.hpp>
#include <nddr/fusion/none.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/fusion/sluice.hpp>
#include <nddr/multitask/network.hpp>
#include <nddr/testing/gradient_check.hpp>

#include <string>
#include <vector>

namespace {

// A three-stage test backbone shaped like VGG16-LargeFOV in miniature: conv+BN+ReLU+pool per
// stage (strides 2, 1, 1), a head conv(+BN+ReLU) and a biased 1x1 "fc8".
template <std::int64_t In, std::int64_t Out, std::int64_t Stride, int Index>
struct MiniStage {
  static constexpr const char* name = "mini_stage";
  static constexpr std::int64_t in_channels = In;
  static constexpr std::int64_t out_channels = Out;
  static constexpr std::int64_t stride = Stride;
  template <class T, class D>
  static nddr::Sequential<T, D> build() {
    const std::string c = "conv" + std::to_string(Index) + "_1";
    nddr::Sequential<T, D> s;
    s.add(c, nddr::Conv2d<T, D>(In, Out, 3, nddr::Conv2dOptions{}.padding(1).bias(false)))
        .add(c + ".bn", nddr::BatchNorm2d<T, D>(Out))
        .add(c + ".relu", nddr::ReLU<T, D>())
        .add("pool" + std::to_string(Index),
             nddr::MaxPool2d<T, D>(nddr::Pool2dOptions{}.kernel(3).stride(Stride).same()));
    return s;
  }
};

struct MiniHead {
  static constexpr const char* name = "mini_head";
  template <class T, class D>
  static nddr::Sequential<T, D> build(std::int64_t in, std::int64_t outputs) {
    nddr::Sequential<T, D> s;
    s.add("fc6", nddr::Conv2d<T, D>(in, 4, 3, nddr::Conv2dOptions{}.padding(2).dilation(2).bias(false)))
        .add("fc6.relu", nddr::ReLU<T, D>())
        .add("fc8", nddr::Conv2d<T, D>(4, outputs, 1));
    return s;
  }
};

struct MiniNet {
  static constexpr const char* name = "mini";
  static constexpr std::int64_t input_channels = 2;
  using stages = nddr::StageList<MiniStage<2, 4, 2, 1>, MiniStage<4, 4, 1, 2>, MiniStage<4, 4, 1, 3>>;
  using head = MiniHead;
};

// Same stage widths and strides, other layers: heterogeneous backbones may be fused.
struct OtherMiniNet {
  static constexpr const char* name = "other_mini";
  static constexpr std::int64_t input_channels = 2;
  using stages = nddr::StageList<MiniStage<2, 4, 2, 1>, MiniStage<4, 4, 1, 2>, MiniStage<4, 4, 1, 3>>;
  using head = MiniHead;
};

const nddr::Shape kInput = nddr::Shape::nchw(2, 2, 7, 7);

// L = sum_k sum(out_k * r_k); checks d L / d(parameters) and d L / d(input) by finite
// differences through the whole network.
template <class Spec>
void check_network_gradients(nddr::Network<Spec, nddr::Cpu, double>& net) {
  constexpr std::size_t K = Spec::tasks;
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Rng rng(77);
  auto& store = net.parameters();
  auto values = store.values();
  // Random parameters (BN gammas away from 0 is not needed: any value is differentiable).
  for (std::int64_t i = 0; i < values.numel(); ++i) values[i] = rng.uniform(-0.8, 0.8);
  nddr::Tensor<double> x(kInput);
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0);
  std::vector<nddr::Tensor<double>> r;
  for (std::size_t k = 0; k < K; ++k) {
    r.emplace_back(net.output_shape(k, kInput));
    for (std::int64_t i = 0; i < r.back().numel(); ++i) r.back()[i] = rng.uniform(-1.0, 1.0);
  }
  auto loss = [&] {
    auto out = net.forward(ctx, x.cview());
    double s = 0.0;
    for (std::size_t k = 0; k < K; ++k)
      for (std::int64_t i = 0; i < out[k].numel(); ++i) s += out[k][i] * r[k][i];
    return s;
  };
  loss();
  std::vector<nddr::TensorView<const double>> douts;
  for (auto& t : r) douts.push_back(t.cview());
  nddr::Tensor<double> dx(kInput);
  net.backward(ctx, x.cview(), douts, dx.view());
  std::vector<double> grads(store.grads().data(), store.grads().data() + store.grads().numel());
  std::vector<double> dxs(dx.data(), dx.data() + dx.numel());
  nddr::testing::GradCheckOptions opt;
  opt.max_checks = 400;
  opt.rtol = 1e-5;
  opt.atol = 1e-7;
  auto rp = nddr::testing::check_gradient("parameters", values.data(), values.numel(),
                                          grads.data(), loss, opt);
  INFO(rp.report);
  CHECK(rp.ok);
  auto rx = nddr::testing::check_gradient("input", x.data(), x.numel(), dxs.data(), loss, opt);
  INFO(rx.report);
  CHECK(rx.ok);
  // Backward again from a non-zero dx: the input gradient accumulates, parameters are assigned.
  loss();
  net.backward(ctx, x.cview(), douts, dx.view());
  for (std::int64_t i = 0; i < dx.numel(); ++i)
    REQUIRE(dx[i] == Approx(2.0 * dxs[static_cast<std::size_t>(i)]).margin(1e-12));
  for (std::size_t i = 0; i < grads.size(); ++i)
    REQUIRE(store.grads()[static_cast<std::int64_t>(i)] == Approx(grads[i]).margin(1e-12));
}

}  // namespace

TEST_CASE("MultiTask: static metadata and checks", "[networks][multitask]") {
  using Spec = nddr::MultiTask<MiniNet, OtherMiniNet, nddr::CrossStitch>;
  static_assert(Spec::tasks == 2 && Spec::stages == 3 && Spec::shared_stages == 0);
  static_assert(Spec::channels(0) == 4 && Spec::channels(2) == 4);
  static_assert(std::is_same_v<Spec::backbone<1>, OtherMiniNet>);
  static_assert(nddr::concepts::Backbone<MiniNet>);
  static_assert(nddr::MultiTask<MiniNet, nddr::None>::tasks == 1);
  static_assert(nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::None>>::shortcut);
  static_assert(nddr::MultiTask<MiniNet, MiniNet, MiniNet, nddr::Shared<2>>::shared_stages == 2);
}

TEST_CASE("Network: gradients of single-task columns (None, K = 1)", "[networks][multitask]") {
  nddr::Network<nddr::MultiTask<MiniNet, nddr::None>, nddr::Cpu, double> net({3});
  check_network_gradients(net);
}

TEST_CASE("Network: gradients with cross-stitch, K = 2 and 3", "[networks][multitask]") {
  nddr::Network<nddr::MultiTask<MiniNet, OtherMiniNet, nddr::CrossStitch>, nddr::Cpu, double> net2(
      {3, 2});
  check_network_gradients(net2);
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, MiniNet, nddr::CrossStitch>, nddr::Cpu, double>
      net3({3, 2, 1});
  check_network_gradients(net3);
}

TEST_CASE("Network: gradients with sluice, K = 2 and 3", "[networks][multitask]") {
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::Sluice>, nddr::Cpu, double> net({2, 3});
  check_network_gradients(net);
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, MiniNet, nddr::Sluice>, nddr::Cpu, double> net3(
      {2, 3, 1});
  check_network_gradients(net3);
}

TEST_CASE("Network: gradients with NDDR, K = 2 and 3", "[networks][multitask]") {
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::NDDR>, nddr::Cpu, double> net2({3, 2});
  check_network_gradients(net2);
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, MiniNet, nddr::NDDR>, nddr::Cpu, double> net3(
      {3, 2, 2});
  check_network_gradients(net3);
}

TEST_CASE("Network: gradients of split-style networks (Shared<S>)", "[networks][multitask]") {
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::Shared<2>>, nddr::Cpu, double> net({3, 2});
  check_network_gradients(net);
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, MiniNet, nddr::Shared<3>>, nddr::Cpu, double>
      all({3, 2, 1});
  check_network_gradients(all);
  CHECK(net.parameters().find("shared.stage1.conv1_1.weight").has_value());
  CHECK(net.parameters().find("shared.stage2.conv2_1.weight").has_value());
  CHECK_FALSE(net.parameters().find("task1.stage2.conv2_1.weight").has_value());
  CHECK(net.parameters().find("task1.stage3.conv3_1.weight").has_value());
}

TEST_CASE("Network: gradients with shortcut fusion", "[networks][multitask]") {
  nddr::NetworkOptions<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::NDDR>>> opt;
  opt.shortcut_channels = 5;
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::NDDR>>, nddr::Cpu, double>
      net({3, 2}, opt);
  check_network_gradients(net);
  CHECK(net.parameters().find("shortcut.task1.conv.weight").has_value());
  nddr::NetworkOptions<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::Shared<3>>>> sopt;
  sopt.shortcut_channels = 4;
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::Shared<3>>>, nddr::Cpu,
                double>
      shared({3, 2}, sopt);
  check_network_gradients(shared);
  CHECK(shared.parameters().find("shortcut.shared.conv.weight").has_value());
  nddr::NetworkOptions<nddr::MultiTask<MiniNet, MiniNet, MiniNet, nddr::Shortcut<nddr::CrossStitch>>>
      opt3;
  opt3.shortcut_channels = 3;
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, MiniNet, nddr::Shortcut<nddr::CrossStitch>>,
                nddr::Cpu, double>
      three({3, 2, 2}, opt3);
  check_network_gradients(three);
  CHECK_FALSE(shared.parameters().find("shortcut.task1.conv.weight").has_value());
}

TEST_CASE("Network: names, groups, shapes, modes", "[networks][multitask]") {
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::NDDR>> net({40, 3});
  auto& store = net.parameters();
  auto group_of = [&](const std::string& n) {
    auto id = store.find(n);
    REQUIRE(id.has_value());
    return store.groups()[store.parameters()[id->index].group];
  };
  CHECK(group_of("task0.stage1.conv1_1.weight").name == "default");
  CHECK(group_of("fusion.stage2.task1.conv.weight").name == "nddr");
  CHECK(group_of("fusion.stage2.task1.conv.weight").lr_mult == 100.0);
  CHECK(group_of("fusion.stage3.task0.bn.weight").name == "nddr");
  CHECK(group_of("task1.head.fc8.weight").lr_mult == 10.0);
  CHECK(group_of("task1.head.fc8.bias").lr_mult == 20.0);
  CHECK(store.find_buffer("task0.stage2.conv2_1.bn.running_mean").has_value());
  CHECK(net.output_shape(0, nddr::Shape::nchw(1, 2, 9, 9)) == nddr::Shape::nchw(1, 40, 5, 5));
  CHECK(net.output_shape(1, nddr::Shape::nchw(1, 2, 9, 9)) == nddr::Shape::nchw(1, 3, 5, 5));
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Tensor<float> x(nddr::Shape::nchw(2, 2, 9, 9), 0.5f);
  net.set_training(false);
  CHECK_FALSE(net.training());
  auto out = net.forward(ctx, x.cview());
  CHECK(out[0].shape() == nddr::Shape::nchw(2, 40, 5, 5));
  std::vector<nddr::TensorView<const float>> douts{out[0], nddr::TensorView<const float>{}};
  nddr::Tensor<float> other(nddr::Shape::nchw(2, 2, 11, 11));
  CHECK_THROWS_WITH(net.backward(ctx, other.cview(), douts), Catch::Contains("call forward"));
  std::vector<nddr::TensorView<const float>> one{out[0]};
  CHECK_THROWS_WITH(net.backward(ctx, x.cview(), one), Catch::Contains("expected 2"));
}

TEST_CASE("Network: NDDR at (1, 0) without BN/ReLU reproduces single-task columns bit for bit",
          "[networks][multitask][closed_form]") {
  using NddrSpec = nddr::MultiTask<MiniNet, MiniNet, nddr::NDDR>;
  nddr::NetworkOptions<NddrSpec> opt;
  opt.fusion = nddr::NddrOptions{}.diagonal(1.0, 0.0).batch_norm(false).relu(false);
  nddr::Network<NddrSpec, nddr::Cpu, double> fused({3, 2}, opt);
  using Single = nddr::Network<nddr::MultiTask<MiniNet, nddr::None>, nddr::Cpu, double>;
  Single single0({3}), single1({2});
  std::array<Single*, 2> singles{&single0, &single1};
  // Give each single-task column the fused network's column k weights and BN statistics.
  for (std::size_t k = 0; k < 2; ++k) {
    auto& dst = singles[k]->parameters();
    auto& src = fused.parameters();
    const std::string from = "task" + std::to_string(k) + ".";
    for (const auto& e : dst.parameters()) {
      auto id = src.find(from + e.name.substr(6));
      REQUIRE(id.has_value());
      auto s = src.value(*id);
      auto d = dst.value(*dst.find(e.name));
      for (std::int64_t i = 0; i < s.numel(); ++i) d[i] = s[i];
    }
  }
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Tensor<double> x(kInput);
  nddr::Rng rng(3);
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0);
  auto out = fused.forward(ctx, x.cview());
  std::vector<nddr::Tensor<double>> r;
  for (std::size_t k = 0; k < 2; ++k) {
    auto o = singles[k]->forward(ctx, x.cview());
    REQUIRE(o[0].shape() == out[k].shape());
    for (std::int64_t i = 0; i < o[0].numel(); ++i) REQUIRE(o[0][i] == out[k][i]);
    r.emplace_back(o[0].shape());
    for (std::int64_t i = 0; i < r.back().numel(); ++i) r.back()[i] = rng.uniform(-1.0, 1.0);
    std::vector<nddr::TensorView<const double>> d{r.back().cview()};
    singles[k]->backward(ctx, x.cview(), d);
  }
  std::vector<nddr::TensorView<const double>> d{r[0].cview(), r[1].cview()};
  fused.backward(ctx, x.cview(), d);
  // Column gradients match exactly ("frozen fusion": the fusion's own gradients are ignored).
  for (std::size_t k = 0; k < 2; ++k) {
    auto& dst = singles[k]->parameters();
    for (const auto& e : dst.parameters()) {
      auto g = dst.grad(*dst.find(e.name));
      auto gf = fused.parameters().grad(
          *fused.parameters().find("task" + std::to_string(k) + "." + e.name.substr(6)));
      for (std::int64_t i = 0; i < g.numel(); ++i) REQUIRE(g[i] == gf[i]);
    }
  }
}

TEST_CASE("Network: inference allocates no gradient memory; the first backward does",
          "[networks][multitask][memory]") {
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::NDDR>> net({5, 3});
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Tensor<float> x(nddr::Shape::nchw(2, 2, 9, 9));
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(i % 7) * 0.1f - 0.3f;
  net.set_training(false);
  net.forward(ctx, x.cview());
  CHECK(net.gradient_elements() == 0);
  CHECK_FALSE(net.parameters().gradients_allocated());
  const auto inference_layout = net.layout_version();

  net.set_training(true);
  auto out = net.forward(ctx, x.cview());
  CHECK(net.layout_version() != inference_layout);  // the stages re-planned their buffers
  std::vector<nddr::TensorView<const float>> douts{out[0], out[1]};
  net.backward(ctx, x.cview(), douts);
  CHECK(net.gradient_elements() > 0);
  CHECK(net.parameters().gradients_allocated());
}

TEST_CASE("Network: gradients after an inference-mode forward (stages recompute for backward)",
          "[networks][multitask][memory]") {
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::NDDR>, nddr::Cpu, double> net({3, 2});
  net.set_training(false);
  check_network_gradients(net);
}
