#pragma once
// Test support: a whole file as bytes (`slurp`) and bytes as a whole file (`spit`, truncating),
// for tests that corrupt, cut or write files byte by byte.
#include <fstream>
#include <iterator>
#include <string>

namespace nddr_test {

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace nddr_test
