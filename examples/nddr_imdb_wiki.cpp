// nddr-imdb-wiki: the paper's IMDB-WIKI experiment (Table 7). Example:
//   nddr_imdb_wiki --train-list imdb/train.txt --test-list imdb/test.txt --image-root imdb
//                  --method nddr --init-weights vgg16.safetensors --init-format torchvision
// See docs/experiments.md for every table's flags.
#if defined(NDDR_WITH_CUDA)
#include <nddr/cuda.hpp>  // --device cuda[:N]
#endif
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "nddr_apps/imdb_experiment.hpp"

int main(int argc, char** argv) {
  // Ctrl-C or a scheduler's SIGTERM: finish the step, write a checkpoint, exit 130/143
  // (docs/reliability.md); a second signal exits at once.
  const nddr::StopOnSignals stop_on_signals;
  try {
    const auto config = nddr::experiments::parse_imdb_args({argv + 1, argv + argc}, &std::cout);
    if (!config) return 0;  // --help
    nddr::experiments::run_imdb(*config, std::cout);
    return 0;
  } catch (const nddr::TrainingInterrupted& e) {
    std::cerr << "nddr-imdb-wiki: " << e.what() << "; run again with --resume to continue\n";
    return e.exit_code();
  } catch (const nddr::cli::UsageError& e) {  // a bad command line: one line, docs/cli.md
    std::cerr << e.what() << "\n";
    return nddr::cli::kUsageExitCode;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
