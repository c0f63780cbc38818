// The authors' TensorFlow checkpoints into nddr networks (nddr::io::load_tf_checkpoint): the
// TF-slim name tables, and the TensorFlow-written fixtures of tests/data/tf (single-task and
// NDDR-CNN names at tiny widths, tools/reference/tf_checkpoints.py) loaded into a real
// NDDR network of the same shapes, bit for bit against TensorFlow's reading (expected.safetensors)
// with kernels transposed from HWIO to OIHW.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nddr/backbones/vgg16.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/fusion/none.hpp>
#include <nddr/fusion/shortcut.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/io/tf_weights.hpp>
#include <nddr/multitask/network.hpp>
#include <nddr/nddr.hpp>
#include <string>
#include <vector>

using Catch::Contains;
using nddr::io::TfNameMapping;
using nddr::io::TfScheme;

namespace {

const std::string kTf = NDDR_TEST_DATA_DIR "/tf";

// The fixture's widths: LargeFOV with fc6/fc7 of 5 channels.
struct MiniFovHead {
  static constexpr const char* name = "minifov";
  template <class T, class D>
  static nddr::Sequential<T, D> build(std::int64_t in_channels, std::int64_t outputs) {
    nddr::Sequential<T, D> s;
    nddr::backbones::detail::add_conv_bn_relu(s, "fc6", in_channels, 5, 3,
                                              nddr::Conv2dOptions{}.dilation(12));
    nddr::backbones::detail::add_conv_bn_relu(s, "fc7", 5, 5, 1);
    s.add("fc8", nddr::OutputConv2d<T, D>(5, outputs, 1));
    return s;
  }
};

// VGG16's structure (2, 2, 3, 3, 3 convs) with stage widths 2, 2, 3, 4, 4.
struct MiniVgg {
  static constexpr const char* name = "minivgg";
  static constexpr std::int64_t input_channels = 3;
  struct Stage1 : nddr::vgg16::detail::Stage<1, 2, 3, 2, 1, 2, false> {};
  struct Stage2 : nddr::vgg16::detail::Stage<2, 2, 2, 2, 1, 2, false> {};
  struct Stage3 : nddr::vgg16::detail::Stage<3, 3, 2, 3, 1, 2, false> {};
  struct Stage4 : nddr::vgg16::detail::Stage<4, 3, 3, 4, 1, 1, false> {};
  struct Stage5 : nddr::vgg16::detail::Stage<5, 3, 4, 4, 2, 1, true> {};
  using stages = nddr::StageList<Stage1, Stage2, Stage3, Stage4, Stage5>;
  using head = MiniFovHead;
};

using MiniNddr = nddr::Network<nddr::MultiTask<MiniVgg, MiniVgg, nddr::NDDR>>;
using MiniNddrShortcut =
    nddr::Network<nddr::MultiTask<MiniVgg, MiniVgg, nddr::Shortcut<nddr::NDDR>>>;
using MiniBaseline = nddr::Network<nddr::MultiTask<MiniVgg, MiniVgg, nddr::Shared<5>>>;

std::size_t store_entries(const nddr::ParameterStore<float>& store) {
  return store.parameters().size() + store.buffers().size();
}

std::vector<float> store_values(const nddr::ParameterStore<float>& store, const std::string& name) {
  const auto slot = nddr::io::detail::find_slot(store, name);
  REQUIRE(slot.has_value());
  auto v = slot->is_buffer ? store.buffer(slot->id) : store.value(slot->id);
  return {v.data(), v.data() + v.numel()};
}

// Every variable of the fixture that `scheme` maps (and the first exclusion does not skip) sits
// in the store, bit for bit, transposed.
std::size_t check_loaded(const nddr::ParameterStore<float>& store, const std::string& dir,
                         TfScheme scheme, const nddr::io::TfImportOptions& opt) {
  const auto want = nddr::io::SafetensorsFile::read(kTf + "/" + dir + "/expected.safetensors");
  std::size_t n = 0;
  for (const std::string& key : want.names()) {
    const TfNameMapping m = nddr::io::map_tf_name(key, scheme, opt);
    if (m.kind != TfNameMapping::Kind::kMapped) continue;
    if (!opt.exclude.empty() && key.find(opt.exclude[0]) != std::string::npos) continue;
    INFO(key << " -> " << m.name);
    const std::vector<float> ref = want.values<float>(key);
    const std::vector<std::int64_t>& s = want.shape(key);
    const std::vector<float> got = store_values(store, m.name);
    REQUIRE(got.size() == ref.size());
    if (s.size() == 4) {  // ref HWIO (kh, kw, ci, co), got OIHW
      for (std::int64_t y = 0; y < s[0]; ++y)
        for (std::int64_t x = 0; x < s[1]; ++x)
          for (std::int64_t i = 0; i < s[2]; ++i)
            for (std::int64_t o = 0; o < s[3]; ++o)
              REQUIRE(got[static_cast<std::size_t>(((o * s[2] + i) * s[0] + y) * s[1] + x)] ==
                      ref[static_cast<std::size_t>(((y * s[1] + x) * s[2] + i) * s[3] + o)]);
    } else {
      CHECK(got == ref);
    }
    ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("tf_weights: the authors' names map to nddr's", "[networks][tf_checkpoint]") {
  using K = TfNameMapping::Kind;
  auto name = [](std::string_view tf, TfScheme s) {
    const TfNameMapping m = nddr::io::map_tf_name(tf, s);
    return m.kind == K::kMapped ? m.name : m.kind == K::kSkipped ? "<skipped>" : "<unknown>";
  };
  const TfScheme st = TfScheme::kSingleTask, mt = TfScheme::kMultiTaskBaseline,
                 nd = TfScheme::kNddr;
  CHECK(name("vgg_16/conv3/conv3_2/weights", st) == "task0.stage3.conv3_2.weight");
  CHECK(name("vgg_16/conv3/conv3_2/BatchNorm/gamma", st) == "task0.stage3.conv3_2.bn.weight");
  CHECK(name("vgg_16/conv3/conv3_2/BatchNorm/beta", st) == "task0.stage3.conv3_2.bn.bias");
  CHECK(name("vgg_16/fc6/BatchNorm/moving_mean", st) == "task0.head.fc6.bn.running_mean");
  CHECK(name("vgg_16/fc7/BatchNorm/moving_variance", st) == "task0.head.fc7.bn.running_var");
  CHECK(name("vgg_16/fc8_voc12/weights", st) == "task0.head.fc8.weight");
  CHECK(name("vgg_16/fc8_voc12/biases", st) == "task0.head.fc8.bias");
  CHECK(name("vgg_16/conv1/conv1_1/biases", st) == "<skipped>");  // VOC model: dropped
  CHECK(name("vgg_16/conv1/conv1_1/weights/Momentum", st) == "<skipped>");
  CHECK(name("vgg_16/shortcuts/weights", st) == "<skipped>");
  CHECK(name("vgg_16/conv3/conv2_1/weights", st) == "<unknown>");
  CHECK(name("vgg_16/conv6/conv6_1/weights", st) == "<unknown>");
  CHECK(name("global_step", st) == "<unknown>");
  CHECK(name("vgg_16_1_1/conv1/conv1_1/weights", st) == "<unknown>");

  CHECK(name("vgg_16/conv5/conv5_3/weights", mt) == "shared.stage5.conv5_3.weight");
  CHECK(name("vgg_16_2_6/fc7/weights", mt) == "task1.head.fc7.weight");
  CHECK(name("vgg_16_1_3/conv3/conv3_1/weights", mt) == "<unknown>");

  CHECK(name("vgg_16_2_4/conv4/conv4_3/BatchNorm/gamma", nd) == "task1.stage4.conv4_3.bn.weight");
  CHECK(name("vgg_16_1_6/fc8_voc12/biases", nd) == "task0.head.fc8.bias");
  CHECK(name("vgg_16_1_4/conv3/conv3_1/weights", nd) == "<unknown>");  // stage digit mismatch
  CHECK(name("vgg_16_3_1/conv1/conv1_1/weights", nd) == "<unknown>");  // two tasks only
  CHECK(name("nddr_3/nddr_3_n2/weights", nd) == "fusion.stage3.task1.conv.weight");
  CHECK(name("nddr_5/nddr_5_n1/BatchNorm/moving_variance", nd) ==
        "fusion.stage5.task0.bn.running_var");
  CHECK(name("nddr_shortcut_2/weights", nd) == "shortcut.task1.conv.weight");
  CHECK(name("nddr_shortcut_1/BatchNorm/beta", nd) == "shortcut.task0.bn.bias");
  CHECK(name("nddr_2/nddr_3_n1/weights", nd) == "<unknown>");
  CHECK(name("vgg_16/conv1/conv1_1/weights", nd) == "<unknown>");
}

TEST_CASE("tf_weights: NDDR-CNN(-Shortcut) and multi-task baseline checkpoints load bit for bit",
          "[networks][tf_checkpoint]") {
  const std::string nddr_ckpt = kTf + "/nddr_mini/model.ckpt-0";  // NDDR-CNN-Shortcut names
  nddr::NetworkOptions<MiniNddrShortcut::spec_type> options;
  options.shortcut_channels = 4;  // the last stage's width, as 512 in the paper
  MiniNddrShortcut shortcut({3, 2}, options);
  const nddr::io::LoadReport rs =
      nddr::io::load_tf_checkpoint(nddr_ckpt, shortcut.parameters(), TfScheme::kNddr);
  CHECK(rs.complete());
  CHECK(rs.skipped.empty());
  CHECK(rs.loaded.size() == store_entries(shortcut.parameters()));
  CHECK(check_loaded(shortcut.parameters(), "nddr_mini", TfScheme::kNddr, {}) ==
        store_entries(shortcut.parameters()));

  // Plain NDDR-CNN from the same file, as the authors' loader would with 'shortcut' excluded.
  MiniNddr plain({3, 2});
  const auto no_shortcut = nddr::io::TfImportOptions{}.with_exclude({"shortcut"});
  const nddr::io::LoadReport rp =
      nddr::io::load_tf_checkpoint(nddr_ckpt, plain.parameters(), TfScheme::kNddr, no_shortcut);
  CHECK(rp.complete());
  CHECK(rp.skipped.size() == 10);  // 2 x (kernel + 4 BatchNorm)
  CHECK(check_loaded(plain.parameters(), "nddr_mini", TfScheme::kNddr, no_shortcut) ==
        store_entries(plain.parameters()));
  CHECK_THROWS_WITH(nddr::io::load_tf_checkpoint(nddr_ckpt, plain.parameters(), TfScheme::kNddr),
                    Contains("10 unexpected") && Contains("'nddr_shortcut_1/weights'"));

  MiniBaseline baseline({3, 2});
  const nddr::io::LoadReport rb = nddr::io::load_tf_checkpoint(
      kTf + "/mt_mini/model.ckpt-0", baseline.parameters(), TfScheme::kMultiTaskBaseline);
  CHECK(rb.complete());
  CHECK(rb.loaded.size() == store_entries(baseline.parameters()));
  CHECK(check_loaded(baseline.parameters(), "mt_mini", TfScheme::kMultiTaskBaseline, {}) ==
        store_entries(baseline.parameters()));
}

TEST_CASE("tf_weights: single-task checkpoints initialise one column each",
          "[networks][tf_checkpoint]") {
  MiniNddr net({3, 2});
  auto& store = net.parameters();
  const auto before = store_values(store, "fusion.stage1.task0.conv.weight");
  const auto opt = nddr::io::TfImportOptions{}.with_columns({"task0"});
  const nddr::io::LoadReport r = nddr::io::load_tf_checkpoint(kTf + "/st_mini/model.ckpt-0", store,
                                                              TfScheme::kSingleTask, opt);
  CHECK(r.complete());
  // Momentum slots: 16 kernels, gamma and beta of 15 BatchNorms, the fc8 bias.
  CHECK(r.skipped.size() == 16 + 2 * 15 + 1);
  CHECK(check_loaded(store, "st_mini", TfScheme::kSingleTask, opt) == r.loaded.size());
  CHECK(store_values(store, "fusion.stage1.task0.conv.weight") == before);  // fusion untouched

  // Column 1 has 2 outputs, the checkpoint 3 classes: refused, nothing written.
  const auto column1 = store_values(store, "task1.stage1.conv1_1.weight");
  CHECK_THROWS_WITH(
      nddr::io::load_tf_checkpoint(kTf + "/st_mini/model.ckpt-0", store, TfScheme::kSingleTask,
                                   nddr::io::TfImportOptions{}.with_columns({"task1"})),
      Contains("load_tf_checkpoint") && Contains("st_mini/model.ckpt-0") &&
          Contains("'vgg_16/fc8_voc12/weights' has shape (1, 1, 5, 3) (HWIO; OIHW (3, 5, 1, 1))") &&
          Contains("expected (2, 5, 1, 1) for 'task1.head.fc8.weight'"));
  CHECK(store_values(store, "task1.stage1.conv1_1.weight") == column1);

  // As the authors' loader with its exclusion list: fc8 left alone (and not missing).
  const auto fc8 = store_values(store, "task1.head.fc8.weight");
  const auto opt1 = nddr::io::TfImportOptions{}.with_columns({"task1"}).with_exclude({"fc8"});
  const nddr::io::LoadReport r1 = nddr::io::load_tf_checkpoint(kTf + "/st_mini/model.ckpt-0", store,
                                                               TfScheme::kSingleTask, opt1);
  CHECK(r1.complete());
  CHECK(r1.skipped.size() == r.skipped.size() + 2);  // + fc8 weights and biases
  CHECK(store_values(store, "task1.head.fc8.weight") == fc8);
  CHECK(check_loaded(store, "st_mini", TfScheme::kSingleTask, opt1) == r1.loaded.size());
}

TEST_CASE("tf_weights: a checkpoint of another scheme is refused", "[networks][tf_checkpoint]") {
  MiniNddr net({3, 2});
  CHECK_THROWS_WITH(nddr::io::load_tf_checkpoint(kTf + "/nddr_mini/model.ckpt-0", net.parameters(),
                                                 TfScheme::kSingleTask),
                    Contains("missing") && Contains("unexpected") &&
                        Contains("'nddr_1/nddr_1_n1/BatchNorm/beta'"));
  CHECK_THROWS_WITH(nddr::io::load_tf_checkpoint(kTf + "/nddr_mini/model.ckpt-0", net.parameters(),
                                                 TfScheme::kSingleTask,
                                                 nddr::io::TfImportOptions{}.with_strict(false)),
                    Contains("no variable of the checkpoint fits the parameter store"));
  CHECK_THROWS_WITH(
      nddr::io::load_tf_checkpoint(kTf + "/dtypes/ckpt", net.parameters(), TfScheme::kNddr),
      Contains("dtypes/ckpt") && Contains("unexpected"));
}

namespace {

template <class Net>
void check_forward_against_tensorflow(Net& net, const std::string& name, double tolerance) {
  const auto ref = nddr::io::SafetensorsFile::read(kTf + "/forward.safetensors");
  const nddr::Tensor<double> x = ref.tensor<double>("input");
  nddr::Context<nddr::Cpu> ctx;
  net.set_training(false);  // BatchNorm on the moving statistics, dropout off
  const auto outs = net.forward(ctx, x.cview());
  REQUIRE(outs.size() >= 1);
  for (std::size_t k = 0; k < outs.size(); ++k) {
    const std::string key = name + "/task" + std::to_string(k);
    INFO(key);
    const nddr::Tensor<double> want = ref.tensor<double>(key);
    REQUIRE(outs[k].shape() == want.shape());
    double scale = 0.0, worst = 0.0;
    for (std::int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, std::abs(want.data()[i]));
    for (std::int64_t i = 0; i < want.numel(); ++i)
      worst = std::max(worst, std::abs(outs[k].data()[i] - want.data()[i]));
    INFO("largest |TF| " << scale << ", largest difference " << worst);
    CHECK(scale > 0.0);
    CHECK(worst <= tolerance * scale);
  }
}

}  // namespace

// The whole network, not only its weights: nddr's forward pass on the TF-loaded fixtures equals
// a TensorFlow graph built independently from the same variables (tools/reference/tf_forward.py:
// tf.nn ops after the authors' TF-slim code, float64, inference mode) on a 27 x 22 image, in
// double (to 1e-11 of the largest output; the shortcut to float accuracy, see below): the layouts (HWIO -> OIHW), the NDDR concat order [task 1, task 2], SAME pooling of odd
// and even sizes, BatchNorm eps 1e-3, the shortcut's legacy bilinear resize and the heads.
TEST_CASE("tf_weights: forward passes of the loaded fixtures equal TensorFlow's",
          "[networks][tf_checkpoint]") {
  using Cpu = nddr::Cpu;
  SECTION("single-task names") {
    nddr::Network<nddr::MultiTask<MiniVgg, nddr::None>, Cpu, double> net({3});
    const nddr::io::LoadReport r = nddr::io::load_tf_checkpoint(
        kTf + "/st_mini/model.ckpt-0", net.parameters(), TfScheme::kSingleTask);
    CHECK(r.complete());
    check_forward_against_tensorflow(net, "st", 1e-11);
  }
  SECTION("multi-task baseline names") {
    nddr::Network<MiniBaseline::spec_type, Cpu, double> net({3, 2});
    CHECK(nddr::io::load_tf_checkpoint(kTf + "/mt_mini/model.ckpt-0", net.parameters(),
                                       TfScheme::kMultiTaskBaseline)
              .complete());
    check_forward_against_tensorflow(net, "mt", 1e-11);
  }
  SECTION("NDDR-CNN names, shortcut excluded") {
    nddr::Network<MiniNddr::spec_type, Cpu, double> net({3, 2});
    CHECK(nddr::io::load_tf_checkpoint(kTf + "/nddr_mini/model.ckpt-0", net.parameters(),
                                       TfScheme::kNddr,
                                       nddr::io::TfImportOptions{}.with_exclude({"shortcut"}))
              .complete());
    check_forward_against_tensorflow(net, "nddr", 1e-11);
  }
  SECTION("NDDR-CNN-Shortcut names") {
    nddr::NetworkOptions<MiniNddrShortcut::spec_type> options;
    options.shortcut_channels = 4;
    nddr::Network<MiniNddrShortcut::spec_type, Cpu, double> net({3, 2}, options);
    CHECK(nddr::io::load_tf_checkpoint(kTf + "/nddr_mini/model.ckpt-0", net.parameters(),
                                       TfScheme::kNddr)
              .complete());
    // TensorFlow's resize_bilinear computes and returns float32 only, so the reference carries
    // float rounding from the shortcut's resize on (measured: 3.3e-8 of the largest output).
    check_forward_against_tensorflow(net, "nddr_shortcut", 1e-6);
  }
}

TEST_CASE("tf_weights: detect_tf_scheme tells the authors' layouts apart",
          "[networks][tf_checkpoint]") {
  using nddr::io::detect_tf_scheme;
  using nddr::io::TfCheckpoint;
  CHECK(detect_tf_scheme(TfCheckpoint::open(kTf + "/st_mini/model.ckpt-0")) ==
        TfScheme::kSingleTask);
  CHECK(detect_tf_scheme(TfCheckpoint::open(kTf + "/mt_mini/model.ckpt-0")) ==
        TfScheme::kMultiTaskBaseline);
  CHECK(detect_tf_scheme(TfCheckpoint::open(kTf + "/nddr_mini/model.ckpt-0")) == TfScheme::kNddr);
  CHECK_FALSE(detect_tf_scheme(TfCheckpoint::open(kTf + "/dtypes/ckpt")).has_value());
  CHECK(std::string(nddr::io::tf_scheme_name(TfScheme::kNddr)) == "NDDR-CNN");
}
