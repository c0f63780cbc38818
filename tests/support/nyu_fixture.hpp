#pragma once
// Test support: a tiny synthetic NYUv2 dataset in the NDDR-CNN format (PNG files + lists).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "nddr/io/png.hpp"

namespace nddr_test {

namespace fs = std::filesystem;

inline nddr::io::Image8 image8(int h, int w, int c) {
  nddr::io::Image8 img;
  img.height = h;
  img.width = w;
  img.channels = c;
  img.pixels.assign(static_cast<std::size_t>(h * w * c), 0);
  return img;
}

inline void write_text(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
}

/// 4 training and 2 test frames of kH x kW (default 40 x 48; at least 2 x 2) in the NDDR-CNN
/// format: seg = a few blocks of classes, normals = raw triplets, one invalid pixel per frame.
inline void write_nyu(const fs::path& dir, int kH = 40, int kW = 48) {
  fs::create_directories(dir / "data");
  std::string train_seg, train_nrm, test_seg, test_nrm;
  for (int s = 0; s < 6; ++s) {
    auto img = image8(kH, kW, 3), seg = image8(kH, kW, 1), nrm = image8(kH, kW, 3);
    for (int y = 0; y < kH; ++y)
      for (int x = 0; x < kW; ++x) {
        const int cls = (y / 10 + x / 12 + s) % 5;
        seg.at(y, x) = static_cast<std::uint8_t>(y == 0 && x == 0 ? 255 : cls);
        for (int c = 0; c < 3; ++c) img.at(y, x, c) = static_cast<std::uint8_t>(40 * cls + 30 * c + (x * y + s) % 17);
        const bool invalid = y == 1 && x == 1;
        nrm.at(y, x, 0) = invalid ? 255 : static_cast<std::uint8_t>(60 + 30 * cls);
        nrm.at(y, x, 1) = invalid ? 255 : static_cast<std::uint8_t>(200 - 20 * cls);
        nrm.at(y, x, 2) = invalid ? 255 : 180;
      }
    const std::string n = std::to_string(s);
    nddr::io::write_png((dir / "data" / ("img" + n + ".png")).string(), img);
    nddr::io::write_png((dir / "data" / ("seg" + n + ".png")).string(), seg);
    nddr::io::write_png((dir / "data" / ("nrm" + n + ".png")).string(), nrm);
    const std::string sl = "/data/img" + n + ".png /data/seg" + n + ".png\n";
    const std::string nl = "/data/img" + n + ".png /data/nrm" + n + ".png\n";
    (s < 4 ? train_seg : test_seg) += sl;
    (s < 4 ? train_nrm : test_nrm) += nl;
  }
  write_text(dir / "list" / "training_seg.txt", train_seg);
  write_text(dir / "list" / "training_normal_mask.txt", train_nrm);
  write_text(dir / "list" / "testing_seg.txt", test_seg);
  write_text(dir / "list" / "testing_normal_mask.txt", test_nrm);
}

}  // namespace nddr_test
