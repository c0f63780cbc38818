// PATTERN: Context<nddr::Cuda>.*nddr::Context: no backend for this device; for nddr::Cuda add #include <nddr/cuda.hpp>
// Using the CUDA device without its backend header must say which header to include.
#include <nddr/nddr.hpp>

int main() {
  nddr::Context<nddr::Cuda> ctx;
  (void)ctx;
}
