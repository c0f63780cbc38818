// The experiment binaries' logic: the CLI parser, nddr-nyuv2 on a tiny synthetic NYUv2-format
// dataset (st-seg, mt, nddr + shortcut, checkpoint + resume, errors) and an IMDB-WIKI smoke run.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "nddr/io/png.hpp"
#include "../support/nyu_fixture.hpp"
#include "nddr/train/cli.hpp"
#include "nddr/train/imdb_experiment.hpp"
#include "nddr/train/nyuv2_experiment.hpp"

namespace fs = std::filesystem;
using Catch::Contains;
namespace ex = nddr::experiments;

using nddr_test::image8;
using nddr_test::write_nyu;
using nddr_test::write_text;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag)
      : path(fs::temp_directory_path() / ("nddr_exp_" + tag + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

/// A smoke configuration: TinyNet, crop 33, batch 2, 3 steps, quiet.
ex::NyuV2Config smoke(const fs::path& data, const fs::path& out, const std::string& method) {
  auto c = ex::parse_nyuv2_args({"--data-dir", data.string(), "--method", method, "--backbone",
                                 "tiny", "--crop", "33", "--batch", "2", "--steps", "3",
                                 "--threads", "2", "--loader-threads", "1", "--quiet",
                                 "--output-dir", out.string(), "--log-every", "1"});
  REQUIRE(c.has_value());
  return *c;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("ArgParser: values, types, switches, errors and help", "[train][experiments]") {
  nddr::cli::ArgParser p("prog", "A test program.");
  p.option("steps", "10", "steps").option("lr", "0.5", "rate").option("name", "x", "a name");
  p.option("scales", "1,20", "scales").flag("resume", "resume");

  SECTION("defaults") {
    p.parse(std::vector<std::string>{});
    CHECK(p.get_int("steps") == 10);
    CHECK(p.get_double("lr") == 0.5);
    CHECK(p.get_doubles("scales") == std::vector<double>{1.0, 20.0});
    CHECK_FALSE(p.get_bool("resume"));
    CHECK_FALSE(p.given("steps"));
    CHECK_FALSE(p.help_requested());
  }
  SECTION("both spellings and switches") {
    p.parse(std::vector<std::string>{"--steps", "7", "--lr=1e-3", "--name=a=b", "--resume",
                                     "--scales", "0.5"});
    CHECK(p.get_int("steps") == 7);
    CHECK(p.get_double("lr") == 1e-3);
    CHECK(p.get_string("name") == "a=b");
    CHECK(p.get_bool("resume"));
    CHECK(p.given("steps"));
    CHECK(p.get_doubles("scales") == std::vector<double>{0.5});
  }
  SECTION("explicit switch value") {
    p.parse(std::vector<std::string>{"--resume=false"});
    CHECK_FALSE(p.get_bool("resume"));
  }
  SECTION("unknown flag lists the valid ones") {
    CHECK_THROWS_AS(p.parse(std::vector<std::string>{"--stpes", "3"}), nddr::OptionError);
    CHECK_THROWS_WITH(p.parse(std::vector<std::string>{"--stpes", "3"}),
                      Contains("unknown flag '--stpes'") && Contains("--steps") &&
                          Contains("--resume") && Contains("--help"));
  }
  SECTION("wrong types and missing values") {
    p.parse(std::vector<std::string>{"--steps", "3x", "--lr", "fast", "--scales", "1,,2"});
    CHECK_THROWS_WITH(p.get_int("steps"), Contains("--steps needs an integer") && Contains("3x"));
    CHECK_THROWS_WITH(p.get_double("lr"), Contains("--lr needs a number") && Contains("fast"));
    CHECK_THROWS_WITH(p.get_doubles("scales"), Contains("--scales needs a number"));
    CHECK_THROWS_WITH(p.parse(std::vector<std::string>{"--lr"}), Contains("--lr needs a value"));
    CHECK_THROWS_WITH(p.parse(std::vector<std::string>{"--resume=maybe"}), Contains("--resume"));
    CHECK_THROWS_WITH(p.parse(std::vector<std::string>{"steps"}), Contains("unexpected argument"));
  }
  SECTION("help") {
    p.parse(std::vector<std::string>{"--help"});
    CHECK(p.help_requested());
    const std::string h = p.help();
    CHECK_THAT(h, Contains("Usage: prog") && Contains("--steps <value>") &&
                      Contains("(default: 10)") && Contains("--resume") && Contains("A test program."));
  }
}

TEST_CASE("nddr-nyuv2 flags: help, defaults and the paper's values", "[train][experiments]") {
  std::ostringstream help;
  CHECK_FALSE(ex::parse_nyuv2_args({"--help"}, &help).has_value());
  CHECK_THAT(help.str(), Contains("--data-dir") && Contains("--init-weights-task1") &&
                             Contains("--shortcut") && Contains("--nddr-lr-mult"));
  const auto c = ex::parse_nyuv2_args({"--data-dir", "d"});
  REQUIRE(c);
  CHECK(c->method == "nddr");
  CHECK(c->steps == 20001);
  CHECK(c->batch == 10);
  CHECK(c->crop == 321);
  CHECK(c->lr == 1e-3);
  CHECK(c->nddr_lr_mult == 100.0);
  CHECK(c->seed == 1234u);
  CHECK(c->weight_decay < 0);  // the per-method paper default
  CHECK(c->device == "cpu");
  CHECK_FALSE(c->cuda_graph);
  const auto g = ex::parse_nyuv2_args({"--data-dir", "d", "--device", "cuda:1", "--cuda-graph"});
  REQUIRE(g);
  CHECK(g->device == "cuda:1");
  CHECK(g->cuda_graph);
  CHECK_THAT(help.str(), Contains("--cuda-graph") && Contains("--device"));
  // GPU convolution settings: parsed, listed in --help, refused with a CPU device.
  CHECK_FALSE((c->tf32 || c->bf16 || c->cudnn_benchmark || c->deterministic));
  const auto t = ex::parse_nyuv2_args(
      {"--data-dir", "d", "--device", "cuda", "--tf32", "--cudnn-benchmark", "--deterministic"});
  REQUIRE(t);
  CHECK((t->tf32 && t->cudnn_benchmark && t->deterministic));
  CHECK_FALSE(t->bf16);
  CHECK_THAT(help.str(), Contains("--tf32") && Contains("--bf16") &&
                             Contains("--cudnn-benchmark") && Contains("--deterministic"));
  auto both = *ex::parse_nyuv2_args({"--data-dir", "d", "--device", "cuda", "--tf32", "--bf16"});
  CHECK(both.bf16);
  CHECK_THROWS_WITH(ex::validate_common(both),
                    Contains("--tf32 and --bf16 choose the convolutions' precision"));
  // --bf16 also runs on the CPU (an emulation of the GPU's numerics).
  CHECK_NOTHROW(ex::validate_common(*ex::parse_nyuv2_args({"--data-dir", "d", "--bf16"})));
  auto on_cpu = *ex::parse_nyuv2_args({"--data-dir", "d", "--cudnn-benchmark"});
  CHECK_THROWS_WITH(ex::validate_common(on_cpu),
                    Contains("--cudnn-benchmark sets how GPU convolutions run") &&
                        Contains("needs --device cuda[:N], got --device cpu"));
  CHECK_THROWS_WITH(ex::parse_nyuv2_args({"--data-dir", "d", "--bogus", "1"}),
                    Contains("unknown flag '--bogus'") && Contains("--data-dir"));
  CHECK_THROWS_WITH(ex::parse_fusion_init("p", "0.9;0.1"), Contains("--init must be"));
  const auto x = ex::parse_fusion_init("p", "0.5,0.25");
  CHECK(x.alpha == 0.5);
  CHECK(x.beta == 0.25);
  CHECK(ex::parse_fusion_init("p", "xavier").xavier);
}

TEST_CASE("nddr-nyuv2: st-seg, mt and nddr + shortcut train, evaluate and write results",
          "[train][experiments]") {
  TempDir tmp("nyu");
  write_nyu(tmp.path / "nyu");
  for (const std::string method : {"st-seg", "mt", "nddr"}) {
    auto c = smoke(tmp.path / "nyu", tmp.path / ("out_" + method), method);
    c.shortcut = method == "nddr";
    std::ostringstream out;
    const auto r = ex::run_nyuv2_with<nddr::TinyNet>(c, out);
    INFO(method << "\n" << out.str());
    CHECK(r.steps == 3);
    REQUIRE(r.row.size() == 7);
    CHECK_THAT(out.str(), Contains("| Method | Mean | Median | 11.25 | 22.5 | 30 | mIoU | PAcc |"));
    CHECK_THAT(out.str(), Contains("| " + r.label + " |"));
    for (std::size_t i = 5; i < 7; ++i) CHECK(std::isfinite(r.row[i]));  // mIoU, PAcc
    for (std::size_t i = 0; i < 5; ++i) CHECK(std::isfinite(r.row[i]) == (method != "st-seg"));
    if (method != "st-seg") {
      CHECK(r.row[0] >= 0.0);
      CHECK(r.row[0] <= 180.0);
    }
    const fs::path dir = tmp.path / ("out_" + method);
    CHECK_THAT(read_file(dir / "results.csv"), Contains("method,Mean,Median,11.25,22.5,30,mIoU,PAcc"));
    const std::string json = read_file(dir / "results.json");
    CHECK_THAT(json, Contains("\"method\": \"" + method + "\"") && Contains("\"mIoU\"") &&
                         Contains("\"steps\": 3"));
    CHECK(fs::exists(dir / "checkpoints" / "ckpt-0000000003.safetensors"));
    CHECK(fs::exists(dir / "log.csv"));
  }
  CHECK_THAT(ex::nyuv2_label(smoke(tmp.path / "nyu", tmp.path, "nddr")), Contains("NDDR"));
}

TEST_CASE("nddr-nyuv2: --resume continues from the saved step; eval-only trains nothing",
          "[train][experiments]") {
  TempDir tmp("nyu_resume");
  write_nyu(tmp.path / "nyu");
  auto c = smoke(tmp.path / "nyu", tmp.path / "out", "nddr");
  c.steps = 2;
  std::ostringstream first;
  CHECK(ex::run_nyuv2_with<nddr::TinyNet>(c, first).steps == 2);

  c.steps = 4;
  c.resume = true;
  std::ostringstream second;
  const auto r = ex::run_nyuv2_with<nddr::TinyNet>(c, second);
  CHECK_THAT(second.str(), Contains("resumed from step 2"));
  CHECK(r.steps == 4);
  CHECK(fs::exists(tmp.path / "out" / "checkpoints" / "ckpt-0000000004.safetensors"));
  // the log continues at step 3 instead of restarting at 1
  const std::string log = read_file(tmp.path / "out" / "log.csv");
  CHECK_THAT(log, Contains("\n3,") && Contains("\n4,"));

  c.eval_only = true;
  c.steps = 10;
  std::ostringstream third;
  CHECK(ex::run_nyuv2_with<nddr::TinyNet>(c, third).steps == 4);

  // NDDR-CNN's init: a seg network's column task0 -> column 0, a single-task normal
  // checkpoint's column task0 -> column 1
  auto n = smoke(tmp.path / "nyu", tmp.path / "st_normal", "st-normal");
  n.steps = 1;
  std::ostringstream st;
  ex::run_nyuv2_with<nddr::TinyNet>(n, st);
  auto i = smoke(tmp.path / "nyu", tmp.path / "init", "nddr");
  i.steps = 0;
  i.init_weights_task0 = (tmp.path / "out" / "checkpoints" / "ckpt-0000000004.safetensors").string();
  i.init_weights_task1 =
      (tmp.path / "st_normal" / "checkpoints" / "ckpt-0000000001.safetensors").string();
  std::ostringstream fourth;
  ex::run_nyuv2_with<nddr::TinyNet>(i, fourth);
  CHECK_THAT(fourth.str(), Contains("loaded ") && Contains("ckpt-0000000004") &&
                               Contains("ckpt-0000000001"));
  // a seg column does not fit the normal column: the shape error names the tensor
  i.init_weights_task1 = i.init_weights_task0;
  CHECK_THROWS_WITH(ex::run_nyuv2_with<nddr::TinyNet>(i, fourth), Contains("task1.head.fc8"));
}

TEST_CASE("nddr-nyuv2: clear errors for CUDA, bad paths and bad flags", "[train][experiments]") {
  TempDir tmp("nyu_err");
  write_nyu(tmp.path / "nyu");
  auto c = smoke(tmp.path / "nyu", tmp.path / "out", "nddr");
  std::ostringstream out;
  SECTION("cuda") {
    c.device = "cuda:0";
    CHECK_THROWS_AS(ex::run_nyuv2_with<nddr::TinyNet>(c, out), nddr::DeviceError);
    CHECK_THROWS_WITH(ex::run_nyuv2_with<nddr::TinyNet>(c, out),
                      Contains("--device cuda:0") && Contains("CUDA"));
    c.device = "gpu";
    CHECK_THROWS_WITH(ex::run_nyuv2_with<nddr::TinyNet>(c, out), Contains("cpu, cuda or cuda:N"));
  }
  SECTION("missing data dir names the path") {
    c.data_dir = (tmp.path / "nowhere").string();
    CHECK_THROWS_AS(ex::run_nyuv2_with<nddr::TinyNet>(c, out), nddr::IoError);
    CHECK_THROWS_WITH(ex::run_nyuv2_with<nddr::TinyNet>(c, out), Contains(c.data_dir));
  }
  SECTION("data dir without lists") {
    c.data_dir = (tmp.path / "nyu" / "data").string();
    CHECK_THROWS_WITH(ex::run_nyuv2_with<nddr::TinyNet>(c, out),
                      Contains(c.data_dir) && Contains("list/"));
  }
  SECTION("bad method, backbone, init") {
    c.method = "nddr2";
    CHECK_THROWS_WITH(ex::run_nyuv2(c, out), Contains("--method") && Contains("nddr2"));
    c.method = "nddr";
    c.backbone = "resnet";
    CHECK_THROWS_WITH(ex::run_nyuv2(c, out), Contains("--backbone") && Contains("resnet"));
    c.backbone = "tiny";
    c.method = "sluice";
    c.init = "xavier";
    CHECK_THROWS_WITH(ex::run_nyuv2_with<nddr::TinyNet>(c, out), Contains("NDDR layer only"));
  }
  SECTION("missing weight file") {
    c.init_weights_task0 = (tmp.path / "st_seg.safetensors").string();
    CHECK_THROWS_WITH(ex::run_nyuv2_with<nddr::TinyNet>(c, out),
                      Contains("st_seg.safetensors") && Contains("does not exist"));
  }
}

TEST_CASE("nddr-imdb-wiki: smoke run on generated faces", "[train][experiments]") {
  TempDir tmp("imdb");
  std::string list;
  for (int s = 0; s < 6; ++s) {
    auto img = image8(20 + s, 18, 3);
    for (std::size_t i = 0; i < img.pixels.size(); ++i)
      img.pixels[i] = static_cast<std::uint8_t>((i * 7 + static_cast<std::size_t>(s) * 31) % 256);
    const std::string name = "face" + std::to_string(s) + ".png";
    nddr::io::write_png((tmp.path / name).string(), img);
    list += name + " " + std::to_string(20 + 7 * s) + " " + std::to_string(s % 2) + "\n";
  }
  write_text(tmp.path / "train.txt", list);
  write_text(tmp.path / "test.txt", list);
  std::ostringstream help;
  CHECK_FALSE(ex::parse_imdb_args({"--help"}, &help));
  CHECK_THAT(help.str(), Contains("--train-list") && Contains("--image-size"));
  auto c = ex::parse_imdb_args({"--train-list", (tmp.path / "train.txt").string(), "--test-list",
                                (tmp.path / "test.txt").string(), "--image-root",
                                tmp.path.string(), "--backbone", "tiny", "--image-size", "24",
                                "--steps", "2", "--batch", "3", "--threads", "2", "--quiet",
                                "--output-dir", (tmp.path / "out").string()});
  REQUIRE(c);
  std::ostringstream out;
  const auto r = ex::run_imdb(*c, out);
  INFO(out.str());
  CHECK(r.steps == 2);
  CHECK_THAT(out.str(), Contains("| Method | Age Mean AE | Age Median AE | Gender Acc |") &&
                            Contains("| NDDR (ours) |"));
  REQUIRE(r.row.size() == 3);
  for (double v : r.row) CHECK(std::isfinite(v));
  CHECK(r.row[2] >= 0.0);
  CHECK(r.row[2] <= 100.0);
  CHECK(fs::exists(tmp.path / "out" / "results.json"));
  c->backbone = "vgg16";
  CHECK_THROWS_WITH(ex::run_imdb(*c, out), Contains("--image-size 224"));
  c->test_list = (tmp.path / "missing.txt").string();
  CHECK_THROWS_WITH(ex::run_imdb(*c, out), Contains("missing.txt"));
}
