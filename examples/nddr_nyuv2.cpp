// nddr-nyuv2: the paper's NYUv2 experiments (Tables 1-4 and 6). Example:
//   nddr_nyuv2 --data-dir datasets/nyu_v2 --method nddr --init-weights-task0 st_seg.safetensors
//              --init-weights-task1 st_normal.safetensors
// See docs/experiments.md for every table's flags.
#include "nddr_apps/nyuv2_experiment.hpp"
#include "nddr_apps/main.hpp"

int main(int argc, char** argv) {
  namespace ex = nddr::experiments;
  return ex::experiment_main("nddr-nyuv2", argc, argv, ex::parse_nyuv2_args, ex::run_nyuv2);
}
