// nddr-summary and nddr-forward (nddr_apps/network_tools.hpp, docs/tools.md), run in-process
// through summary_main / forward_main. The parameter counts and multiply-adds are PyTorch's
// (tools/reference/network_summary.py builds the same networks on the meta device); the
// forward outputs are the library's own, bit for bit (float: nddr-forward computes in f32 only,
// docs/tools.md); the gradients are the library's backward, bit for bit, and a central finite
// difference through the tool itself.
#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nddr/backbones/tiny.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/io/weights.hpp>
#include <nddr/multitask/network.hpp>
#include <nddr/tasks/tasks.hpp>
#include <nddr_apps/network_tools.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../support/temp_dir.hpp"

using Catch::Contains;
using nddr::Shape;
using nddr::Tensor;
using nddr::io::SafetensorsFile;
using nddr_test::TempDir;

namespace {

struct Expected {
  const char* network;
  std::int64_t size;
  std::int64_t parameters;
  std::int64_t macs;
};

// tools/reference/network_summary.py (PyTorch 2, meta device): classes 40,3 (-st: 40), input
// 1 x 3 x size x size.
constexpr Expected kExpected[] = {
    {"vgg16-st", 321, 20531176, 50960791232},
    {"vgg16-st-shortcut", 321, 21285864, 52227700416},
    {"vgg16-mt", 321, 26305515, 60660564672},
    {"vgg16-mt-shortcut", 321, 27060203, 61927473856},
    {"vgg16-cross-stitch", 321, 41024447, 101876494464},
    {"vgg16-cross-stitch-shortcut", 321, 42533823, 104410312832},
    {"vgg16-sluice", 321, 41024507, 101895096192},
    {"vgg16-sluice-shortcut", 321, 42533883, 104428914560},
    {"vgg16-nddr", 321, 43471531, 106678540672},
    {"vgg16-nddr-shortcut", 321, 44980907, 109212359040},
    {"tiny-st", 33, 29968, 1533400},
    {"tiny-st-shortcut", 33, 161552, 4797400},
    {"tiny-mt", 33, 34659, 1649800},
    {"tiny-mt-shortcut", 33, 235363, 6641800},
    {"tiny-cross-stitch", 33, 59327, 3076032},
    {"tiny-cross-stitch-shortcut", 33, 322495, 9604032},
    {"tiny-sluice", 33, 59387, 3100064},
    {"tiny-sluice-shortcut", 33, 322555, 9628064},
    {"tiny-nddr", 33, 73355, 3516128},
    {"tiny-nddr-shortcut", 33, 336523, 10044128},
};

struct Run {
  int status = -1;
  std::string out, err;
};

using Main = int (*)(const std::vector<std::string>&, std::ostream&, std::ostream&);

Run call(Main main, const std::vector<std::string>& args) {
  std::ostringstream out, err;
  Run r;
  r.status = main(args, out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}
Run forward(const std::vector<std::string>& args) { return call(nddr::apps::forward_main, args); }
Run summary(const std::vector<std::string>& args) { return call(nddr::apps::summary_main, args); }

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

using Spec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::Shortcut<nddr::NDDR>>;
using Net = nddr::Network<Spec, nddr::Cpu, float>;
constexpr const char* kName = "tiny-nddr-shortcut";

// A tiny-nddr-shortcut network (classes 5,3) whose parameters and BN statistics are moved off
// their initial values, saved to `weights`, and an input image saved to `input`.
void write_fixture(Net& net, const std::string& weights, const std::string& input,
                   Tensor<float>& x) {
  nddr::Rng rng(7);
  auto values = net.parameters().values();
  for (std::int64_t i = 0; i < values.numel(); ++i)
    values[i] += static_cast<float>(0.05 * rng.uniform(-1, 1));
  auto buffers = net.parameters().buffer_values();
  for (std::int64_t i = 0; i < buffers.numel(); ++i)
    buffers[i] += static_cast<float>(0.1 * rng.uniform(0, 1));
  nddr::io::save_parameters(weights, net.parameters());
  x = Tensor<float>(Shape::nchw(2, 3, 19, 21));
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(rng.uniform(-1, 1));
  nddr::io::write_safetensors(input, {nddr::io::entry("image", x)});
}

// Targets for outputs of shape (2, 5, h, w) and (2, 3, h, w): labels with some 255s, normals.
void write_targets(const std::string& path, const Shape& seg, Tensor<std::int32_t>& labels,
                   Tensor<float>& normals) {
  nddr::Rng rng(11);
  labels = Tensor<std::int32_t>(Shape{seg.n(), seg.h(), seg.w()});
  for (std::int64_t i = 0; i < labels.numel(); ++i)
    labels[i] = i % 7 == 3 ? 255 : static_cast<std::int32_t>(rng.uniform(0, 4.99));
  normals = Tensor<float>(Shape::nchw(seg.n(), 3, seg.h(), seg.w()));
  for (std::int64_t i = 0; i < normals.numel(); ++i)
    normals[i] = static_cast<float>(rng.uniform(-1, 1));
  nddr::io::write_safetensors(path, {nddr::io::entry("task0", labels),
                                     nddr::io::entry("task1", normals)});
}

}  // namespace

TEST_CASE("nddr-summary: parameters and multiply-adds of every network match PyTorch",
          "[train][tools]") {
  for (const auto& e : kExpected) {
    INFO(e.network);
    const std::string name = e.network;
    const bool st = name.ends_with("-st") || name.ends_with("-st-shortcut");
    const auto s = nddr::apps::summarize_network(
        name, st ? std::vector<std::int64_t>{40} : std::vector<std::int64_t>{40, 3},
        Shape::nchw(1, 3, e.size, e.size));
    CHECK(s.parameters == e.parameters);
    CHECK(s.macs == e.macs);
    std::int64_t rows = 0;
    for (const auto& r : s.rows) rows += r.parameters;
    CHECK(rows == e.parameters);  // every parameter is in exactly one row
    for (const auto& r : s.rows)
      if (r.name.ends_with("conv1_1")) CHECK(r.parameters == 3 * 3 * 3 * (e.size == 321 ? 64 : 8));
  }
}

TEST_CASE("nddr-summary: the table and its last line", "[train][tools]") {
  const Run r = summary({"--network", "vgg16-nddr", "--classes", "40,3"});
  REQUIRE(r.status == 0);
  CHECK(r.err.empty());
  CHECK(r.out.ends_with("trainable parameters: 43471531\n"));
  CHECK_THAT(r.out, Contains("task0.stage1.conv1_1"));
  CHECK_THAT(r.out, Contains("[1, 64, 321, 321]"));
  CHECK_THAT(r.out, Contains("fusion.stage5"));
  CHECK_THAT(r.out, Contains("2 x [1, 512, 41, 41]"));
  CHECK_THAT(r.out, Contains("fc8.bias+fc8.weight"));
  CHECK_THAT(r.out, Contains("  nddr\n"));
  const Run t = summary({"--network", "tiny-st", "--input", "2,3,33,33"});
  REQUIRE(t.status == 0);
  CHECK(t.out.ends_with("trainable parameters: 29968\n"));
  CHECK_THAT(t.out, Contains("task0.head.fc8"));
  CHECK_THAT(t.out, Contains("[2, 40, 5, 5]"));
  const Run bad = summary({"--network", "vgg16-nddr", "--input", "1,3,0,5"});
  CHECK(bad.status == 2);
  CHECK_THAT(bad.err, Contains("nddr-summary: --input: expected"));
  const Run small = summary({"--network", "tiny-nddr", "--input", "1,3,1,1"});
  CHECK(small.status == 0);  // SAME padding accepts any size
  const Run unknown = summary({"--network", "resnet101-nddr"});
  CHECK(unknown.status == 2);
  CHECK_THAT(unknown.err, Contains("nddr-summary: --network: expected BACKBONE-METHOD"));
  const Run classes = summary({"--network", "tiny-nddr", "--classes", "40"});
  CHECK(classes.status == 2);
  CHECK_THAT(classes.err, Contains("--classes: expected 2 value(s) for tiny-nddr"));
}

TEST_CASE("nddr-forward: outputs equal the library's forward bit for bit",
          "[train][tools]") {
  TempDir dir("nddr_forward");
  Net net({5, 3});
  Tensor<float> x;
  write_fixture(net, dir.file("w.safetensors"), dir.file("x.safetensors"), x);
  const Run r = forward({"--network", kName, "--classes", "5,3", "--weights",
                         dir.file("w.safetensors"), "--input", dir.file("x.safetensors"),
                         "--output", dir.file("y.safetensors")});
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Contains("wrote"));
  net.set_training(false);
  nddr::Context<nddr::Cpu> ctx;
  const auto y = net.forward(ctx, x.cview());
  const auto f = SafetensorsFile::read(dir.file("y.safetensors"));
  CHECK(f.names() == std::vector<std::string>{"task0", "task1"});
  for (std::size_t k = 0; k < 2; ++k) {
    const std::string name = "task" + std::to_string(k);
    REQUIRE(f.dtype(name) == nddr::io::Dtype::kF32);
    const auto got = f.values<float>(name);
    REQUIRE(static_cast<std::int64_t>(got.size()) == y[k].numel());
    CHECK(f.shape(name) == std::vector<std::int64_t>{2, k == 0 ? 5 : 3, 3, 3});
    std::int64_t differ = 0;
    for (std::int64_t i = 0; i < y[k].numel(); ++i) differ += got[i] != y[k][i];
    CHECK(differ == 0);
  }
}

TEST_CASE("nddr-forward: loss and gradients equal the library's backward and finite differences",
          "[train][tools]") {
  TempDir dir("nddr_forward_grad");
  Net net({5, 3});
  Tensor<float> x;
  write_fixture(net, dir.file("w.safetensors"), dir.file("x.safetensors"), x);
  Tensor<std::int32_t> labels;
  Tensor<float> normals;
  write_targets(dir.file("t.safetensors"), net.output_shape(0, x.shape()), labels, normals);
  const std::vector<std::string> args = {
      "--network", kName, "--classes", "5,3", "--train", "--input",
      dir.file("x.safetensors"), "--targets", dir.file("t.safetensors"), "--loss-weights",
      "1,20", "--output"};
  auto with = [&](const std::string& out, const std::string& weights) {
    auto a = args;
    a.push_back(out);
    a.push_back("--weights");
    a.push_back(weights);
    return forward(a);
  };
  const Run r = with(dir.file("g.safetensors"), dir.file("w.safetensors"));
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto g = SafetensorsFile::read(dir.file("g.safetensors"));

  // The library itself: training-mode forward, both task losses, backward.
  net.set_training(true);
  nddr::Context<nddr::Cpu> ctx;
  const auto y = net.forward(ctx, x.cview());
  Tensor<float> d0(y[0].shape()), d1(y[1].shape());
  d0.zero();
  d1.zero();
  const float l0 =
      nddr::task_loss<nddr::Segmentation<5>>(ctx, y[0], labels.cview(), d0.view(), 1.0f);
  const float l1 =
      nddr::task_loss<nddr::SurfaceNormal>(ctx, y[1], normals.cview(), d1.view(), 20.0f);
  std::vector<nddr::TensorView<const float>> douts{d0.cview(), d1.cview()};
  net.backward(ctx, x.cview(), douts);
  CHECK(g.values<float>("loss/task0")[0] == l0);
  CHECK(g.values<float>("loss/task1")[0] == l1);
  CHECK(g.values<float>("loss")[0] == l0 + l1);
  const auto& store = net.parameters();
  std::size_t grads = 0;
  for (std::size_t i = 0; i < store.parameters().size(); ++i) {
    const auto& e = store.parameters()[i];
    INFO(e.name);
    const auto got = g.values<float>("grad/" + e.name);
    const auto want = store.grad(nddr::ParamId{i});
    REQUIRE(static_cast<std::int64_t>(got.size()) == want.numel());
    for (std::int64_t j = 0; j < want.numel(); ++j) CHECK(got[j] == want[j]);
    ++grads;
  }
  CHECK(grads == store.parameters().size());

  // A central difference on one NDDR weight, through the tool: (L(w + h) - L(w - h)) / 2h in
  // float, so a loose tolerance (the exact check is the one above).
  const std::string pname = "fusion.stage3.task1.conv.weight";
  const auto pgrad = g.values<double>("grad/" + pname);
  std::size_t j = 0;  // the element with the largest gradient: the float difference resolves it
  for (std::size_t i = 0; i < pgrad.size(); ++i)
    if (std::abs(pgrad[i]) > std::abs(pgrad[j])) j = i;
  const double analytic = pgrad[j];
  const float h = 1e-2f;
  double loss[2];
  for (int side = 0; side < 2; ++side) {
    Net moved({5, 3});
    nddr::io::load_parameters(dir.file("w.safetensors"), moved.parameters());
    for (std::size_t i = 0; i < moved.parameters().parameters().size(); ++i)
      if (moved.parameters().parameters()[i].name == pname)
        moved.parameters().value(nddr::ParamId{i})[static_cast<std::int64_t>(j)] +=
            side == 0 ? h : -h;
    const std::string w = dir.file("w" + std::to_string(side) + ".safetensors");
    nddr::io::save_parameters(w, moved.parameters());
    const std::string out = dir.file("g" + std::to_string(side) + ".safetensors");
    REQUIRE(with(out, w).status == 0);
    loss[side] = SafetensorsFile::read(out).values<double>("loss")[0];
  }
  const double numeric = (loss[0] - loss[1]) / (2.0 * h);
  INFO("element " << j << ": analytic " << analytic << ", numeric " << numeric);
  CHECK(std::abs(analytic) > 1e-2);
  CHECK(numeric == Approx(analytic).epsilon(3e-2).margin(2e-3));
}

TEST_CASE("nddr-forward: bad files and flags are refused before anything is written",
          "[train][tools]") {
  TempDir dir("nddr_forward_bad");
  Net net({5, 3});
  Tensor<float> x;
  write_fixture(net, dir.file("w.safetensors"), dir.file("x.safetensors"), x);
  const std::string out = dir.file("y.safetensors");
  {  // an existing output file is kept as it was after every failure
    std::ofstream f(out, std::ios::binary);
    f << "precious";
  }
  const auto run = [&](const std::string& network, const std::string& weights,
                       const std::string& input, std::vector<std::string> extra = {}) {
    std::vector<std::string> a = {"--network", network, "--classes", "5,3", "--weights", weights,
                                  "--input", input, "--output", out};
    a.insert(a.end(), extra.begin(), extra.end());
    return forward(a);
  };
  // A weights file without one of the network's tensors.
  {
    const auto w = SafetensorsFile::read(dir.file("w.safetensors"));
    std::vector<std::string> names;
    std::vector<Tensor<double>> kept;
    for (const auto& n : w.names())
      if (n != "fusion.stage2.task0.conv.weight") {
        names.push_back(n);
        kept.push_back(w.tensor<double>(n));
      }
    std::vector<nddr::io::SafetensorsEntry> entries;
    for (std::size_t i = 0; i < kept.size(); ++i)
      entries.push_back(nddr::io::entry(names[i], kept[i]));
    nddr::io::write_safetensors(dir.file("partial.safetensors"), entries);
  }
  Run r = run(kName, dir.file("partial.safetensors"), dir.file("x.safetensors"));
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("fusion.stage2.task0.conv.weight"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  // Weights of another network.
  r = run("tiny-sluice", dir.file("w.safetensors"), dir.file("x.safetensors"));
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("w.safetensors"));
  // An input of 4 channels, an input without 'image'.
  Tensor<float> x4(Shape::nchw(1, 4, 9, 9));
  x4.zero();
  nddr::io::write_safetensors(dir.file("x4.safetensors"), {nddr::io::entry("image", x4)});
  r = run(kName, dir.file("w.safetensors"), dir.file("x4.safetensors"));
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("tensor 'image' has shape (1, 4, 9, 9), expected (N, 3, H, W)"));
  nddr::io::write_safetensors(dir.file("xn.safetensors"), {nddr::io::entry("img", x4)});
  r = run(kName, dir.file("w.safetensors"), dir.file("xn.safetensors"));
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("no tensor 'image'"));
  // Targets: a missing task, labels of the wrong shape.
  Tensor<std::int32_t> labels(Shape{2, 4, 3});
  labels.zero();
  nddr::io::write_safetensors(dir.file("t.safetensors"), {nddr::io::entry("task0", labels)});
  r = run(kName, dir.file("w.safetensors"), dir.file("x.safetensors"),
          {"--targets", dir.file("t.safetensors")});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Contains("tensor 'task0' holds integer labels of shape (2, 4, 3), expected "
                             "(2, 3, 3) or (2, 1, 3, 3)"));
  // Command-line errors: exit status 2.
  r = run("vgg19-nddr", dir.file("w.safetensors"), dir.file("x.safetensors"));
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("nddr-forward: --network: expected"));
  r = run(kName, dir.file("missing.safetensors"), dir.file("x.safetensors"));
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("--weights: expected an existing regular file"));
  r = run(kName, dir.file("w.safetensors"), dir.file("x.safetensors"), {"--device", "cuda"});
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("--device: expected cpu"));
  r = run(kName, dir.file("w.safetensors"), dir.file("x.safetensors"), {"--dtype", "f64"});
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("--dtype: expected f32 (nddr-forward computes in float only"));
  r = run(kName, dir.file("w.safetensors"), dir.file("x.safetensors"),
          {"--loss-weights", "1,20"});
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("--loss-weights: expected --targets with it"));
  r = run(kName, dir.file("w.safetensors"), dir.file("x.safetensors"), {"--output",
          dir.file("w.safetensors")});
  CHECK(r.status == 2);
  CHECK(read_bytes(out) == "precious");
  CHECK(dir.listing().size() == 7);  // w, x, y, partial, x4, xn, t: no temporary left behind
}
