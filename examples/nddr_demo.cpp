// nddr-demo: watch NDDR-CNN learn on real data on a laptop CPU in a few minutes.
//
// Trains six small models (single-task segmentation, single-task normals, split, cross-stitch,
// NDDR, NDDR-Shortcut) on DenseFashion, 48x48 canvases of Fashion-MNIST items labelled with
// 11-class segmentation and surface normals, then prints a results table and writes
// results.csv, loss_curves.png, predictions.png and per-run logs. See docs/demo.md.
//
//   nddr-demo                 # the full run (about 5 minutes on 2 cores)
//   nddr-demo --quick         # a ~20 s smoke run
//   nddr-demo --steps 3000 --threads 4 --out results/
//   nddr-demo --device cuda   # on the first GPU (a build with the CUDA backend)
//   nddr-demo --weightings ew,uw,dwa,gradnorm,rlw,pcgrad,mgda,cagrad,imtl,aligned
//                             # plus NDDR under each weighting method, with peak memory
#include <cstdint>
#include <exception>
#include <iostream>
#include <limits>
#include <string>

#include <nddr_apps/demo.hpp>

int main(int argc, char** argv) {
  using nddr::cli::RealRange;
  nddr::viz::DemoOptions o;
  bool quick = false, no_progress = false;
  std::string weightings;
  nddr::cli::ArgParser p("nddr-demo",
                         "Trains single-task, split, cross-stitch, NDDR and NDDR-Shortcut models "
                         "on DenseFashion from one seed and prints their results (docs/demo.md).");
  p.flag("quick", quick, "~20 s smoke run (150 steps of 8 images, 800/200 samples)")
      .integer("steps", o.steps, "training steps per run", std::int64_t{1})
      .integer("batch", o.batch, "images per step", std::int64_t{1}, std::int64_t{4096})
      .integer("train", o.train_samples, "training samples", std::int64_t{1}, std::int64_t{100000})
      .integer("test", o.test_samples, "test samples (predictions.png shows four)", std::int64_t{4},
               std::int64_t{100000})
      .integer("size", o.canvas, "canvas side", 28, 512)
      .integer("threads", o.threads, "CPU threads", 1, nddr::cli::kMaxThreads)
      .device("device", o.device, "cpu | cuda | cuda:N (a build with the CUDA backend)")
      .integer("seed", o.seed, "seed of data, batches and initialisation", std::uint64_t{0})
      .integer("seeds", o.seeds,
               "run every method on seeds seed..seed+N-1 and report mean ± std (results.csv; "
               "every seed: results_per_seed.csv)",
               std::int64_t{1}, nddr::viz::kMaxDemoSeeds)
      .real("lr", o.base_lr, "base learning rate", RealRange::positive())
      .real("normal-weight", o.normal_weight, "loss weight of the normal task",
            RealRange::positive())
      .real("fusion-lr-mult", o.fusion_lr_mult, "learning-rate multiplier of fusion layers",
            RealRange::positive())
      .path("data", o.data_dir, "Fashion-MNIST directory", "DIR")
      .path("out", o.output_dir, "output directory", "DIR")
      .flag("no-progress", no_progress, "no progress lines")
      .text("weightings", weightings,
            "also train NDDR under each of these weighting methods, a row each with its peak "
            "memory: comma-separated NAME[:key=value,...], NAME one of " +
                nddr::weighting::weighting_names() + " (docs/demo.md)",
            "comma-separated NAME[:key=value,...]", [](const std::string& s) { return !s.empty(); },
            "LIST");
  nddr::cli::add_optimizer_flags(p, o.optim, "sgd 5e-4 single-task, 2.5e-4 multi-task");
  if (const auto status = p.parse_or_exit(argc, argv)) return *status;
  if (quick) {  // the quick run's sizes, except those given on the command line
    const auto q = nddr::viz::DemoOptions::quick();
    if (!p.given("steps")) o.steps = q.steps;
    if (!p.given("batch")) o.batch = q.batch;
    if (!p.given("train")) o.train_samples = q.train_samples;
    if (!p.given("test")) o.test_samples = q.test_samples;
    o.log_every = q.log_every;
  }
  o.progress = !no_progress;
  try {
    nddr::cli::check_optimizer_flags(p, o.optim, o.steps);
    if (p.given("weightings")) {
      try {
        o.weightings = nddr::viz::parse_weightings(weightings);
      } catch (const nddr::OptionError& e) {
        std::string why = e.what();  // the registry's diagnosis, without its flag prefix
        if (why.starts_with("--weightings: ")) why.erase(0, 14);
        p.fail("weightings", "methods NAME[:key=value,...] (" + nddr::cli::echo(why, 140) + ")",
               weightings);
      }
    }
  } catch (const nddr::cli::UsageError& e) {
    std::cerr << e.what() << "\n";
    return nddr::cli::kUsageExitCode;
  }
  if (o.seed > std::numeric_limits<std::uint64_t>::max() - static_cast<std::uint64_t>(o.seeds - 1))
    return p.usage_error("seeds", "--seed + --seeds - 1 <= 2^64 - 1", std::to_string(o.seeds));
  // The data set lives in memory (about 20 bytes per pixel as float batches): bound its size.
  constexpr std::int64_t kMaxPixels = std::int64_t{1} << 28;
  if ((o.train_samples + o.test_samples) * o.canvas * o.canvas > kMaxPixels)
    return p.usage_error(
        "train", "(--train + --test) x --size^2 <= " + std::to_string(kMaxPixels) + " pixels",
        std::to_string(o.train_samples));
  try {
    nddr::viz::run_demo(o, std::cout);
  } catch (const std::exception& e) {
    std::cerr << "nddr-demo: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
