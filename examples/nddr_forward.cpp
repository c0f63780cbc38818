// nddr-forward: one forward pass of a network on saved weights, and with --targets the loss and
// every parameter gradient, written as safetensors (docs/tools.md). Example:
//   nddr-forward --network vgg16-nddr --weights W.safetensors --input X.safetensors
//                --output Y.safetensors --targets T.safetensors --loss-weights 1,20
// The logic is nddr::apps::forward_main (apps/src/network_tools.cpp, compiled once in nddr_apps).
#include "nddr_apps/network_tools.hpp"

#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  return nddr::apps::forward_main(std::vector<std::string>(argv + 1, argv + argc), std::cout,
                                  std::cerr);
}
