// Softmax cross-entropy with ignore label and the surface-normal loss: PyTorch reference values
// and gradients (ignored / invalid pixels included), finite differences, closed forms, the
// no-valid-pixel convention, errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <nddr/ops/loss.hpp>
#include <nddr/core/random.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <vector>

namespace {

using nddr::Shape;
using nddr::Tensor;
using nddr::TensorView;

nddr::io::SafetensorsFile reference() {
  return nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/misc_ops.safetensors");
}

Tensor<double> random_tensor(Shape s, nddr::Rng& rng, double scale = 1.0) {
  Tensor<double> t(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = scale * rng.uniform(-1.0, 1.0);
  return t;
}

/// actual - offset == expected * factor, element by element.
void require_close(const Tensor<double>& actual, const Tensor<double>& expected,
                   double factor = 1.0, double offset = 0.0) {
  REQUIRE(actual.shape() == expected.shape());
  for (std::int64_t i = 0; i < actual.numel(); ++i) {
    INFO("element " << i);
    REQUIRE(actual[i] - offset == Approx(expected[i] * factor).epsilon(1e-9).margin(1e-12));
  }
}

/// Finite differences of `loss()` wrt x against `analytic` (what backward added).
template <class Loss>
void check_fd(Tensor<double>& x, const Tensor<double>& analytic, Loss&& loss) {
  auto res = nddr::testing::check_gradient("dx", x.data(), x.numel(), analytic.data(), loss);
  INFO(res.report);
  CHECK(res.ok);
}

}  // namespace

// ---- softmax cross-entropy -------------------------------------------------------------------

TEST_CASE("softmax_cross_entropy: matches F.cross_entropy(ignore_index=255)", "[ops][loss]") {
  const auto f = reference();
  nddr::Context<nddr::Cpu> ctx(2);
  SECTION("rank 4, labels (N, H, W) and (N, 1, H, W), scale") {
    const auto logits = f.tensor<double>("ce4.logits");
    const auto labels = f.tensor<std::int32_t>("ce4.labels");
    const double loss_ref = f.values<double>("ce4.loss")[0];
    const auto grad_ref = f.tensor<double>("ce4.dlogits");
    CHECK(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels.cview()) ==
          Approx(loss_ref).epsilon(1e-12));
    Tensor<double> d(logits.shape(), 0.5);
    nddr::ops::softmax_cross_entropy_backward(ctx, logits.cview(), labels.cview(), d.view());
    require_close(d, grad_ref, 1.0, 0.5);
    for (std::int64_t k = 0; k < 5; ++k) CHECK(d(0, k, 0, 1) == 0.5);  // ignored pixel

    const auto opt = nddr::SoftmaxCrossEntropyOptions{}.scale(2.5);
    const auto labels4 = labels.cview().reshaped(Shape::nchw(2, 1, 3, 4));
    CHECK(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels4, opt) ==
          Approx(2.5 * loss_ref).epsilon(1e-12));
    Tensor<double> d2(logits.shape());
    nddr::ops::softmax_cross_entropy_backward(ctx, logits.cview(), labels4, d2.view(), opt);
    require_close(d2, grad_ref, 2.5);
  }
  SECTION("rank 2, labels (N)") {
    const auto logits = f.tensor<double>("ce2.logits");
    const auto labels = f.tensor<std::int32_t>("ce2.labels");
    CHECK(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels.cview()) ==
          Approx(f.values<double>("ce2.loss")[0]).epsilon(1e-12));
    Tensor<double> d(logits.shape());
    nddr::ops::softmax_cross_entropy_backward(ctx, logits.cview(), labels.cview(), d.view());
    require_close(d, f.tensor<double>("ce2.dlogits"));
  }
}

TEST_CASE("softmax_cross_entropy: finite differences with ignored pixels", "[ops][loss]") {
  nddr::Rng rng(21);
  nddr::Context<nddr::Cpu> ctx(2);
  Tensor<double> logits = random_tensor(Shape::nchw(2, 4, 3, 3), rng, 3.0);
  Tensor<std::int32_t> labels(Shape{2, 3, 3});
  for (std::int64_t i = 0; i < labels.numel(); ++i)
    labels[i] = i % 5 == 2 ? 255 : static_cast<std::int32_t>(rng.below(4));
  const auto opt = nddr::SoftmaxCrossEntropyOptions{}.scale(1.7);
  Tensor<double> d(logits.shape());
  nddr::ops::softmax_cross_entropy_backward(ctx, logits.cview(), labels.cview(), d.view(), opt);
  check_fd(logits, d, [&] {
    return nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels.cview(), opt);
  });
}

TEST_CASE("softmax_cross_entropy: closed forms, stability, no valid pixel", "[ops][loss]") {
  nddr::Context<nddr::Cpu> ctx(1);
  SECTION("uniform logits give log K, with some pixels ignored") {
    Tensor<double> logits(Shape::nchw(2, 7, 2, 3), 0.7);
    Tensor<std::int32_t> labels(Shape{2, 2, 3});
    for (std::int64_t i = 0; i < labels.numel(); ++i)
      labels[i] = i == 4 ? 255 : static_cast<std::int32_t>(i % 7);
    CHECK(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels.cview()) ==
          Approx(std::log(7.0)).epsilon(1e-14));
    Tensor<float> lf(Shape::nchw(1, 40, 1, 1), -3.f);
    Tensor<std::int32_t> l1(Shape{1}, 39);
    CHECK(nddr::ops::softmax_cross_entropy_forward(ctx, lf.cview(), l1.cview()) ==
          Approx(std::log(40.0)).epsilon(1e-6));
  }
  SECTION("huge logits stay finite (max-subtracted log-sum-exp)") {
    Tensor<double> logits(Shape::nchw(1, 2, 1, 1));
    logits[0] = 1000.0;
    logits[1] = 0.0;
    Tensor<std::int32_t> labels(Shape{1, 1, 1}, 1);
    CHECK(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels.cview()) ==
          Approx(1000.0));
    Tensor<double> d(logits.shape());
    nddr::ops::softmax_cross_entropy_backward(ctx, logits.cview(), labels.cview(), d.view());
    CHECK(d[0] == Approx(1.0));
    CHECK(d[1] == Approx(-1.0));
    Tensor<float> lf(Shape::nchw(1, 2, 1, 1));
    lf[0] = 200.f;
    CHECK(std::isfinite(nddr::ops::softmax_cross_entropy_forward(ctx, lf.cview(), labels.cview())));
  }
  SECTION("all pixels ignored: loss 0, gradient 0 (PyTorch: NaN)") {
    Tensor<double> logits(Shape::nchw(1, 3, 2, 2), 1.0);
    Tensor<std::int32_t> labels(Shape{1, 2, 2}, 255);
    CHECK(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels.cview()) == 0.0);
    Tensor<double> d(logits.shape(), 3.0);
    nddr::ops::softmax_cross_entropy_backward(ctx, logits.cview(), labels.cview(), d.view());
    for (std::int64_t i = 0; i < d.numel(); ++i) CHECK(d[i] == 3.0);
  }
  SECTION("custom ignore label") {
    Tensor<double> logits(Shape::nchw(1, 3, 1, 2));
    logits[0] = 5.0;  // pixel 0 would cost ~0 with label 0, pixel 1 costs log 3
    Tensor<std::int32_t> labels(Shape{1, 1, 2});
    labels[0] = -1;
    labels[1] = 2;
    const auto opt = nddr::SoftmaxCrossEntropyOptions{}.ignore_label(-1);
    CHECK(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels.cview(), opt) ==
          Approx(std::log(3.0)));
  }
}

TEST_CASE("softmax_cross_entropy: errors name the label, its position and K", "[ops][loss]") {
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> logits(Shape::nchw(2, 5, 3, 4));
  Tensor<std::int32_t> labels(Shape{2, 3, 4});
  labels(0, 0, 0, 0) = 255;
  labels[1 * 12 + 2 * 4 + 3] = 7;  // (n, h, w) = (1, 2, 3)
  CHECK_THROWS_AS(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels.cview()),
                  nddr::ValueError);
  CHECK_THROWS_WITH(
      nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), labels.cview()),
      Catch::Contains("label 7") && Catch::Contains("(1, 2, 3)") && Catch::Contains("K = 5"));
  labels[1 * 12 + 2 * 4 + 3] = -2;
  Tensor<double> d(logits.shape());
  CHECK_THROWS_WITH(
      nddr::ops::softmax_cross_entropy_backward(ctx, logits.cview(), labels.cview(), d.view()),
      Catch::Contains("label -2") && Catch::Contains("(1, 2, 3)"));

  Tensor<std::int32_t> bad(Shape{2, 3, 5});
  CHECK_THROWS_AS(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), bad.cview()),
                  nddr::ShapeError);
  CHECK_THROWS_WITH(nddr::ops::softmax_cross_entropy_forward(ctx, logits.cview(), bad.cview()),
                    Catch::Contains("(2, 3, 5)") && Catch::Contains("(2, 5, 3, 4)"));
  Tensor<std::int32_t> ok(Shape{2, 3, 4});
  Tensor<double> bad_d(Shape::nchw(2, 5, 3, 3));
  CHECK_THROWS_AS(
      nddr::ops::softmax_cross_entropy_backward(ctx, logits.cview(), ok.cview(), bad_d.view()),
      nddr::ShapeError);
  CHECK_THROWS_AS(
      nddr::ops::softmax_cross_entropy_forward(
          ctx, logits.cview(), ok.cview(), nddr::SoftmaxCrossEntropyOptions{}.scale(std::nan(""))),
      nddr::OptionError);
}

// ---- surface-normal loss ---------------------------------------------------------------------

TEST_CASE("normal_loss: matches the torch computation (both forms)", "[ops][loss]") {
  const auto f = reference();
  nddr::Context<nddr::Cpu> ctx(2);
  const auto p = f.tensor<double>("normal.p"), g = f.tensor<double>("normal.g");
  for (auto [form, name] : {std::pair{nddr::NormalLossForm::kL2, "l2"},
                            std::pair{nddr::NormalLossForm::kCosine, "cosine"}}) {
    INFO(name);
    const std::string key = std::string("normal.") + name;
    const double loss_ref = f.values<double>(key + ".loss")[0];
    const auto grad_ref = f.tensor<double>(key + ".dp");
    for (double scale : {1.0, 20.0}) {
      const auto opt = nddr::NormalLossOptions{}.form(form).scale(scale);
      CHECK(nddr::ops::normal_loss_forward(ctx, p.cview(), g.cview(), opt) ==
            Approx(scale * loss_ref).epsilon(1e-12));
      Tensor<double> dp(p.shape(), -0.5);
      nddr::ops::normal_loss_backward(ctx, p.cview(), g.cview(), dp.view(), opt);
      require_close(dp, grad_ref, scale, -0.5);
      for (std::int64_t c = 0; c < 3; ++c) CHECK(dp(0, c, 2, 3) == -0.5);  // invalid pixel
    }
  }
}

TEST_CASE("normal_loss: finite differences with invalid pixels", "[ops][loss]") {
  const auto form = GENERATE(nddr::NormalLossForm::kL2, nddr::NormalLossForm::kCosine);
  nddr::Rng rng(33);
  nddr::Context<nddr::Cpu> ctx(2);
  Tensor<double> p = random_tensor(Shape::nchw(2, 3, 3, 4), rng, 4.0);
  Tensor<double> g = random_tensor(p.shape(), rng);
  for (std::int64_t i : {0, 5, 13, 23})
    for (std::int64_t c = 0; c < 3; ++c) g[(i / 12) * 36 + c * 12 + i % 12] = 0.0;
  const auto opt = nddr::NormalLossOptions{}.form(form).scale(3.0);
  Tensor<double> dp(p.shape());
  nddr::ops::normal_loss_backward(ctx, p.cview(), g.cview(), dp.view(), opt);
  check_fd(p, dp, [&] { return nddr::ops::normal_loss_forward(ctx, p.cview(), g.cview(), opt); });
  CHECK(dp(0, 1, 0, 0) == 0.0);  // pixel 0 is invalid
}

TEST_CASE("normal_loss: closed forms and the no-valid-pixel convention", "[ops][loss]") {
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> p(Shape::nchw(1, 3, 1, 2)), g(Shape::nchw(1, 3, 1, 2));
  // Pixel 0: p = (0, 5, 0) against g = (1, 0, 0): orthogonal, 1 - cos = 1, l2 = 2.
  p(0, 1, 0, 0) = 5.0;
  g(0, 0, 0, 0) = 1.0;
  // Pixel 1: p = (-2, 0, 0) against g = (1, 0, 0): opposite, 1 - cos = 2, l2 = 4.
  p(0, 0, 0, 1) = -2.0;
  g(0, 0, 0, 1) = 1.0;
  const auto cosine = nddr::NormalLossOptions{}.form(nddr::NormalLossForm::kCosine);
  CHECK(nddr::ops::normal_loss_forward(ctx, p.cview(), g.cview(), cosine) == Approx(1.5));
  CHECK(nddr::ops::normal_loss_forward(ctx, p.cview(), g.cview()) == Approx(3.0));

  Tensor<double> zero(g.shape());
  CHECK(nddr::ops::normal_loss_forward(ctx, p.cview(), zero.cview()) == 0.0);
  Tensor<double> dp(p.shape(), 2.0);
  nddr::ops::normal_loss_backward(ctx, p.cview(), zero.cview(), dp.view());
  for (std::int64_t i = 0; i < dp.numel(); ++i) CHECK(dp[i] == 2.0);

  Tensor<float> pf(Shape::nchw(1, 3, 1, 1)), gf(Shape::nchw(1, 3, 1, 1));
  pf[2] = 7.f;
  gf[2] = 1.f;
  CHECK(nddr::ops::normal_loss_forward(ctx, pf.cview(), gf.cview()) == Approx(0.0).margin(1e-6));
}

TEST_CASE("normal_loss: errors", "[ops][loss]") {
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> p4(Shape::nchw(1, 4, 2, 2)), p(Shape::nchw(1, 3, 2, 2)),
      g(Shape::nchw(1, 3, 2, 3));
  CHECK_THROWS_AS(nddr::ops::normal_loss_forward(ctx, p4.cview(), p4.cview()), nddr::ShapeError);
  CHECK_THROWS_WITH(nddr::ops::normal_loss_forward(ctx, p4.cview(), p4.cview()),
                    Catch::Contains("(1, 4, 2, 2)") && Catch::Contains("3 channels"));
  CHECK_THROWS_WITH(nddr::ops::normal_loss_forward(ctx, p.cview(), g.cview()),
                    Catch::Contains("ground truth") && Catch::Contains("(1, 3, 2, 3)") &&
                        Catch::Contains("(1, 3, 2, 2)"));
  Tensor<double> dp(g.shape());
  CHECK_THROWS_AS(nddr::ops::normal_loss_backward(ctx, p.cview(), p.cview(), dp.view()),
                  nddr::ShapeError);
  CHECK_THROWS_AS(
      nddr::ops::normal_loss_forward(ctx, p.cview(), p.cview(), nddr::NormalLossOptions{}.eps(0.0)),
      nddr::OptionError);
}
