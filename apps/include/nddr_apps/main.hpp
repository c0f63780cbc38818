#pragma once
/// \file
/// `experiment_main`: the `main` of the experiment programs (`nddr-nyuv2`, `nddr-imdb-wiki`):
/// Ctrl-C / SIGTERM stop after the current step with a checkpoint (docs/reliability.md), and each
/// way out has its exit status: 0 (done, or `--help`), 2 (a bad command line, one line on stderr,
/// docs/cli.md), 128 + the signal (stopped; the checkpoint's path on stderr), 1 (any other error).

#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "nddr/train/interrupt.hpp"
#include "nddr_apps/cli.hpp"

namespace nddr::experiments {

/// Runs `run(config, std::cout)` on `parse(args, &std::cout)` (nullopt after `--help`).
template <class Parse, class Run>
int experiment_main(const char* program, int argc, char** argv, Parse&& parse, Run&& run) {
  // A second signal exits at once.
  const StopOnSignals stop_on_signals;
  try {
    const auto config = parse(std::vector<std::string>(argv + 1, argv + argc), &std::cout);
    if (!config) return 0;  // --help
    run(*config, std::cout);
    return 0;
  } catch (const TrainingInterrupted& e) {
    std::cerr << program << ": " << e.what() << "; run again with --resume to continue\n";
    return e.exit_code();
  } catch (const cli::UsageError& e) {
    std::cerr << e.what() << "\n";
    return cli::kUsageExitCode;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace nddr::experiments
