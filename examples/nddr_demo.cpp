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
#if defined(NDDR_WITH_CUDA)
#include <nddr/cuda.hpp>  // --device cuda[:N]
#endif
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>

#include <nddr/viz/demo.hpp>

namespace {

void usage(const nddr::viz::DemoOptions& d) {
  std::cout
      << "usage: nddr-demo [options]\n"
         "  --quick               ~20 s smoke run (150 steps, 800/200 samples)\n"
         "  --steps N             SGD steps per run (default "
      << d.steps << ")\n  --batch N             images per step (default " << d.batch
      << ")\n  --train N             training samples (default " << d.train_samples
      << ")\n  --test N              test samples (default " << d.test_samples
      << ")\n  --size S              canvas side, >= 28 (default " << d.canvas
      << ")\n  --threads N           CPU threads (default " << d.threads
      << ")\n  --device D            cpu | cuda | cuda:N (default " << d.device
      << ")\n  --seed N              seed of data, batches and initialisation (default " << d.seed
      << ")\n  --lr X                base learning rate (default " << d.base_lr
      << ")\n  --normal-weight X     loss weight of the normal task (default " << d.normal_weight
      << ")\n  --fusion-lr-mult X    learning-rate multiplier of fusion layers (default "
      << d.fusion_lr_mult << ")\n  --data DIR            Fashion-MNIST directory (default "
      << d.data_dir << ")\n  --out DIR             output directory (default " << d.output_dir
      << ")\n  --no-progress         no progress lines\n";
}

}  // namespace

int main(int argc, char** argv) {
  nddr::viz::DemoOptions o;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--quick") {
      const auto q = nddr::viz::DemoOptions::quick();
      o.steps = q.steps;
      o.batch = q.batch;
      o.train_samples = q.train_samples;
      o.test_samples = q.test_samples;
      o.log_every = q.log_every;
    }
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      const auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw nddr::OptionError("nddr-demo: " + a + " needs a value");
        return argv[++i];
      };
      if (a == "--quick") continue;
      if (a == "-h" || a == "--help") {
        usage(o);
        return 0;
      } else if (a == "--steps") {
        o.steps = std::stoll(value());
      } else if (a == "--batch") {
        o.batch = std::stoll(value());
      } else if (a == "--train") {
        o.train_samples = std::stoll(value());
      } else if (a == "--test") {
        o.test_samples = std::stoll(value());
      } else if (a == "--size") {
        o.canvas = std::stoi(value());
      } else if (a == "--threads") {
        o.threads = std::stoi(value());
      } else if (a == "--device") {
        o.device = value();
      } else if (a == "--seed") {
        o.seed = std::stoull(value());
      } else if (a == "--lr") {
        o.base_lr = std::stod(value());
      } else if (a == "--normal-weight") {
        o.normal_weight = std::stod(value());
      } else if (a == "--fusion-lr-mult") {
        o.fusion_lr_mult = std::stod(value());
      } else if (a == "--data") {
        o.data_dir = value();
      } else if (a == "--out") {
        o.output_dir = value();
      } else if (a == "--no-progress") {
        o.progress = false;
      } else {
        std::cerr << "nddr-demo: unknown option '" << a << "'\n";
        usage(o);
        return 2;
      }
    }
    nddr::viz::run_demo(o, std::cout);
  } catch (const std::invalid_argument& e) {
    std::cerr << "nddr-demo: a numeric option has a non-numeric value (" << e.what() << ")\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "nddr-demo: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
