// nddr-summary: a network's layers (output shape, parameters, multiply-adds, lr group) and, as
// the last line, its trainable parameter count (docs/tools.md). Example:
//   nddr-summary --network vgg16-nddr --classes 40,3 --input 1,3,321,321
// The logic is nddr::apps::summary_main (apps/src/network_tools.cpp, compiled once in nddr_apps).
#include "nddr_apps/network_tools.hpp"

#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  return nddr::apps::summary_main(std::vector<std::string>(argv + 1, argv + argc), std::cout,
                                  std::cerr);
}
