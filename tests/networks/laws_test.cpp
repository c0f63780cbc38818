// Laws kits for the network concepts (stage, head, backbone, fusion layer, task): they accept
// the library's models and reject deliberately broken ones with a report naming the problem.
#include <catch2/catch.hpp>
#include <cstdint>
#include <nddr/backbones/heads.hpp>
#include <nddr/backbones/tiny.hpp>
#include <nddr/backbones/vgg16.hpp>
#include <nddr/fusion/cross_stitch.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/fusion/none.hpp>
#include <nddr/fusion/sluice.hpp>
#include <nddr/layers/conv2d.hpp>
#include <nddr/tasks/tasks.hpp>
#include <nddr/testing/fusion_laws.hpp>
#include <nddr/testing/network_laws.hpp>
#include <span>
#include <string>
#include <vector>

namespace {

using Catch::Contains;
using nddr::Cpu;
using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;

/// Declares stride 2 but its layers keep the spatial size.
struct WrongStrideStage {
  static constexpr const char* name = "wrong_stride";
  static constexpr std::int64_t in_channels = 8, out_channels = 8, stride = 2;
  template <class T, class D>
  static nddr::Sequential<T, D> build() {
    nddr::Sequential<T, D> s;
    s.add("conv", nddr::Conv2d<T, D>(8, 8, 3, nddr::Conv2dOptions{}.same()));
    return s;
  }
};
static_assert(nddr::concepts::Stage<WrongStrideStage>);

/// Builds one channel more than it is asked for.
struct WrongOutputsHead {
  static constexpr const char* name = "wrong_outputs";
  template <class T, class D>
  static nddr::Sequential<T, D> build(std::int64_t in, std::int64_t outputs) {
    nddr::Sequential<T, D> s;
    s.add("fc8", nddr::OutputConv2d<T, D>(in, outputs + 1, 1));
    return s;
  }
};

/// A column whose second stage is `WrongStrideStage`.
struct WrongStrideNet {
  static constexpr const char* name = "wrong_stride_net";
  static constexpr std::int64_t input_channels = 3;
  using stages = nddr::StageList<nddr::TinyNet::Stage1, WrongStrideStage>;
  using head = nddr::TinyHead;
};
static_assert(nddr::concepts::Backbone<WrongStrideNet>);

/// y_k = 2 x_k, but backward ASSIGNS dx_k = 2 dy_k instead of accumulating.
class AssigningFusion {
 public:
  using value_type = double;
  using device_type = Cpu;
  using Views = std::span<const TensorView<const double>>;
  using Outs = std::span<const TensorView<double>>;

  AssigningFusion(std::size_t tasks, std::int64_t) : tasks_(tasks) {}
  std::size_t tasks() const { return tasks_; }
  std::vector<Shape> output_shapes(std::span<const Shape> in) const {
    return {in.begin(), in.end()};
  }
  void declare(nddr::ParameterStore<double, Cpu>&, const std::string&) {}
  void initialize(nddr::Rng&) {}
  void forward(nddr::Context<Cpu>&, Views xs, Outs ys) {
    for (std::size_t k = 0; k < tasks_; ++k)
      for (std::int64_t i = 0; i < xs[k].numel(); ++i) ys[k][i] = 2.0 * xs[k][i];
  }
  void backward(nddr::Context<Cpu>&, Views, Views, Views dys, Outs dxs) {
    for (std::size_t k = 0; k < tasks_; ++k)
      if (!dxs[k].empty())
        for (std::int64_t i = 0; i < dys[k].numel(); ++i) dxs[k][i] = 2.0 * dys[k][i];
  }
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

 private:
  std::size_t tasks_;
  bool training_ = true;
};
static_assert(nddr::concepts::FusionLayer<AssigningFusion>);

/// Squared error whose gradient is twice what it should be (a CPU-only loss: host loops, its
/// value added to the sink by hand).
struct OffByTwoTask {
  static constexpr const char* name = "off_by_two";
  static constexpr std::int64_t outputs = 2;
  template <class T>
  using target_t = T;
  template <class T>
  static void loss(nddr::LossSink<T, Cpu>& sink, TensorView<const T> p, TensorView<const T> t,
                   TensorView<T> dp) {
    const T weight = static_cast<T>(sink.weight());
    T l = 0;
    for (std::int64_t i = 0; i < p.numel(); ++i) {
      const T d = p[i] - t[i];
      l += d * d / 2;
      if (!dp.empty()) dp[i] += weight * 2 * d;
    }
    sink.add(static_cast<double>(weight * l));
  }
  using metric_type = nddr::DenseRegressionMetrics;
  static metric_type make_metric() { return metric_type(); }
  static std::vector<nddr::MetricValue> metric_values(const metric_type& m) {
    return m.values(name, false);
  }
};
static_assert(nddr::concepts::Task<OffByTwoTask>);

template <class B, class F>
void for_each_stage(F&& f) {
  [&]<std::size_t... I>(std::index_sequence<I...>) { (f(nddr::stage_t<B, I>{}), ...); }
  (std::make_index_sequence<nddr::stage_count_v<B>>{});
}

}  // namespace

TEST_CASE("Stage laws: TinyNet stages and a VGG16 stage pass", "[networks][laws]") {
  for_each_stage<nddr::TinyNet>([](auto stage) {
    using S = decltype(stage);
    auto r = nddr::testing::check_stage_laws<S>(Shape::nchw(2, S::in_channels, 6, 5));
    INFO(S::name << "\n" << r.report);
    CHECK(r.ok);
  });
  // VGG16 conv1_1, conv1_2 (64 channels): gradients on a subset of each tensor.
  nddr::testing::ModuleLawsOptions opt;
  opt.layer.grad.max_checks = 12;
  auto r = nddr::testing::check_stage_laws<nddr::VGG16::Stage1>(Shape::nchw(2, 3, 6, 6), opt);
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("Stage laws: reject a wrong declared stride and a wrong input", "[networks][laws]") {
  auto r = nddr::testing::check_stage_laws<WrongStrideStage>(Shape::nchw(2, 8, 6, 6));
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.report, Contains("stage wrong_stride") && Contains("(2, 8, 6, 6)") &&
                           Contains("stride 2 declare (2, 8, 3, 3)") &&
                           Contains("(2, 8, 7, 7)"));  // the odd-sized variant
  r = nddr::testing::check_stage_laws<nddr::TinyNet::Stage2>(Shape::nchw(2, 3, 6, 6));
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.report, Contains("stage stage2") && Contains("(N, 8 = in_channels, H, W)"));
}

TEST_CASE("Head laws: TinyHead passes, a head with the wrong outputs fails", "[networks][laws]") {
  nddr::testing::ModuleLawsOptions inference;
  inference.training = false;
  auto r = nddr::testing::check_head_laws<nddr::TinyHead>(4, 3, Shape::nchw(2, 4, 5, 4), inference);
  INFO(r.report);
  CHECK(r.ok);
  // In training mode dropout makes forward random: gradient laws off, contract laws still on.
  nddr::testing::ModuleLawsOptions training;
  training.layer.check_gradients = false;
  r = nddr::testing::check_head_laws<nddr::TinyHead>(4, 3, Shape::nchw(2, 4, 5, 4), training);
  INFO(r.report);
  CHECK(r.ok);

  r = nddr::testing::check_head_laws<WrongOutputsHead>(4, 3, Shape::nchw(2, 4, 5, 4));
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.report, Contains("head wrong_outputs") && Contains("(2, 4, 5, 4)") &&
                           Contains("expected (2, 3 = outputs, h, w)"));
}

TEST_CASE("Backbone laws: TinyNet passes, a column with a wrong stage fails", "[networks][laws]") {
  auto r = nddr::testing::check_backbone_laws<nddr::TinyNet>(Shape::nchw(2, 3, 12, 10));
  INFO(r.report);
  CHECK(r.ok);
  r = nddr::testing::check_backbone_laws<nddr::TinyNet1>(Shape::nchw(2, 1, 7, 9));
  INFO(r.report);
  CHECK(r.ok);

  r = nddr::testing::check_backbone_laws<WrongStrideNet>(Shape::nchw(2, 3, 12, 12));
  CHECK_FALSE(r.ok);
  // Stage 2 sees stage 1's output (2, 8, 6, 6); the head sees what stage 2 really gives.
  CHECK_THAT(r.report, Contains("backbone wrong_stride_net, stage 2 of 2") &&
                           Contains("stage wrong_stride") && Contains("(2, 8, 6, 6)"));
  CHECK_THAT(r.report, !Contains("stage 1 of 2") && !Contains(", head:"));
  r = nddr::testing::check_backbone_laws<nddr::TinyNet>(Shape::nchw(2, 1, 8, 8));
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.report, Contains("backbone tiny") && Contains("3 = input_channels"));
}

TEST_CASE("Fusion laws: NDDR, CrossStitch, Sluice, IdentityFusion pass, an assigning layer fails",
          "[networks][laws]") {
  const Shape s = Shape::nchw(2, 4, 3, 3);
  for (std::size_t K : {1u, 2u, 3u}) {
    INFO("K = " << K);
    nddr::NddrLayer<double> nddr_layer(K, 4);
    auto r = nddr::testing::check_fusion_laws(nddr_layer, s);
    INFO(r.report);
    CHECK(r.ok);
    nddr::CrossStitchLayer<double> cs(K, 4);
    r = nddr::testing::check_fusion_laws(cs, s);
    INFO(r.report);
    CHECK(r.ok);
    nddr::SluiceLayer<double> sl(K, 4);
    r = nddr::testing::check_fusion_laws(sl, s);
    INFO(r.report);
    CHECK(r.ok);
    nddr::IdentityFusion<double> id(K, 4);
    r = nddr::testing::check_fusion_laws(id, s);
    INFO(r.report);
    CHECK(r.ok);
  }

  AssigningFusion bad(2, 4);
  auto r = nddr::testing::check_fusion_laws(bad, s);
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.report, Contains("backward does not accumulate into dx of task 0"));

  // Inputs the layer rejects are reported, not thrown.
  nddr::NddrLayer<double> nddr_layer(2, 4);
  r = nddr::testing::check_fusion_laws(nddr_layer, Shape::nchw(2, 5, 3, 3));
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.report, Contains("output_shapes throws") && Contains("(2, 5, 3, 3)"));
}

TEST_CASE("Task laws: Segmentation<5> and SurfaceNormal pass, an off-by-two gradient fails",
          "[networks][laws]") {
  Tensor<std::int32_t> labels(Shape({2, 3, 4}));
  for (std::int64_t i = 0; i < labels.numel(); ++i) labels[i] = static_cast<std::int32_t>(i % 5);
  labels[3] = 255;  // unlabelled pixel
  auto r = nddr::testing::check_task_laws<nddr::Segmentation<5>>(Shape::nchw(2, 5, 3, 4), labels);
  INFO(r.report);
  CHECK(r.ok);

  Tensor<double> normals(Shape::nchw(2, 3, 3, 4));
  nddr::Rng rng(3);
  for (std::int64_t i = 0; i < normals.numel(); ++i) normals[i] = rng.uniform(-1.0, 1.0);
  for (std::int64_t c = 0; c < 3; ++c) normals(1, c, 2, 3) = 0.0;  // unlabelled pixel
  r = nddr::testing::check_task_laws<nddr::SurfaceNormal>(Shape::nchw(2, 3, 3, 4), normals);
  INFO(r.report);
  CHECK(r.ok);

  Tensor<std::int32_t> genders(Shape({4}));
  genders[1] = 1;
  r = nddr::testing::check_task_laws<nddr::Gender>(Shape({4, 2}), genders);
  INFO(r.report);
  CHECK(r.ok);

  Tensor<double> t(Shape::nchw(2, 2, 2, 2));
  r = nddr::testing::check_task_laws<OffByTwoTask>(t.shape(), t);
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.report, Contains("task off_by_two") && Contains("gradient mismatch"));

  r = nddr::testing::check_task_laws<nddr::Segmentation<5>>(Shape::nchw(2, 4, 3, 4), labels);
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.report, Contains("task segmentation") && Contains("5 = outputs"));
  r = nddr::testing::check_task_laws<nddr::Segmentation<5>>(Shape::nchw(2, 5, 3, 5), labels);
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.report, Contains("throws for prediction (2, 5, 3, 5)"));
}
