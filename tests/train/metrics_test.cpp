#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "nddr/ops/argmax.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/metrics/classification.hpp"
#include "nddr/metrics/delta.hpp"
#include "nddr/metrics/normals.hpp"
#include "nddr/metrics/segmentation.hpp"

using Catch::Contains;

namespace {

template <class T>
nddr::Tensor<T> make(nddr::Shape s, const std::vector<T>& v) {
  nddr::Tensor<T> t(s);
  REQUIRE(static_cast<std::int64_t>(v.size()) == s.numel());
  for (std::size_t i = 0; i < v.size(); ++i) t[static_cast<std::int64_t>(i)] = v[i];
  return t;
}

// 3 classes, one 2 x 3 image; pixel 4 is ignored; class 2 occurs in neither ground truth nor
// prediction of a valid pixel. Confusion: M00 = 2, M01 = 1, M10 = 1, M11 = 1.
const std::vector<std::int32_t> kGt{0, 0, 1, 1, 255, 0};
const std::vector<std::int32_t> kPred{0, 1, 1, 0, 2, 0};

void check_tiny_case(const nddr::SegmentationMetrics& m) {
  CHECK(m.valid_pixels() == 5);
  CHECK(m.confusion(0, 0) == 2);
  CHECK(m.confusion(0, 1) == 1);
  CHECK(m.confusion(1, 0) == 1);
  CHECK(m.confusion(1, 1) == 1);
  CHECK(m.confusion(2, 2) == 0);
  CHECK(m.iou(0) == Approx(2.0 / 4.0).epsilon(1e-15));
  CHECK(m.iou(1) == Approx(1.0 / 3.0).epsilon(1e-15));
  CHECK(std::isnan(m.iou(2)));
  CHECK(m.miou() == Approx(5.0 / 12.0).epsilon(1e-15));            // absent class 2 skipped
  CHECK(m.miou_all_classes() == Approx(5.0 / 18.0).epsilon(1e-12));  // absent class 2 counts 0
  CHECK(m.pixel_accuracy() == Approx(3.0 / 5.0).epsilon(1e-15));
}

}  // namespace

TEST_CASE("SegmentationMetrics: hand-computed confusion, mIoU, PAcc", "[train][metrics]") {
  nddr::SegmentationMetrics m(3);
  auto gt = make<std::int32_t>({1, 2, 3}, kGt);
  auto pred = make<std::int32_t>({1, 1, 2, 3}, kPred);
  m.update_predictions(pred.cview(), gt.cview());
  check_tiny_case(m);

  m.reset();
  CHECK(m.valid_pixels() == 0);
  CHECK(std::isnan(m.miou()));
  CHECK(std::isnan(m.pixel_accuracy()));
}

TEST_CASE("SegmentationMetrics: argmax of logits, first maximum wins", "[train][metrics]") {
  // (1, 3, 2, 3). Pixel 0: channels 0 and 1 tie -> 0. Pixel 2: channels 1 and 2 tie -> 1.
  // Pixel 1: channel 1. Pixel 3: channel 0 (negative logits). Pixel 4 (ignored): channel 2.
  // Pixel 5: channel 0.
  const std::vector<double> logits{
      // channel 0
      5.0, 0.0, 1.0, -1.0, 0.0, 2.0,
      // channel 1
      5.0, 1.0, 3.0, -2.0, 0.0, 1.0,
      // channel 2
      4.0, 0.5, 3.0, -3.0, 9.0, 1.0};
  auto x = make<double>(nddr::Shape::nchw(1, 3, 2, 3), logits);
  auto gt = make<std::int32_t>({1, 1, 2, 3}, kGt);  // (N, 1, H, W) accepted too
  nddr::SegmentationMetrics m(3);
  m.update(x.cview(), gt.cview());
  check_tiny_case(m);

  // The same through float logits and (N, H, W) labels.
  nddr::Tensor<float> xf(x.shape());
  for (std::int64_t i = 0; i < x.numel(); ++i) xf[i] = static_cast<float>(x[i]);
  auto gt3 = make<std::int32_t>({1, 2, 3}, kGt);
  nddr::SegmentationMetrics mf(3);
  mf.update(xf.cview(), gt3.cview());
  CHECK(mf.confusion() == m.confusion());
}

TEST_CASE("ops::argmax_channels: the metric's prediction, first maximum, NaN rule, errors",
          "[train][metrics][argmax]") {
  nddr::Context<nddr::Cpu> ctx(2);
  // The tiny case: its predictions are kPred (pixel 4, ignored by the metric, predicts 2).
  const std::vector<double> logits{5.0, 0.0, 1.0, -1.0, 0.0, 2.0,   // channel 0
                                   5.0, 1.0, 3.0, -2.0, 0.0, 1.0,   // channel 1
                                   4.0, 0.5, 3.0, -3.0, 9.0, 1.0};  // channel 2
  const auto x = make<double>(nddr::Shape::nchw(1, 3, 2, 3), logits);
  nddr::Tensor<std::int32_t> pred(nddr::Shape{1, 2, 3});
  nddr::ops::argmax_channels<double>(ctx, x.cview(), pred.view());
  for (std::int64_t i = 0; i < 6; ++i) CHECK(pred[i] == kPred[static_cast<std::size_t>(i)]);

  // Random logits with many ties (small integers), 2 images: update_predictions(argmax) gives
  // the confusion of update(logits), i.e. the evaluation's GPU path equals its CPU path.
  const nddr::Shape s = nddr::Shape::nchw(2, 5, 7, 9);
  nddr::Tensor<float> xf(s);
  std::uint32_t state = 12345;
  for (std::int64_t i = 0; i < xf.numel(); ++i) {
    state = state * 1664525u + 1013904223u;
    xf[i] = static_cast<float>((state >> 24) % 4);
  }
  // NaN: in channel 0 of pixel 0 it wins (nothing compares greater), elsewhere it never does.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  xf[0] = nan;
  xf[1 * 63 + 1] = nan;
  nddr::Tensor<std::int32_t> labels(nddr::Shape{2, 7, 9}), p(nddr::Shape{2, 7, 9});
  for (std::int64_t i = 0; i < labels.numel(); ++i)
    labels[i] = i % 11 == 0 ? 255 : static_cast<std::int32_t>(i % 5);
  nddr::ops::argmax_channels<float>(ctx, xf.cview(), p.view());
  for (std::int64_t n = 0; n < 2; ++n)
    for (std::int64_t i = 0; i < 63; ++i) {
      std::int32_t want = 0;
      float best = xf[n * 5 * 63 + i];
      for (std::int32_t c = 1; c < 5; ++c)
        if (xf[(n * 5 + c) * 63 + i] > best) {
          best = xf[(n * 5 + c) * 63 + i];
          want = c;
        }
      REQUIRE(p[n * 63 + i] == want);
    }
  CHECK(p[0] == 0);
  nddr::SegmentationMetrics a(5), b(5);
  a.update(xf.cview(), labels.cview());
  b.update_predictions(p.cview(), labels.cview());
  CHECK(a.confusion() == b.confusion());

  nddr::Tensor<std::int32_t> wrong(nddr::Shape{2, 7, 8});
  CHECK_THROWS_WITH(nddr::ops::argmax_channels<float>(ctx, xf.cview(), wrong.view()),
                    Contains("nddr::ops::argmax_channels") && Contains("out"));
  nddr::Tensor<float> empty_c(nddr::Shape::nchw(1, 0, 2, 2));
  nddr::Tensor<std::int32_t> out(nddr::Shape{1, 2, 2});
  CHECK_THROWS_WITH(nddr::ops::argmax_channels<float>(ctx, empty_c.cview(), out.view()),
                    Contains("expected at least one channel"));
}

TEST_CASE("SegmentationMetrics: merge equals a single pass", "[train][metrics]") {
  auto gt = make<std::int32_t>({1, 2, 3}, kGt);
  auto pred = make<std::int32_t>({1, 2, 3}, kPred);
  auto gt2 = make<std::int32_t>({1, 2, 3}, {2, 2, 1, 0, 0, 255});
  auto pred2 = make<std::int32_t>({1, 2, 3}, {2, 1, 1, 0, 2, 0});
  nddr::SegmentationMetrics a(3), b(3), all(3);
  a.update_predictions(pred.cview(), gt.cview());
  b.update_predictions(pred2.cview(), gt2.cview());
  all.update_predictions(pred.cview(), gt.cview());
  all.update_predictions(pred2.cview(), gt2.cview());
  a.merge(b);
  CHECK(a.confusion() == all.confusion());
  CHECK(a.miou() == all.miou());
  // Now every class occurs, so both mIoU conventions agree.
  CHECK(all.miou_all_classes() == Approx(all.miou()).epsilon(1e-12));
}

TEST_CASE("SegmentationMetrics: errors", "[train][metrics]") {
  CHECK_THROWS_AS(nddr::SegmentationMetrics(0), nddr::OptionError);
  nddr::SegmentationMetrics m(3);
  auto bad = make<std::int32_t>({1, 2, 3}, {0, 0, 1, 1, 3, 0});
  auto pred = make<std::int32_t>({1, 2, 3}, kPred);
  CHECK_THROWS_AS(m.update_predictions(pred.cview(), bad.cview()), nddr::ValueError);
  CHECK_THROWS_WITH(m.update_predictions(pred.cview(), bad.cview()),
                    Contains("label 3 at (n=0, h=1, w=1)"));
  CHECK(m.valid_pixels() == 0);  // a throwing update counts nothing
  auto negative = make<std::int32_t>({1, 2, 3}, {0, -1, 1, 1, 0, 0});
  CHECK_THROWS_WITH(m.update_predictions(pred.cview(), negative.cview()),
                    Contains("label -1 at (n=0, h=0, w=1)"));
  auto gt = make<std::int32_t>({1, 2, 3}, kGt);
  auto bad_pred = make<std::int32_t>({1, 2, 3}, {0, 7, 1, 0, 2, 0});
  CHECK_THROWS_WITH(m.update_predictions(bad_pred.cview(), gt.cview()),
                    Contains("prediction 7 at (n=0, h=0, w=1)"));

  // -1 as ignore label (MTAN .npy labels).
  nddr::SegmentationMetrics mtan(3, -1);
  mtan.update_predictions(pred.cview(), negative.cview());
  CHECK(mtan.valid_pixels() == 5);

  nddr::Tensor<float> x(nddr::Shape::nchw(1, 4, 2, 3));
  CHECK_THROWS_WITH(m.update(x.cview(), gt.cview()), Contains("(1, 4, 2, 3)"));
  nddr::Tensor<float> x2(nddr::Shape::nchw(1, 3, 3, 2));
  CHECK_THROWS_AS(m.update(x2.cview(), gt.cview()), nddr::ShapeError);
  nddr::SegmentationMetrics other(4);
  CHECK_THROWS_AS(m.merge(other), nddr::OptionError);
  CHECK_THROWS_AS(m.iou(3), nddr::ValueError);
}

TEST_CASE("NormalMetrics: exact angles, invalid pixels skipped", "[train][metrics]") {
  // Target (0, 0, 1) except pixel 4 (zero vector: invalid). Predictions at 0, 90, 180, 45 degrees.
  auto p = make<double>(nddr::Shape::nchw(1, 3, 1, 5), {0, 1, 0, 1, 7,  //
                                                        0, 0, 0, 0, 7,  //
                                                        5, 0, -1, 1, 7});
  auto g = make<double>(nddr::Shape::nchw(1, 3, 1, 5), {0, 0, 0, 0, 0,  //
                                                        0, 0, 0, 0, 0,  //
                                                        1, 1, 1, 1, 0});
  nddr::NormalMetrics m;
  m.update(p.cview(), g.cview());
  REQUIRE(m.count() == 4);
  std::vector<float> a = m.angles();
  CHECK(a[0] == 0.0f);
  CHECK(a[1] == Approx(90.0).epsilon(1e-7));
  CHECK(a[2] == Approx(180.0).epsilon(1e-7));
  CHECK(a[3] == Approx(45.0).epsilon(1e-7));
  CHECK(m.mean() == Approx(78.75).epsilon(1e-12));
  CHECK(m.rmse() == Approx(std::sqrt((8100.0 + 32400.0 + 2025.0) / 4.0)).epsilon(1e-12));
  CHECK(m.median() == Approx(67.5).epsilon(1e-6));  // even count: mean of 45 and 90
}

TEST_CASE("NormalMetrics: median odd/even and inclusive thresholds", "[train][metrics]") {
  nddr::NormalMetrics m;
  for (double a : {30.01, 11.25, 30.0, 11.26, 22.5}) m.add_angle(a);
  CHECK(m.median() == 22.5);
  CHECK(m.within(11.25) == Approx(1.0 / 5.0));
  CHECK(m.within(22.5) == Approx(3.0 / 5.0));
  CHECK(m.within(30.0) == Approx(4.0 / 5.0));
  m.add_angle(40.0);
  CHECK(m.median() == Approx((22.5 + 30.0) / 2.0).epsilon(1e-7));
  CHECK(nddr::NormalMetrics::kThresholds[0] == 11.25);

  m.reset();
  CHECK(m.count() == 0);
  CHECK(std::isnan(m.mean()));
  CHECK(std::isnan(m.median()));
  CHECK(std::isnan(m.within(30.0)));
}

TEST_CASE("NormalMetrics: merge equals a single pass, errors", "[train][metrics]") {
  auto p1 = make<float>(nddr::Shape::nchw(1, 3, 1, 3), {1, 2, 0, 3, -1, 0, 1, 1, 1});
  auto g1 = make<float>(nddr::Shape::nchw(1, 3, 1, 3), {0, 1, 0, 1, 0, 0, 1, 1, 0});
  auto p2 = make<float>(nddr::Shape::nchw(1, 3, 1, 2), {0.5f, -2, 1, 0, 0, 1});
  auto g2 = make<float>(nddr::Shape::nchw(1, 3, 1, 2), {1, 0, 1, 1, 1, 1});
  nddr::NormalMetrics a, b, all;
  a.update(p1.cview(), g1.cview());
  b.update(p2.cview(), g2.cview());
  all.update(p1.cview(), g1.cview());
  all.update(p2.cview(), g2.cview());
  a.merge(b);
  CHECK(a.count() == all.count());
  CHECK(a.mean() == Approx(all.mean()).epsilon(1e-14));
  CHECK(a.median() == all.median());
  CHECK(a.rmse() == Approx(all.rmse()).epsilon(1e-14));
  for (double t : nddr::NormalMetrics::kThresholds) CHECK(a.within(t) == all.within(t));

  nddr::Tensor<float> p4(nddr::Shape::nchw(1, 4, 1, 3));
  CHECK_THROWS_WITH(a.update(p4.cview(), p4.cview()), Contains("(1, 4, 1, 3)"));
  CHECK_THROWS_AS(a.update(p1.cview(), p2.cview()), nddr::ShapeError);
}

TEST_CASE("decode_normal_png: raw paper vs centred encoding", "[train][metrics]") {
  auto inv = nddr::decode_normal_png(255, 255, 255, nddr::NormalEncoding::kCentered);
  CHECK_FALSE(inv.valid);
  CHECK(inv.v == std::array<float, 3>{0, 0, 0});
  auto raw = nddr::decode_normal_png(128, 0, 255, nddr::NormalEncoding::kRawPaper);
  CHECK(raw.valid);
  CHECK(raw.v == std::array<float, 3>{128, 0, 255});
  auto c = nddr::decode_normal_png<double>(255, 0, 255, nddr::NormalEncoding::kCentered);
  CHECK(c.valid);  // only all three at 255 is invalid
  CHECK(c.v == std::array<double, 3>{1.0, -1.0, 1.0});
}

TEST_CASE("AgeMetrics: expected value of the softmax", "[train][metrics]") {
  // (3, 100, 1, 1): near one-hot at 30 (label 25), uniform (label 40), one-hot at 30 (label 30).
  nddr::Tensor<double> x(nddr::Shape::nchw(3, 100, 1, 1));
  x(0, 30, 0, 0) = 1000.0;
  x(2, 30, 0, 0) = 1000.0;
  auto y = make<std::int32_t>({3}, {25, 40, 30});
  nddr::AgeMetrics m;
  m.update(x.cview(), y.cview());
  REQUIRE(m.count() == 3);
  CHECK(m.errors()[0] == Approx(5.0).epsilon(1e-12));
  CHECK(m.errors()[1] == Approx(9.5).epsilon(1e-12));  // uniform: mean of 0..99 = 49.5
  CHECK(m.errors()[2] == Approx(0.0).margin(1e-12));
  CHECK(m.mean_absolute_error() == Approx(14.5 / 3.0).epsilon(1e-12));
  CHECK(m.median_absolute_error() == Approx(5.0).epsilon(1e-12));

  nddr::AgeMetrics two;
  two.update(x.cview().batch_slice(0, 2), y.cview().batch_slice(0, 2));
  CHECK(two.median_absolute_error() == Approx(7.25).epsilon(1e-12));  // even count
  nddr::AgeMetrics last;
  last.update(x.cview().batch_slice(2, 3), y.cview().batch_slice(2, 3));
  two.merge(last);
  CHECK(two.mean_absolute_error() == Approx(m.mean_absolute_error()).epsilon(1e-14));

  auto bad = make<std::int32_t>({3}, {25, 100, 30});
  CHECK_THROWS_WITH(m.update(x.cview(), bad.cview()), Contains("label 100 at n=1"));
  nddr::Tensor<double> x3(nddr::Shape::nchw(3, 100, 2, 1));
  CHECK_THROWS_AS(m.update(x3.cview(), y.cview()), nddr::ShapeError);
}

TEST_CASE("AccuracyMetric: argmax accuracy, ties to the first class", "[train][metrics]") {
  auto x = make<float>({4, 2}, {1, 1, 0, 2, 3, -1, 0.5f, 0.25f});  // argmax 0, 1, 0, 0
  auto y = make<std::int32_t>({4}, {0, 1, 1, 0});
  nddr::AccuracyMetric m;
  m.update(x.cview(), y.cview());
  CHECK(m.correct() == 3);
  CHECK(m.accuracy() == Approx(0.75));
  auto y1 = make<std::int32_t>({4}, {1, 1, 1, 0});  // the tie at image 0 does not count as 1
  nddr::AccuracyMetric t;
  t.update(x.cview(), y1.cview());
  CHECK(t.correct() == 2);
  t.merge(m);
  CHECK(t.count() == 8);
  auto bad = make<std::int32_t>({4}, {0, 1, 2, 0});
  CHECK_THROWS_WITH(m.update(x.cview(), bad.cview()), Contains("label 2 at n=2"));
  auto short_y = make<std::int32_t>({3}, {0, 1, 1});
  CHECK_THROWS_AS(m.update(x.cview(), short_y.cview()), nddr::ShapeError);
}

TEST_CASE("delta_m: task and metric balancing, sign convention", "[train][metrics]") {
  using nddr::MetricValue;
  const std::vector<MetricValue> base{{"seg", "mIoU", 0.40, true},
                                      {"seg", "PAcc", 0.60, true},
                                      {"normal", "mean", 20.0, false},
                                      {"normal", "median", 15.0, false},
                                      {"normal", "11.25", 0.30, true},
                                      {"depth", "rmse", 1.0, false}};  // unused: ignored
  // Relative improvements: +0.1, +0.1 | +0.1, -0.2, +0.1.
  const std::vector<MetricValue> mt{{"seg", "mIoU", 0.44, true},
                                    {"seg", "PAcc", 0.66, true},
                                    {"normal", "mean", 18.0, false},
                                    {"normal", "median", 18.0, false},
                                    {"normal", "11.25", 0.33, true}};
  using nddr::DeltaBalancing;
  using nddr::DeltaOptions;
  CHECK(nddr::delta_m(mt, base) == Approx(5.0).epsilon(1e-12));  // (0.1 + 0) / 2
  CHECK(nddr::delta_m(mt, base, DeltaOptions{}.balancing(DeltaBalancing::kMetric)) ==
        Approx(4.0).epsilon(1e-12));  // 0.2 / 5
  CHECK(nddr::delta_m(mt, base, DeltaOptions{}.percent(false)) == Approx(0.05).epsilon(1e-12));
  CHECK(nddr::delta_m(base, base) == 0.0);

  // Worse on a higher-is-better and on a lower-is-better metric: both negative.
  CHECK(nddr::delta_m({{"seg", "mIoU", 0.36, true}}, base) == Approx(-10.0).epsilon(1e-12));
  CHECK(nddr::delta_m({{"normal", "mean", 22.0, false}}, base) == Approx(-10.0).epsilon(1e-12));

  CHECK_THAT(nddr::describe(DeltaOptions{}), Contains("task-balanced") && Contains("positive"));
  CHECK_THAT(nddr::describe(DeltaOptions{}.balancing(DeltaBalancing::kMetric)),
             Contains("metric-balanced"));
}

TEST_CASE("delta_m: errors", "[train][metrics]") {
  using nddr::MetricValue;
  const std::vector<MetricValue> base{{"seg", "mIoU", 0.40, true}, {"normal", "mean", 0.0, false}};
  CHECK_THROWS_WITH(nddr::delta_m({{"normal", "median", 15.0, false}}, base),
                    Contains("'normal/median' is missing from the baseline"));
  CHECK_THROWS_WITH(nddr::delta_m({{"normal", "mean", 15.0, false}}, base),
                    Contains("baseline value of 'normal/mean' is 0"));
  CHECK_THROWS_WITH(nddr::delta_m({{"seg", "mIoU", 0.5, true}, {"seg", "mIoU", 0.5, true}}, base),
                    Contains("given twice"));
  CHECK_THROWS_WITH(nddr::delta_m({{"seg", "mIoU", 0.5, false}}, base),
                    Contains("higher-is-better in one list"));
  CHECK_THROWS_AS(nddr::delta_m({}, base), nddr::ValueError);
}
