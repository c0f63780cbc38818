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

TEST_CASE("Network: inference allocates no gradient memory, the first backward does",
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

namespace {

// A test fusion that changes channel counts: y_k = concat_j x_j (K x C channels, no parameters).
template <class T, class D = nddr::Cpu>
class ConcatAllFusion {
 public:
  using value_type = T;
  using device_type = D;
  ConcatAllFusion(std::size_t tasks, std::int64_t channels, const nddr::IdentityFusionOptions& = {})
      : tasks_(tasks), channels_(channels) {}
  std::size_t tasks() const { return tasks_; }
  std::vector<nddr::Shape> output_shapes(std::span<const nddr::Shape> in) const {
    std::vector<nddr::Shape> out;
    for (const auto& s : in)
      out.push_back(nddr::Shape::nchw(s.n(), s.c() * static_cast<std::int64_t>(tasks_), s.h(), s.w()));
    return out;
  }
  void declare(nddr::ParameterStore<T, D>&, const std::string&) {}
  void initialize(nddr::Rng&) {}
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }
  // Element (n, j*C + c, p) of y_k is element (n, c, p) of x_j.
  template <class F>
  void each(std::span<const nddr::TensorView<const T, D>> xs, F&& f) const {
    const std::int64_t n = xs[0].shape().n(), plane = channels_ * xs[0].shape().h() * xs[0].shape().w();
    for (std::size_t j = 0; j < tasks_; ++j)
      for (std::int64_t b = 0; b < n; ++b)
        for (std::int64_t i = 0; i < plane; ++i)
          f(j, b * plane + i, (b * static_cast<std::int64_t>(tasks_) + static_cast<std::int64_t>(j)) * plane + i);
  }
  void forward(nddr::Context<D>&, std::span<const nddr::TensorView<const T, D>> xs,
               std::span<const nddr::TensorView<T, D>> ys) {
    for (std::size_t k = 0; k < tasks_; ++k)
      each(xs, [&](std::size_t j, std::int64_t src, std::int64_t dst) { ys[k][dst] = xs[j][src]; });
  }
  void backward(nddr::Context<D>&, std::span<const nddr::TensorView<const T, D>> xs,
                std::span<const nddr::TensorView<const T, D>>,
                std::span<const nddr::TensorView<const T, D>> dys,
                std::span<const nddr::TensorView<T, D>> dxs) {
    for (std::size_t k = 0; k < tasks_; ++k)
      each(xs, [&](std::size_t j, std::int64_t src, std::int64_t dst) {
        if (!dxs[j].empty()) dxs[j][src] += dys[k][dst];
      });
  }

 private:
  std::size_t tasks_;
  std::int64_t channels_;
  bool training_ = true;
};

struct ConcatAll {
  static constexpr const char* name = "concat_all";
  using options = nddr::IdentityFusionOptions;
  template <class T, class D>
  using layer = ConcatAllFusion<T, D>;
  static constexpr std::size_t shared_stages = 0;
  static constexpr bool shortcut = false;
};

}  // namespace

TEST_CASE("Network: fusion at chosen stages (At<F, stages...>)", "[networks][multitask][at]") {
  using Late = nddr::MultiTask<MiniNet, MiniNet, nddr::At<nddr::NDDR, 2, 3>>;
  static_assert(!Late::fused(0) && Late::fused(1) && Late::fused(2));
  static_assert(!nddr::MultiTask<MiniNet, MiniNet, nddr::At<nddr::NDDR>>::fused(1));
  static_assert(nddr::MultiTask<MiniNet, MiniNet, nddr::NDDR>::fused(0));
  static_assert(!nddr::MultiTask<MiniNet, MiniNet, nddr::Shared<2>>::fused(1) &&
                nddr::MultiTask<MiniNet, MiniNet, nddr::Shared<2>>::fused(2));
  nddr::Network<Late, nddr::Cpu, double> late({3, 2});
  CHECK_FALSE(late.parameters().find("fusion.stage1.task0.conv.weight").has_value());
  CHECK(late.parameters().find("fusion.stage2.task0.conv.weight").has_value());
  CHECK(late.parameters().find("fusion.stage3.task1.conv.weight").has_value());
  CHECK_THROWS_AS(late.fusion(0), nddr::OptionError);
  check_network_gradients(late);
  using LateShortcut = nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::At<nddr::NDDR, 3>>>;
  nddr::NetworkOptions<LateShortcut> sopt;
  sopt.shortcut_channels = 3;
  nddr::Network<LateShortcut, nddr::Cpu, double> late_shortcut({3, 2}, sopt);
  CHECK(late_shortcut.parameters().find("fusion.stage3.task0.conv.weight").has_value());
  CHECK_FALSE(late_shortcut.parameters().find("fusion.stage2.task0.conv.weight").has_value());
  check_network_gradients(late_shortcut);
}

TEST_CASE("Network: NDDR at no stage is two single-task columns bit for bit",
          "[networks][multitask][at]") {
  // Same seed, same declaration order: At<NDDR> (no fusion layer) and None build the same
  // parameters, and must compute the same outputs and gradients exactly.
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::At<nddr::NDDR>>, nddr::Cpu, double> none_at({3, 2});
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::None>, nddr::Cpu, double> columns({3, 2});
  REQUIRE(none_at.named_parameters().size() == columns.named_parameters().size());
  for (std::size_t i = 0; i < columns.named_parameters().size(); ++i)
    REQUIRE(none_at.named_parameters()[i].name == columns.named_parameters()[i].name);
  const auto pa = none_at.parameters().values();
  const auto pb = columns.parameters().values();
  REQUIRE(pa.numel() == pb.numel());
  for (std::int64_t i = 0; i < pa.numel(); ++i) REQUIRE(pa[i] == pb[i]);
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Tensor<double> x(kInput);
  nddr::Rng rng(5);
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0);
  auto oa = none_at.forward(ctx, x.cview());
  auto ob = columns.forward(ctx, x.cview());
  std::vector<nddr::Tensor<double>> r;
  for (std::size_t k = 0; k < 2; ++k) {
    REQUIRE(oa[k].shape() == ob[k].shape());
    for (std::int64_t i = 0; i < oa[k].numel(); ++i) REQUIRE(oa[k][i] == ob[k][i]);
    r.emplace_back(oa[k].shape());
    for (std::int64_t i = 0; i < r.back().numel(); ++i) r.back()[i] = rng.uniform(-1.0, 1.0);
  }
  std::vector<nddr::TensorView<const double>> d{r[0].cview(), r[1].cview()};
  nddr::Tensor<double> dxa(kInput), dxb(kInput);
  none_at.backward(ctx, x.cview(), d, dxa.view());
  columns.backward(ctx, x.cview(), d, dxb.view());
  const auto ga = none_at.parameters().grads();
  const auto gb = columns.parameters().grads();
  for (std::int64_t i = 0; i < ga.numel(); ++i) REQUIRE(ga[i] == gb[i]);
  for (std::int64_t i = 0; i < dxa.numel(); ++i) REQUIRE(dxa[i] == dxb[i]);
}

TEST_CASE("Network: a fusion that changes channel counts is honoured (output_shapes)",
          "[networks][multitask][at]") {
  // Concatenating both columns after the last stage doubles its channels: the heads are built
  // for 8 input channels and the network's gradients are exact.
  using Spec = nddr::MultiTask<MiniNet, MiniNet, nddr::At<ConcatAll, 3>>;
  nddr::Network<Spec, nddr::Cpu, double> net({3, 2});
  CHECK(net.parameters().value(*net.parameters().find("task0.head.fc6.weight")).shape() ==
        nddr::Shape::nchw(4, 8, 3, 3));
  check_network_gradients(net);
  // With a shortcut, the module takes the fused channel counts (4, 4, 8).
  using WithShortcut = nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::At<ConcatAll, 3>>>;
  nddr::NetworkOptions<WithShortcut> sopt;
  sopt.shortcut_channels = 3;
  nddr::Network<WithShortcut, nddr::Cpu, double> shortcut({3, 2}, sopt);
  CHECK(shortcut.parameters().value(*shortcut.parameters().find("shortcut.task1.conv.weight")).shape() ==
        nddr::Shape::nchw(3, 16, 1, 1));
  check_network_gradients(shortcut);
  // After stage 1 the doubled channels do not fit stage 2's convolution: a clear ShapeError at
  // the first forward, not a silent misread.
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::At<ConcatAll, 1>>, nddr::Cpu, double> early({3, 2});
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<double> x(kInput);
  CHECK_THROWS_AS(early.forward(ctx, x.cview()), nddr::ShapeError);
}

TEST_CASE("Network: shortcut parameters train with learned fusion only (authors' TF code)",
          "[networks][multitask][shortcut]") {
  auto group_of = [](auto& net, const std::string& n) {
    const auto id = net.parameters().find(n);
    REQUIRE(id.has_value());
    return net.parameters().groups()[net.parameters().parameters()[id->index].group];
  };
  nddr::NetworkOptions<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::NDDR>>> o1;
  o1.shortcut_channels = 3;
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::NDDR>>> nddr_net({3, 2}, o1);
  CHECK(group_of(nddr_net, "shortcut.task0.conv.weight").name == "nddr");
  CHECK(group_of(nddr_net, "shortcut.task1.bn.weight").lr_mult == 100.0);
  nddr::NetworkOptions<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::CrossStitch>>> o2;
  o2.shortcut_channels = 3;
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::CrossStitch>>> cs({3, 2}, o2);
  CHECK(group_of(cs, "shortcut.task1.conv.weight").name == "nddr");
  // Single-task and split baselines: `vgg_16/shortcuts` trains at x1 in the TF code.
  nddr::NetworkOptions<nddr::MultiTask<MiniNet, nddr::Shortcut<nddr::None>>> o3;
  o3.shortcut_channels = 3;
  nddr::Network<nddr::MultiTask<MiniNet, nddr::Shortcut<nddr::None>>> single({3}, o3);
  CHECK(group_of(single, "shortcut.task0.conv.weight").name == "default");
  CHECK(group_of(single, "shortcut.task0.conv.weight").lr_mult == 1.0);
  nddr::NetworkOptions<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::Shared<3>>>> o4;
  o4.shortcut_channels = 3;
  nddr::Network<nddr::MultiTask<MiniNet, MiniNet, nddr::Shortcut<nddr::Shared<3>>>> split({3, 2}, o4);
  CHECK(group_of(split, "shortcut.shared.conv.weight").name == "default");
  CHECK(group_of(split, "shortcut.shared.bn.bias").name == "default");
}
