// Tasks: concept conformance, loss values and gradients against the underlying ops, finite
// differences through the Task interface, weight scaling, gradient accumulation, errors; the
// dense tasks (depth / dense regression, binary BCE) and their metrics against PyTorch and
// NumPy (tools/reference/dense_tasks.py).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nddr/io/safetensors.hpp>
#include <nddr/tasks/tasks.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <type_traits>

namespace {

using nddr::Shape;

static_assert(nddr::concepts::Task<nddr::Segmentation<40>>);
static_assert(nddr::concepts::Task<nddr::SurfaceNormal>);
static_assert(nddr::concepts::Task<nddr::SurfaceNormalTask<nddr::NormalLossForm::kL2>>);
static_assert(nddr::concepts::Task<nddr::AgeClassification<>>);
static_assert(nddr::concepts::Task<nddr::Gender>);
static_assert(nddr::concepts::require_task<nddr::Segmentation<3>>());
static_assert(nddr::AgeClassification<>::outputs == 100);
static_assert(nddr::SurfaceNormal::form == nddr::NormalLossForm::kCosine);
static_assert(std::is_same_v<nddr::SurfaceNormal::target_t<float>, float>);
static_assert(std::is_same_v<nddr::Segmentation<40>::target_t<double>, std::int32_t>);

struct NoLoss {
  static constexpr const char* name = "x";
  static constexpr std::int64_t outputs = 1;
  template <class T>
  using target_t = T;
};
struct NoOutputs {
  static constexpr const char* name = "x";
  static constexpr std::int64_t outputs = 0;
};
static_assert(nddr::concepts::Task<nddr::Depth>);
static_assert(nddr::concepts::Task<nddr::DenseRegression<3, nddr::DenseLossForm::kL2>>);
static_assert(nddr::concepts::Task<nddr::BinarySegmentation>);
static_assert(nddr::concepts::Task<nddr::BinarySegmentationTask<false>>);
static_assert(!nddr::concepts::Task<NoLoss>);
static_assert(!nddr::concepts::Task<NoOutputs>);
static_assert(!nddr::concepts::Task<int>);

void fill_uniform(nddr::TensorView<double> t, nddr::Rng& rng, double lo = -2.0, double hi = 2.0) {
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(lo, hi);
}

/// Checks dloss/dprediction of `Task` at (prediction, target) by central differences, and that
/// the gradient scales with the weight and accumulates.
template <class Task, class Target>
void check_task_gradient(nddr::Tensor<double>& prediction, const nddr::Tensor<Target>& target) {
  nddr::Context<nddr::Cpu> ctx(1);
  const double weight = 0.7;
  nddr::Tensor<double> grad(prediction.shape());
  const double value =
      nddr::task_loss<Task>(ctx, prediction.cview(), target.cview(), grad.view(), weight);
  CHECK(std::isfinite(value));
  auto loss = [&] {
    return nddr::task_loss<Task>(ctx, prediction.cview(), target.cview(),
                                 nddr::TensorView<double>{}, weight);
  };
  CHECK(loss() == value);
  auto r = nddr::testing::check_gradient(Task::name, prediction.data(), prediction.numel(),
                                         grad.data(), loss);
  INFO(r.report);
  CHECK(r.ok);

  // Weight scales value and gradient; a second call accumulates on top of the first.
  nddr::Tensor<double> g2(prediction.shape());
  const double v2 =
      nddr::task_loss<Task>(ctx, prediction.cview(), target.cview(), g2.view(), 2 * weight);
  CHECK(v2 == Approx(2 * value).epsilon(1e-12));
  nddr::task_loss<Task>(ctx, prediction.cview(), target.cview(), g2.view(), weight);
  for (std::int64_t i = 0; i < grad.numel(); ++i)
    REQUIRE(g2[i] == Approx(3 * grad[i]).margin(1e-15));
}

}  // namespace

TEST_CASE("Segmentation: matches softmax cross-entropy, gradient by finite differences",
          "[networks][tasks]") {
  using Task = nddr::Segmentation<4>;
  nddr::Rng rng(3);
  nddr::Tensor<double> logits(Shape::nchw(2, 4, 3, 5));
  fill_uniform(logits.view(), rng);
  nddr::Tensor<std::int32_t> labels(Shape{2, 3, 5});
  for (std::int64_t i = 0; i < labels.numel(); ++i)
    labels[i] = i % 7 == 3 ? 255 : static_cast<std::int32_t>(rng.below(4));

  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<double> grad(logits.shape()), expected(logits.shape());
  const double value = nddr::task_loss<Task>(ctx, logits.cview(), labels.cview(), grad.view(), 1.5);
  const auto opt = nddr::SoftmaxCrossEntropyOptions{}.scale(1.5);
  CHECK(value ==
        nddr::ops::softmax_cross_entropy_forward<double>(ctx, logits.cview(), labels.cview(), opt));
  nddr::ops::softmax_cross_entropy_backward<double>(ctx, logits.cview(), labels.cview(),
                                                    expected.view(), opt);
  for (std::int64_t i = 0; i < grad.numel(); ++i) REQUIRE(grad[i] == expected[i]);
  // The ignored pixel (0, 0, 0, 3) gets no gradient.
  for (std::int64_t c = 0; c < 4; ++c) CHECK(grad(0, c, 0, 3) == 0.0);

  check_task_gradient<Task>(logits, labels);

  // float works through the same interface.
  nddr::Tensor<float> lf(logits.shape()), gf(logits.shape());
  for (std::int64_t i = 0; i < lf.numel(); ++i) lf[i] = static_cast<float>(logits[i]);
  CHECK(nddr::task_loss<Task>(ctx, lf.cview(), labels.cview(), gf.view(), 1.5f) ==
        Approx(value).epsilon(1e-5));
}

TEST_CASE("SurfaceNormal: cosine loss by default, L2 twice it, finite differences",
          "[networks][tasks]") {
  nddr::Rng rng(5);
  nddr::Tensor<double> p(Shape::nchw(2, 3, 3, 4)), g(Shape::nchw(2, 3, 3, 4));
  fill_uniform(p.view(), rng);
  fill_uniform(g.view(), rng);
  for (std::int64_t c = 0; c < 3; ++c) g(1, c, 2, 1) = 0.0;  // an unlabelled pixel

  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<double> grad(p.shape()), expected(p.shape());
  const double value =
      nddr::task_loss<nddr::SurfaceNormal>(ctx, p.cview(), g.cview(), grad.view(), 20.0);
  const auto opt =
      nddr::NormalLossOptions{}.form(nddr::NormalLossForm::kCosine).scale(20.0).eps(1e-6);
  CHECK(value == nddr::ops::normal_loss_forward<double>(ctx, p.cview(), g.cview(), opt));
  nddr::ops::normal_loss_backward<double>(ctx, p.cview(), g.cview(), expected.view(), opt);
  for (std::int64_t i = 0; i < grad.numel(); ++i) REQUIRE(grad[i] == expected[i]);
  for (std::int64_t c = 0; c < 3; ++c) CHECK(grad(1, c, 2, 1) == 0.0);

  using L2 = nddr::SurfaceNormalTask<nddr::NormalLossForm::kL2>;
  const double l2 =
      nddr::task_loss<L2>(ctx, p.cview(), g.cview(), nddr::TensorView<double>{}, 20.0);
  CHECK(l2 == Approx(2 * value).epsilon(1e-12));

  check_task_gradient<nddr::SurfaceNormal>(p, g);
  check_task_gradient<L2>(p, g);

  // An all-zero prediction (a pixel whose features all died in a ReLU, zero bias): the norm is
  // floored at 1e-6 as in the authors' TF code, so its gradient is -g^ * 1e6 * weight / count,
  // not PyTorch's 1e12 floor.
  nddr::Tensor<double> p0 = p;
  for (std::int64_t c = 0; c < 3; ++c) p0(0, c, 1, 1) = 0.0;
  nddr::Tensor<double> grad0(p.shape());
  nddr::task_loss<nddr::SurfaceNormal>(ctx, p0.cview(), g.cview(), grad0.view(), 1.0);
  const double gn = std::sqrt(g(0, 0, 1, 1) * g(0, 0, 1, 1) + g(0, 1, 1, 1) * g(0, 1, 1, 1) +
                              g(0, 2, 1, 1) * g(0, 2, 1, 1));
  const double labelled = 2 * 3 * 4 - 1;
  for (std::int64_t c = 0; c < 3; ++c)
    CHECK(grad0(0, c, 1, 1) == Approx(-g(0, c, 1, 1) / gn * 1e6 / labelled).epsilon(1e-9));
}

TEST_CASE("AgeClassification and Gender: K-way softmax cross-entropy on (N) labels",
          "[networks][tasks]") {
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Rng rng(9);
  using Age = nddr::AgeClassification<100>;
  nddr::Tensor<double> logits(Shape{4, 100});
  fill_uniform(logits.view(), rng);
  nddr::Tensor<std::int32_t> ages(Shape{4});
  ages[0] = 0;
  ages[1] = 99;
  ages[2] = 37;
  ages[3] = 255;  // unknown age: skipped
  nddr::Tensor<double> grad(logits.shape());
  const double value = nddr::task_loss<Age>(ctx, logits.cview(), ages.cview(), grad.view(), 1.0);
  // Mean over the three labelled samples of logsumexp - logit[label].
  double expected = 0.0;
  for (std::int64_t n = 0; n < 3; ++n) {
    double s = 0.0;
    for (std::int64_t k = 0; k < 100; ++k) s += std::exp(logits[n * 100 + k]);
    expected += std::log(s) - logits[n * 100 + ages[n]];
  }
  CHECK(value == Approx(expected / 3).epsilon(1e-12));
  for (std::int64_t k = 0; k < 100; ++k) CHECK(grad[3 * 100 + k] == 0.0);

  // (N, K, 1, 1) logits give the same value.
  nddr::Tensor<double> logits4(Shape::nchw(4, 100, 1, 1));
  for (std::int64_t i = 0; i < logits.numel(); ++i) logits4[i] = logits[i];
  CHECK(nddr::task_loss<Age>(ctx, logits4.cview(), ages.cview(), nddr::TensorView<double>{}, 1.0) ==
        Approx(value).epsilon(1e-14));
  nddr::Tensor<double> small(Shape{4, 5});
  fill_uniform(small.view(), rng);
  nddr::Tensor<std::int32_t> small_ages(Shape{4});
  for (std::int32_t i = 0; i < 4; ++i) small_ages[i] = i;
  check_task_gradient<nddr::AgeClassification<5>>(small, small_ages);

  nddr::Tensor<double> gl(Shape{3, 2});
  fill_uniform(gl.view(), rng);
  nddr::Tensor<std::int32_t> genders(Shape{3});
  genders[0] = 1;
  genders[1] = 0;
  genders[2] = 1;
  check_task_gradient<nddr::Gender>(gl, genders);
}

TEST_CASE("Tasks: errors name the task and the shapes or label", "[networks][tasks]") {
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<double> logits(Shape::nchw(1, 3, 2, 2)), grad(logits.shape());
  nddr::Tensor<std::int32_t> labels(Shape{1, 2, 2});
  CHECK_THROWS_WITH(
      (nddr::task_loss<nddr::Segmentation<4>>(ctx, logits.cview(), labels.cview(), grad.view(),
                                              1.0)),
      Catch::Contains("nddr::Segmentation::loss") && Catch::Contains("(1, 3, 2, 2)") &&
          Catch::Contains("expected 4 channels"));
  labels[2] = 7;
  CHECK_THROWS_AS(
      (nddr::task_loss<nddr::Segmentation<3>>(ctx, logits.cview(), labels.cview(), grad.view(),
                                              1.0)),
      nddr::ValueError);
  CHECK_THROWS_WITH(
      (nddr::task_loss<nddr::Segmentation<3>>(ctx, logits.cview(), labels.cview(), grad.view(),
                                              1.0)),
      Catch::Contains("label 7"));
  nddr::Tensor<double> g(Shape::nchw(1, 2, 2, 2));
  CHECK_THROWS_AS(
      (nddr::task_loss<nddr::SurfaceNormal>(ctx, logits.cview(), g.cview(), grad.view(), 1.0)),
      nddr::ShapeError);
  nddr::Tensor<double> two(Shape{2, 3});
  nddr::Tensor<std::int32_t> sexes(Shape{2});
  CHECK_THROWS_WITH((nddr::task_loss<nddr::Gender>(ctx, two.cview(), sexes.cview(),
                                                   nddr::TensorView<double>{}, 1.0)),
                    Catch::Contains("nddr::Gender::loss") && Catch::Contains("expected 2"));
}

namespace {

nddr::io::SafetensorsFile dense_reference() {
  return nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/dense_tasks.safetensors");
}

/// Task's loss (weight 1) and gradient at the reference's `key`.p / .g against `key`.`loss`
/// (.loss, .grad), then the finite-difference, weight and accumulation checks.
template <class Task>
void check_dense_task(const std::string& key, const std::string& loss) {
  auto f = dense_reference();
  auto p = f.tensor<double>(key + ".p");
  const auto g = f.tensor<double>(key + ".g");
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<double> grad(p.shape());
  const double value = nddr::task_loss<Task>(ctx, p.cview(), g.cview(), grad.view(), 1.0);
  CHECK(value == Approx(f.tensor<double>(key + "." + loss + ".loss")[0]).epsilon(1e-12));
  const auto ref = f.tensor<double>(key + "." + loss + ".grad");
  REQUIRE(ref.shape() == grad.shape());
  for (std::int64_t i = 0; i < grad.numel(); ++i) {
    INFO("element " << i);
    CHECK(grad[i] == Approx(ref[i]).epsilon(1e-10).margin(1e-14));
  }
  check_task_gradient<Task>(p, g);
}

}  // namespace

TEST_CASE("Depth and DenseRegression: masked L1 and L2 against PyTorch, finite differences",
          "[networks][tasks]") {
  check_dense_task<nddr::Depth>("depth", "l1");
  check_dense_task<nddr::DepthTask<nddr::DenseLossForm::kL2>>("depth", "l2");
  check_dense_task<nddr::DenseRegression<3, nddr::DenseLossForm::kL2>>("reg3", "l2");
  // Without zero_invalid a zero depth is a valid target: the value changes.
  auto f = dense_reference();
  const auto p = f.tensor<double>("depth.p"), g = f.tensor<double>("depth.g");
  nddr::Context<nddr::Cpu> ctx(1);
  const double masked = nddr::task_loss<nddr::Depth>(ctx, p.cview(), g.cview(), {}, 1.0);
  const double unmasked =
      nddr::task_loss<nddr::DenseRegression<1>>(ctx, p.cview(), g.cview(), {}, 1.0);
  CHECK(masked != unmasked);
  // Every target invalid: loss 0, no gradient.
  nddr::Tensor<double> none(g.shape()), grad(g.shape());
  for (std::int64_t i = 0; i < none.numel(); ++i) none[i] = std::numeric_limits<double>::quiet_NaN();
  CHECK(nddr::task_loss<nddr::Depth>(ctx, p.cview(), none.cview(), grad.view(), 1.0) == 0.0);
  for (std::int64_t i = 0; i < grad.numel(); ++i) REQUIRE(grad[i] == 0.0);
  // Errors name the task and the shapes.
  nddr::Tensor<double> two(Shape::nchw(2, 2, 4, 5));
  CHECK_THROWS_WITH((nddr::task_loss<nddr::Depth>(ctx, two.cview(), two.cview(), {}, 1.0)),
                    Catch::Contains("nddr::DenseRegression::loss") &&
                        Catch::Contains("(2, 2, 4, 5)") && Catch::Contains("(N, 1, H, W)"));
  nddr::Tensor<double> small(Shape::nchw(2, 1, 4, 4));
  CHECK_THROWS_AS((nddr::task_loss<nddr::Depth>(ctx, p.cview(), small.cview(), {}, 1.0)),
                  nddr::ShapeError);
}

TEST_CASE("BinarySegmentation: BCE and class-balanced BCE against PyTorch, finite differences",
          "[networks][tasks]") {
  check_dense_task<nddr::BinarySegmentationTask<false>>("bin", "bce");
  check_dense_task<nddr::BinarySegmentation>("bin", "balanced");
  // Large logits stay finite (the log-sum-exp form).
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<double> p(Shape::nchw(1, 1, 1, 2)), g(p.shape()), grad(p.shape());
  p[0] = 800.0;
  p[1] = -800.0;
  g[0] = 0.0;
  g[1] = 1.0;
  const double v = nddr::task_loss<nddr::BinarySegmentation>(ctx, p.cview(), g.cview(),
                                                             grad.view(), 1.0);
  CHECK(v == Approx(800.0));
  CHECK(grad[0] == Approx(0.5));
  CHECK(grad[1] == Approx(-0.5));
}

TEST_CASE("Dense metrics: depth and binary metrics against NumPy", "[networks][tasks]") {
  auto f = dense_reference();
  {
    const auto p = f.tensor<double>("depth.p"), g = f.tensor<double>("depth.g");
    auto m = nddr::Depth::make_metric();
    // Two updates (one per sample) pool like one.
    const Shape half = Shape::nchw(1, 1, 4, 5);
    m.update(nddr::TensorView<const double>(p.data(), half),
             nddr::TensorView<const double>(g.data(), half));
    m.update(nddr::TensorView<const double>(p.data() + 20, half),
             nddr::TensorView<const double>(g.data() + 20, half));
    const auto ref = f.tensor<double>("depth.metrics");
    CHECK(m.abs_error() == Approx(ref[0]).epsilon(1e-12));
    CHECK(m.rel_error() == Approx(ref[1]).epsilon(1e-12));
    CHECK(m.rmse() == Approx(ref[2]).epsilon(1e-12));
    for (int k = 1; k <= 3; ++k) CHECK(m.delta(k) == Approx(ref[k + 2]).epsilon(1e-12));
    const auto v = nddr::Depth::metric_values(m);
    REQUIRE(v.size() == 6);
    CHECK(v[0].task == "depth");
    CHECK(v[0].name == "AbsErr");
    CHECK_FALSE(v[0].higher_is_better);
    CHECK(v[3].value == Approx(100.0 * ref[3]));
    CHECK(nddr::DenseRegression<3>::metric_values(nddr::DenseRegression<3>::make_metric())
              .size() == 2);
  }
  {
    const auto p = f.tensor<double>("bin.p"), g = f.tensor<double>("bin.g");
    auto m = nddr::BinarySegmentation::make_metric();
    m.update(p.cview(), g.cview());
    const auto ref = f.tensor<double>("bin.metrics");
    CHECK(m.accuracy() == Approx(ref[0]).epsilon(1e-12));
    CHECK(m.iou() == Approx(ref[1]).epsilon(1e-12));
    CHECK(m.f1() == Approx(ref[2]).epsilon(1e-12));
    CHECK(nddr::BinarySegmentation::metric_values(m).size() == 3);
  }
}
