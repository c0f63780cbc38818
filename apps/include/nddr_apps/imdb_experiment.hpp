#pragma once
/// \file
/// The paper's IMDB-WIKI experiment (Table 7: age as 100-way classification + gender), shared by
/// the `nddr-imdb-wiki` program (examples/nddr_imdb_wiki.cpp) and the tests: its method table
/// (`kImdbTable`), flags, validation and `run_imdb`. Backbone `VGG16Classifier` (224 x 224
/// input) or, for smoke runs, `TinyClassifier` (TinyNet stages + global average pooling + fc8).
/// Application code (apps/, target `nddr_apps`), not the installed library.

#include <boost/hana.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/backbones/heads.hpp"
#include "nddr/backbones/tiny.hpp"
#include "nddr/backbones/vgg16_classifier.hpp"
#include "nddr/data/imdb_wiki.hpp"
#include "nddr/layers/pool.hpp"
#include "nddr/tasks/tasks.hpp"
#include "nddr_apps/experiment_driver.hpp"
#include "nddr_apps/method_table.hpp"

namespace nddr::experiments {

/// Classifier head for smoke runs: `pool` (global average) and `fc8` (1x1, groups "fc8.weight"
/// / "fc8.bias"); outputs (N, outputs, 1, 1).
struct TinyClassifierHead {
  static constexpr const char* name = "tiny_classifier";

  template <class T, class D>
  static Sequential<T, D> build(std::int64_t in_channels, std::int64_t outputs) {
    Sequential<T, D> s;
    s.add("pool", GlobalAvgPool<T, D>());
    s.add("fc8", OutputConv2d<T, D>(in_channels, outputs, 1));
    return s;
  }
};

/// TinyNet's five stages with `TinyClassifierHead`: an image-level classifier for any input size.
struct TinyClassifier {
  static constexpr const char* name = "tiny_classifier";
  static constexpr std::int64_t input_channels = 3;
  using stages = TinyNet::stages;
  using head = TinyClassifierHead;
};

/// The age task of IMDB-WIKI (100 classes, DEX expected value).
using ImdbAge = AgeClassification<data::kAgeClasses>;
/// Both IMDB-WIKI tasks (age, gender).
using ImdbTasks = Tasks<ImdbAge, Gender>;

/// Every `--method` and `--backbone` of `nddr-imdb-wiki`. The paper gives no recipe for this
/// experiment: every loss scale is 1, and a method takes exactly one value per task.
inline constexpr auto kImdbTable = make_program_table(
    boost::hana::make_tuple(
        Method<Tasks<ImdbAge>, None>{"st-age", "Single-task (age)", {1.0}},
        Method<Tasks<Gender>, None>{"st-gender", "Single-task (gender)", {1.0}},
        Method<ImdbTasks, AllShared>{"mt", "Multi-task", {1.0, 1.0}},
        Method<ImdbTasks, CrossStitch>{"cross-stitch", "Cross-stitch", {1.0, 1.0}},
        Method<ImdbTasks, Sluice>{"sluice", "Sluice", {1.0, 1.0}},
        Method<ImdbTasks, NDDR>{"nddr", "NDDR (ours)", {1.0, 1.0}}),
    boost::hana::make_tuple(BackboneChoice<VGG16Classifier>{"vgg16"},
                            BackboneChoice<TinyClassifier>{"tiny"}),
    "");
static_assert(names_unique(kImdbTable), "nddr-imdb-wiki: two methods or backbones share a name");
static_assert(slots_in_range(kImdbTable),
              "nddr-imdb-wiki: a single-task method's slot is past the --loss-scales list");

/// Flags of `nddr-imdb-wiki`.
struct ImdbConfig : CommonConfig {
  std::string train_list;
  std::string test_list;
  std::string image_root;
  std::int64_t image_size = 224;
};

/// IMDB-WIKI as a `run_spec` data source (no augmentation: the paper specifies none).
struct ImdbData {
  data::ImdbWikiDataset train;
  data::ImdbWikiDataset test;

  std::int64_t train_size() const { return train.size(); }
  std::int64_t test_size() const { return test.size(); }
  data::ImdbSample load_train(std::int64_t i, Rng&) const { return train.load(i); }
  data::ImdbSample load_test(std::int64_t i) const { return test.load(i); }
  data::ImdbBatch collate(const std::vector<data::ImdbSample>& s) const {
    return data::collate(s);
  }
  template <class Task>
  Tensor<std::int32_t> take(data::ImdbBatch& b) const {
    if constexpr (std::is_same_v<Task, Gender>)
      return std::move(b.gender);
    else
      return std::move(b.age);
  }
};

/// Parses the arguments of `nddr-imdb-wiki` (flags: `nddr-imdb-wiki --help`,
/// docs/experiments.md); nullopt after `--help` (the help text is then written to `help_out`).
/// Throws cli::UsageError.
inline std::optional<ImdbConfig> parse_imdb_args(const std::vector<std::string>& args,
                                                 std::ostream* help_out = nullptr) {
  ImdbConfig c;
  c.program = "nddr-imdb-wiki";
  c.init_format = "torchvision";
  cli::ArgParser p(c.program,
                   "NDDR-CNN IMDB-WIKI experiment (paper Table 7): age (100 classes, DEX expected "
                   "value) + gender. See docs/experiments.md.");
  p.path("train-list", c.train_list, "training list: lines '<image> <age 0..99> <gender 0|1>'",
         "FILE")
      .required()
      .path("test-list", c.test_list, "test list, same format", "FILE")
      .required()
      .path("image-root", c.image_root, "directory the list paths are relative to", "DIR")
      .integer("image-size", c.image_size, "square input side (VGG16: 224)", std::int64_t{1},
               kMaxImageSide);
  add_common_flags(p, c, kImdbTable);
  std::ostringstream unused;
  if (!p.parse(args, help_out ? *help_out : unused)) return std::nullopt;
  if (c.backbone == "vgg16" && c.image_size != 224)
    p.fail("image-size", "224 with --backbone vgg16 (the VGG16 classifier's input)",
           std::to_string(c.image_size));
  if (c.init_format == "tf")
    p.fail("init-format",
           "deeplab, torchvision or nddr (tf reads the NDDR-CNN authors' DeepLab NYUv2 "
           "checkpoints)",
           c.init_format);
  check_common_flags(p, c, kImdbTable);
  return c;
}

/// The table label of an IMDB-WIKI method; the method's name when the table has no such method.
inline std::string imdb_label(const ImdbConfig& c) {
  const auto info = method_info(kImdbTable, c.method);
  return info ? info->label : c.method;
}

/// Validates an IMDB-WIKI configuration: method, list files, image size and the common flags.
inline void validate_imdb(const ImdbConfig& c) {
  const std::string& p = c.program;
  validate_choices(c, kImdbTable);
  validate_common(c);
  check<OptionError>(c.init_format != "tf", p,
                     ": --init-format tf reads the NDDR-CNN authors' DeepLab (NYUv2) "
                     "checkpoints; nddr-imdb-wiki takes deeplab, torchvision or nddr");
  for (const auto* f : {&c.train_list, &c.test_list}) {
    check<OptionError>(!f->empty(), p, ": --train-list and --test-list are required");
    check<IoError>(std::filesystem::is_regular_file(*f), p, ": list file '", *f,
                   "' does not exist");
  }
  check<OptionError>(c.image_size >= 1, p, ": --image-size must be >= 1, got ", c.image_size);
  check<OptionError>(c.backbone != "vgg16" || c.image_size == 224, p,
                     ": the VGG16 classifier needs --image-size 224, got ", c.image_size);
  validate_loss_scales(c, kImdbTable);
}

/// Runs one IMDB-WIKI experiment with backbone `B` (VGG16Classifier or TinyClassifier): the
/// network of `c.method` (kImdbTable), trained, evaluated and written as `run_nyuv2_with` does.
template <class B>
ExperimentResult run_imdb_with(ImdbConfig c, std::ostream& out) {
  validate_imdb(c);
  if (c.output_dir.empty()) c.output_dir = "runs/imdb_wiki_" + c.method;
  const auto opt = data::ImdbWikiOptions{}.size(c.image_size);
  const ImdbData d{data::ImdbWikiDataset(c.train_list, c.image_root, opt),
                   data::ImdbWikiDataset(c.test_list, c.image_root, opt)};
  static const std::vector<std::string> columns = {"Age Mean AE", "Age Median AE", "Gender Acc"};
  static const std::vector<std::pair<std::string, std::string>> metrics = {
      {"age", "MeanAE"}, {"age", "MedianAE"}, {"gender", "Accuracy"}};
  const std::string label = imdb_label(c);
  return with_method(kImdbTable, c.method, [&](const auto& m) {
    using M = std::decay_t<decltype(m)>;
    return run_spec<typename M::template spec<B>, typename M::tasks>(
        c, d, "imdb_wiki", label, loss_weights_of(m, c.loss_scales), columns, metrics, out);
  });
}

/// `run_imdb_with` for the backbone named by `c.backbone`. Compiled once, for every method and
/// backbone of kImdbTable, in the nddr_apps library (apps/src/imdb_experiment.cpp).
ExperimentResult run_imdb(const ImdbConfig& c, std::ostream& out);

}  // namespace nddr::experiments
