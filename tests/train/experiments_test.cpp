// The experiment binaries' logic: their flags, nddr-nyuv2 on a tiny synthetic NYUv2-format
// dataset (st-seg, mt, nddr + shortcut, checkpoint + resume, errors) and an IMDB-WIKI smoke run.
#include <catch2/catch.hpp>

#include <boost/hana.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nddr/io/png.hpp"
#include "nddr/io/tf_weights.hpp"
#include "nddr/io/weights.hpp"
#include "../support/files.hpp"
#include "../support/tf_bundle.hpp"
#include "../support/nyu_fixture.hpp"
#include "../support/process.hpp"
#include "nddr_apps/cli.hpp"
#include "nddr_apps/imdb_experiment.hpp"
#include "nddr_apps/nyuv2_experiment.hpp"

#if defined(NDDR_WITH_CUDA)
#include "nddr/cuda.hpp"  // cuda_device_count
#endif

namespace fs = std::filesystem;
using Catch::Contains;
using Catch::StartsWith;
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

TEST_CASE("nddr-nyuv2 flags: help, defaults and the paper's values", "[train][experiments]") {
  std::ostringstream help;
  CHECK_FALSE(ex::parse_nyuv2_args({"--help"}, &help).has_value());
  CHECK_THAT(help.str(), Contains("--data-dir") && Contains("--init-weights-task1") &&
                             Contains("--shortcut") && Contains("--nddr-lr-mult") &&
                             Contains("--check-data DIR"));
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
  // Rules that join flags are usage errors at parse time; validate_common checks the same for
  // configurations built in code.
  CHECK_THROWS_WITH(
      ex::parse_nyuv2_args({"--data-dir", "d", "--device", "cuda", "--tf32", "--bf16"}),
      "nddr-nyuv2: --bf16: expected no --tf32 with it (both set the convolutions' precision), "
      "got '--tf32 --bf16'");
  auto both = *ex::parse_nyuv2_args({"--data-dir", "d", "--device", "cuda", "--tf32"});
  both.bf16 = true;
  CHECK_THROWS_WITH(ex::validate_common(both),
                    Contains("--tf32 and --bf16 choose the convolutions' precision"));
  // --bf16 also runs on the CPU (an emulation of the GPU's numerics).
  CHECK_NOTHROW(ex::validate_common(*ex::parse_nyuv2_args({"--data-dir", "d", "--bf16"})));
  CHECK_THROWS_WITH(ex::parse_nyuv2_args({"--data-dir", "d", "--cudnn-benchmark"}),
                    "nddr-nyuv2: --cudnn-benchmark: expected --device cuda[:N] with it (it sets "
                    "how GPU convolutions run), got '--device cpu'");
  auto on_cpu = *ex::parse_nyuv2_args({"--data-dir", "d"});
  on_cpu.cudnn_benchmark = true;
  CHECK_THROWS_WITH(ex::validate_common(on_cpu),
                    Contains("--cudnn-benchmark sets how GPU convolutions run") &&
                        Contains("needs --device cuda[:N], got --device cpu"));
  CHECK_THROWS_AS(ex::parse_nyuv2_args({"--data-dir", "d", "--bogus", "1"}), nddr::cli::UsageError);
  CHECK_THROWS_WITH(ex::parse_nyuv2_args({"--data-dir", "d", "--bogus", "1"}),
                    "nddr-nyuv2: unknown flag '--bogus' (--help lists the flags)");
  CHECK_THROWS_WITH(ex::parse_fusion_init("p", "0.9;0.1"),
                    "p: --init: expected 'alpha,beta' (e.g. 0.9,0.1) or 'xavier', got '0.9;0.1'");
  CHECK_THROWS_WITH(ex::parse_fusion_init("p", "nan,0.1"), Contains("--init: expected"));
}

TEST_CASE("nddr-nyuv2 and nddr-imdb-wiki: bad flags are usage errors naming the flag",
          "[train][experiments]") {
  const auto nyu_error = [](std::vector<std::string> args) -> std::string {
    args.insert(args.begin(), {"--data-dir", "d"});
    try {
      ex::parse_nyuv2_args(args);
    } catch (const nddr::cli::UsageError& e) {
      return e.what();
    }
    return "";
  };
  CHECK(nyu_error({"--seed", "-1"}) == "nddr-nyuv2: --seed: expected an integer >= 0, got '-1'");
  CHECK(nyu_error({"--threads", "4294967297"}) ==
        "nddr-nyuv2: --threads: expected an integer in [0, 1024], got '4294967297'");
  CHECK(nyu_error({"--loader-threads", "100000"}) ==
        "nddr-nyuv2: --loader-threads: expected an integer in [0, 256], got '100000'");
  CHECK(nyu_error({"--batch", "100000000"}) ==
        "nddr-nyuv2: --batch: expected an integer in [1, 4096], got '100000000'");
  CHECK(nyu_error({"--crop", "100000"}) ==
        "nddr-nyuv2: --crop: expected an integer in [1, 2048], got '100000'");
  for (const char* flag : {"--eval-limit", "--log-every", "--checkpoint-every", "--steps"})
    CHECK_THAT(nyu_error({flag, "-1"}), StartsWith(std::string("nddr-nyuv2: ") + flag +
                                                   ": expected an integer >= 0, got '-1'"));
  CHECK(nyu_error({"--weight-decay", "nan"}) ==
        "nddr-nyuv2: --weight-decay: expected a finite number >= 0, got 'nan'");
  CHECK(nyu_error({"--nddr-lr-mult", "inf"}) ==
        "nddr-nyuv2: --nddr-lr-mult: expected a finite number >= 0, got 'inf'");
  CHECK(nyu_error({"--loss-scales", "1,nan"}) ==
        "nddr-nyuv2: --loss-scales: expected 1 to 2 comma-separated finite numbers >= 0, got "
        "'1,nan'");
  CHECK(nyu_error({"--loss-scales", "1"}) ==
        "nddr-nyuv2: --loss-scales: expected 2 values for --method nddr, got '1'");
  CHECK(nyu_error({"--method", "st-normal", "--loss-scales", "1,10"}).empty());
  CHECK(nyu_error({"--method", "nddr2"}) ==
        "nddr-nyuv2: --method: expected one of st-seg, st-normal, mt, cross-stitch, sluice, "
        "nddr, got 'nddr2'");
  CHECK(nyu_error({"--init", "0.9,inf"}) ==
        "nddr-nyuv2: --init: expected 'alpha,beta' (e.g. 0.9,0.1) or 'xavier', got '0.9,inf'");
  CHECK_THROWS_WITH(ex::parse_nyuv2_args({"--method", "mt"}),
                    "nddr-nyuv2: --data-dir: expected a non-empty path, got nothing");
  const auto w = ex::parse_nyuv2_args({"--data-dir", "d", "--weight-decay", "0", "--quiet",
                                       "--seed", "18446744073709551615"});
  REQUIRE(w);
  CHECK(w->weight_decay == 0.0);
  CHECK_FALSE(w->progress);
  CHECK(w->seed == 18446744073709551615u);

  CHECK_THROWS_WITH(ex::parse_imdb_args({"--test-list", "t"}),
                    "nddr-imdb-wiki: --train-list: expected a non-empty path, got nothing");
  CHECK_THROWS_WITH(
      ex::parse_imdb_args({"--train-list", "a", "--test-list", "b", "--image-size", "24"}),
      "nddr-imdb-wiki: --image-size: expected 224 with --backbone vgg16 (the VGG16 classifier's "
      "input), got '24'");
  CHECK_THROWS_WITH(ex::parse_imdb_args({"--train-list", "a", "--test-list", "b", "--method",
                                         "st-age", "--loss-scales", "1,1"}),
                    "nddr-imdb-wiki: --loss-scales: expected 1 value for --method st-age, got "
                    "'1,1'");
  const auto i = ex::parse_imdb_args({"--train-list", "a", "--test-list", "b"});
  REQUIRE(i);
  CHECK(i->init_format == "torchvision");
  CHECK(i->image_size == 224);
  const auto x = ex::parse_fusion_init("p", "0.5,0.25");
  CHECK(x.alpha == 0.5);
  CHECK(x.beta == 0.25);
  CHECK(ex::parse_fusion_init("p", "xavier").xavier);
}

// The laws of method_table.hpp on the two programs' tables.
TEST_CASE("method tables: choices, labels, loss scales and networks come from one table",
          "[train][experiments]") {
  using Names = std::vector<std::string>;
  CHECK(ex::choice_list(ex::kNyuV2Table.methods) ==
        Names{"st-seg", "st-normal", "mt", "cross-stitch", "sluice", "nddr"});
  CHECK(ex::choice_list(ex::kImdbTable.methods) ==
        Names{"st-age", "st-gender", "mt", "cross-stitch", "sluice", "nddr"});
  CHECK(ex::choice_list(ex::kNyuV2Table.backbones) == Names{"vgg16", "tiny", "resnet101"});
  CHECK(ex::one_of_text(ex::kImdbTable.backbones) == "vgg16 or tiny");
  CHECK(ex::method_info(ex::kNyuV2Table, "sluice")->label == "Sluice");
  CHECK(ex::method_info(ex::kImdbTable, "st-gender")->task_count == 1);
  CHECK_FALSE(ex::method_info(ex::kNyuV2Table, "st-age"));
  CHECK(ex::scale_counts_text(ex::kNyuV2Table, 1) == "1 or 2 values (seg,normal)");
  CHECK(ex::scale_counts_text(ex::kImdbTable, 1) == "1 value");
  CHECK(ex::scale_counts_count(ex::kNyuV2Table, 2) == "2");
  CHECK(ex::max_scale_count(ex::kImdbTable) == 2);
  // with_method(t, m.name, f) == f(m), for every method of both tables.
  for (const auto& name : ex::choice_list(ex::kNyuV2Table.methods))
    CHECK(ex::with_method(ex::kNyuV2Table, name,
                          [](const auto& m) { return std::string(m.name); }) == name);
  CHECK_THROWS_WITH(ex::with_method(ex::kImdbTable, "st-seg", [](const auto&) { return 0; }),
                    Contains("'st-seg'"));
  // Loss weights: the defaults, one value per task, or a single task's entry of the full list.
  using W = std::vector<double>;
  const auto weights = [](const std::string& method, const W& s) {
    return ex::with_method(ex::kNyuV2Table, method,
                           [&](const auto& m) { return ex::loss_weights_of(m, s); });
  };
  CHECK(weights("st-seg", {}) == W{1.0});
  CHECK(weights("st-normal", {}) == W{10.0});
  CHECK(weights("nddr", {}) == W{1.0, 20.0});
  CHECK(weights("mt", {2.0, 5.0}) == W{2.0, 5.0});
  CHECK(weights("st-normal", {4.0}) == W{4.0});
  CHECK(weights("st-normal", {3.0, 7.0}) == W{7.0});
  CHECK(weights("st-seg", {3.0, 7.0}) == W{3.0});
  // The networks: one column per task; `mt` shares every stage of the backbone.
  const auto& nyu_mt = boost::hana::at_c<2>(ex::kNyuV2Table.methods);
  CHECK(nyu_mt.name == "mt");
  using NyuMt = std::decay_t<decltype(nyu_mt)>;
  STATIC_REQUIRE(std::is_same_v<NyuMt::spec<nddr::TinyNet>,
                                nddr::MultiTask<nddr::TinyNet, nddr::TinyNet,
                                                nddr::Shared<nddr::stage_count_v<nddr::TinyNet>>>>);
  STATIC_REQUIRE(std::is_same_v<NyuMt::spec<nddr::VGG16, true>,
                                nddr::MultiTask<nddr::VGG16, nddr::VGG16,
                                                nddr::Shortcut<nddr::Shared<5>>>>);
  const auto& st_age = boost::hana::at_c<0>(ex::kImdbTable.methods);
  CHECK(st_age.name == "st-age");
  using StAge = std::decay_t<decltype(st_age)>;
  STATIC_REQUIRE(std::is_same_v<StAge::spec<ex::TinyClassifier>,
                                nddr::MultiTask<ex::TinyClassifier, nddr::None>>);
  STATIC_REQUIRE(std::is_same_v<StAge::tasks, nddr::Tasks<ex::ImdbAge>>);
}

TEST_CASE("nddr-nyuv2: st-seg, mt and nddr + shortcut train, evaluate and write results",
          "[train][experiments]") {
  TempDir tmp("nyu");
  write_nyu(tmp.path / "nyu");
  for (const std::string method : {"st-seg", "mt", "nddr"}) {
    auto c = smoke(tmp.path / "nyu", tmp.path / ("out_" + method), method);
    c.shortcut = method == "nddr";
    std::ostringstream out;
    const auto r = ex::run_nyuv2(c, out);
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

TEST_CASE("nddr-nyuv2: --resume continues from the saved step, eval-only trains nothing",
          "[train][experiments]") {
  TempDir tmp("nyu_resume");
  write_nyu(tmp.path / "nyu");
  auto c = smoke(tmp.path / "nyu", tmp.path / "out", "nddr");
  c.steps = 2;
  std::ostringstream first;
  CHECK(ex::run_nyuv2(c, first).steps == 2);

  c.steps = 4;
  c.resume = true;
  std::ostringstream second;
  const auto r = ex::run_nyuv2(c, second);
  CHECK_THAT(second.str(), Contains("resumed from step 2"));
  CHECK(r.steps == 4);
  CHECK(fs::exists(tmp.path / "out" / "checkpoints" / "ckpt-0000000004.safetensors"));
  // the log continues at step 3 instead of restarting at 1
  const std::string log = read_file(tmp.path / "out" / "log.csv");
  CHECK_THAT(log, Contains("\n3,") && Contains("\n4,"));

  c.eval_only = true;
  c.steps = 10;
  std::ostringstream third;
  CHECK(ex::run_nyuv2(c, third).steps == 4);

  // NDDR-CNN's init: a seg network's column task0 -> column 0, a single-task normal
  // checkpoint's column task0 -> column 1
  auto n = smoke(tmp.path / "nyu", tmp.path / "st_normal", "st-normal");
  n.steps = 1;
  std::ostringstream st;
  ex::run_nyuv2(n, st);
  auto i = smoke(tmp.path / "nyu", tmp.path / "init", "nddr");
  i.steps = 0;
  i.init_weights_task0 = (tmp.path / "out" / "checkpoints" / "ckpt-0000000004.safetensors").string();
  i.init_weights_task1 =
      (tmp.path / "st_normal" / "checkpoints" / "ckpt-0000000001.safetensors").string();
  std::ostringstream fourth;
  ex::run_nyuv2(i, fourth);
  CHECK_THAT(fourth.str(), Contains("loaded ") && Contains("ckpt-0000000004") &&
                               Contains("ckpt-0000000001"));
  // a seg column does not fit the normal column: the shape error names the tensor
  i.init_weights_task1 = i.init_weights_task0;
  CHECK_THROWS_WITH(ex::run_nyuv2(i, fourth), Contains("task1.head.fc8"));
}

namespace {

// One TF float tensor: HWIO shape (or 1-D) and values.
struct TfVar {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};
using TfVars = std::map<std::string, TfVar>;

// Writes `vars` as a TensorFlow V2 bundle with prefix `prefix` (one shard, DT_FLOAT), the way
// tf.compat.v1.train.Saver lays it out: header entry, then the variables in key order.
void write_tf_bundle(const fs::path& prefix, const TfVars& vars) {
  nddr_test::tf::Entries entries{{"", nddr_test::tf::header(1)}};
  std::string data;
  for (const auto& [name, v] : vars) {
    const std::string bytes(reinterpret_cast<const char*>(v.values.data()),
                            v.values.size() * sizeof(float));
    entries.emplace_back(name, nddr_test::tf::entry(1, v.shape, data.size(), bytes));
    data += bytes;
  }
  nddr_test::spit(prefix.string() + ".index", nddr_test::tf::table({entries}));
  nddr_test::spit(prefix.string() + ".data-00000-of-00001", data);
}

// The TF variables of one TinyNet conv + BatchNorm layer under `scope`.
void tf_conv_bn(TfVars& vars, std::mt19937& rng, const std::string& scope, std::int64_t k,
                std::int64_t cin, std::int64_t cout) {
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::uniform_real_distribution<float> positive(0.5f, 1.5f);
  auto fill = [&](std::int64_t n, auto& dist) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = dist(rng);
    return v;
  };
  vars[scope + "/weights"] = {{k, k, cin, cout}, fill(k * k * cin * cout, normal)};
  vars[scope + "/BatchNorm/gamma"] = {{cout}, fill(cout, positive)};
  vars[scope + "/BatchNorm/beta"] = {{cout}, fill(cout, normal)};
  vars[scope + "/BatchNorm/moving_mean"] = {{cout}, fill(cout, normal)};
  vars[scope + "/BatchNorm/moving_variance"] = {{cout}, fill(cout, positive)};
}

// TinyNet's column (conv{S}_1 of widths 8, 16, 32, 32, 32) under `scope(S)` and its TinyHead
// (fc6 3x3 -> 16, fc8 -> `classes`) under `head`, with the authors' TF-slim names.
template <class Scope>
void tf_tiny_column(TfVars& vars, std::mt19937& rng, Scope scope, const std::string& head,
                    std::int64_t classes, bool trunk = true) {
  const std::int64_t widths[] = {3, 8, 16, 32, 32, 32};
  for (int s = 1; trunk && s <= 5; ++s)
    tf_conv_bn(vars, rng, scope(s) + "/conv" + std::to_string(s) + "/conv" + std::to_string(s) + "_1",
               3, widths[s - 1], widths[s]);
  if (head.empty()) return;
  tf_conv_bn(vars, rng, head + "/fc6", 3, 32, 16);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<float> w(static_cast<std::size_t>(16 * classes)), b(static_cast<std::size_t>(classes));
  for (float& x : w) x = normal(rng);
  for (float& x : b) x = normal(rng);
  vars[head + "/fc8_voc12/weights"] = {{1, 1, 16, classes}, w};
  vars[head + "/fc8_voc12/biases"] = {{classes}, b};
}

}  // namespace

// --init-format tf: the authors' TensorFlow checkpoints as they name them (here for TinyNet
// columns, written byte for byte as TF's Saver writes bundles) initialise nddr-nyuv2 networks.
// An NDDR-CNN checkpoint evaluated with --eval-only gives exactly the results of the same
// weights read from an nddr-format file; single-task checkpoints go into one column each (fc8
// left out where the classes differ), or into every column and the split trunk.
TEST_CASE("nddr-nyuv2: --init-format tf reads the authors' TensorFlow checkpoints",
          "[train][experiments]") {
  TempDir tmp("nyu_tf");
  write_nyu(tmp.path / "nyu");
  std::mt19937 rng(7);
  const std::int64_t classes[] = {40, 3};

  TfVars nddr_vars;
  for (int k = 1; k <= 2; ++k)
    tf_tiny_column(
        nddr_vars, rng, [k](int s) { return "vgg_16_" + std::to_string(k) + "_" + std::to_string(s); },
        "vgg_16_" + std::to_string(k) + "_6", classes[k - 1]);
  const std::int64_t widths[] = {8, 16, 32, 32, 32};
  for (int s = 1; s <= 5; ++s)
    for (int k = 1; k <= 2; ++k)
      tf_conv_bn(nddr_vars, rng,
                 "nddr_" + std::to_string(s) + "/nddr_" + std::to_string(s) + "_n" + std::to_string(k),
                 1, 2 * widths[s - 1], widths[s - 1]);
  fs::create_directories(tmp.path / "nddr_tf");
  write_tf_bundle(tmp.path / "nddr_tf" / "model.ckpt-20000", nddr_vars);

  // The same weights as an nddr-format file, through the library's own TF loader.
  nddr::Network<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>> net({40, 3});
  const auto report = nddr::io::load_tf_checkpoint((tmp.path / "nddr_tf" / "model.ckpt-20000").string(),
                                                   net.parameters(), nddr::io::TfScheme::kNddr);
  REQUIRE(report.complete());
  const fs::path nddr_file = tmp.path / "nddr.safetensors";
  nddr::io::save_parameters(nddr_file.string(), net.parameters());

  auto evaluate = [&](const std::string& weights, const std::string& format, const std::string& out) {
    auto c = smoke(tmp.path / "nyu", tmp.path / out, "nddr");
    c.steps = 0;
    c.eval_only = true;
    c.init_weights = weights;
    c.init_format = format;
    std::ostringstream log;
    const auto r = ex::run_nyuv2(c, log);
    return std::pair{r, log.str()};
  };
  // A prefix, and the directory the prefix is in (its newest checkpoint per 'checkpoint').
  nddr_test::spit((tmp.path / "nddr_tf" / "checkpoint").string(),
                  "model_checkpoint_path: \"model.ckpt-20000\"\n"
                  "all_model_checkpoint_paths: \"model.ckpt-20000\"\n");
  const auto [from_tf, tf_log] =
      evaluate((tmp.path / "nddr_tf" / "model.ckpt-20000").string(), "tf", "eval_tf");
  const auto [from_dir, dir_log] = evaluate((tmp.path / "nddr_tf").string(), "tf", "eval_dir");
  const auto [from_nddr, nddr_log] = evaluate(nddr_file.string(), "nddr", "eval_nddr");
  INFO(tf_log);
  CHECK_THAT(tf_log, Contains("loaded " + std::to_string(report.loaded.size()) +
                              " tensors from") &&
                         Contains("into the whole network (0 left at their initialisation)"));
  CHECK(from_tf.steps == 0);
  REQUIRE(from_tf.row.size() == from_nddr.row.size());
  for (std::size_t i = 0; i < from_tf.row.size(); ++i) {
    CHECK(std::isfinite(from_tf.row[i]));
    CHECK(from_tf.row[i] == from_nddr.row[i]);
    CHECK(from_dir.row[i] == from_nddr.row[i]);
  }

  // Single-task checkpoints (vgg_16/...): one per column; the seg one into column 1 (normals,
  // 3 outputs) leaves its 40-class fc8 out.
  TfVars st;
  tf_tiny_column(st, rng, [](int) { return std::string("vgg_16"); }, "vgg_16", 40);
  for (const auto& [name, v] : TfVars(st)) st[name + "/Momentum"] = v;  // skipped, as TF writes them
  write_tf_bundle(tmp.path / "st_seg", st);
  auto c = smoke(tmp.path / "nyu", tmp.path / "init_columns", "nddr");
  c.steps = 0;
  c.init_format = "tf";
  c.init_weights_task0 = (tmp.path / "st_seg").string();
  c.init_weights_task1 = (tmp.path / "st_seg").string();
  std::ostringstream columns;
  ex::run_nyuv2(c, columns);
  // 5 conv + BN (5 each) + fc6 + BN (5) + fc8 (2) = 32 tensors; without fc8 30.
  CHECK_THAT(columns.str(), Contains("loaded 32 tensors from " + c.init_weights_task0 +
                                     " into column task0") &&
                                Contains("loaded 30 tensors from " + c.init_weights_task0 +
                                         " into column task1"));

  // --init-weights with single-task names into the multi-task baseline: trunk and both heads.
  auto m = smoke(tmp.path / "nyu", tmp.path / "init_mt", "mt");
  m.steps = 0;
  m.init_format = "tf";
  m.init_weights = (tmp.path / "st_seg").string();
  std::ostringstream mt;
  ex::run_nyuv2(m, mt);
  CHECK_THAT(mt.str(), Contains("loaded 25 tensors from " + m.init_weights + " into the shared trunk") &&
                           Contains("into column task0") && Contains("into column task1"));

  // Errors: an NDDR-CNN checkpoint for another method, a missing prefix, a per-column file that
  // is not single-task, --init-format tf for nddr-imdb-wiki.
  m.init_weights = (tmp.path / "nddr_tf" / "model.ckpt-20000").string();
  CHECK_THROWS_WITH(ex::run_nyuv2(m, mt),
                    Contains("is a NDDR-CNN checkpoint, which does not fit method mt") &&
                        Contains("use --method nddr"));
  m.init_weights = (tmp.path / "nowhere" / "model.ckpt-1").string();
  CHECK_THROWS_WITH(ex::run_nyuv2(m, mt),
                    Contains("TensorFlow checkpoint '" + m.init_weights + "' does not exist") &&
                        Contains(".index'"));
  c.init_weights_task1 = (tmp.path / "nddr_tf" / "model.ckpt-20000").string();
  CHECK_THROWS_WITH(ex::run_nyuv2(c, columns),
                    Contains("--init-weights-task1") && Contains("is not a single-task checkpoint"));
  CHECK_THROWS_WITH(ex::parse_imdb_args({"--train-list", "a.txt", "--test-list", "b.txt",
                                         "--init-format", "tf"}),
                    Contains("--init-format") && Contains("deeplab, torchvision or nddr"));
}

TEST_CASE("nddr-nyuv2: clear errors for CUDA, bad paths and bad flags", "[train][experiments]") {
  TempDir tmp("nyu_err");
  write_nyu(tmp.path / "nyu");
  auto c = smoke(tmp.path / "nyu", tmp.path / "out", "nddr");
  std::ostringstream out;
  SECTION("cuda") {
    // Built without the backend: "no CUDA backend"; with it, on a machine without a device: the
    // device count. Either way an error naming the flag (on a GPU machine the run would train).
    c.device = "cuda:0";
#if defined(NDDR_WITH_CUDA)
    if (nddr::cuda_device_count() == 0)
#endif
    {
      CHECK_THROWS_AS(ex::run_nyuv2(c, out), nddr::DeviceError);
      CHECK_THROWS_WITH(ex::run_nyuv2(c, out),
                        Contains("--device cuda:0") && Contains("CUDA"));
    }
    c.device = "gpu";
    CHECK_THROWS_WITH(ex::run_nyuv2(c, out), Contains("cpu, cuda or cuda:N"));
  }
  SECTION("missing data dir names the path") {
    c.data_dir = (tmp.path / "nowhere").string();
    CHECK_THROWS_AS(ex::run_nyuv2(c, out), nddr::IoError);
    CHECK_THROWS_WITH(ex::run_nyuv2(c, out), Contains(c.data_dir));
  }
  SECTION("data dir without lists") {
    c.data_dir = (tmp.path / "nyu" / "data").string();
    CHECK_THROWS_WITH(ex::run_nyuv2(c, out),
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
    CHECK_THROWS_WITH(ex::run_nyuv2(c, out), Contains("NDDR layer only"));
  }
  SECTION("missing weight file") {
    c.init_weights_task0 = (tmp.path / "st_seg.safetensors").string();
    CHECK_THROWS_WITH(ex::run_nyuv2(c, out),
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

#if defined(NDDR_NYUV2_BINARY)
// The nddr-nyuv2 binary itself (built by examples/, path from tests/CMakeLists.txt): SIGTERM while
// it trains ends it after the current step with a checkpoint of that step, contiguous logs and
// exit status 143 (docs/reliability.md); `--resume` then finishes the run.
namespace {

/// The complete lines of `file` (a line still being written is left out).
std::vector<std::string> complete_lines(const fs::path& file) {
  const std::string text = read_file(file);
  std::vector<std::string> lines;
  for (std::size_t begin = 0, end; (end = text.find('\n', begin)) != std::string::npos;
       begin = end + 1)
    lines.push_back(text.substr(begin, end - begin));
  return lines;
}

/// The steps of log.csv's rows (its header left out).
std::vector<std::int64_t> logged_steps(const fs::path& csv) {
  std::vector<std::int64_t> steps;
  for (const std::string& line : complete_lines(csv))
    if (!line.empty() && line[0] >= '0' && line[0] <= '9')
      steps.push_back(std::stoll(line.substr(0, line.find(','))));
  return steps;
}

/// Starts nddr-nyuv2 with `args`, stdout and stderr to `log`; returns its pid.
pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  return nddr_test::spawn(NDDR_NYUV2_BINARY, args, log.string());
}

}  // namespace

TEST_CASE("nddr-nyuv2 binary: SIGTERM stops after the step with a checkpoint, --resume finishes",
          "[train][experiments][interrupt]") {
  TempDir tmp("nyu_sigterm");
  write_nyu(tmp.path / "nyu");
  const fs::path out = tmp.path / "out";
  const std::vector<std::string> common = {
      "--data-dir", (tmp.path / "nyu").string(), "--method", "nddr", "--backbone", "tiny",
      "--crop", "33", "--batch", "2", "--threads", "1", "--loader-threads", "1", "--quiet",
      "--output-dir", out.string(), "--log-every", "1", "--checkpoint-every", "1000000",
      "--eval-limit", "2"};

  // A long run, stopped by SIGTERM once it has logged three steps.
  std::vector<std::string> args = common;
  args.insert(args.end(), {"--steps", "1000000"});
  const pid_t pid = spawn(args, tmp.path / "first.txt");
  REQUIRE(pid > 0);
  bool logged = false;
  for (int i = 0; i < 12000 && !logged; ++i) {  // up to 120 s
    logged = fs::exists(out / "log.csv") && logged_steps(out / "log.csv").size() >= 3;
    if (!logged) ::usleep(10000);
  }
  if (!logged) ::kill(pid, SIGKILL);
  REQUIRE(logged);
  REQUIRE(::kill(pid, SIGTERM) == 0);
  const int status = nddr_test::wait_status(pid, 120);
  const std::string first = read_file(tmp.path / "first.txt");
  INFO(first);
  REQUIRE(status != -1);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + SIGTERM);

  // The logs hold steps 1..N without a gap or a repeat, and the one checkpoint is step N's.
  const std::vector<std::int64_t> steps = logged_steps(out / "log.csv");
  REQUIRE(steps.size() >= 3);
  const std::int64_t n = steps.back();
  for (std::size_t i = 0; i < steps.size(); ++i) CHECK(steps[i] == static_cast<std::int64_t>(i + 1));
  CHECK(complete_lines(out / "log.jsonl").size() == steps.size());
  const nddr::CheckpointDir ckpts(out / "checkpoints", 1);
  const auto names = ckpts.list();
  REQUIRE(names.size() == 1);
  CHECK(nddr::CheckpointDir::step_of(names.back().filename().string()) == n);
  CHECK_THAT(first, Contains("training stopped by SIGTERM after step " + std::to_string(n)) &&
                        Contains("run again with --resume"));
  CHECK_FALSE(fs::exists(out / "results.json"));

  // --resume finishes the run from step N: two more steps, the logs continue at N + 1.
  args = common;
  args.insert(args.end(), {"--steps", std::to_string(n + 2), "--resume"});
  const pid_t again = spawn(args, tmp.path / "second.txt");
  REQUIRE(again > 0);
  const int status2 = nddr_test::wait_status(again, 300);
  INFO(read_file(tmp.path / "second.txt"));
  REQUIRE(status2 != -1);
  REQUIRE(WIFEXITED(status2));
  CHECK(WEXITSTATUS(status2) == 0);
  CHECK_THAT(read_file(tmp.path / "second.txt"), Contains("resumed from step " + std::to_string(n)));
  const std::vector<std::int64_t> all = logged_steps(out / "log.csv");
  REQUIRE(all.size() == static_cast<std::size_t>(n + 2));
  for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i] == static_cast<std::int64_t>(i + 1));
  CHECK(fs::exists(out / "results.json"));
}
#endif

namespace {

/// Every tensor of a checkpoint, by name.
std::map<std::string, std::vector<float>> checkpoint_tensors(const fs::path& file) {
  const auto f = nddr::io::SafetensorsFile::read(file.string());
  std::map<std::string, std::vector<float>> out;
  for (const std::string& name : f.names())
    if (name.starts_with("param/")) out[name] = f.values<float>(name);
  return out;
}

std::vector<std::string> lines_of(const fs::path& file) {
  std::vector<std::string> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("nddr-nyuv2: ablation switches parse and reach the network and the data",
          "[train][experiments]") {
  const auto parse = [](std::vector<std::string> args) {
    args.insert(args.begin(), {"--data-dir", "d"});
    return *ex::parse_nyuv2_args(args);
  };
  const ex::NyuV2Config d = parse({});
  CHECK(d.nddr_bn == "on");
  CHECK(d.nddr_decay_mult == 1.0);
  CHECK(d.eval_every == 0);
  CHECK(d.best_metric.empty());
  CHECK(d.save_predictions.empty());
  const nddr::data::AugmentOptions a = ex::nyuv2_augment(d);
  CHECK(a.random_mirror);
  CHECK(a.random_scale);
  CHECK(a.crop_size == 321);
  const ex::NyuV2Config c =
      parse({"--nddr-bn", "off", "--nddr-decay-mult", "0", "--no-flip", "--no-scale", "--crop",
             "65", "--eval-every", "5", "--best-metric", "segmentation/mIoU"});
  CHECK(c.nddr_bn == "off");
  CHECK(c.nddr_decay_mult == 0.0);
  CHECK(c.eval_every == 5);
  CHECK(c.best_metric == "segmentation/mIoU");
  const nddr::data::AugmentOptions b = ex::nyuv2_augment(c);
  CHECK_FALSE(b.random_mirror);
  CHECK_FALSE(b.random_scale);
  CHECK(b.crop_size == 65);
  CHECK(ex::nyuv2_augment(parse({"--no-flip"})).random_scale);
  CHECK_FALSE(ex::nyuv2_augment(parse({"--no-flip"})).random_mirror);

  const auto error = [&](std::vector<std::string> args) -> std::string {
    try {
      parse(args);
    } catch (const nddr::cli::UsageError& e) {
      return e.what();
    }
    return "";
  };
  CHECK(error({"--nddr-bn", "no"}) ==
        "nddr-nyuv2: --nddr-bn: expected one of on, off, got 'no'");
  CHECK(error({"--nddr-decay-mult", "-1"}) ==
        "nddr-nyuv2: --nddr-decay-mult: expected a finite number >= 0, got '-1'");
  CHECK_THAT(error({"--eval-every", "-2"}), StartsWith("nddr-nyuv2: --eval-every: expected"));
  CHECK_THAT(error({"--eval-every", "2", "--best-metric", "mIoU"}),
             StartsWith("nddr-nyuv2: --best-metric: expected") && Contains("'mIoU'"));
  CHECK(error({"--best-metric", "segmentation/mIoU"}) ==
        "nddr-nyuv2: --best-metric: expected --eval-every N with it (it picks among periodic "
        "evaluations), got 'segmentation/mIoU'");
  CHECK_THAT(error({"--no-flip=maybe"}), StartsWith("nddr-nyuv2: --no-flip: expected"));
  TempDir tmp("nyu_flags");
  write_text(tmp.path / "a_file", "mine\n");
  CHECK(error({"--save-predictions", (tmp.path / "a_file").string()}) ==
        "nddr-nyuv2: --save-predictions: expected a directory (this is a file), got '" +
            nddr::cli::echo((tmp.path / "a_file").string()) + "'");
  CHECK(read_file(tmp.path / "a_file") == "mine\n");
}

TEST_CASE("nddr-nyuv2: --nddr-bn off drops the NDDR BatchNorms, --nddr-decay-mult scales the "
          "NDDR group's decay only",
          "[train][experiments]") {
  TempDir tmp("nyu_ablate");
  write_nyu(tmp.path / "nyu");
  const auto run = [&](const std::string& tag, std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "--data-dir", (tmp.path / "nyu").string(), "--method", "nddr", "--backbone", "tiny",
        "--crop", "33", "--batch", "2", "--steps", "1", "--threads", "2", "--loader-threads",
        "1", "--quiet", "--output-dir", (tmp.path / tag).string(), "--eval-limit", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::ostringstream out;
    const auto r = ex::run_nyuv2(*ex::parse_nyuv2_args(args), out);
    INFO(out.str());
    CHECK(r.steps == 1);
    return checkpoint_tensors(tmp.path / tag / "checkpoints" / "ckpt-0000000001.safetensors");
  };
  // The NDDR layers' parameters: "param/fusion.stage<S>.task<K>.conv|bn.*".
  const auto is_nddr_bn = [](const std::string& name) {
    return name.starts_with("param/fusion.") && name.find(".bn.") != std::string::npos;
  };
  const auto on = run("bn_on", {});
  const auto off = run("bn_off", {"--nddr-bn", "off"});
  std::size_t bn_on = 0, conv_off = 0;
  for (const auto& [name, v] : on) bn_on += is_nddr_bn(name);
  for (const auto& [name, v] : off) {
    CHECK_FALSE(is_nddr_bn(name));
    conv_off += name.starts_with("param/fusion.");
    for (float x : v) CHECK(std::isfinite(x));
  }
  CHECK(bn_on > 0);
  CHECK(conv_off > 0);
  CHECK(off.size() + bn_on == on.size());  // the same network less the NDDR BatchNorms
  // --resume with the other --nddr-bn is refused, and changes nothing.
  auto again = *ex::parse_nyuv2_args(
      {"--data-dir", (tmp.path / "nyu").string(), "--method", "nddr", "--backbone", "tiny",
       "--crop", "33", "--batch", "2", "--steps", "2", "--threads", "2", "--quiet",
       "--output-dir", (tmp.path / "bn_off").string(), "--resume", "--eval-limit", "1"});
  std::ostringstream refused;
  CHECK_THROWS(ex::run_nyuv2(again, refused));
  CHECK(checkpoint_tensors(tmp.path / "bn_off" / "checkpoints" / "ckpt-0000000001.safetensors") ==
        off);
  CHECK_FALSE(fs::exists(tmp.path / "bn_off" / "checkpoints" / "ckpt-0000000002.safetensors"));

  // One SGD step from the same start: theta1 = theta0 - lr * lr_mult * (g + wd * mult * theta0),
  // so decay multipliers 0 and 2 differ by lr * lr_mult * wd * 2 * theta0 in the NDDR group, and
  // not at all elsewhere.
  const std::vector<std::string> decay = {"--weight-decay", "0.5", "--nddr-lr-mult", "1"};
  auto d0 = decay, d2 = decay;
  d0.insert(d0.end(), {"--nddr-decay-mult", "0"});
  d2.insert(d2.end(), {"--nddr-decay-mult", "2"});
  const auto a = run("decay0", d0);
  const auto b = run("decay2", d2);
  const auto init = run("init", {"--lr", "0"});  // theta0: the same seed, a step of rate 0
  REQUIRE(a.size() == b.size());
  std::size_t nddr_weights = 0;
  for (const auto& [name, va] : a) {
    const auto& vb = b.at(name);
    const bool nddr_conv =
        name.starts_with("param/fusion.") && name.ends_with(".conv.weight");
    nddr_weights += nddr_conv;
    for (std::size_t i = 0; i < va.size(); ++i) {
      const double expected = nddr_conv ? -1e-3 * 1.0 * 0.5 * 2.0 * init.at(name)[i] : 0.0;
      CHECK(vb[i] - va[i] == Approx(expected).margin(5e-7));
    }
  }
  CHECK(nddr_weights > 0);
}

TEST_CASE("nddr-nyuv2: --eval-every logs the metric history, keeps checkpoints/best.* and "
          "--resume keeps the best so far",
          "[train][experiments]") {
  TempDir tmp("nyu_best");
  write_nyu(tmp.path / "nyu");
  auto c = smoke(tmp.path / "nyu", tmp.path / "out", "nddr");
  c.steps = 4;
  c.eval_every = 2;
  c.eval_limit = 1;
  std::ostringstream first;
  ex::run_nyuv2(c, first);
  INFO(first.str());
  const fs::path ckpts = tmp.path / "out" / "checkpoints";
  std::vector<std::string> evals = lines_of(tmp.path / "out" / "eval.jsonl");
  REQUIRE(evals.size() == 2);  // steps 2 and 4 (the last one once)
  CHECK_THAT(evals[0], Contains("\"step\":2") && Contains("\"normals/Mean\":"));
  CHECK_THAT(evals[1], Contains("\"step\":4"));
  // the default picks by the table's first column: normals/Mean, lower is better
  const auto mean_of = [](const std::string& line) {
    const auto v = nddr::io::json::parse(line);
    return v.find("normals/Mean")->as_double();
  };
  const double m2 = mean_of(evals[0]), m4 = mean_of(evals[1]);
  REQUIRE(fs::exists(ckpts / "best.safetensors"));
  const auto best = nddr::io::json::parse(read_file(ckpts / "best.json"));
  CHECK(best.find("metric")->as_string() == "normals/Mean");
  CHECK(best.find("higher_is_better")->as_bool() == false);
  CHECK(best.find("step")->as_int() == (m4 < m2 ? 4 : 2));
  CHECK(best.find("value")->as_double() == Approx(std::min(m2, m4)));
  // best.safetensors is a checkpoint of that step: its weights are the regular one's at step 4
  if (m4 < m2)
    CHECK(checkpoint_tensors(ckpts / "best.safetensors") ==
          checkpoint_tensors(ckpts / "ckpt-0000000004.safetensors"));
  CHECK(nddr::CheckpointDir(ckpts, 3).list().size() == 1);  // best.* is not a regular one

  // A best so far that nothing can beat (0 degrees) survives a resumed run, which still
  // evaluates and logs steps 6 and 8.
  const std::string unbeatable =
      "{\"metric\": \"normals/Mean\", \"value\": 0, \"higher_is_better\": false, \"step\": 2, "
      "\"checkpoint\": \"best.safetensors\"}\n";
  write_text(ckpts / "best.json", unbeatable);
  c.steps = 8;
  c.resume = true;
  std::ostringstream second;
  ex::run_nyuv2(c, second);
  CHECK_THAT(second.str(), Contains("resumed from step 4"));
  CHECK(read_file(ckpts / "best.json") == unbeatable);
  evals = lines_of(tmp.path / "out" / "eval.jsonl");
  REQUIRE(evals.size() == 4);
  CHECK_THAT(evals[3], Contains("\"step\":8"));

  // A best checkpoint picked by another metric is not mixed with this run's.
  c.steps = 10;
  c.best_metric = "segmentation/mIoU";
  std::ostringstream third;
  CHECK_THROWS_WITH(ex::run_nyuv2(c, third),
                    Contains("best.json") && Contains("picked by normals/Mean") &&
                        Contains("--best-metric normals/Mean"));
  // --best-metric must name a metric of the method.
  c.best_metric = "segmentation/Bogus";
  CHECK_THROWS_WITH(ex::run_nyuv2(c, third),
                    Contains("--best-metric: expected a metric of method nddr") &&
                        Contains("segmentation/mIoU") && Contains("'segmentation/Bogus'"));
}

TEST_CASE("nddr-nyuv2: --save-predictions writes readable PNGs of the predicted labels and "
          "normals",
          "[train][experiments]") {
  TempDir tmp("nyu_pred");
  write_nyu(tmp.path / "nyu");
  const fs::path preds = tmp.path / "preds";
  write_text(preds / "notes.txt", "mine\n");
  write_text(preds / "img4.txt", "also mine\n");
  for (const std::string method : {"nddr", "st-seg"}) {
    auto c = smoke(tmp.path / "nyu", tmp.path / ("out_" + method), method);
    c.steps = 2;
    c.save_predictions = (preds / method).string();
    std::ostringstream out;
    const auto r = ex::run_nyuv2(c, out);
    INFO(out.str());
    std::int64_t right = 0, counted = 0;
    for (const int i : {4, 5}) {  // the fixture's two test frames: data/img4.png, data/img5.png
      const fs::path dir = preds / method;
      const std::string stem = "img" + std::to_string(i);
      const auto seg = nddr::io::read_png((dir / (stem + "_seg.png")).string());
      const auto colour = nddr::io::read_png((dir / (stem + "_seg_color.png")).string());
      const auto truth =
          nddr::io::read_png((tmp.path / "nyu" / "data" / ("seg" + std::to_string(i) + ".png"))
                                 .string());
      REQUIRE(seg.channels == 1);
      REQUIRE(colour.channels == 3);
      REQUIRE(seg.height == 40);
      REQUIRE(seg.width == 48);
      REQUIRE(colour.height == 40);
      for (int y = 0; y < 40; ++y)
        for (int x = 0; x < 48; ++x) {
          const int label = seg.at(y, x);
          REQUIRE(label < 40);
          const auto rgb = ex::nyuv2_label_color(label);
          for (int ch = 0; ch < 3; ++ch) CHECK(colour.at(y, x, ch) == rgb[ch]);
          if (truth.at(y, x) == 255) continue;
          ++counted;
          right += truth.at(y, x) == label;
        }
      CHECK(fs::exists(dir / (stem + "_normal.png")) == (method == "nddr"));
      if (method == "nddr") {
        const auto n = nddr::io::read_png((dir / (stem + "_normal.png")).string());
        CHECK(n.channels == 3);
        CHECK(n.height == 40);
        CHECK(n.width == 48);
      }
    }
    // the saved labels are the ones evaluated: their pixel accuracy is the reported one
    CHECK(100.0 * static_cast<double>(right) / static_cast<double>(counted) ==
          Approx(r.row[6]).margin(1e-9));
  }
  CHECK(read_file(preds / "notes.txt") == "mine\n");
  CHECK(read_file(preds / "img4.txt") == "also mine\n");
  CHECK(ex::nyuv2_prediction_names("/a/b/img7.png", std::vector<const char*>{"normal"}) ==
        std::vector<std::string>{"img7_normal.png"});
  // VOC colours: class 0 is (128, 0, 0), no class is black (the ignore colour)
  CHECK(ex::nyuv2_label_color(0) == std::array<std::uint8_t, 3>{128, 0, 0});
  CHECK(ex::nyuv2_label_color(255) == std::array<std::uint8_t, 3>{0, 0, 0});
  for (int k = 0; k < 40; ++k) CHECK(ex::nyuv2_label_color(k) != std::array<std::uint8_t, 3>{});

  // two test images of one name would overwrite each other's files: refused before training
  TempDir dup("nyu_pred_dup");
  write_nyu(dup.path / "nyu");
  fs::create_directories(dup.path / "nyu" / "other");
  fs::copy_file(dup.path / "nyu" / "data" / "img5.png", dup.path / "nyu" / "other" / "img4.png");
  write_text(dup.path / "nyu" / "list" / "testing_seg.txt",
             "/data/img4.png /data/seg4.png\n/other/img4.png /data/seg5.png\n");
  write_text(dup.path / "nyu" / "list" / "testing_normal_mask.txt",
             "/data/img4.png /data/nrm4.png\n/other/img4.png /data/nrm5.png\n");
  auto c = smoke(dup.path / "nyu", dup.path / "out", "nddr");
  c.save_predictions = (dup.path / "preds").string();
  std::ostringstream out;
  CHECK_THROWS_WITH(ex::run_nyuv2(c, out), Contains("share the name 'img4'"));
  CHECK_FALSE(fs::exists(dup.path / "out" / "log.csv"));
}
