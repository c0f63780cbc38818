// viz: the line-plot rasteriser, colour maps and an end-to-end run of the demo on tiny settings.
#include <catch2/catch.hpp>

#include <nddr_apps/demo.hpp>
#include <nddr/viz/plot.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>
#include <unistd.h>

namespace {

std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() /
           ("nddr_viz_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

nddr::viz::Rgb pixel(const nddr::io::Image8& im, int x, int y) {
  return {im.at(y, x, 0), im.at(y, x, 1), im.at(y, x, 2)};
}

bool has_color(const nddr::io::Image8& im, nddr::viz::Rgb c) {
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x)
      if (pixel(im, x, y) == c) return true;
  return false;
}

}  // namespace

TEST_CASE("viz: a line plot round-trips through PNG with axes, ticks and series colours",
          "[train][viz]") {
  using namespace nddr::viz;
  const auto dir = temp_dir("plot");
  std::vector<Series> series;
  Series a{"rising", {0, 1, 2, 3}, {0.0, 1.0, 2.0, 3.0}, series_color(0)};
  Series b{"falling", {0, 1, 2, 3}, {3.0, 2.0, 1.0, 0.0}, series_color(1)};
  series.push_back(a);
  series.push_back(b);
  const auto opt = PlotOptions{}.size(320, 240).with_title("Loss").labels("step", "");
  const std::string path = (dir / "plot.png").string();
  write_line_plot(path, series, opt);
  const nddr::io::Image8 im = nddr::io::read_png(path);
  REQUIRE(im.width == 320);
  REQUIRE(im.height == 240);
  REQUIRE(im.channels == 3);
  const PlotLayout l = plot_layout(opt);
  // The axes: the plot area's left column and bottom row are black along their whole length.
  for (int y = l.top; y <= l.bottom; y += 7) CHECK(pixel(im, l.left, y) == kBlack);
  for (int x = l.left; x <= l.right; x += 7) CHECK(pixel(im, x, l.bottom) == kBlack);
  // Outside the axes (the top-left corner) stays white.
  CHECK(pixel(im, 0, 0) == kWhite);
  // Both series are drawn in their own, distinct colour; the lines cross the plot's middle.
  CHECK(series_color(0) != series_color(1));
  CHECK(has_color(im, series_color(0)));
  CHECK(has_color(im, series_color(1)));
  // The rising series' first point is bottom-left: (l.left, l.bottom - 5% pad) in its colour
  // somewhere near it; the falling one's is top-left.
  bool near_rising = false, near_falling = false;
  const int pad = static_cast<int>((l.bottom - l.top) * 0.05 / 1.1) + 1;
  for (int dy = -3; dy <= 3; ++dy)
    for (int dx = 1; dx <= 3; ++dx) {
      near_rising |= pixel(im, l.left + dx, l.bottom - pad + dy) == series_color(0);
      near_falling |= pixel(im, l.left + dx, l.top + pad + dy) == series_color(1);
    }
  CHECK(near_rising);
  CHECK(near_falling);
  // Tick labels are drawn in black to the left of the y axis.
  bool text_left = false;
  for (int y = l.top; y <= l.bottom && !text_left; ++y)
    for (int x = 0; x < l.left - 4; ++x) text_left |= pixel(im, x, y) == kBlack;
  CHECK(text_left);
  std::filesystem::remove_all(dir);
}

TEST_CASE("viz: plot errors name the problem", "[train][viz]") {
  using namespace nddr::viz;
  Series bad{"bad", {0, 1}, {1.0}, series_color(0)};
  CHECK_THROWS_WITH(render_line_plot({bad}), Catch::Contains("'bad'") && Catch::Contains("2 x values"));
  CHECK_THROWS_AS(render_line_plot({}, PlotOptions{}.size(30, 30)), nddr::OptionError);
  // Non-finite points are skipped, an empty plot still renders.
  Series gap{"gap", {0, 1, 2}, {1.0, NAN, 2.0}, series_color(2)};
  CHECK(render_line_plot({gap}).width == 640);
  CHECK(render_line_plot({}).height == 400);
}

TEST_CASE("viz: the ticks are nice numbers covering the range", "[train][viz]") {
  const auto t = nddr::viz::detail::nice_ticks(0.0, 1.0);
  REQUIRE(t.size() == 6);
  CHECK(t.front() == 0.0);
  CHECK(t.back() == Approx(1.0));
  CHECK(t[1] == Approx(0.2));
  const auto u = nddr::viz::detail::nice_ticks(13.0, 87.0);
  CHECK(u.front() == Approx(20.0));
  CHECK(u.back() == Approx(80.0));
  CHECK(nddr::viz::detail::tick_label(0.25) == "0.25");
  CHECK(nddr::viz::detail::tick_label(1500.0) == "1500");
}

TEST_CASE("viz: colour maps", "[train][viz]") {
  using namespace nddr::viz;
  std::set<std::tuple<int, int, int>> colours;
  for (int i = 0; i < 12; ++i) {
    const Rgb c = segmentation_color(i);
    colours.insert({c.r, c.g, c.b});
  }
  CHECK(colours.size() == 12);
  CHECK(segmentation_color(255) == kBlack);
  CHECK_THROWS_WITH(segmentation_color(12), Catch::Contains("label 12"));
  CHECK(normal_color(0, 0, 1) == Rgb{128, 128, 255});
  CHECK(normal_color(-1, 1, 0) == Rgb{0, 255, 128});
  CHECK(normal_color(2, -2, 0.5) == Rgb{255, 0, 191});

  nddr::Tensor<std::int32_t> labels(nddr::Shape{2, 3});
  for (int i = 0; i < 6; ++i) labels[i] = i;
  const auto seg = upscale_nearest(segmentation_image(labels.cview()), 4);
  REQUIRE(seg.width == 12);
  REQUIRE(seg.height == 8);
  CHECK(pixel(seg, 3, 3) == segmentation_color(0));
  CHECK(pixel(seg, 11, 7) == segmentation_color(5));
  nddr::Tensor<float> n(nddr::Shape{3, 1, 2});
  n[4] = 1.0f;  // pixel 0: (0, 0, 1)
  n[1] = 1.0f;  // pixel 1: (1, 0, 0)
  const auto nim = normal_image(n.cview());
  CHECK(pixel(nim, 0, 0) == Rgb{128, 128, 255});
  CHECK(pixel(nim, 1, 0) == Rgb{255, 128, 128});
  const auto row = hconcat({seg, nim}, 2);
  CHECK(row.width == 12 + 2 + 2);
  CHECK(row.height == 8);
  CHECK_THROWS_AS(segmentation_image(nddr::Tensor<std::int32_t>(nddr::Shape{2}).cview()),
                  nddr::ShapeError);
}

TEST_CASE("viz: run_demo end to end on tiny settings", "[train][viz][demo]") {
  if (!nddr::data::FashionMnist::available()) {
    WARN("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); skipping");
    return;
  }
  const auto dir = temp_dir("demo");
  nddr::viz::DemoOptions o = nddr::viz::DemoOptions::quick();
  o.steps = 20;
  o.batch = 4;
  o.train_samples = 64;
  o.test_samples = 8;
  o.canvas = 32;
  o.log_every = 10;
  o.progress = false;
  o.output_dir = dir.string();
  std::ostringstream log;
  const auto r = nddr::viz::run_demo(o, log);
  REQUIRE(r.rows.size() == 6);
  CHECK(r.rows[0].method == "single-task seg");
  CHECK(r.rows[4].method == "NDDR");
  CHECK(std::isfinite(r.rows[0].metric("mIoU")));
  CHECK(std::isnan(r.rows[0].metric("Mean")));
  CHECK(std::isfinite(r.rows[1].metric("Median")));
  for (std::size_t i = 2; i < 6; ++i) {
    for (const auto& c : nddr::viz::demo_metric_columns()) CHECK(std::isfinite(r.rows[i].metric(c)));
    CHECK(std::isfinite(r.rows[i].delta_m));
    CHECK(r.rows[i].losses.size() == 2);
    CHECK(r.rows[i].losses[0].second.size() == 20);
  }
  CHECK_THAT(r.table, Catch::Contains("| NDDR-Shortcut |") && Catch::Contains("task-balanced"));
  CHECK_THAT(log.str(), Catch::Contains("| method |"));
  int lines = 0;
  std::ifstream csv(r.results_csv);
  for (std::string line; std::getline(csv, line);) ++lines;
  CHECK(lines == 7);
  const auto curves = nddr::io::read_png(r.loss_curves_png.string());
  CHECK(curves.width > 640);
  const auto preds = nddr::io::read_png(r.predictions_png.string());
  CHECK(preds.width == 5 * 4 * 32 + 4 * 4);
  CHECK(preds.height == 4 * 4 * 32 + 3 * 4);
  CHECK(std::filesystem::exists(dir / "runs" / "nddr" / "log.csv"));
  CHECK(std::filesystem::exists(dir / "runs" / "single_seg" / "log.jsonl"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("viz: run_demo --seeds reports mean and std over the seeds", "[train][viz][demo]") {
  if (!nddr::data::FashionMnist::available()) {
    WARN("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); skipping");
    return;
  }
  const auto dir = temp_dir("demo_seeds");
  nddr::viz::DemoOptions o = nddr::viz::DemoOptions::quick();
  o.threads = 1;
  o.steps = 4;
  o.batch = 2;
  o.train_samples = 16;
  o.test_samples = 4;
  o.canvas = 28;
  o.log_every = 2;
  o.progress = false;
  o.output_dir = dir.string();
  o.seed = 7;
  o.seeds = 2;
  std::ostringstream log;
  const auto r = nddr::viz::run_demo(o, log);
  REQUIRE(r.per_seed.size() == 2);
  REQUIRE(r.rows.size() == 6);
  REQUIRE(r.stds.size() == 6);
  // Each seed is a run of its own: the same as one run from that seed alone (first seed only,
  // to keep the test short).
  for (std::size_t i = 0; i < 6; ++i) {
    INFO(r.rows[i].method);
    const auto& a = r.per_seed[0][i];
    const auto& b = r.per_seed[1][i];
    for (const auto& c : nddr::viz::demo_metric_columns()) {
      const double x = a.metric(c), y = b.metric(c);
      if (!std::isfinite(x)) {
        CHECK(std::isnan(r.rows[i].metric(c)));
        continue;
      }
      CHECK(r.rows[i].metric(c) == Approx((x + y) / 2));
      CHECK(r.stds[i].metric(c) == Approx(std::abs(x - y) / std::sqrt(2.0)).margin(1e-12));
    }
    if (i >= 2) {
      CHECK(r.rows[i].delta_m == Approx((a.delta_m + b.delta_m) / 2));
      CHECK(r.stds[i].delta_m == Approx(std::abs(a.delta_m - b.delta_m) / std::sqrt(2.0)));
    } else {
      CHECK(std::isnan(r.rows[i].delta_m));
    }
  }
  // The seeds differ (data, order and initialisation): so do their results.
  CHECK(r.per_seed[0][4].metric("mIoU") != r.per_seed[1][4].metric("mIoU"));
  CHECK_THAT(r.table, Catch::Contains(" ± ") &&
                          Catch::Contains("over 2 seeds (7 to 8") && Catch::Contains("| NDDR |"));
  CHECK_THAT(log.str(), Catch::Contains("seed 7 (1 of 2)") && Catch::Contains("seed 8 (2 of 2)"));
  std::ifstream csv(r.results_csv);
  std::string header;
  std::getline(csv, header);
  CHECK(header ==
        "method,mIoU_mean,mIoU_std,PixelAcc_mean,PixelAcc_std,Mean_mean,Mean_std,Median_mean,"
        "Median_std,11.25_mean,11.25_std,22.5_mean,22.5_std,30_mean,30_std,"
        "delta_m_percent_mean,delta_m_percent_std,train_seconds_mean");
  int lines = 1;
  for (std::string line; std::getline(csv, line);) ++lines;
  CHECK(lines == 7);
  std::ifstream per(dir / "results_per_seed.csv");
  int per_lines = 0;
  for (std::string line; std::getline(per, line);) ++per_lines;
  CHECK(per_lines == 13);
  CHECK(std::filesystem::exists(dir / "runs" / "nddr_seed8" / "log.csv"));
  CHECK(std::filesystem::exists(dir / "predictions.png"));
  std::filesystem::remove_all(dir);
  o.seeds = 0;
  CHECK_THROWS_WITH(nddr::viz::run_demo(o, log), Catch::Contains("seeds is 0, expected 1 to 100"));
}

TEST_CASE("viz: run_demo names the missing package and bad options", "[train][viz][demo]") {
  nddr::viz::DemoOptions o;
  o.data_dir = "/nonexistent/fashion";
  o.output_dir = temp_dir("missing").string();
  std::ostringstream log;
  CHECK_THROWS_WITH(nddr::viz::run_demo(o, log), Catch::Contains("dataset-fashion-mnist"));
  o.steps = 0;
  CHECK_THROWS_WITH(nddr::viz::run_demo(o, log), Catch::Contains("steps is 0"));
  o.steps = 10;
  o.device = "gpu0";
  CHECK_THROWS_WITH(nddr::viz::run_demo(o, log), Catch::Contains("cpu, cuda or cuda:N"));
#if !defined(NDDR_WITH_CUDA)
  o.device = "cuda:1";
  CHECK_THROWS_AS(nddr::viz::run_demo(o, log), nddr::DeviceError);
  CHECK_THROWS_WITH(nddr::viz::run_demo(o, log), Catch::Contains("no CUDA backend"));
#endif
  std::filesystem::remove_all(o.output_dir);
}

TEST_CASE("viz: run_demo --weightings adds one NDDR row per method with its peak memory",
          "[train][viz][demo]") {
  if (!nddr::data::FashionMnist::available()) {
    WARN("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); skipping");
    return;
  }
  const auto dir = temp_dir("demo_weightings");
  nddr::viz::DemoOptions o = nddr::viz::DemoOptions::quick();
  o.threads = 1;
  o.steps = 4;
  o.batch = 2;
  o.train_samples = 16;
  o.test_samples = 4;
  o.canvas = 28;
  o.log_every = 2;
  o.progress = false;
  o.output_dir = dir.string();
  o.weightings = nddr::viz::parse_weightings(
      "ew,uw,dwa,gradnorm:alpha=1.5,rlw,pcgrad,mgda,cagrad:c=0.4,rescale=1,imtl,aligned");
  REQUIRE(o.weightings.size() == 10);
  CHECK(o.weightings[3] == "gradnorm:alpha=1.5");
  CHECK(o.weightings[7] == "cagrad:c=0.4,rescale=1");
  std::ostringstream log;
  const auto r = nddr::viz::run_demo(o, log);
  REQUIRE(r.rows.size() == 16);
  for (std::size_t i = 0; i < 16; ++i) {
    INFO(r.rows[i].method);
    CHECK(r.rows[i].peak_mib > 0.0);
    if (i < 6) continue;
    CHECK(r.rows[i].method == "NDDR + " + o.weightings[i - 6]);
    for (const auto& c : nddr::viz::demo_metric_columns())
      CHECK(std::isfinite(r.rows[i].metric(c)));
    CHECK(std::isfinite(r.rows[i].delta_m));
    REQUIRE(r.rows[i].losses.size() == 2);
    for (const auto& [task, l] : r.rows[i].losses) {
      CHECK(l.size() == 4);
      for (double v : l) CHECK(std::isfinite(v));
    }
  }
  // The methods train differently: EW's and MGDA's runs end apart.
  CHECK(r.rows[6].metric("Mean") != r.rows[12].metric("Mean"));
  CHECK_THAT(r.table, Catch::Contains("| NDDR + aligned |") &&
                          Catch::Contains("peak memory (MiB) |") &&
                          Catch::Contains("| NDDR + cagrad:c=0.4,rescale=1 |"));
  std::ifstream csv(r.results_csv);
  std::string header;
  std::getline(csv, header);
  CHECK(header == "method,mIoU,PixelAcc,Mean,Median,11.25,22.5,30,delta_m_percent,"
                  "train_seconds,peak_mib");
  int lines = 1;
  for (std::string line; std::getline(csv, line);) ++lines;
  CHECK(lines == 17);
  CHECK(std::filesystem::exists(dir / "runs" / "nddr_cagrad_c_0_4_rescale_1" / "log.csv"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("viz: --weightings lists are checked against the weighting registry",
          "[train][viz][demo]") {
  using nddr::viz::parse_weightings;
  CHECK(parse_weightings("mgda") == std::vector<std::string>{"mgda"});
  CHECK(parse_weightings("ew,cagrad:c=0.4,rescale=1,dwa:T=3") ==
        std::vector<std::string>{"ew", "cagrad:c=0.4,rescale=1", "dwa:T=3"});
  const auto message = [](const std::string& list) {
    try {
      (void)parse_weightings(list);
    } catch (const nddr::OptionError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  using Catch::Matchers::Contains;
  CHECK_THAT(message("ew,bogus"), Contains("--weightings: unknown method 'bogus'") &&
                                      Contains("valid: ew, dwa, uw, gradnorm, rlw, mgda"));
  CHECK_THAT(message("ew,"), Contains("an empty method name"));
  CHECK_THAT(message(",ew"), Contains("an empty method name"));
  CHECK_THAT(message("cagrad:c=0.4,"), Contains("an empty method name"));
  CHECK_THAT(message("ew,ew"), Contains("'ew' is listed twice"));
  CHECK_THAT(message("cagrad:c=x"), Contains("not a finite number"));
  CHECK_THAT(message("x=1"), Contains("unknown method 'x=1'"));
  nddr::viz::DemoOptions o;
  o.weightings = {"pcgrad", "PCGrad"};
  CHECK_THROWS_WITH(o.validate(), Contains("unknown weighting method 'PCGrad'"));
}
