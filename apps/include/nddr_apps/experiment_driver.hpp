#pragma once
/// \file
/// What every experiment program (`nddr-nyuv2`, `nddr-imdb-wiki`) shares: the common flags
/// (`CommonConfig`, `add_common_flags`, generated from the program's method table:
/// method_table.hpp), their validation, weight initialisation, and `run_spec` (train with the
/// paper's recipe, evaluate with the paper's protocol, print the table row, write results.csv /
/// results.json atomically). Application code (apps/, target `nddr_apps`), not the installed
/// library.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <iomanip>
#include <limits>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/backbones/resnet101.hpp"
#include "nddr/data/loader.hpp"
#include "nddr/distributed/auto.hpp"
#include "nddr/fusion/cross_stitch.hpp"
#include "nddr/fusion/nddr.hpp"
#include "nddr/fusion/none.hpp"
#include "nddr/fusion/sluice.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/json.hpp"
#include "nddr/io/tf_weights.hpp"
#include "nddr/io/weights.hpp"
#include "nddr/multitask/multitask.hpp"
#include "nddr/multitask/network.hpp"
#include "nddr/optim/schedule.hpp"
#include "nddr/optim/sgd.hpp"
#include "nddr/train/experiment.hpp"
#include "nddr/train/trainer.hpp"
#include "nddr_apps/cli.hpp"
#include "nddr_apps/method_table.hpp"
#include "nddr_apps/optim_flags.hpp"

#if defined(NDDR_WITH_CUDA)
#include "nddr/cuda.hpp"  // the GPU backend (--device cuda), when the program links nddr::cuda
#endif

namespace nddr::experiments {

/// Flags shared by the experiment binaries (see `add_common_flags`); the optimiser and schedule
/// flags are the base (`weight_decay` < 0: 2.5e-4 multi-task, 5e-4 single-task with SGD,
/// paper-spec §5).
struct CommonConfig : cli::OptimizerFlags {
  std::string program = "nddr-experiment";
  std::string method = "nddr";
  std::string backbone = "vgg16";
  std::string init = "0.9,0.1";  ///< fusion initialisation: "alpha,beta" or "xavier"
  double nddr_lr_mult = 100.0;
  double nddr_decay_mult = 1.0;  ///< weight-decay multiplier of the fusion group ("nddr")
  std::string nddr_bn = "on";    ///< BatchNorm inside the NDDR layers: on | off
  std::vector<double> loss_scales;  ///< empty = the method's default
  std::int64_t steps = 20001;
  std::int64_t batch = 10;
  double lr = 1e-3;
  std::string init_weights;
  std::string init_format = "deeplab";  ///< deeplab | torchvision | nddr | tf
  /// nddr-format file whose column task0 -> column 0 (with init_format "tf": a TF single-task
  /// checkpoint whose `vgg_16/` column -> column 0)
  std::string init_weights_task0;
  std::string init_weights_task1;       ///< the same for column 1
  std::string output_dir;               ///< empty = runs/<experiment>_<method>
  bool resume = false;
  bool eval_only = false;
  int threads = 0;  ///< compute threads; 0 = all cores
  int loader_threads = 2;
  std::uint64_t seed = 1234;
  std::string device = "cpu";
  std::int64_t eval_limit = 0;  ///< evaluate on the first N test images; 0 = all
  std::int64_t log_every = 20;
  std::int64_t checkpoint_every = 5000;
  /// --eval-every: evaluate on the test split every N steps, keep checkpoints/best.*; 0 = never
  std::int64_t eval_every = 0;
  std::string best_metric;  ///< "task/name" (eval.jsonl's keys); empty = the table's first column
  bool progress = true;
  bool cuda_graph = false;  ///< --cuda-graph: capture the GPU training step as a CUDA Graph
  bool tf32 = false;             ///< --tf32: TF32 tensor cores in GPU convolutions and GEMMs
  bool bf16 = false;             ///< --bf16: BF16 operands, FP32 accumulation, in convolutions
  bool cudnn_benchmark = false;  ///< --cudnn-benchmark: time cuDNN's algorithms per shape
  bool deterministic = false;    ///< --deterministic: deterministic cuDNN algorithms only
};

/// One evaluated run: the row of the paper's table and every metric.
struct ExperimentResult {
  std::string label;                   ///< the table's "Method" cell
  std::int64_t steps = 0;              ///< training steps done
  std::vector<std::string> columns;    ///< table columns
  std::vector<double> row;             ///< one value per column; NaN = not evaluated
  std::vector<MetricValue> metrics;    ///< every metric, in task order
  std::string output_dir;
};

/// Fusion initialisation parsed from `--init`.
struct FusionInit {
  bool xavier = false;
  double alpha = 0.9;
  double beta = 0.1;
};

/// `alpha,beta` (two finite numbers) or `xavier`; nullopt for anything else.
inline std::optional<FusionInit> fusion_init_from(std::string_view text) {
  if (text == "xavier") return FusionInit{true, 0.0, 0.0};
  const std::size_t comma = text.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  const auto alpha = cli::parse_finite(text.substr(0, comma));
  const auto beta = cli::parse_finite(text.substr(comma + 1));
  if (!alpha || !beta) return std::nullopt;
  return FusionInit{false, *alpha, *beta};
}

inline constexpr std::string_view kFusionInitExpected = "'alpha,beta' (e.g. 0.9,0.1) or 'xavier'";

/// `fusion_init_from`, or OptionError `PROGRAM: --init: expected ..., got '...'`.
inline FusionInit parse_fusion_init(const std::string& program, const std::string& text) {
  const auto f = fusion_init_from(text);
  check<OptionError>(f.has_value(),
                     cli::bad_value_message(program, "init", kFusionInitExpected, text));
  return *f;
}

namespace detail {

// The fusion layers' options from --init and --nddr-bn (`bn`: BatchNorm in the NDDR layers).
inline NddrOptions fusion_options(const NddrOptions&, const FusionInit& f, bool bn,
                                  const std::string&) {
  NddrOptions o = f.xavier ? NddrOptions{}.xavier() : NddrOptions{}.diagonal(f.alpha, f.beta);
  return o.batch_norm(bn);
}
inline void check_nddr_only(const FusionInit& f, bool bn, const std::string& program) {
  check<OptionError>(!f.xavier, program, ": --init xavier applies to the NDDR layer only");
  check<OptionError>(bn, program, ": --nddr-bn off applies to the NDDR layer only");
}
inline CrossStitchOptions fusion_options(const CrossStitchOptions&, const FusionInit& f, bool bn,
                                         const std::string& program) {
  check_nddr_only(f, bn, program);
  return CrossStitchOptions{}.init(f.alpha, f.beta);
}
inline SluiceOptions fusion_options(const SluiceOptions&, const FusionInit& f, bool bn,
                                    const std::string& program) {
  check_nddr_only(f, bn, program);
  return SluiceOptions{}.init(f.alpha, f.beta);
}
inline IdentityFusionOptions fusion_options(const IdentityFusionOptions&, const FusionInit&, bool,
                                            const std::string&) {
  return {};
}

/// File key -> store name for our own files: checkpoints store "param/<name>" and
/// "buffer/<name>" (and "optim/..." which is never loaded); save_parameters files store "<name>".
inline std::optional<std::string> strip_checkpoint_prefix(std::string_view key) {
  if (key.starts_with("optim/")) return std::nullopt;
  if (key.starts_with("param/")) return std::string(key.substr(6));
  if (key.starts_with("buffer/")) return std::string(key.substr(7));
  return std::string(key);
}

inline std::string format_cell(double v) {
  if (!std::isfinite(v)) return std::isnan(v) ? "-" : (v > 0 ? "inf" : "-inf");
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << v;
  return os.str();
}

}  // namespace detail

/// The table's header line and separator, e.g. "| Method | Mean | ... |".
inline std::string table_header(const std::vector<std::string>& columns) {
  std::string h = "| Method |", sep = "|---|";
  for (const auto& c : columns) {
    h += " " + c + " |";
    sep += "---|";
  }
  return h + "\n" + sep + "\n";
}

/// One table row with one decimal, as the paper prints it ("-" for a metric not evaluated).
inline std::string table_row(const ExperimentResult& r) {
  std::ostringstream os;
  os << "| " << r.label << " |";
  for (double v : r.row) os << " " << detail::format_cell(v) << " |";
  os << "\n";
  return os.str();
}

/// Writes `dir`/results.csv and `dir`/results.json atomically.
inline void write_results(const std::string& dir, const std::string& experiment,
                          const CommonConfig& c, const ExperimentResult& r) {
  std::filesystem::create_directories(dir);
  const auto write = [&](const char* name, const std::string& text) {
    io::write_file_atomic(c.program, (std::filesystem::path(dir) / name).string(), text.data(),
                          text.size());
  };
  std::ostringstream csv;
  csv << "method";
  for (const auto& col : r.columns) csv << "," << col;
  csv << "\n\"" << r.label << "\"";
  for (double v : r.row) csv << "," << (std::isfinite(v) ? io::json::number(v) : "");
  csv << "\n";
  write("results.csv", csv.str());

  std::ostringstream js;
  js << "{\n  \"experiment\": " << io::json::quote(experiment)
     << ",\n  \"method\": " << io::json::quote(c.method)
     << ",\n  \"label\": " << io::json::quote(r.label)
     << ",\n  \"backbone\": " << io::json::quote(c.backbone) << ",\n  \"steps\": " << r.steps
     << ",\n  \"table\": {";
  for (std::size_t i = 0; i < r.columns.size(); ++i)
    js << (i ? ", " : "") << io::json::quote(r.columns[i]) << ": "
       << io::json::number(r.row[i]);
  js << "},\n  \"metrics\": [";
  for (std::size_t i = 0; i < r.metrics.size(); ++i) {
    const MetricValue& m = r.metrics[i];
    js << (i ? "," : "") << "\n    {\"task\": " << io::json::quote(m.task)
       << ", \"name\": " << io::json::quote(m.name)
       << ", \"value\": " << io::json::number(m.value)
       << ", \"higher_is_better\": " << (m.higher_is_better ? "true" : "false") << "}";
  }
  js << "\n  ]\n}\n";
  write("results.json", js.str());
}

/// Whether `key` reads as eval.jsonl's metric keys do: "task/name", both parts non-empty
/// printable text.
inline bool valid_metric_key(std::string_view key) {
  const std::size_t slash = key.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == key.size() || key.size() > 64)
    return false;
  return std::all_of(key.begin(), key.end(), [](char ch) {
    return static_cast<unsigned char>(ch) > 0x20 && static_cast<unsigned char>(ch) != 0x7f;
  });
}

/// The best evaluation so far of a run with `--eval-every` (checkpoints/best.json beside
/// checkpoints/best.safetensors): which metric picks it, its value, direction and step.
struct BestSoFar {
  std::string metric;
  bool higher_is_better = true;
  bool have = false;
  double value = 0.0;
  std::int64_t step = 0;

  /// Whether `v` beats the best so far (the first finite value always does; ties keep the
  /// earlier step).
  bool improved_by(double v) const {
    if (!std::isfinite(v)) return false;
    if (!have) return true;
    return higher_is_better ? v > value : v < value;
  }
  std::string json() const {
    std::ostringstream js;
    js << "{\"metric\": " << io::json::quote(metric) << ", \"value\": " << io::json::number(value)
       << ", \"higher_is_better\": " << (higher_is_better ? "true" : "false")
       << ", \"step\": " << step << ", \"checkpoint\": \"best.safetensors\"}\n";
    return js.str();
  }
};

/// The metric `--best-metric` names (or, when empty, the first of `columns` that `values` has),
/// with its direction; UsageError naming the flag and the metrics there are when it is not one of
/// `values`.
inline BestSoFar best_metric_of(const CommonConfig& c, const std::vector<MetricValue>& values,
                                const std::vector<std::pair<std::string, std::string>>& columns) {
  const auto key = [](const MetricValue& m) { return m.task + "/" + m.name; };
  std::string want = c.best_metric;
  if (want.empty())
    for (const auto& [task, name] : columns)
      for (const MetricValue& m : values)
        if (want.empty() && m.task == task && m.name == name) want = key(m);
  std::string known;
  for (const MetricValue& m : values) {
    if (key(m) == want || (want.empty() && known.empty()))
      return BestSoFar{key(m), m.higher_is_better};
    known += (known.empty() ? "" : ", ") + key(m);
  }
  throw cli::UsageError(cli::bad_value_message(
      c.program, "best-metric", "a metric of method " + c.method + " (" + known + ")", want));
}

/// Reads `file` (checkpoints/best.json of a resumed run) into `best`, which names the metric
/// this run picks by; IoError when it is unreadable or was picked by another metric.
inline void read_best(const std::filesystem::path& file, BestSoFar& best) {
  if (!std::filesystem::exists(file)) return;
  const std::vector<unsigned char> bytes =
      io::read_regular_file("nddr::experiments::read_best", file.string(), 1 << 16);
  io::json::Value v;
  try {
    v = io::json::parse(std::string(bytes.begin(), bytes.end()));
  } catch (const std::exception& e) {
    throw IoError(nddr::detail::concat(file.string(), ": ", e.what()));
  }
  const io::json::Value* metric = v.find("metric");
  const io::json::Value* value = v.find("value");
  const io::json::Value* step = v.find("step");
  check<IoError>(metric && metric->is_string() && value && value->is_number() && step &&
                     step->is_int(),
                 file.string(), ": expected {\"metric\": ..., \"value\": ..., \"step\": ...}");
  check<IoError>(metric->as_string() == best.metric, file.string(), ": the best checkpoint was "
                 "picked by ", metric->as_string(), ", this run picks by ", best.metric,
                 " (resume with --best-metric ", metric->as_string(), ")");
  best.have = true;
  best.value = value->as_double();
  best.step = step->as_int();
}

/// Largest `--batch` of the experiment binaries.
inline constexpr std::int64_t kMaxBatch = 4096;
/// Largest `--crop` / `--image-size` side (NYUv2 images are 480 x 640; VGG16 takes 224).
inline constexpr std::int64_t kMaxImageSide = 2048;

/// Declares the flags of `CommonConfig` on `p`, bound to the fields of `c` (their values are the
/// defaults); the values of `--method` and `--backbone` are the names of `table`'s entries.
template <ProgramTableType Table>
void add_common_flags(cli::ArgParser& p, CommonConfig& c, const Table& table) {
  using cli::RealRange;
  p.choice("method", c.method, "the network (paper tables: docs/experiments.md)",
           choice_list(table.methods))
      .choice("backbone", c.backbone, "the backbone of every column (tiny: for smoke runs)",
              choice_list(table.backbones))
      .text("init", c.init, "fusion initialisation: alpha,beta (e.g. 0.9,0.1) or xavier (NDDR)",
            std::string(kFusionInitExpected),
            [](const std::string& s) { return fusion_init_from(s).has_value(); }, "INIT")
      .real("nddr-lr-mult", c.nddr_lr_mult,
            "learning-rate multiplier of the fusion (NDDR, cross-stitch, sluice, shortcut) "
            "parameters",
            RealRange::non_negative())
      .real("nddr-decay-mult", c.nddr_decay_mult,
            "weight-decay multiplier of the same parameters (0 = no decay)",
            RealRange::non_negative())
      .choice("nddr-bn", c.nddr_bn,
              "BatchNorm inside the NDDR layers (off: 1x1 conv + ReLU; method nddr only)",
              {"on", "off"})
      .reals("loss-scales", c.loss_scales, "task loss weights, comma separated",
             RealRange::non_negative(), max_scale_count(table))
      .default_text("per method, see docs/experiments.md")
      .integer("steps", c.steps, "total training steps (schedule length)", std::int64_t{0})
      .integer("batch", c.batch, "training batch size", std::int64_t{1}, kMaxBatch)
      .real("lr", c.lr, "base learning rate", RealRange::non_negative());
  cli::add_optimizer_flags(p, c, "sgd 2.5e-4 multi-task, 5e-4 single-task");
  p
      .path("init-weights", c.init_weights, "pretrained weights loaded into every column", "FILE")
      .choice("init-format", c.init_format,
              "format of --init-weights (tf: the NDDR-CNN authors' TensorFlow checkpoints, a "
              "prefix such as model.ckpt-20000 or its directory, also for "
              "--init-weights-task0/1; docs/weights.md)",
              {"deeplab", "torchvision", "nddr", "tf"})
      .path("init-weights-task0", c.init_weights_task0,
            "nddr-format file (e.g. a single-task checkpoint) whose column task0 initialises "
            "column 0; with --init-format tf a TF single-task checkpoint",
            "FILE")
      .path("init-weights-task1", c.init_weights_task1,
            "the same for column 1", "FILE")
      .path("output-dir", c.output_dir, "logs, checkpoints and results", "DIR")
      .default_text("runs/<experiment>_<method>")
      .flag("resume", c.resume, "continue from the newest checkpoint in --output-dir")
      .flag("eval-only", c.eval_only,
            "skip training; evaluate the restored (--resume) or initial weights")
      .integer("threads", c.threads, "compute threads (0 = all cores)", 0, cli::kMaxThreads)
      .integer("loader-threads", c.loader_threads,
               "data loading threads (0 = in the training loop)", 0, cli::kMaxLoaderThreads)
      .integer("seed", c.seed, "seed of initialisation, data order and augmentation",
               std::uint64_t{0})
      .device("device", c.device, "cpu | cuda | cuda:N")
      .flag("cuda-graph", c.cuda_graph,
            "on a GPU, capture the training step as a CUDA Graph and replay it")
      .flag("tf32", c.tf32,
            "on a GPU, let the convolutions (PyTorch's default) and the linear layers' GEMMs "
            "use TF32 tensor cores")
      .flag("bf16", c.bf16,
            "run the convolutions on BF16 copies of their operands with FP32 accumulation "
            "(mixed precision; weights, activations and updates stay FP32; on the CPU an "
            "emulation of the GPU's numerics, slower than FP32)")
      .flag("cudnn-benchmark", c.cudnn_benchmark,
            "on a GPU, time cuDNN's convolution algorithms per shape and take the fastest")
      .flag("deterministic", c.deterministic,
            "on a GPU, deterministic convolution algorithms only (same bits)")
      .integer("eval-limit", c.eval_limit, "evaluate on the first N test samples only (0 = all)",
               std::int64_t{0})
      .integer("log-every", c.log_every, "log interval in steps (0 = never)", std::int64_t{0})
      .integer("checkpoint-every", c.checkpoint_every,
               "checkpoint interval in steps (0 = at the end only)", std::int64_t{0})
      .integer("eval-every", c.eval_every,
               "evaluate on the test split every N steps (eval.jsonl) and keep the best "
               "weights as checkpoints/best.safetensors (0 = at the end only)",
               std::int64_t{0})
      .text("best-metric", c.best_metric,
            "metric that picks checkpoints/best.*, as eval.jsonl names it (e.g. "
            "segmentation/mIoU)",
            "a metric as eval.jsonl names it, TASK/NAME (e.g. segmentation/mIoU)",
            [](const std::string& s) { return valid_metric_key(s); }, "TASK/NAME")
      .default_text("the first column of the paper's table")
      .flag("quiet", c.progress, "no progress lines", false);
}

/// The rules that join common flags, checked after parsing; the numbers of `--loss-scales`
/// values `c.method` takes come from `table` (`scale_counts`).
template <ProgramTableType Table>
void check_common_flags(const cli::ArgParser& p, const CommonConfig& c, const Table& table) {
  cli::check_optimizer_flags(p, c, c.steps);
  if (!c.best_metric.empty() && c.eval_every == 0)
    p.fail("best-metric", "--eval-every N with it (it picks among periodic evaluations)",
           c.best_metric);
  if (c.tf32 && c.bf16)
    p.fail("bf16", "no --tf32 with it (both set the convolutions' precision)", "--tf32 --bf16");
  const bool cuda = cli::parse_device(p.program(), c.device).cuda;
  if (cuda && c.cuda_graph && !c.weighting.empty())
    p.fail("cuda-graph", "no --weighting with it (a weighting step reads the task losses and "
           "the Gram matrix of the task gradients on the host mid-step)",
           "--weighting " + c.weighting);
  if (!cuda)
    for (const auto& [on, flag] : {std::pair{c.tf32, "tf32"},
                                   std::pair{c.cudnn_benchmark, "cudnn-benchmark"},
                                   std::pair{c.deterministic, "deterministic"}})
      if (on)
        p.fail(flag, "--device cuda[:N] with it (it sets how GPU convolutions run)",
               "--device " + c.device);
  const std::size_t tasks = method_info(table, c.method).value().task_count;  // a parsed choice
  const auto counts = scale_counts(table, tasks);
  if (c.loss_scales.empty() ||
      std::find(counts.begin(), counts.end(), c.loss_scales.size()) != counts.end())
    return;
  std::ostringstream given;
  for (std::size_t i = 0; i < c.loss_scales.size(); ++i)
    given << (i ? "," : "") << c.loss_scales[i];
  p.fail("loss-scales", scale_counts_text(table, tasks) + " for --method " + c.method,
         given.str());
}

/// `c.method` and `c.backbone` are names of `table`'s entries (OptionError naming the flag and
/// every accepted value otherwise).
template <ProgramTableType Table>
void validate_choices(const CommonConfig& c, const Table& table) {
  check<OptionError>(method_info(table, c.method).has_value(), c.program, ": --method must be ",
                     one_of_text(table.methods), ", got '", c.method, "'");
  const auto backbones = entry_names(table.backbones);
  check<OptionError>(
      std::find(backbones.begin(), backbones.end(), c.backbone) != backbones.end(), c.program,
      ": --backbone must be ", one_of_text(table.backbones), ", got '", c.backbone, "'");
}

/// `c.loss_scales` has a number of values that `c.method` takes (`scale_counts`; OptionError
/// otherwise).
template <ProgramTableType Table>
void validate_loss_scales(const CommonConfig& c, const Table& table) {
  const std::size_t tasks = method_info(table, c.method).value().task_count;
  const auto counts = scale_counts(table, tasks);
  check<OptionError>(
      c.loss_scales.empty() ||
          std::find(counts.begin(), counts.end(), c.loss_scales.size()) != counts.end(),
      c.program, ": --loss-scales needs ", scale_counts_count(table, tasks), " values, got ",
      c.loss_scales.size());
}

/// Checks the values every experiment needs (device, counts, formats); OptionError/DeviceError.
inline void validate_common(const CommonConfig& c) {
  const std::string& p = c.program;
  check<OptionError>(!(c.tf32 && c.bf16), p,
                     ": --tf32 and --bf16 choose the convolutions' precision; give one of them");
  if (cli::parse_device(p, c.device).cuda) {
    cli::require_cuda_backend(p, c.device);
  } else {
    for (const auto& [on, flag] : {std::pair{c.tf32, "--tf32"},
                                   std::pair{c.cudnn_benchmark, "--cudnn-benchmark"},
                                   std::pair{c.deterministic, "--deterministic"}})
      check<OptionError>(!on, p, ": ", flag, " sets how GPU convolutions run; it needs --device cuda[:N], got --device ",
                         c.device);
  }
  check<OptionError>(c.steps >= 0, p, ": --steps must be >= 0, got ", c.steps);
  check<OptionError>(c.batch >= 1, p, ": --batch must be >= 1, got ", c.batch);
  check<OptionError>(c.lr >= 0.0 && std::isfinite(c.lr), p, ": --lr must be >= 0, got ", c.lr);
  cli::optimizer_options(c, SgdOptions{}).validate(p.c_str());
  cli::schedule_from(c, c.lr, std::max<std::int64_t>(c.steps, 1));
  check<OptionError>(c.threads >= 0, p, ": --threads must be >= 0, got ", c.threads);
  check<OptionError>(c.loader_threads >= 0, p, ": --loader-threads must be >= 0, got ",
                     c.loader_threads);
  check<OptionError>(c.nddr_lr_mult >= 0.0, p, ": --nddr-lr-mult must be >= 0, got ",
                     c.nddr_lr_mult);
  check<OptionError>(c.init_format == "deeplab" || c.init_format == "torchvision" ||
                         c.init_format == "nddr" || c.init_format == "tf",
                     p, ": --init-format must be deeplab, torchvision, nddr or tf, got '",
                     c.init_format, "'");
  for (const std::string* f : {&c.init_weights, &c.init_weights_task0, &c.init_weights_task1}) {
    if (c.init_format == "tf")  // a checkpoint prefix (P.index, P.data-*) or its directory
      check<IoError>(f->empty() || std::filesystem::is_directory(*f) ||
                         std::filesystem::exists(*f + ".index"),
                     p, ": TensorFlow checkpoint '", *f, "' does not exist (expected '", *f,
                     ".index' or a directory with a 'checkpoint' file)");
    else
      check<IoError>(f->empty() || std::filesystem::exists(*f), p, ": weight file '", *f,
                     "' does not exist");
  }
  parse_fusion_init(p, c.init);
}

/// `--init-format tf`: the authors' TensorFlow checkpoints (docs/weights.md). `--init-weights`
/// is read by the scheme its names show: an NDDR-CNN(-Shortcut) or multi-task baseline
/// checkpoint fills the whole network of that method (strictly: nothing missing, nothing
/// unknown; the shortcut convs are left out for a network without them, as the authors' loader
/// does); single-task names (a single-task checkpoint, the VOC DeepLab init) go into every column
/// (the trunk and every head of a split network). `--init-weights-taskK` is a single-task
/// checkpoint for column K. fc8 is left out where its class count differs from the column's.
template <class Spec, class T>
void initialize_from_tf(Network<Spec, Cpu, T>& net, const CommonConfig& c, std::ostream& out) {
  using io::TfImportOptions;
  using io::TfScheme;
  auto& store = net.parameters();
  constexpr std::size_t K = Spec::tasks;
  constexpr bool split = Spec::shared_stages == Spec::stages;
  const auto say = [&](const std::string& file, const std::string& into, std::size_t loaded,
                       std::size_t missing) {
    out << c.program << ": loaded " << loaded << " tensors from " << file << " into " << into
        << " (" << missing << " left at their initialisation)\n";
  };
  // {"fc8"} when the checkpoint's single-task fc8 does not fit column `column`'s head.
  const auto fc8_exclusion = [&](const io::TfCheckpoint& ckpt, const std::string& column) {
    const std::string key = "vgg_16/fc8_voc12/weights";
    const auto slot = io::detail::find_slot(store, column + ".head.fc8.weight");
    if (!ckpt.contains(key) || !slot) return std::vector<std::string>{};
    const auto& shape = ckpt.info(key).shape;
    const Shape& want = io::detail::slot_shape(store, *slot);
    return shape.size() == 4 && shape[3] == want[0] ? std::vector<std::string>{}
                                                    : std::vector<std::string>{"fc8"};
  };
  // Single-task names into column `column` (for a split network: into its head only); returns
  // how many tensors it filled.
  const auto single_into = [&](const io::TfCheckpoint& ckpt, const std::string& column) {
    TfImportOptions opt;
    opt.strict = false;
    opt.columns = std::vector<std::string>{column};
    opt.exclude = fc8_exclusion(ckpt, column);
    const io::LoadReport r =
        io::load_tf_checkpoint(ckpt.prefix(), store, TfScheme::kSingleTask, opt);
    say(ckpt.prefix(), "column " + column, r.loaded.size(), r.missing.size());
    return r.loaded.size();
  };
  if (!c.init_weights.empty()) {
    const io::TfCheckpoint ckpt = io::TfCheckpoint::open(c.init_weights);
    const std::optional<TfScheme> scheme = io::detect_tf_scheme(ckpt);
    check<IoError>(scheme.has_value(), c.program, ": '", ckpt.prefix(),
                   "' is not one of the NDDR-CNN authors' checkpoints (no vgg_16/..., "
                   "vgg_16_K_S/... or nddr_S/... variables)");
    if (*scheme == TfScheme::kSingleTask) {
      std::size_t loaded = 0;
      if (split) {  // the trunk into "shared", as the baseline scheme places vgg_16/convS
        TfImportOptions opt;
        opt.strict = false;
        const io::LoadReport trunk =
            io::load_tf_checkpoint(ckpt.prefix(), store, TfScheme::kMultiTaskBaseline, opt);
        say(ckpt.prefix(), "the shared trunk", trunk.loaded.size(), 0);
        loaded += trunk.loaded.size();
      }
      for (std::size_t k = 0; k < K; ++k) loaded += single_into(ckpt, "task" + std::to_string(k));
      check<IoError>(loaded > 0, c.program, ": nothing of the single-task checkpoint '",
                     ckpt.prefix(), "' fits method ", c.method);
    } else {
      const bool fits = *scheme == TfScheme::kNddr ? !split && K == 2 : split && K == 2;
      check<OptionError>(fits, c.program, ": '", ckpt.prefix(), "' is a ",
                         io::tf_scheme_name(*scheme), " checkpoint, which does not fit method ",
                         c.method, " (", *scheme == TfScheme::kNddr ? "use --method nddr"
                                                                   : "use --method mt",
                         ")");
      TfImportOptions opt;
      if (!Spec::shortcut) opt.exclude = std::vector<std::string>{"shortcut"};
      const io::LoadReport r = io::load_tf_checkpoint(ckpt.prefix(), store, *scheme, opt);
      say(ckpt.prefix(), "the whole network", r.loaded.size(), r.missing.size());
    }
  }
  const std::string* per_column[2] = {&c.init_weights_task0, &c.init_weights_task1};
  for (std::size_t k = 0; k < 2; ++k) {
    if (per_column[k]->empty()) continue;
    check<OptionError>(k < K && !split, c.program, ": --init-weights-task", k,
                       " needs a network with a separate column ", k, " (method ", c.method, ")");
    const io::TfCheckpoint ckpt = io::TfCheckpoint::open(*per_column[k]);
    check<IoError>(io::detect_tf_scheme(ckpt) == TfScheme::kSingleTask, c.program,
                   ": --init-weights-task", k, " '", ckpt.prefix(),
                   "' is not a single-task checkpoint (vgg_16/... names)");
    check<IoError>(single_into(ckpt, "task" + std::to_string(k)) > 0, c.program, ": '",
                   ckpt.prefix(), "' has nothing that fits column ", k);
  }
}

/// Loads `--init-weights` / `--init-weights-task{0,1}` into a freshly built network.
template <class Spec, class T>
void initialize_weights(Network<Spec, Cpu, T>& net, const CommonConfig& c, std::ostream& out) {
  constexpr bool resnet = is_resnet_v<typename Spec::template backbone<0>>;
  // The authors' checkpoints are VGG-16 ones: a ResNet program refuses --init-format tf first.
  if constexpr (!resnet)
    if (c.init_format == "tf") return initialize_from_tf(net, c, out);
  auto& store = net.parameters();
  constexpr std::size_t K = Spec::tasks;
  const bool split = Spec::shared_stages == Spec::stages;
  std::vector<std::string> heads;
  for (std::size_t k = 0; k < K; ++k) heads.push_back("task" + std::to_string(k));
  const std::vector<std::string> columns = split ? std::vector<std::string>{"shared"} : heads;
  const auto say = [&](const std::string& file, const io::LoadReport& r) {
    out << c.program << ": loaded " << r.loaded.size() << " tensors from " << file << " ("
        << r.missing.size() << " left at their initialisation, " << r.skipped.size()
        << " skipped)\n";
  };
  if (!c.init_weights.empty()) {
    io::LoadReport r;
    if (c.init_format == "deeplab") {
      r = io::import_deeplab_largefov(c.init_weights, store, columns,
                                      io::ImportOptions{}.with_head_prefixes(heads));
    } else if (c.init_format == "torchvision") {
      if constexpr (resnet)  // an ImageNet ResNet (docs/weights.md)
        r = io::import_torchvision_resnet(c.init_weights, store, columns);
      else
        r = io::import_torchvision_vgg16(c.init_weights, store, columns,
                                         io::ImportOptions{}.with_head_prefixes(heads));
    } else {
      r = io::load_parameters(
          c.init_weights, store,
          io::LoadOptions{}.with_strict(false).with_rename(detail::strip_checkpoint_prefix));
    }
    say(c.init_weights, r);
  }
  const std::string* per_column[2] = {&c.init_weights_task0, &c.init_weights_task1};
  for (std::size_t k = 0; k < 2; ++k) {
    if (per_column[k]->empty()) continue;
    check<OptionError>(k < K && !split, c.program, ": --init-weights-task", k,
                       " needs a network with a separate column ", k, " (method ", c.method, ")");
    const std::string to = "task" + std::to_string(k) + ".";
    const auto rename = [to](std::string_view key) -> std::optional<std::string> {
      auto name = detail::strip_checkpoint_prefix(key);
      if (!name || !name->starts_with("task0.")) return std::nullopt;
      return to + name->substr(6);
    };
    const io::LoadReport r = io::load_parameters(
        *per_column[k], store, io::LoadOptions{}.with_strict(false).with_rename(rename));
    check<IoError>(!r.loaded.empty(), c.program, ": '", *per_column[k],
                   "' has no tensor of column task0 that fits column ", k);
    say(*per_column[k], r);
  }
}

/// A data source for `run_spec`: `train_size()`, `load_train(i, rng)` (augmented sample),
/// `test_size()`, `load_test(i)`, `collate(samples)` and `template <class Task> take(batch)`
/// (moves the task's target tensor out of a collated batch); optionally
/// `save_prediction(i, outputs, task_names)`, called for every evaluated test sample i when
/// `saves_predictions()` (NYUv2's --save-predictions).
template <class Spec, class TaskList, class D, class Data>
ExperimentResult run_spec_on(const CommonConfig& c, Context<D>& ctx, const Data& data,
                             const std::string& experiment, const std::string& label,
                             std::vector<double> loss_weights,
                             const std::vector<std::string>& columns,
                             const std::vector<std::pair<std::string, std::string>>& column_metrics,
                             std::ostream& out) {
  // One Trainer for every --optimizer (AnyOptimizer), so the network is instantiated once.
  using Exp = Experiment<Spec, TaskList, AnyOptimizer>;
  using Net = Network<Spec, D>;
  using Train = Trainer<Exp, D>;
  constexpr std::size_t K = Spec::tasks;
  using Sample = decltype(data.load_test(0));

  NetworkOptions<Spec> nopt;
  nopt.fusion = detail::fusion_options(typename Spec::fusion::options{},
                                       parse_fusion_init(c.program, c.init), c.nddr_bn != "off",
                                       c.program);
  nopt.fusion_lr_mult = c.nddr_lr_mult;
  nopt.fusion_weight_decay_mult = c.nddr_decay_mult;
  nopt.seed = c.seed;
  std::array<std::int64_t, K> outputs{};
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((outputs[I] = TaskList::template task<I>::outputs), ...);
  }(std::make_index_sequence<K>{});
  Net net(outputs, nopt);
  if constexpr (std::is_same_v<D, Cpu>) {
    initialize_weights(net, c, out);
  } else if (!c.init_weights.empty() || !c.init_weights_task0.empty() ||
             !c.init_weights_task1.empty()) {
    // Weight files are read into a host twin (same seed, hence the same layout) and uploaded.
    Network<Spec, Cpu> host(outputs, nopt);
    initialize_weights(host, c, out);
    auto upload = [](auto dst, auto src) {
      Storage<D>::upload(dst.data(), src.data(), static_cast<std::size_t>(src.numel()) * sizeof(float));
    };
    upload(net.parameters().values(), std::as_const(host.parameters()).values());
    upload(net.parameters().buffer_values(), std::as_const(host.parameters()).buffer_values());
  }

  // --best-metric names one of these (checked before anything is read or written).
  const std::vector<MetricValue> metric_names =
      Train::metric_values([]<std::size_t... I>(std::index_sequence<I...>) {
        return typename Train::Metrics{
            MetricFor<typename TaskList::template task<I>>::make()...};
      }(std::make_index_sequence<K>{}));
  if (c.eval_every > 0) best_metric_of(c, metric_names, column_metrics);

  const bool single = K == 1;
  typename Train::options_type topt;
  topt.loss_weights = std::move(loss_weights);
  topt.optimizer = cli::optimizer_options(
      c, single ? SgdOptions::paper_single_task() : SgdOptions::paper_multi_task());
  if (!single) cli::set_weighting(topt, c);  // single-task baselines stay plain
  topt.log_every = c.log_every;
  topt.checkpoint_every = c.checkpoint_every;
  topt.eval_every = c.eval_every;
  topt.output_dir = c.output_dir;
  topt.progress = c.progress;
  topt.cuda_graph = c.cuda_graph;
  topt.name = experiment + "_" + c.method;
  // Under mpirun -np N (built with nddr::mpi): one replica of N, each reading its shard; rank 0
  // alone writes (docs/distributed.md). Alone: changes nothing.
  distributed::AutoDataParallel dp(net, ctx);
  Train trainer(net, cli::schedule_from(c, c.lr, std::max<std::int64_t>(c.steps, 1)),
                dp.trainer_options(topt));
  if (c.resume) {
    if (dp.resume(trainer))
      out << c.program << ": resumed from step " << trainer.step() << "\n";
    else
      out << c.program << ": no checkpoint in " << c.output_dir << "; starting at step 0\n";
  }
  dp.attach(ctx, trainer);

  const auto to_batch = [&](std::vector<Sample>&& samples) {
    auto b = data.collate(samples);
    typename Train::Batch tb;
    tb.image = std::move(b.image);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((std::get<I>(tb.targets) = data.template take<typename TaskList::template task<I>>(b)), ...);
    }(std::make_index_sequence<K>{});
    return tb;
  };

  const std::int64_t n_test =
      c.eval_limit > 0 ? std::min(c.eval_limit, data.test_size()) : data.test_size();
  const auto test_batch = [&](std::int64_t i) {
    std::vector<Sample> one;
    one.push_back(data.load_test(i));
    return to_batch(std::move(one));
  };
  // --eval-every: the metric that picks checkpoints/best.* (its names need no test image), and
  // the best so far of a resumed run.
  const bool writes = !c.output_dir.empty() && dp.is_root();
  const std::filesystem::path best_dir = std::filesystem::path(c.output_dir) / "checkpoints";
  BestSoFar best;
  if (c.eval_every > 0) {
    best = best_metric_of(c, metric_names, column_metrics);
    if (c.resume) read_best(best_dir / "best.json", best);
  }
  const auto keep_if_best = [&](const std::vector<MetricValue>& values) {
    for (const MetricValue& m : values)
      if (m.task + "/" + m.name == best.metric && best.improved_by(m.value)) {
        best.have = true;
        best.value = m.value;
        best.step = trainer.step();
        if (!writes) return;
        std::filesystem::create_directories(best_dir);
        trainer.save_checkpoint((best_dir / "best.safetensors").string());
        const std::string js = best.json();
        io::write_file_atomic(c.program, (best_dir / "best.json").string(), js.data(), js.size());
        out << c.program << ": step " << best.step << ": best " << best.metric << " so far ("
            << io::json::number(best.value) << "), wrote "
            << (best_dir / "best.safetensors").string() << "\n";
      }
  };
  std::int64_t evaluated_at = -1;  // the step of the last periodic evaluation
  std::vector<MetricValue> evaluated;
  const auto periodic_eval = [&](std::int64_t step) {
    evaluated = Train::metric_values(trainer.evaluate(ctx, n_test, test_batch));
    trainer.log_metrics(evaluated);
    keep_if_best(evaluated);
    evaluated_at = step;
  };
  // --save-predictions: every evaluated test sample's outputs to the data source.
  typename Train::OutputsCallback save_outputs;
  if constexpr (requires { data.saves_predictions(); })
    if (data.saves_predictions() && dp.is_root()) {
      static const std::array<const char*, K> task_names = []<std::size_t... I>(
          std::index_sequence<I...>) {
        return std::array<const char*, K>{TaskList::template task<I>::name...};
      }(std::make_index_sequence<K>{});
      save_outputs = [&](std::int64_t i, std::span<const Tensor<float>> outputs) {
        data.save_prediction(i, outputs, std::span<const char* const>(task_names));
      };
    }

  const bool trains = !c.eval_only && trainer.step() < c.steps;
  if (trains) {
    data::PrefetchLoader<Sample> loader(
        data.train_size(), [&](std::int64_t i, Rng& rng) { return data.load_train(i, rng); },
        dp.shard(data::LoaderOptions{}
                     .batch_size(c.batch)
                     .seed(c.seed)
                     .threads(c.loader_threads)
                     .start_batch(trainer.step())));
    trainer.fit(ctx, c.steps, [&](std::int64_t) { return to_batch(loader.next().items); }, {},
                c.eval_every > 0 ? std::function<void(std::int64_t)>(periodic_eval)
                                 : std::function<void(std::int64_t)>());
  }

  ExperimentResult r;
  r.label = label;
  r.steps = trainer.step();
  r.columns = columns;
  if (evaluated_at == trainer.step() && !save_outputs) {
    r.metrics = evaluated;  // the periodic evaluation of the last step
  } else {
    r.metrics = Train::metric_values(trainer.evaluate(ctx, n_test, test_batch, save_outputs));
    if (c.eval_every > 0 && trains && evaluated_at != trainer.step()) {
      trainer.log_metrics(r.metrics);  // the last step counts for best.* too
      keep_if_best(r.metrics);
    }
  }
  r.output_dir = c.output_dir;
  for (const auto& [task, name] : column_metrics) {
    double v = std::numeric_limits<double>::quiet_NaN();
    for (const MetricValue& m : r.metrics)
      if (m.task == task && m.name == name) v = m.value;
    r.row.push_back(v);
  }
  out << "\n" << table_header(columns) << table_row(r);
  if (!c.output_dir.empty() && dp.is_root()) write_results(c.output_dir, experiment, c, r);
  return r;
}

/// `run_spec_on` on the device named by `c.device` (`cpu`, `cuda`, `cuda:N`).
template <class Spec, class TaskList, class Data>
ExperimentResult run_spec(const CommonConfig& c, const Data& data, const std::string& experiment,
                          const std::string& label, std::vector<double> loss_weights,
                          const std::vector<std::string>& columns,
                          const std::vector<std::pair<std::string, std::string>>& column_metrics,
                          std::ostream& out) {
  const cli::DeviceChoice device = cli::parse_device(c.program, c.device);
  // --tf32, --bf16, --cudnn-benchmark, --deterministic: the context's numeric settings.
  const NumericSettings settings = NumericSettings{}
                                       .conv_bf16(c.bf16)
                                       .conv_tf32(c.tf32)
                                       .matmul_tf32(c.tf32)
                                       .conv_benchmark(c.cudnn_benchmark)
                                       .conv_deterministic(c.deterministic);
  if (!device.cuda) {
    if (c.bf16) out << c.program << ": convolutions in emulated BF16 on the CPU\n";
    Context<Cpu> ctx(c.threads > 0 ? c.threads
                                   : std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
    ctx.set_settings(settings);
    return run_spec_on<Spec, TaskList>(c, ctx, data, experiment, label, std::move(loss_weights),
                                       columns, column_metrics, out);
  }
  cli::require_cuda_backend(c.program, c.device);  // throws in a build without the backend
#if defined(NDDR_WITH_CUDA)
  // Under mpirun, the ranks of a node take consecutive devices from the requested one.
  const int index = device.index + distributed::launcher_local_rank();
  Context<Cuda> ctx = cli::open_device(c.program, c.device, [&] { return Context<Cuda>(index); });
  ctx.set_settings(settings);
  out << c.program << ": training on CUDA device " << ctx.device() << " (convolutions "
      << (c.bf16 ? "BF16" : c.tf32 ? "TF32" : "FP32") << ", algorithms " << (c.cudnn_benchmark ? "timed" : "heuristic")
      << (c.deterministic ? ", deterministic" : "") << ")\n";
  return run_spec_on<Spec, TaskList>(c, ctx, data, experiment, label, std::move(loss_weights),
                                     columns, column_metrics, out);
#else
  throw Error(c.program + ": require_cuda_backend accepted --device " + c.device +
              " in a build without the CUDA backend");
#endif
}


}  // namespace nddr::experiments
