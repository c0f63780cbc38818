#pragma once
/// \file
/// The paper's NYUv2 experiments (Tables 1-6: segmentation + surface normals), shared by
/// the `nddr-nyuv2` program (examples/nddr_nyuv2.cpp) and the tests: its method table
/// (`kNyuV2Table`), flags, validation and `run_nyuv2`. Application code (apps/, target
/// `nddr_apps`), not the installed library.
///
/// Example:
///   auto cfg = nddr::experiments::parse_nyuv2_args({"--data-dir", "nyu", "--method", "nddr"});
///   auto result = nddr::experiments::run_nyuv2(*cfg, std::cout);

#include <boost/hana.hpp>

#include <cstdint>
#include <filesystem>
#include <array>
#include <optional>
#include <span>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/backbones/resnet101.hpp"
#include "nddr/backbones/tiny.hpp"
#include "nddr/backbones/vgg16.hpp"
#include "nddr/data/augment.hpp"
#include "nddr/data/nyuv2.hpp"
#include "nddr/tasks/tasks.hpp"
#include "nddr_apps/experiment_driver.hpp"
#include "nddr_apps/method_table.hpp"

namespace nddr::experiments {

/// The segmentation task of the NYUv2 experiments (40 classes).
using NyuSeg = Segmentation<data::kNyuClasses>;
/// Both NYUv2 tasks, in the order of the full `--loss-scales` list (seg, normal).
using NyuTasks = Tasks<NyuSeg, SurfaceNormal>;

/// Every `--method` and `--backbone` of `nddr-nyuv2`; the loss scales are the paper code's
/// (st_normal.sh: 10 for normals alone; 1, 20 for both tasks).
inline constexpr auto kNyuV2Table = make_program_table(
    boost::hana::make_tuple(
        Method<Tasks<NyuSeg>, None>{"st-seg", "Single-task (seg)", {1.0}, 0},
        Method<Tasks<SurfaceNormal>, None>{"st-normal", "Single-task (normal)", {10.0}, 1},
        Method<NyuTasks, AllShared>{"mt", "Multi-task", {1.0, 20.0}},
        Method<NyuTasks, CrossStitch>{"cross-stitch", "Cross-stitch", {1.0, 20.0}},
        Method<NyuTasks, Sluice>{"sluice", "Sluice", {1.0, 20.0}},
        Method<NyuTasks, NDDR>{"nddr", "NDDR (ours)", {1.0, 20.0}}),
    boost::hana::make_tuple(BackboneChoice<VGG16>{"vgg16"}, BackboneChoice<TinyNet>{"tiny"},
                            BackboneChoice<ResNet101>{"resnet101"}),
    "seg,normal");
static_assert(names_unique(kNyuV2Table), "nddr-nyuv2: two methods or backbones share a name");
static_assert(slots_in_range(kNyuV2Table),
              "nddr-nyuv2: a single-task method's slot is past the --loss-scales list");

/// Whether `--shortcut` is offered with backbone `B`: not with ResNet-101, whose Table 5 has no
/// shortcut rows (paper-spec.md Table 5); leaving those 6 networks x 2 devices out keeps the
/// compile time of apps/src/nyuv2_resnet101.cpp down (docs/experiments.md).
template <class B>
inline constexpr bool kNyuV2Shortcut = !std::is_same_v<B, ResNet101>;

/// The one line refusing `--shortcut` with `--backbone resnet101`.
inline constexpr const char* kNyuV2NoResNetShortcut =
    "no --shortcut with --backbone resnet101 (Table 5 has no shortcut rows; the shortcut "
    "networks are built for vgg16 and tiny)";

/// Flags of `nddr-nyuv2`.
struct NyuV2Config : CommonConfig {
  std::string data_dir;
  bool shortcut = false;
  std::int64_t crop = 321;
  bool centered_normals = false;
  bool flip = true;   ///< random mirroring of the training crops (--no-flip: off)
  bool scale = true;  ///< random scaling by U[0.5, 1.5) (--no-scale: off)
  std::string save_predictions;  ///< --save-predictions DIR: PNG predictions of the test images
};

/// The files `--save-predictions` writes for test image `image` (a path; its stem names them):
/// `<stem>_seg.png` (class ids, 8-bit gray as the labels), `<stem>_seg_color.png` (the same in
/// colour, `nyuv2_label_color`) and `<stem>_normal.png` (RGB, the label encoding). Only the
/// names of the tasks the method has: "segmentation" and/or "normal".
std::vector<std::string> nyuv2_prediction_names(const std::string& image,
                                                std::span<const char* const> tasks);

/// The colour of NYUv2 class `label` in `<stem>_seg_color.png` (the PASCAL VOC colour map);
/// black for 255 (ignore).
std::array<std::uint8_t, 3> nyuv2_label_color(int label);

/// NYUv2 as a `run_spec` data source: augmented training crops, full test images.
struct NyuV2Data {
  data::NyuV2Dataset train;
  data::NyuV2Dataset test;
  data::AugmentOptions augment;
  std::string save_dir;  ///< --save-predictions; empty = none

  std::int64_t train_size() const { return train.size(); }
  std::int64_t test_size() const { return test.size(); }
  data::NyuSample load_train(std::int64_t i, Rng& rng) const {
    return data::augment(train.load(i), rng, augment);
  }
  data::NyuSample load_test(std::int64_t i) const { return test.load(i); }
  data::NyuBatch collate(const std::vector<data::NyuSample>& s) const { return data::collate(s); }
  bool saves_predictions() const { return !save_dir.empty(); }
  /// Writes test image i's predictions (`outputs` in task order, up-sampled to the image) into
  /// `save_dir` (nyuv2_prediction_names).
  void save_prediction(std::int64_t i, std::span<const Tensor<float>> outputs,
                       std::span<const char* const> tasks) const;
  template <class Task>
  auto take(data::NyuBatch& b) const {
    if constexpr (std::is_same_v<typename Task::template target_t<float>, float>)
      return std::move(b.normal);
    else
      return std::move(b.seg);
  }
};

/// Parses the arguments of `nddr-nyuv2` (flags: `nddr-nyuv2 --help`, docs/experiments.md);
/// nullopt when `--help` was asked for (the help text is then written to `help_out`). Throws
/// cli::UsageError, whose message is the one line the binary prints before exiting with 2.
inline std::optional<NyuV2Config> parse_nyuv2_args(const std::vector<std::string>& args,
                                                   std::ostream* help_out = nullptr) {
  NyuV2Config c;
  c.program = "nddr-nyuv2";
  cli::ArgParser p(c.program,
                   "NDDR-CNN NYUv2 experiments (paper Tables 1-4 and 6): semantic segmentation "
                   "(40 classes) + surface normals. See docs/experiments.md. "
                   "`nddr-nyuv2 --check-data DIR` (alone) checks a data folder instead and trains "
                   "nothing (docs/data-nyuv2.md).");
  p.path("data-dir", c.data_dir, "NYUv2 in the NDDR-CNN format (list/ and the files it names)",
         "DIR")
      .required();
  add_common_flags(p, c, kNyuV2Table);
  p.flag("shortcut", c.shortcut, "the Shortcut variant (Table 6; vgg16 and tiny only)")
      .integer("crop", c.crop, "training crop side", std::int64_t{1}, kMaxImageSide)
      .flag("centered-normals", c.centered_normals,
            "decode normals as (v - 127.5) / 127.5 instead of the raw triplet")
      .flag("no-flip", c.flip, "no random mirroring of the training crops", false)
      .flag("no-scale", c.scale, "no random scaling (0.5 to 1.5) of the training images", false)
      .path("save-predictions", c.save_predictions,
            "write every evaluated test image's predictions into DIR as PNGs "
            "(<image>_seg.png, <image>_seg_color.png, <image>_normal.png)",
            "DIR");
  std::ostringstream unused;
  if (!p.parse(args, help_out ? *help_out : unused)) return std::nullopt;
  check_common_flags(p, c, kNyuV2Table);
  if (c.shortcut && c.backbone == "resnet101")
    throw cli::UsageError(c.program + ": " + kNyuV2NoResNetShortcut);
  std::error_code ec;
  if (!c.save_predictions.empty() && std::filesystem::exists(c.save_predictions, ec) &&
      !std::filesystem::is_directory(c.save_predictions, ec))
    p.fail("save-predictions", "a directory (this is a file)", c.save_predictions);
  return c;
}

/// The table label of a NYUv2 method ("NDDR (ours) + Shortcut"); the method's name when the
/// table has no such method.
inline std::string nyuv2_label(const NyuV2Config& c) {
  const auto info = method_info(kNyuV2Table, c.method);
  return (info ? info->label : c.method) + (c.shortcut ? " + Shortcut" : "");
}

/// Validates a NYUv2 configuration: method, data directory, crop and the common flags.
inline void validate_nyuv2(const NyuV2Config& c) {
  const std::string& p = c.program;
  validate_choices(c, kNyuV2Table);
  validate_common(c);
  check<OptionError>(!c.data_dir.empty(), p, ": --data-dir is required");
  check<IoError>(std::filesystem::is_directory(c.data_dir), p, ": --data-dir '", c.data_dir,
                 "' is not a directory");
  check<IoError>(std::filesystem::is_directory(std::filesystem::path(c.data_dir) / "list"), p,
                 ": --data-dir '", c.data_dir, "' has no list/ directory (expected list/",
                 "training_seg.txt etc., see docs/data-nyuv2.md)");
  check<OptionError>(c.crop >= 1, p, ": --crop must be >= 1, got ", c.crop);
  check<OptionError>(!(c.shortcut && c.backbone == "resnet101"), p, ": ", kNyuV2NoResNetShortcut);
  check<OptionError>(c.backbone != "resnet101" || c.init_weights.empty() ||
                         c.init_format == "torchvision" || c.init_format == "nddr",
                     p, ": --init-format ", c.init_format, " holds VGG-16 weights; with "
                     "--backbone resnet101, --init-weights takes --init-format torchvision (an "
                     "ImageNet resnet101 state_dict) or nddr (docs/weights.md)");
  check<OptionError>(c.backbone != "resnet101" || c.init_format != "tf" ||
                         (c.init_weights_task0.empty() && c.init_weights_task1.empty()),
                     p, ": --init-format tf reads VGG-16 checkpoints; with --backbone resnet101, "
                     "--init-weights-task0/1 take nddr checkpoints (--init-format nddr)");
  validate_loss_scales(c, kNyuV2Table);
}

/// The training augmentation of `c` (data/augment.hpp): `--crop`, and random scaling and
/// mirroring unless `--no-scale` / `--no-flip`.
inline data::AugmentOptions nyuv2_augment(const NyuV2Config& c) {
  data::AugmentOptions a = data::AugmentOptions{}.crop(c.crop).mirror(c.flip);
  if (!c.scale) a.no_scale();
  return a;
}

/// Checks, before any training, that `--save-predictions` can be written: DIR is (or can be
/// made) a directory and no two test images of the first `--eval-limit` share a file stem
/// (IoError naming both). Creates DIR.
void prepare_prediction_dir(const NyuV2Config& c, const data::NyuV2Dataset& test);

/// Runs one NYUv2 experiment with backbone `B` (VGG16, TinyNet or ResNet101): validates `c`,
/// trains the network of `c.method` (kNyuV2Table) to `c.steps` (resuming if asked), evaluates
/// on the test split, prints the table row to `out` and writes results.csv / results.json into
/// the output directory.
template <class B>
ExperimentResult run_nyuv2_with(NyuV2Config c, std::ostream& out) {
  validate_nyuv2(c);
  if (c.output_dir.empty())
    c.output_dir = "runs/nyuv2_" + c.method + (c.shortcut ? "_shortcut" : "");
  const auto encoding =
      c.centered_normals ? data::NormalEncoding::kCentered : data::NormalEncoding::kRawPaper;
  const auto opt = data::NyuV2Options{}.encoding(encoding);
  const NyuV2Data d{data::NyuV2Dataset(c.data_dir, data::Split::kTrain, opt),
                    data::NyuV2Dataset(c.data_dir, data::Split::kTest, opt), nyuv2_augment(c),
                    c.save_predictions};
  if (!d.save_dir.empty()) prepare_prediction_dir(c, d.test);
  static const std::vector<std::string> columns = {"Mean", "Median", "11.25", "22.5",
                                                   "30",   "mIoU",   "PAcc"};
  static const std::vector<std::pair<std::string, std::string>> metrics = {
      {"normals", "Mean"}, {"normals", "Median"},     {"normals", "11.25"},
      {"normals", "22.5"}, {"normals", "30"},         {"segmentation", "mIoU"},
      {"segmentation", "PixelAcc"}};
  const std::string label = nyuv2_label(c);
  return with_method(kNyuV2Table, c.method, [&](const auto& m) {
    using M = std::decay_t<decltype(m)>;
    using TaskList = typename M::tasks;
    const auto weights = loss_weights_of(m, c.loss_scales);
    if constexpr (kNyuV2Shortcut<B>) {
      if (c.shortcut)
        return run_spec<typename M::template spec<B, true>, TaskList>(c, d, "nyuv2", label,
                                                                      weights, columns, metrics,
                                                                      out);
    }
    return run_spec<typename M::template spec<B>, TaskList>(c, d, "nyuv2", label, weights,
                                                            columns, metrics, out);
  });
}

// ResNet-101's 12 networks (6 methods x CPU/GPU) are compiled in their own translation unit,
// apps/src/nyuv2_resnet101.cpp, in parallel with the VGG-16 and TinyNet ones.
extern template ExperimentResult run_nyuv2_with<ResNet101>(NyuV2Config c, std::ostream& out);

/// `run_nyuv2_with` for the backbone named by `c.backbone`. Compiled once, for every method and
/// backbone of kNyuV2Table, in the nddr_apps library (apps/src/nyuv2_experiment.cpp;
/// ResNet-101 in apps/src/nyuv2_resnet101.cpp).
ExperimentResult run_nyuv2(const NyuV2Config& c, std::ostream& out);

}  // namespace nddr::experiments
