#pragma once
/// \file
/// `run_demo(options)`: the `nddr-demo` experiment. Trains six FashionNet models from one seed on
/// DenseFashion (48x48 canvases of Fashion-MNIST items; 11-class segmentation + surface normals):
/// single-task segmentation, single-task normals, the split baseline (`Shared<5>`: all five stages
/// shared, task-specific heads), cross-stitch, NDDR and NDDR-Shortcut; evaluates each on the test
/// split with the paper's protocol; and writes results.csv, a Markdown table, per-run logs,
/// loss_curves.png and predictions.png (NDDR's predictions for four test images) to the output
/// directory. Application code of the `nddr-demo` program (apps/, target `nddr_apps`), not the
/// installed library; the pictures are drawn with the library's `nddr/viz/plot.hpp`.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/data/fashion.hpp"
#include "nddr/metrics/delta.hpp"
#include "nddr/tasks/tasks.hpp"
#include "nddr/train/experiment.hpp"
#include "nddr/weighting/registry.hpp"
#include "nddr_apps/cli.hpp"
#include "nddr_apps/optim_flags.hpp"

namespace nddr::viz {

/// Largest `--seeds` of nddr-demo.
inline constexpr std::int64_t kMaxDemoSeeds = 100;

/// Options of `run_demo`; the defaults are the full run (about 5 minutes on 2 cores).
struct DemoOptions {
  std::int64_t steps = 1500;          ///< SGD steps per run
  std::int64_t batch = 16;            ///< images per step
  std::int64_t train_samples = 4000;  ///< DenseFashion samples built from the train split
  std::int64_t test_samples = 500;    ///< DenseFashion samples built from the test split
  int canvas = 48;                    ///< canvas side (>= 28)
  int threads = 2;                    ///< OpenMP threads
  std::string device = "cpu";         ///< cpu | cuda | cuda:N (a build with the CUDA backend)
  std::uint64_t seed = 1;             ///< data, batch order and initialisation
  /// Repeats: every method on seeds seed .. seed + seeds - 1, reported as mean ± std.
  std::int64_t seeds = 1;
  double base_lr = 0.02;              ///< base rate of the schedule (`optim.schedule`)
  double normal_weight = 10.0;        ///< loss weight of the normal task (segmentation: 1)
  double fusion_lr_mult = 100.0;      ///< NDDR / cross-stitch / shortcut group (paper: x100)
  std::int64_t shortcut_channels = 32;
  std::string data_dir = data::kFashionMnistDir;
  std::string output_dir = "nddr-demo-out";
  std::int64_t log_every = 50;
  bool progress = true;
  /// Optimiser and schedule (default: momentum SGD with the paper's decay, poly power 0.9).
  cli::OptimizerFlags optim;
  /// `--weightings`: one more NDDR run per weighting method (`NAME[:key=value,...]`, see
  /// `parse_weightings`), each a row after the six, with a peak-memory column; empty = none.
  std::vector<std::string> weightings;

  /// A ~20 s run for smoke tests: 150 steps of 8 images, 800 training and 200 test samples.
  static DemoOptions quick() {
    DemoOptions o;
    o.steps = 150;
    o.batch = 8;
    o.train_samples = 800;
    o.test_samples = 200;
    o.log_every = 25;
    return o;
  }
  /// Throws OptionError naming the first bad field.
  void validate() const {
    const char* who = "nddr::viz::DemoOptions";
    check<OptionError>(steps >= 1, who, ": steps is ", steps, ", expected >= 1");
    check<OptionError>(batch >= 1, who, ": batch is ", batch, ", expected >= 1");
    check<OptionError>(train_samples >= 1, who, ": train_samples is ", train_samples,
                       ", expected >= 1");
    check<OptionError>(test_samples >= 4, who, ": test_samples is ", test_samples,
                       ", expected >= 4 (predictions.png shows four)");
    check<OptionError>(canvas >= 28, who, ": canvas is ", canvas, ", expected >= 28");
    check<OptionError>(threads >= 1, who, ": threads is ", threads, ", expected >= 1");
    check<OptionError>(seeds >= 1 && seeds <= kMaxDemoSeeds, who, ": seeds is ", seeds,
                       ", expected 1 to ", kMaxDemoSeeds);
    check<OptionError>(seed <= std::numeric_limits<std::uint64_t>::max() -
                                   static_cast<std::uint64_t>(seeds - 1),
                       who, ": seed ", seed, " + seeds ", seeds, " - 1 overflows");
    check<OptionError>(base_lr > 0 && std::isfinite(base_lr), who, ": base_lr is ", base_lr,
                       ", expected a finite value > 0");
    check<OptionError>(normal_weight > 0 && std::isfinite(normal_weight), who,
                       ": normal_weight is ", normal_weight, ", expected a finite value > 0");
    check<OptionError>(fusion_lr_mult > 0 && std::isfinite(fusion_lr_mult), who,
                       ": fusion_lr_mult is ", fusion_lr_mult, ", expected a finite value > 0");
    check<OptionError>(shortcut_channels >= 1, who, ": shortcut_channels is ", shortcut_channels,
                       ", expected >= 1");
    check<OptionError>(!output_dir.empty(), who, ": output_dir is empty");
    for (const std::string& w : weightings) weighting::make_weighting(w, 2, "--weightings");
    cli::optimizer_options(optim, SgdOptions{}).validate(who);
    cli::schedule_from(optim, base_lr, steps);
    if (cli::parse_device(who, device).cuda) cli::require_cuda_backend(who, device);
  }
};

/// One trained model's results.
struct DemoRow {
  std::string method;
  std::vector<MetricValue> metrics;  ///< its tasks' metrics (see `MetricFor`)
  double delta_m = NAN;              ///< vs the single-task runs; NaN for those runs
  double train_seconds = 0.0;
  /// Peak memory of the run in MiB: on the CPU the process's peak resident set during it
  /// (VmHWM, reset before the run), on a GPU the most device memory nddr's tensors held.
  double peak_mib = NAN;
  /// Training loss per step, unweighted, per task name ("segmentation", "normal").
  std::vector<std::pair<std::string, std::vector<double>>> losses;

  /// The value of metric `name`, or NaN when this run has no such metric.
  double metric(const std::string& name) const {
    for (const MetricValue& m : metrics)
      if (m.name == name) return m.value;
    return NAN;
  }
};

/// Everything `run_demo` produced.
struct DemoResult {
  /// seg, normals, split, cross-stitch, NDDR, NDDR-Shortcut; with `seeds` > 1 the mean over the
  /// seeds of every metric, Delta_m and train time (losses: the first seed's)
  std::vector<DemoRow> rows;
  std::vector<DemoRow> stds;  ///< with `seeds` > 1: the standard deviations (n - 1) of `rows`
  std::vector<std::vector<DemoRow>> per_seed;  ///< every seed's rows, seed `seed + k` at k
  std::string table;          ///< the Markdown table followed by the Delta_m convention line
  DeltaOptions delta;
  double total_seconds = 0.0;
  std::filesystem::path results_csv, loss_curves_png, predictions_png;
};

/// The metric columns of the table, in order.
inline const std::vector<std::string>& demo_metric_columns() {
  static const std::vector<std::string> c = {"mIoU", "PixelAcc", "Mean", "Median",
                                             "11.25", "22.5", "30"};
  return c;
}

/// Splits `--weightings` (`ew,uw,cagrad:c=0.4,rescale=1,mgda`) into method specs: an item with
/// '=' but no ':' continues the previous method's options. Each spec is checked by the weighting
/// registry; throws OptionError naming `flag` for an unknown method (listing the valid ones), a
/// bad option, an empty item or a method listed twice.
std::vector<std::string> parse_weightings(std::string_view list,
                                          std::string_view flag = "--weightings");

/// Runs the demo (see the file comment), printing progress and the table to `log`. Throws
/// IoError (naming the package to install) when Fashion-MNIST is missing from `data_dir`, and
/// OptionError for bad options.
DemoResult run_demo(const DemoOptions& o, std::ostream& log_out);

}  // namespace nddr::viz
