// nddr-imdb-wiki: the paper's IMDB-WIKI experiment (Table 7). Example:
//   nddr_imdb_wiki --train-list imdb/train.txt --test-list imdb/test.txt --image-root imdb
//                  --method nddr --init-weights vgg16.safetensors --init-format torchvision
// See docs/experiments.md for every table's flags.
#include "nddr_apps/imdb_experiment.hpp"
#include "nddr_apps/main.hpp"

int main(int argc, char** argv) {
  namespace ex = nddr::experiments;
  return ex::experiment_main("nddr-imdb-wiki", argc, argv, ex::parse_imdb_args, ex::run_imdb);
}
