// Parameter checkpoints (save_parameters / load_parameters) and the pretrained VGG-16 imports
// (torchvision, DeepLab-LargeFOV). The target stores declare the VGG-16 names and shapes
// directly (see declare_column), independent of the network classes. A torch-written mini
// torchvision state_dict (tools/reference/vgg16_weights.py) covers real key names and dtype
// conversion; full-size files are generated here in a temporary directory.
#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <nddr/backbones/vgg16.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/io/weights.hpp>
#include <optional>
#include <string>
#include <vector>

#include "../support/temp_dir.hpp"

namespace fs = std::filesystem;
using Catch::Contains;
using nddr_test::TempDir;
using nddr::ParameterStore;
using nddr::Shape;
using nddr::io::SafetensorsFile;

namespace {

const std::string kMini = NDDR_TEST_DATA_DIR "/vgg16_mini.safetensors";

enum class Head { kNone, kLargeFov, kClassifier };

// One VGG-16 column's parameter names and shapes (the networks' fixed naming); widths can be
// scaled down because every mapping checks file shapes against the store, not constants.
struct ColumnSpec {
  std::array<std::int64_t, 5> widths{64, 128, 256, 512, 512};
  Head head = Head::kLargeFov;
  std::int64_t fc_width = 1024;  // LargeFOV fc6/fc7 channels or classifier fc width
  std::int64_t fc6_in = 25088;   // classifier only: 512 * 7 * 7
  std::int64_t classes = 21;
  bool conv_bias = false;

  static ColumnSpec mini(Head h = Head::kLargeFov) {
    ColumnSpec s;
    s.widths = {2, 2, 3, 3, 3};
    s.head = h;
    s.fc_width = 8;
    s.fc6_in = 3 * 7 * 7;
    s.classes = 5;
    return s;
  }
};

constexpr std::array<int, 5> kConvsPerStage = {2, 2, 3, 3, 3};

template <class T>
void declare_bn(ParameterStore<T>& store, const std::string& name, std::int64_t c) {
  store.declare(name + ".weight", Shape{c});
  store.declare(name + ".bias", Shape{c});
  store.declare_buffer(name + ".running_mean", Shape{c});
  store.declare_buffer(name + ".running_var", Shape{c});
}

template <class T>
void declare_column(ParameterStore<T>& store, const std::string& prefix, const ColumnSpec& s,
                    bool with_stages = true) {
  std::int64_t c_in = 3;
  for (int st = 1; st <= 5; ++st) {
    const std::int64_t w = s.widths[static_cast<std::size_t>(st - 1)];
    for (int i = 1; i <= kConvsPerStage[static_cast<std::size_t>(st - 1)]; ++i) {
      const std::string conv = prefix + ".stage" + std::to_string(st) + ".conv" +
                               std::to_string(st) + "_" + std::to_string(i);
      if (with_stages) {
        store.declare(conv + ".weight", Shape{w, c_in, 3, 3});
        if (s.conv_bias) store.declare(conv + ".bias", Shape{w});
        declare_bn(store, conv + ".bn", w);
      }
      c_in = w;
    }
  }
  const std::string head = prefix + ".head.";
  const std::int64_t f = s.fc_width;
  if (s.head == Head::kLargeFov) {
    store.declare(head + "fc6.weight", Shape{f, c_in, 3, 3});
    declare_bn(store, head + "fc6.bn", f);
    store.declare(head + "fc7.weight", Shape{f, f, 1, 1});
    declare_bn(store, head + "fc7.bn", f);
    store.declare(head + "fc8.weight", Shape{s.classes, f, 1, 1}, "fc8.weight");
    store.declare(head + "fc8.bias", Shape{s.classes}, "fc8.bias");
  } else if (s.head == Head::kClassifier) {
    store.declare(head + "fc6.weight", Shape{f, s.fc6_in});
    store.declare(head + "fc6.bias", Shape{f});
    store.declare(head + "fc7.weight", Shape{f, f});
    store.declare(head + "fc7.bias", Shape{f});
    store.declare(head + "fc8.weight", Shape{s.classes, f});
    store.declare(head + "fc8.bias", Shape{s.classes});
  }
}

template <class T>
std::unique_ptr<ParameterStore<T>> make_store(const std::vector<std::string>& columns,
                                              const ColumnSpec& spec) {
  auto store = std::make_unique<ParameterStore<T>>();
  for (const auto& c : columns) declare_column(*store, c, spec);
  store->allocate();
  return store;
}

template <class T>
nddr::TensorView<T> view_of(ParameterStore<T>& store, const std::string& name) {
  if (auto id = store.find(name)) return store.value(*id);
  if (auto id = store.find_buffer(name)) return store.buffer(*id);
  FAIL("no store entry " << name);
  return {};
}

template <class T>
std::vector<double> values_of(ParameterStore<T>& store, const std::string& name) {
  const auto v = view_of(store, name);
  return std::vector<double>(v.data(), v.data() + v.shape().numel());
}

// Distinct, deterministic values in every parameter and buffer.
template <class T>
void fill(ParameterStore<T>& store, double seed) {
  double k = seed;
  for (const auto* entries : {&store.parameters(), &store.buffers()})
    for (const auto& e : *entries) {
      auto v = view_of(store, e.name);
      for (std::int64_t i = 0; i < v.shape().numel(); ++i)
        v.data()[i] = static_cast<T>(std::sin(k += 1.0));
    }
}

template <class T>
bool all_zero(ParameterStore<T>& store, const std::string& name) {
  const auto v = values_of(store, name);
  return std::all_of(v.begin(), v.end(), [](double x) { return x == 0.0; });
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

const std::array<int, 13> kFeatureIndex = {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28};

// "stage{s}.conv{s}_{i}" of the k-th convolution.
std::string conv_name(int k) {
  int s = 0;
  while (k >= kConvsPerStage[static_cast<std::size_t>(s)])
    k -= kConvsPerStage[static_cast<std::size_t>(s++)];
  return "stage" + std::to_string(s + 1) + ".conv" + std::to_string(s + 1) + "_" +
         std::to_string(k + 1);
}

// Writes `shapes` (name -> extents) with deterministic values, in dtype float.
class SyntheticFile {
 public:
  void add(const std::string& name, Shape shape) {
    tensors_.emplace_back(shape);
    auto& t = tensors_.back();
    for (std::int64_t i = 0; i < t.numel(); ++i)
      t.data()[i] = static_cast<float>(std::cos(0.37 * static_cast<double>(i) + counter_));
    counter_ += 1.0;
    names_.push_back(name);
  }
  void write(const std::string& path) const {
    std::vector<nddr::io::SafetensorsEntry> entries;
    for (std::size_t i = 0; i < names_.size(); ++i)
      entries.push_back(nddr::io::entry(names_[i], tensors_[i]));
    nddr::io::write_safetensors(path, entries);
  }

 private:
  std::deque<nddr::Tensor<float>> tensors_;
  std::vector<std::string> names_;
  double counter_ = 0.0;
};

// A DeepLab-LargeFOV file: the 13 convs at `spec`'s widths, fc6 (F, C5, 3, 3), fc7 (F, F, 1, 1)
// and fc8 (21, F, 1, 1) with F = spec.fc_width, each with a bias.
void write_deeplab_file(const std::string& path, const ColumnSpec& spec) {
  SyntheticFile file;
  std::int64_t c_in = 3;
  for (int k = 0; k < 13; ++k) {
    const std::string key = conv_name(k).substr(7);  // "convS_I"
    const std::int64_t w = spec.widths[static_cast<std::size_t>(key[4] - '1')];
    file.add(key + ".weight", Shape{w, c_in, 3, 3});
    file.add(key + ".bias", Shape{w});
    c_in = w;
  }
  const std::int64_t fc = spec.fc_width;
  file.add("fc6.weight", Shape{fc, spec.widths[4], 3, 3});
  file.add("fc6.bias", Shape{fc});
  file.add("fc7.weight", Shape{fc, fc, 1, 1});
  file.add("fc7.bias", Shape{fc});
  file.add("fc8.weight", Shape{21, fc, 1, 1});
  file.add("fc8.bias", Shape{21});
  file.write(path);
}

// A column of the real nddr::VGG16 (stages and LargeFOV head) under `prefix`, to check that the
// import names match the network's.
template <class T>
void declare_vgg16_column(ParameterStore<T>& store, const std::string& prefix,
                          std::int64_t classes) {
  nddr::VGG16::Stage1::build<T, nddr::Cpu>().declare(store, prefix + ".stage1");
  nddr::VGG16::Stage2::build<T, nddr::Cpu>().declare(store, prefix + ".stage2");
  nddr::VGG16::Stage3::build<T, nddr::Cpu>().declare(store, prefix + ".stage3");
  nddr::VGG16::Stage4::build<T, nddr::Cpu>().declare(store, prefix + ".stage4");
  nddr::VGG16::Stage5::build<T, nddr::Cpu>().declare(store, prefix + ".stage5");
  nddr::VGG16::head::build<T, nddr::Cpu>(512, classes).declare(store, prefix + ".head");
}

// Copies `src` to `dst` without the keys in `drop` and with float tensors `add`.
void rewrite(const std::string& src, const std::string& dst, const std::vector<std::string>& drop,
             const std::map<std::string, Shape>& add = {}) {
  const auto f = SafetensorsFile::read(src);
  std::deque<nddr::Tensor<double>> keep;
  std::vector<nddr::io::SafetensorsEntry> entries;
  for (const auto& name : f.names()) {
    if (std::find(drop.begin(), drop.end(), name) != drop.end()) continue;
    keep.push_back(f.tensor<double>(name));
    entries.push_back(nddr::io::entry(name, keep.back()));
  }
  for (const auto& [name, shape] : add) {
    keep.emplace_back(shape, 0.5);
    entries.push_back(nddr::io::entry(name, keep.back()));
  }
  nddr::io::write_safetensors(dst, entries);
}

}  // namespace

TEST_CASE("save_parameters / load_parameters round trip parameters and buffers exactly",
          "[networks][weights]") {
  TempDir dir("nddr_weights_test_");
  const std::string path = dir.file("ckpt.safetensors");
  auto a = make_store<double>({"task0", "task1"}, ColumnSpec::mini());
  fill(*a, 0.0);
  nddr::io::save_parameters(path, *a, {{"step", "42"}});

  const auto f = SafetensorsFile::read(path);
  CHECK(f.metadata().at("step") == "42");
  CHECK(f.dtype("task0.stage1.conv1_1.weight") == nddr::io::Dtype::kF64);
  CHECK(f.contains("task1.stage3.conv3_2.bn.running_var"));
  CHECK(f.names().size() == a->parameters().size() + a->buffers().size());

  auto b = make_store<double>({"task0", "task1"}, ColumnSpec::mini());
  const auto report = nddr::io::load_parameters(path, *b);
  CHECK(report.complete());
  CHECK(report.skipped.empty());
  CHECK(report.loaded.size() == f.names().size());
  for (const auto* entries : {&a->parameters(), &a->buffers()})
    for (const auto& e : *entries) {
      INFO(e.name);
      CHECK(values_of(*a, e.name) == values_of(*b, e.name));
    }

  SECTION("a float store writes F32 and loads back into double exactly") {
    auto fa = make_store<float>({"task0"}, ColumnSpec::mini());
    fill(*fa, 3.0);
    nddr::io::save_parameters(path, *fa);
    CHECK(SafetensorsFile::read(path).dtype("task0.head.fc8.bias") == nddr::io::Dtype::kF32);
    auto db = make_store<double>({"task0"}, ColumnSpec::mini());
    CHECK(nddr::io::load_parameters(path, *db).complete());
    CHECK(values_of(*fa, "task0.stage5.conv5_3.bn.running_mean") ==
          values_of(*db, "task0.stage5.conv5_3.bn.running_mean"));
    CHECK(values_of(*fa, "task0.head.fc6.weight") == values_of(*db, "task0.head.fc6.weight"));
  }
}

TEST_CASE("load_parameters strict mode lists every missing and unexpected key",
          "[networks][weights]") {
  TempDir dir("nddr_weights_test_");
  const std::string path = dir.file("ckpt.safetensors");
  ParameterStore<double> a;
  a.declare("x.weight", Shape{2, 3});
  a.declare("only_in_file.a", Shape{1});
  a.declare("only_in_file.b", Shape{2});
  a.declare_buffer("x.running_mean", Shape{2});
  a.allocate();
  fill(a, 1.0);
  nddr::io::save_parameters(path, a);

  ParameterStore<double> b;
  b.declare("x.weight", Shape{2, 3});
  b.declare("only_in_store.a", Shape{4});
  b.declare_buffer("x.running_mean", Shape{2});
  b.declare_buffer("only_in_store.buf", Shape{3});
  b.allocate();

  SECTION("strict throws naming all of them and leaves the store untouched") {
    try {
      nddr::io::load_parameters(path, b);
      FAIL("expected IoError");
    } catch (const nddr::IoError& e) {
      const std::string msg = e.what();
      CHECK_THAT(msg, Contains(path));
      CHECK_THAT(msg, Contains("2 missing and 2 unexpected"));
      CHECK_THAT(msg, Contains("'only_in_store.a'"));
      CHECK_THAT(msg, Contains("'only_in_store.buf'"));
      CHECK_THAT(msg, Contains("'only_in_file.a'"));
      CHECK_THAT(msg, Contains("'only_in_file.b'"));
    }
    CHECK(all_zero(b, "x.weight"));
  }
  SECTION("non-strict reports them and loads the rest") {
    const auto r = nddr::io::load_parameters(path, b, nddr::io::LoadOptions{}.with_strict(false));
    CHECK(sorted(r.loaded) == std::vector<std::string>{"x.running_mean", "x.weight"});
    CHECK(sorted(r.missing) == std::vector<std::string>{"only_in_store.a", "only_in_store.buf"});
    CHECK(sorted(r.unexpected) == std::vector<std::string>{"only_in_file.a", "only_in_file.b"});
    CHECK_FALSE(r.complete());
    CHECK(values_of(b, "x.weight") == values_of(a, "x.weight"));
    CHECK(values_of(b, "x.running_mean") == values_of(a, "x.running_mean"));
    CHECK(all_zero(b, "only_in_store.a"));
  }
}

TEST_CASE("load_parameters shape mismatch names file, tensor and both shapes",
          "[networks][weights]") {
  TempDir dir("nddr_weights_test_");
  const std::string path = dir.file("ckpt.safetensors");
  auto a = make_store<float>({"task0"}, ColumnSpec::mini());
  nddr::io::save_parameters(path, *a);

  ParameterStore<float> b;
  b.declare("task0.stage1.conv1_1.weight", Shape{2, 4, 3, 3});
  b.declare_buffer("task0.stage1.conv1_1.bn.running_var", Shape{3});
  b.allocate();
  // Shapes are checked in non-strict mode too.
  const auto lenient = nddr::io::LoadOptions{}.with_strict(false);
  CHECK_THROWS_AS(nddr::io::load_parameters(path, b, lenient), nddr::IoError);
  try {
    nddr::io::load_parameters(path, b, lenient);
  } catch (const nddr::IoError& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Contains(path));
    CHECK_THAT(msg, Contains("'task0.stage1.conv1_1.weight' has shape (2, 3, 3, 3) in the file, "
                             "expected (2, 4, 3, 3)"));
    CHECK_THAT(msg, Contains("'task0.stage1.conv1_1.bn.running_var' has shape (2) in the file, "
                             "expected (3)"));
  }
}

TEST_CASE("load_parameters rename hook remaps prefixes and skips keys", "[networks][weights]") {
  TempDir dir("nddr_weights_test_");
  const std::string path = dir.file("st.safetensors");
  auto single = make_store<double>({"task0"}, ColumnSpec::mini());
  fill(*single, 5.0);
  nddr::io::save_parameters(path, *single);
  auto multi = make_store<double>({"task0", "task1"}, ColumnSpec::mini());

  SECTION("replace_prefix loads one column into another") {
    const auto r = nddr::io::load_parameters(path, *multi,
                                             nddr::io::LoadOptions{}.with_strict(false).with_rename(
                                                 nddr::io::replace_prefix("task0.", "task1.")));
    CHECK(r.unexpected.empty());
    CHECK(r.skipped.empty());
    CHECK(r.loaded.size() == single->parameters().size() + single->buffers().size());
    CHECK(r.missing.size() == r.loaded.size());  // every task0 entry
    CHECK(values_of(*multi, "task1.stage4.conv4_2.weight") ==
          values_of(*single, "task0.stage4.conv4_2.weight"));
    CHECK(values_of(*multi, "task1.head.fc7.bn.running_mean") ==
          values_of(*single, "task0.head.fc7.bn.running_mean"));
    CHECK(all_zero(*multi, "task0.stage4.conv4_2.weight"));
  }
  SECTION("nullopt skips a key and the report lists it") {
    const auto r =
        nddr::io::load_parameters(path, *single,
                                  nddr::io::LoadOptions{}.with_strict(false).with_rename(
                                      [](std::string_view k) -> std::optional<std::string> {
                                        if (k.ends_with(".running_var")) return std::nullopt;
                                        return std::string(k);
                                      }));
    CHECK(r.skipped.size() == 15);  // 13 conv BNs + fc6.bn + fc7.bn
    CHECK(r.missing.size() == 15);
    CHECK(std::find(r.skipped.begin(), r.skipped.end(), "task0.head.fc6.bn.running_var") !=
          r.skipped.end());
  }
  SECTION("two keys renamed to one store entry throw") {
    CHECK_THROWS_WITH(
        nddr::io::load_parameters(
            path, *single,
            nddr::io::LoadOptions{}.with_rename([](std::string_view) -> std::optional<std::string> {
              return std::string("task0.head.fc8.bias");
            })),
        Contains("both map to 'task0.head.fc8.bias'"));
  }
}

TEST_CASE("load_parameters rejects corrupt files, integer tensors, unallocated stores",
          "[networks][weights]") {
  TempDir dir("nddr_weights_test_");
  const std::string path = dir.file("ckpt.safetensors");
  auto a = make_store<float>({"task0"}, ColumnSpec::mini());
  nddr::io::save_parameters(path, *a);
  auto b = make_store<float>({"task0"}, ColumnSpec::mini());

  SECTION("truncated") {
    fs::resize_file(path, fs::file_size(path) / 2);
    CHECK_THROWS_AS(nddr::io::load_parameters(path, *b), nddr::IoError);
    CHECK_THROWS_WITH(nddr::io::load_parameters(path, *b), Contains(path));
    CHECK_THROWS_WITH(nddr::io::import_deeplab_largefov(path, *b, {"task0"}), Contains(path));
  }
  SECTION("absent") {
    CHECK_THROWS_WITH(nddr::io::load_parameters(dir.file("nope.safetensors"), *b),
                      Contains("nope.safetensors"));
  }
  SECTION("integer dtype") {
    nddr::Tensor<std::int64_t> t(Shape{2});
    nddr::io::write_safetensors(path, {nddr::io::entry("task0.head.fc8.bias", t)});
    CHECK_THROWS_WITH(
        nddr::io::load_parameters(path, *b, nddr::io::LoadOptions{}.with_strict(false)),
        Contains("'task0.head.fc8.bias' has dtype I64, expected a floating dtype"));
  }
  SECTION("unallocated") {
    ParameterStore<float> c;
    c.declare("w", Shape{1});
    CHECK_THROWS_WITH(nddr::io::load_parameters(path, c), Contains("not allocated"));
    CHECK_THROWS_WITH(nddr::io::save_parameters(path, c), Contains("not allocated"));
  }
}

TEST_CASE("import_torchvision_vgg16: torch-written mini state_dict into two columns",
          "[networks][weights]") {
  const auto f = SafetensorsFile::read(kMini);
  REQUIRE(f.names().size() == 32);
  REQUIRE(f.dtype("features.0.weight") == nddr::io::Dtype::kF32);
  REQUIRE(f.dtype("classifier.0.weight") == nddr::io::Dtype::kF64);

  SECTION("LargeFOV columns: every kernel in both, biases dropped, classifier skipped") {
    auto store = make_store<float>({"task0", "task1"}, ColumnSpec::mini());
    const auto r = nddr::io::import_torchvision_vgg16(kMini, *store, {"task0", "task1"});
    CHECK(r.complete());
    CHECK(r.loaded.size() == 26);
    CHECK(r.skipped.size() == 13 + 6);
    for (int k = 0; k < 13; ++k) {
      const std::string key =
          "features." + std::to_string(kFeatureIndex[static_cast<std::size_t>(k)]);
      INFO(key);
      CHECK(std::find(r.skipped.begin(), r.skipped.end(), key + ".bias") != r.skipped.end());
      const auto expected = f.values<float>(key + ".weight");
      for (const std::string col : {"task0", "task1"}) {
        const auto got = values_of(*store, col + "." + conv_name(k) + ".weight");
        CHECK(std::equal(got.begin(), got.end(), expected.begin(), expected.end()));
      }
    }
    for (const std::string key :
         {"classifier.0.weight", "classifier.3.bias", "classifier.6.weight"})
      CHECK(std::find(r.skipped.begin(), r.skipped.end(), key) != r.skipped.end());
    CHECK(all_zero(*store, "task0.head.fc6.weight"));
    CHECK(all_zero(*store, "task1.stage1.conv1_1.bn.weight"));
  }
  SECTION("classifier heads take fc6/fc7, fc8 only with the same class count") {
    auto store = std::make_unique<ParameterStore<double>>();
    declare_column(*store, "task0", ColumnSpec::mini(Head::kClassifier));
    auto three = ColumnSpec::mini(Head::kClassifier);
    three.classes = 3;
    declare_column(*store, "task1", three);
    store->allocate();
    const auto r = nddr::io::import_torchvision_vgg16(kMini, *store, {"task0", "task1"});
    CHECK(r.complete());
    CHECK(r.loaded.size() == 26 + 2 * 4 + 2);
    CHECK(r.skipped.size() == 13);
    CHECK(values_of(*store, "task1.head.fc6.weight") == f.values<double>("classifier.0.weight"));
    CHECK(values_of(*store, "task0.head.fc7.bias") == f.values<double>("classifier.3.bias"));
    CHECK(values_of(*store, "task0.head.fc8.weight") == f.values<double>("classifier.6.weight"));
    CHECK(all_zero(*store, "task1.head.fc8.weight"));
  }
  SECTION("keep_biases loads conv biases where declared and requires them") {
    auto spec = ColumnSpec::mini();
    spec.conv_bias = true;
    auto store = make_store<float>({"task0"}, spec);
    const auto opt = nddr::io::ImportOptions{}.with_keep_biases(true);
    const auto r = nddr::io::import_torchvision_vgg16(kMini, *store, {"task0"}, opt);
    CHECK(r.loaded.size() == 26);
    const auto got = values_of(*store, "task0.stage3.conv3_3.bias");
    const auto expected = f.values<float>("features.14.bias");
    CHECK(std::equal(got.begin(), got.end(), expected.begin(), expected.end()));

    auto no_bias = make_store<float>({"task0"}, ColumnSpec::mini());
    CHECK_THROWS_WITH(nddr::io::import_torchvision_vgg16(kMini, *no_bias, {"task0"}, opt),
                      Contains("no entry 'task0.stage1.conv1_1.bias' for file key "
                               "'features.0.bias' (ImportOptions::keep_biases"));
  }
  SECTION("a wrong column prefix throws") {
    auto store = make_store<float>({"task0"}, ColumnSpec::mini());
    CHECK_THROWS_WITH(nddr::io::import_torchvision_vgg16(kMini, *store, {"column0"}),
                      Contains("no entry 'column0.stage1.conv1_1.weight'"));
  }
  SECTION("shape mismatch against the store throws, store untouched") {
    auto spec = ColumnSpec::mini();
    spec.widths[4] = 4;
    auto store = make_store<float>({"task0"}, spec);
    CHECK_THROWS_WITH(nddr::io::import_torchvision_vgg16(kMini, *store, {"task0"}),
                      Contains("'features.24.weight' has shape (3, 3, 3, 3) in the file, "
                               "expected (4, 3, 3, 3) for 'task0.stage5.conv5_1.weight'"));
    CHECK(all_zero(*store, "task0.stage1.conv1_1.weight"));
  }
}

TEST_CASE("import_torchvision_vgg16 reports missing and unexpected keys", "[networks][weights]") {
  TempDir dir("nddr_weights_test_");
  const std::string path = dir.file("partial.safetensors");
  rewrite(kMini, path, {"features.28.weight", "features.5.weight"},
          {{"features.1.weight", Shape{2}}, {"extra.num_batches_tracked", Shape{1}}});
  auto store = make_store<float>({"task0", "task1"}, ColumnSpec::mini());
  try {
    nddr::io::import_torchvision_vgg16(path, *store, {"task0", "task1"});
    FAIL("expected IoError");
  } catch (const nddr::IoError& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Contains(path));
    CHECK_THAT(msg, Contains("4 missing and 2 unexpected"));
    for (const char* name : {"'task0.stage5.conv5_3.weight'", "'task1.stage5.conv5_3.weight'",
                             "'task0.stage2.conv2_1.weight'", "'task1.stage2.conv2_1.weight'",
                             "'features.1.weight'", "'extra.num_batches_tracked'"})
      CHECK_THAT(msg, Contains(name));
  }
  CHECK(all_zero(*store, "task0.stage1.conv1_1.weight"));

  const auto r = nddr::io::import_torchvision_vgg16(path, *store, {"task0", "task1"},
                                                    nddr::io::ImportOptions{}.with_strict(false));
  CHECK(r.loaded.size() == 22);
  CHECK(sorted(r.missing) ==
        std::vector<std::string>{"task0.stage2.conv2_1.weight", "task0.stage5.conv5_3.weight",
                                 "task1.stage2.conv2_1.weight", "task1.stage5.conv5_3.weight"});
  CHECK(sorted(r.unexpected) ==
        std::vector<std::string>{"extra.num_batches_tracked", "features.1.weight"});
  CHECK_FALSE(all_zero(*store, "task1.stage1.conv1_1.weight"));
  CHECK(all_zero(*store, "task1.stage5.conv5_3.weight"));
}

TEST_CASE("import_torchvision_vgg16: full-size VGG-16 feature kernels into two columns",
          "[networks][weights]") {
  TempDir dir("nddr_weights_test_");
  const std::string path = dir.file("vgg16.safetensors");
  {
    SyntheticFile file;
    const ColumnSpec spec;
    std::int64_t c_in = 3;
    for (int k = 0, s = 0, i = 0; k < 13; ++k) {
      const std::int64_t w = spec.widths[static_cast<std::size_t>(s)];
      const std::string key =
          "features." + std::to_string(kFeatureIndex[static_cast<std::size_t>(k)]);
      file.add(key + ".weight", Shape{w, c_in, 3, 3});
      file.add(key + ".bias", Shape{w});
      c_in = w;
      if (++i == kConvsPerStage[static_cast<std::size_t>(s)]) {
        i = 0;
        ++s;
      }
    }
    file.write(path);
  }
  // The real network's names: the import must find every kernel (strict).
  auto store = std::make_unique<ParameterStore<float>>();
  declare_vgg16_column(*store, "task0", 40);
  declare_vgg16_column(*store, "task1", 3);
  store->allocate();
  const auto r = nddr::io::import_torchvision_vgg16(path, *store, {"task0", "task1"});
  CHECK(r.complete());
  CHECK(r.loaded.size() == 26);
  CHECK(r.skipped.size() == 13);
  const auto f = SafetensorsFile::read(path);
  for (int k = 0; k < 13; ++k) {
    const std::string key =
        "features." + std::to_string(kFeatureIndex[static_cast<std::size_t>(k)]);
    const auto expected = f.values<float>(key + ".weight");
    for (const std::string col : {"task0", "task1"}) {
      INFO(col << "." << conv_name(k));
      const auto got = values_of(*store, col + "." + conv_name(k) + ".weight");
      CHECK(std::equal(got.begin(), got.end(), expected.begin(), expected.end()));
    }
  }
  CHECK(values_of(*store, "task1.stage5.conv5_3.weight").size() == 512 * 512 * 9);
}

TEST_CASE("import_deeplab_largefov: full-size kernels and LargeFOV heads, fc8 skipped",
          "[networks][weights]") {
  TempDir dir("nddr_weights_test_");
  const std::string path = dir.file("deeplab.safetensors");
  write_deeplab_file(path, ColumnSpec{});
  const auto f = SafetensorsFile::read(path);
  ParameterStore<float> store;
  declare_vgg16_column(store, "task0", 40);
  declare_vgg16_column(store, "task1", 3);
  store.allocate();
  const auto r = nddr::io::import_deeplab_largefov(path, store, {"task0", "task1"});
  CHECK(r.complete());
  CHECK(r.loaded.size() == 2 * 15);
  CHECK(sorted(r.skipped).size() == 13 + 4);
  for (const char* key : {"fc6.bias", "fc7.bias", "fc8.weight", "fc8.bias", "conv5_3.bias"})
    CHECK(std::find(r.skipped.begin(), r.skipped.end(), key) != r.skipped.end());
  for (const std::string col : {"task0", "task1"}) {
    for (int k = 0; k < 13; ++k) {
      INFO(col << "." << conv_name(k));
      const auto expected = f.values<float>(conv_name(k).substr(7) + ".weight");
      const auto got = values_of(store, col + "." + conv_name(k) + ".weight");
      CHECK(std::equal(got.begin(), got.end(), expected.begin(), expected.end()));
    }
    for (const std::string fc : {"fc6", "fc7"}) {
      const auto expected = f.values<float>(fc + ".weight");
      const auto got = values_of(store, col + ".head." + fc + ".weight");
      CHECK(std::equal(got.begin(), got.end(), expected.begin(), expected.end()));
    }
    CHECK(all_zero(store, col + ".head.fc8.weight"));
    CHECK(all_zero(store, col + ".head.fc6.bn.weight"));
  }
}

TEST_CASE("import_deeplab_largefov: split trunk, backbone-only store, keep_biases, errors",
          "[networks][weights]") {
  TempDir dir("nddr_weights_test_");
  const std::string path = dir.file("deeplab_mini.safetensors");
  const auto spec = ColumnSpec::mini();
  write_deeplab_file(path, spec);
  const auto f = SafetensorsFile::read(path);

  SECTION("shared trunk with per-task heads") {
    ParameterStore<double> store;
    auto trunk = spec;
    trunk.head = Head::kNone;
    declare_column(store, "shared", trunk);
    declare_column(store, "task0", spec, false);
    declare_column(store, "task1", spec, false);
    store.allocate();
    const auto r = nddr::io::import_deeplab_largefov(
        path, store, {"shared"}, nddr::io::ImportOptions{}.with_head_prefixes({"task0", "task1"}));
    CHECK(r.complete());
    CHECK(r.loaded.size() == 13 + 4);
    CHECK(values_of(store, "shared.stage2.conv2_2.weight") == f.values<double>("conv2_2.weight"));
    CHECK(values_of(store, "task1.head.fc6.weight") == f.values<double>("fc6.weight"));
    CHECK(values_of(store, "task0.head.fc7.weight") == f.values<double>("fc7.weight"));
  }
  SECTION("a backbone-only store skips fc6 and fc7") {
    auto trunk = spec;
    trunk.head = Head::kNone;
    auto store = make_store<double>({"task0"}, trunk);
    const auto r = nddr::io::import_deeplab_largefov(path, *store, {"task0"});
    CHECK(r.complete());
    CHECK(r.loaded.size() == 13);
    CHECK(r.skipped.size() == 13 + 6);
  }
  SECTION("keep_biases") {
    auto with_bias = spec;
    with_bias.conv_bias = true;
    auto store = make_store<double>({"task0"}, with_bias);
    const auto opt = nddr::io::ImportOptions{}.with_keep_biases(true);
    // The LargeFOV head convolutions have no bias.
    CHECK_THROWS_WITH(nddr::io::import_deeplab_largefov(path, *store, {"task0"}, opt),
                      Contains("no entry 'task0.head.fc6.bias' for file key 'fc6.bias'"));
    auto trunk = with_bias;
    trunk.head = Head::kNone;
    auto backbone = make_store<double>({"task0"}, trunk);
    const auto r = nddr::io::import_deeplab_largefov(path, *backbone, {"task0"}, opt);
    CHECK(r.loaded.size() == 26);
    CHECK(values_of(*backbone, "task0.stage4.conv4_1.bias") == f.values<double>("conv4_1.bias"));
  }
  SECTION("missing kernels and shape mismatches") {
    const std::string partial = dir.file("partial.safetensors");
    rewrite(path, partial, {"conv1_1.weight", "fc7.weight"}, {{"pool5.weight", Shape{1}}});
    auto store = make_store<double>({"task0"}, spec);
    CHECK_THROWS_WITH(nddr::io::import_deeplab_largefov(partial, *store, {"task0"}),
                      Contains("2 missing and 1 unexpected"));
    const auto r = nddr::io::import_deeplab_largefov(partial, *store, {"task0"},
                                                     nddr::io::ImportOptions{}.with_strict(false));
    CHECK(sorted(r.missing) ==
          std::vector<std::string>{"task0.head.fc7.weight", "task0.stage1.conv1_1.weight"});
    CHECK(r.unexpected == std::vector<std::string>{"pool5.weight"});

    auto wide = spec;
    wide.fc_width = 16;
    auto other = make_store<double>({"task0"}, wide);
    CHECK_THROWS_WITH(nddr::io::import_deeplab_largefov(path, *other, {"task0"}),
                      Contains("'fc6.weight' has shape (8, 3, 3, 3) in the file, expected "
                               "(16, 3, 3, 3) for 'task0.head.fc6.weight'"));
  }
}
