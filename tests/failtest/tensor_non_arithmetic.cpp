// PATTERN: Tensor<std::__cxx11::basic_string<char>.*nddr::Tensor: element type must be arithmetic
// A tensor of a non-arithmetic element type must be rejected, naming the type.
#include <nddr/core/tensor.hpp>

#include <string>

int main() {
  nddr::Tensor<std::string> t;
  (void)t;
}
