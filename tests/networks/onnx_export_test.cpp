// ONNX export (nddr/io/onnx.hpp, docs/onnx.md) of every network type on TinyNet, checked
// against ONNX Runtime without Python: tests/data/onnx/reference.safetensors holds what ONNX
// Runtime computed on the models this test exports (tools/reference/onnx_reference.py) for the
// inputs of tests/data/onnx/inputs.safetensors, and each model's FNV-1a hash. The test exports
// the same networks again (same seed, same deterministic perturbation of every parameter and
// BatchNorm statistic), requires the same bytes, and compares nddr's own inference forward with
// ONNX Runtime's outputs.
//
// Regenerating (after a deliberate change to the exporter or to these networks):
//   NDDR_ONNX_WRITE_DIR=/tmp/onnx build/o/tests/nddr_network_tests '[onnx][write]'
//   /work/venv-onnx/bin/python tools/reference/onnx_reference.py /tmp/onnx
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <nddr/backbones/tiny.hpp>
#include <nddr/fusion/cross_stitch.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/fusion/none.hpp>
#include <nddr/fusion/sluice.hpp>
#include <nddr/io/onnx.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/multitask/network.hpp>

namespace {

const std::string kData = NDDR_TEST_DATA_DIR "/onnx";

// Moves every parameter and BatchNorm statistic off its initial value (BN: gamma 1, beta 0,
// mean 0, var 1; NDDR and cross-stitch: symmetric diagonals), so that a transposed or
// misnamed tensor shows in the outputs.
template <class Net>
void perturb(Net& net) {
  auto& store = net.parameters();
  nddr::Rng rng(2024);
  auto v = store.values();
  for (std::int64_t i = 0; i < v.numel(); ++i) v[i] += static_cast<float>(rng.uniform(-0.2, 0.2));
  for (const auto& b : store.buffers()) {
    auto t = store.buffer(*store.find_buffer(b.name));
    const bool var = b.name.ends_with("running_var");
    for (std::int64_t i = 0; i < t.numel(); ++i)
      t[i] = static_cast<float>(var ? rng.uniform(0.5, 1.5) : rng.uniform(-0.2, 0.2));
  }
}

std::uint64_t fnv1a(const std::string& bytes) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

std::string hex(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

const char* write_dir() { return std::getenv("NDDR_ONNX_WRITE_DIR"); }

// The exported model must be ONNX Runtime's (same bytes), and nddr's inference forward must
// give ONNX Runtime's outputs on every input batch: float32 on both sides, differing in
// summation order only, so the tolerance scales with the output: |a - e| <= 1e-5 (max|e| + |e|)
// per tensor (outputs reach 80 here; the largest difference seen was 4.5e-5, with -march=native).
template <class Spec>
void check_network(const std::string& name, const std::array<std::int64_t, Spec::tasks>& outputs) {
  nddr::Network<Spec> net(outputs);
  perturb(net);
  net.set_training(false);
  std::vector<std::string> names;
  for (std::size_t k = 0; k < Spec::tasks; ++k) names.push_back("out" + std::to_string(k));
  const auto opt = nddr::io::OnnxExportOptions{}.outputs(names).doc(name);
  const std::string bytes = nddr::io::onnx_model_bytes(net, opt);

  // The graph: one input, one output per task, nddr's names on every initializer.
  onnx::ModelProto m;
  REQUIRE(m.ParseFromString(bytes));
  REQUIRE(m.opset_import(0).version() == nddr::io::kOnnxOpset);
  REQUIRE(m.graph().input_size() == 1);
  REQUIRE(m.graph().input(0).name() == "image");
  REQUIRE(m.graph().output_size() == static_cast<int>(Spec::tasks));
  std::set<std::string> init;
  for (const auto& t : m.graph().initializer())
    if (!t.name().starts_with("onnx.")) init.insert(t.name());
  std::set<std::string> declared;
  for (const auto& p : net.parameters().parameters()) declared.insert(p.name);
  for (const auto& b : net.parameters().buffers()) declared.insert(b.name);
  CHECK(init == declared);
  for (const auto& node : m.graph().node()) CHECK(node.op_type() != "Dropout");

  if (const char* dir = write_dir()) {
    nddr::io::export_onnx(net, std::string(dir) + "/" + name + ".onnx", opt);
    return;
  }
  const auto ref = nddr::io::SafetensorsFile::read(kData + "/reference.safetensors");
  const auto in = nddr::io::SafetensorsFile::read(kData + "/inputs.safetensors");
  INFO(name);
  REQUIRE(ref.metadata().count(name + ".fnv1a64") == 1);
  CHECK(ref.metadata().at(name + ".fnv1a64") == hex(fnv1a(bytes)));  // else: regenerate (top)

  nddr::Context<nddr::Cpu> ctx(1);
  for (const std::string batch : {"x0", "x1"}) {
    const auto x = in.tensor<float>(batch);
    const auto out = net.forward(ctx, x.cview());
    for (std::size_t k = 0; k < Spec::tasks; ++k) {
      const std::string key = name + "." + batch + "." + names[k];
      INFO(key);
      const auto expected = ref.tensor<float>(key);
      REQUIRE(expected.shape() == out[k].shape());
      double scale = 0, worst = 0;
      for (std::int64_t i = 0; i < expected.numel(); ++i)
        scale = std::max(scale, std::abs(static_cast<double>(expected.cview()[i])));
      for (std::int64_t i = 0; i < expected.numel(); ++i) {
        const double e = expected.cview()[i], a = out[k][i];
        worst = std::max(worst, std::abs(a - e) / (1e-5 * (scale + std::abs(e))));
      }
      CHECK(scale > 0.1);  // a model whose outputs vanish would check nothing
      CHECK(worst <= 1.0);
    }
  }
}

}  // namespace

TEST_CASE("onnx export: every TinyNet network type matches ONNX Runtime", "[onnx][write]") {
  if (const char* dir = write_dir()) {
    // The inputs: an even batch and an odd-sized one (asymmetric SAME padding, shortcut resize
    // by a non-integer factor).
    std::filesystem::create_directories(dir);
    nddr::Rng rng(7);
    nddr::Tensor<float> x0(nddr::Shape::nchw(2, 3, 24, 20)), x1(nddr::Shape::nchw(1, 3, 17, 13));
    for (auto* t : {&x0, &x1})
      for (std::int64_t i = 0; i < t->numel(); ++i)
        (*t)[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
    nddr::io::write_safetensors(std::string(dir) + "/inputs.safetensors",
                                {nddr::io::entry("x0", x0), nddr::io::entry("x1", x1)});
  }
  using nddr::TinyNet;
  check_network<nddr::MultiTask<TinyNet, nddr::None>>("single", {5});
  check_network<nddr::MultiTask<TinyNet, TinyNet, nddr::Shared<5>>>("shared", {5, 3});
  check_network<nddr::MultiTask<TinyNet, TinyNet, nddr::CrossStitch>>("cross_stitch", {5, 3});
  check_network<nddr::MultiTask<TinyNet, TinyNet, nddr::Sluice>>("sluice", {5, 3});
  check_network<nddr::MultiTask<TinyNet, TinyNet, nddr::NDDR>>("nddr", {5, 3});
  check_network<nddr::MultiTask<TinyNet, TinyNet, nddr::Shortcut<nddr::NDDR>>>("nddr_shortcut",
                                                                               {5, 3});
}

TEST_CASE("onnx export: bad output names are refused before anything is written", "[onnx]") {
  nddr::Network<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>> net({5, 3});
  using nddr::io::OnnxExportOptions;
  const std::string path =
      (std::filesystem::temp_directory_path() / "nddr_onnx_refused.onnx").string();
  std::filesystem::remove(path);
  CHECK_THROWS_WITH(nddr::io::export_onnx(net, path, OnnxExportOptions{}.outputs({"seg"})),
                    Catch::Contains("output_names has 1 names, expected one per task (2)"));
  CHECK_THROWS_WITH(nddr::io::export_onnx(net, path, OnnxExportOptions{}.outputs({"a", "a"})),
                    Catch::Contains("output name 'a' given twice"));
  CHECK_THROWS_WITH(
      nddr::io::export_onnx(net, path, OnnxExportOptions{}.outputs({"image", "b"})),
      Catch::Contains("output name 'image' is also the input's"));
  CHECK_FALSE(std::filesystem::exists(path));
  // Default names, and a file that ONNX's own checker accepts when read back.
  nddr::io::export_onnx(net, path);
  CHECK_NOTHROW(onnx::checker::check_model(path));
  onnx::ModelProto m;
  {
    const auto bytes = nddr::io::read_regular_file("test", path);
    REQUIRE(m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
  }
  CHECK(m.graph().output(0).name() == "task0");
  CHECK(m.graph().output(1).name() == "task1");
  std::filesystem::remove(path);
}
