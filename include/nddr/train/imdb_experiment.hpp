#pragma once
/// \file
/// The paper's IMDB-WIKI experiment (Table 7: age as 100-way classification + gender) as library
/// functions shared by `nddr_imdb_wiki` and the tests. Backbone `VGG16Classifier` (224 x 224
/// input) or, for smoke runs, `TinyClassifier` (TinyNet stages + global average pooling + fc8).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "nddr/backbones/heads.hpp"
#include "nddr/backbones/tiny.hpp"
#include "nddr/backbones/vgg16_classifier.hpp"
#include "nddr/data/imdb_wiki.hpp"
#include "nddr/layers/pool.hpp"
#include "nddr/train/nyuv2_experiment.hpp"

namespace nddr {

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

}  // namespace nddr

namespace nddr::experiments {

/// Flags of `nddr_imdb_wiki`.
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

/// Parses the arguments of `nddr_imdb_wiki` (flags: `nddr-imdb-wiki --help`,
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
  add_common_flags(p, c, {"st-age", "st-gender", "mt", "cross-stitch", "sluice", "nddr"});
  std::ostringstream unused;
  if (!p.parse(args, help_out ? *help_out : unused)) return std::nullopt;
  if (c.backbone == "vgg16" && c.image_size != 224)
    p.fail("image-size", "224 with --backbone vgg16 (the VGG16 classifier's input)",
           std::to_string(c.image_size));
  if (c.method == "st-age" || c.method == "st-gender")
    check_common_flags(p, c, {1}, "1 value");
  else
    check_common_flags(p, c, {2}, "2 values");
  return c;
}

inline std::string imdb_label(const ImdbConfig& c) {
  if (c.method == "st-age") return "Single-task (age)";
  if (c.method == "st-gender") return "Single-task (gender)";
  if (c.method == "mt") return "Multi-task";
  if (c.method == "cross-stitch") return "Cross-stitch";
  if (c.method == "sluice") return "Sluice";
  return "NDDR (ours)";
}

inline void validate_imdb(const ImdbConfig& c) {
  const std::string& p = c.program;
  static const std::vector<std::string> methods = {"st-age", "st-gender", "mt",
                                                   "cross-stitch", "sluice", "nddr"};
  check<OptionError>(std::find(methods.begin(), methods.end(), c.method) != methods.end(), p,
                     ": --method must be st-age, st-gender, mt, cross-stitch, sluice or nddr, got '",
                     c.method, "'");
  check<OptionError>(c.backbone == "vgg16" || c.backbone == "tiny", p,
                     ": --backbone must be vgg16 or tiny, got '", c.backbone, "'");
  validate_common(c);
  for (const auto* f : {&c.train_list, &c.test_list}) {
    check<OptionError>(!f->empty(), p, ": --train-list and --test-list are required");
    check<IoError>(std::filesystem::is_regular_file(*f), p, ": list file '", *f,
                   "' does not exist");
  }
  check<OptionError>(c.image_size >= 1, p, ": --image-size must be >= 1, got ", c.image_size);
  check<OptionError>(c.backbone != "vgg16" || c.image_size == 224, p,
                     ": the VGG16 classifier needs --image-size 224, got ", c.image_size);
  const bool single = c.method == "st-age" || c.method == "st-gender";
  check<OptionError>(c.loss_scales.empty() || c.loss_scales.size() == (single ? 1u : 2u), p,
                     ": --loss-scales needs ", single ? 1 : 2, " values, got ",
                     c.loss_scales.size());
}

namespace detail {

template <class TaskList, class F, class... B>
ExperimentResult run_imdb_fused(const ImdbConfig& c, const ImdbData& d,
                                std::vector<double> weights, std::ostream& out) {
  static const std::vector<std::string> columns = {"Age Mean AE", "Age Median AE", "Gender Acc"};
  static const std::vector<std::pair<std::string, std::string>> metrics = {
      {"age", "MeanAE"}, {"age", "MedianAE"}, {"gender", "Accuracy"}};
  return run_spec<MultiTask<B..., F>, TaskList>(c, d, "imdb_wiki", imdb_label(c), weights,
                                                columns, metrics, out);
}

}  // namespace detail

/// Runs one IMDB-WIKI experiment with backbone `B` (VGG16Classifier or TinyClassifier).
template <class B>
ExperimentResult run_imdb_with(ImdbConfig c, std::ostream& out) {
  validate_imdb(c);
  if (c.output_dir.empty()) c.output_dir = "runs/imdb_wiki_" + c.method;
  const auto opt = data::ImdbWikiOptions{}.size(c.image_size);
  ImdbData d{data::ImdbWikiDataset(c.train_list, c.image_root, opt),
             data::ImdbWikiDataset(c.test_list, c.image_root, opt)};
  const auto& s = c.loss_scales;
  using Age = AgeClassification<data::kAgeClasses>;
  if (c.method == "st-age")
    return detail::run_imdb_fused<Tasks<Age>, None, B>(c, d, {s.empty() ? 1.0 : s[0]}, out);
  if (c.method == "st-gender")
    return detail::run_imdb_fused<Tasks<Gender>, None, B>(c, d, {s.empty() ? 1.0 : s[0]}, out);
  using Both = Tasks<Age, Gender>;
  const std::vector<double> w = s.empty() ? std::vector<double>{1.0, 1.0} : s;
  if (c.method == "mt")
    return detail::run_imdb_fused<Both, Shared<stage_count_v<B>>, B, B>(c, d, w, out);
  if (c.method == "cross-stitch")
    return detail::run_imdb_fused<Both, CrossStitch, B, B>(c, d, w, out);
  if (c.method == "sluice") return detail::run_imdb_fused<Both, Sluice, B, B>(c, d, w, out);
  return detail::run_imdb_fused<Both, NDDR, B, B>(c, d, w, out);
}

/// `run_imdb_with` for the backbone named by `c.backbone`.
inline ExperimentResult run_imdb(const ImdbConfig& c, std::ostream& out) {
  if (c.backbone == "tiny") return run_imdb_with<TinyClassifier>(c, out);
  validate_imdb(c);
  return run_imdb_with<VGG16Classifier>(c, out);
}

}  // namespace nddr::experiments
