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

#include "nddr/train/imdb_experiment.hpp"

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    const auto config = nddr::experiments::parse_imdb_args(args, &std::cout);
    if (!config) return 0;  // --help
    nddr::experiments::run_imdb(*config, std::cout);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
