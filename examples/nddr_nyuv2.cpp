// nddr-nyuv2: the paper's NYUv2 experiments (Tables 1-4 and 6). Example:
//   nddr_nyuv2 --data-dir datasets/nyu_v2 --method nddr --init-weights-task0 st_seg.safetensors
//              --init-weights-task1 st_normal.safetensors
// See docs/experiments.md for every table's flags.
//   nddr-nyuv2 --check-data datasets/nyu_v2   checks a data folder (docs/data-nyuv2.md)
#include "nddr_apps/nyuv2_experiment.hpp"
#include "nddr_apps/main.hpp"
#include "nddr_apps/nyuv2_check.hpp"

#include <iostream>

int main(int argc, char** argv) {
  namespace ex = nddr::experiments;
  // nddr-nyuv2 --check-data DIR: validate a data folder, report every problem, train nothing.
  if (nddr::apps::wants_check_data(argc, argv))
    return nddr::apps::check_data_main("nddr-nyuv2", argc, argv, std::cout, std::cerr);
  return ex::experiment_main("nddr-nyuv2", argc, argv, ex::parse_nyuv2_args, ex::run_nyuv2);
}
