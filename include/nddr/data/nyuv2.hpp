#pragma once
/// \file
/// NYUv2 in the NDDR-CNN distribution format (docs/data-nyuv2.md): list files
/// `list/{training,testing}_{seg,normal_mask}.txt` with lines `<image path> <label path>`, full
/// paths formed as `data_dir + path` (plain concatenation, as the authors' code). Images are
/// RGB PNGs, seg labels 1-channel PNGs (0..39, 255 = ignore), normal labels 3-channel PNGs
/// (all three 255 = invalid). Samples come out at their stored size, without augmentation.
///
/// Needs the `nddr::image_io` CMake target (libpng, io/png.hpp); umbrella <nddr/image_io.hpp>.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nddr/data/split.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/png.hpp"

namespace nddr::data {


/// How a normal label triplet v (uint8) becomes the target vector of a valid pixel.
enum class NormalEncoding {
  /// The raw triplet (v0, v1, v2) as floats, as the authors' code (and MTLNAS) do: needed to
  /// reproduce the paper's numbers, but the vectors all lie in the positive octant.
  kRawPaper,
  /// The physical unit normal (v - 127.5) / 127.5.
  kCentered,
};

/// Per-channel mean of the B, G, R channels (Caffe/DeepLab), subtracted from the 0..255 values.
inline constexpr float kBgrMean[3] = {104.00698793f, 116.66876762f, 122.67891434f};

/// Segmentation label of ignored pixels.
inline constexpr std::int32_t kIgnoreLabel = 255;
/// NYUv2 40-class segmentation.
inline constexpr std::int32_t kNyuClasses = 40;

/// One NYUv2 frame. Invalid normal pixels are the zero vector (our loss and metric convention).
struct NyuSample {
  Tensor<float> image;       // (3, H, W), BGR minus kBgrMean
  Tensor<std::int32_t> seg;  // (H, W), 0..39 or 255
  Tensor<float> normal;      // (3, H, W), zero vector = invalid
};

/// A batch of equally sized frames (see `collate`).
struct NyuBatch {
  Tensor<float> image;       // (N, 3, H, W)
  Tensor<std::int32_t> seg;  // (N, H, W)
  Tensor<float> normal;      // (N, 3, H, W)
};

/// Options of `NyuV2Dataset`: `NyuV2Options{}.encoding(NormalEncoding::kCentered)`.
struct NyuV2Options {
  NormalEncoding normal_encoding = NormalEncoding::kRawPaper;
  /// Directory of the list files; empty means `data_dir + "/list"`.
  std::string list_dir;

  NyuV2Options& encoding(NormalEncoding e) {
    normal_encoding = e;
    return *this;
  }
  NyuV2Options& lists(std::string dir) {
    list_dir = std::move(dir);
    return *this;
  }
};

/// One line of a list file.
struct ListEntry {
  std::string image;
  std::string label;
};

/// Reads a `<image> <label>` list (a line without a space names the same path twice; empty
/// lines are skipped). IoError naming the file and line for a missing file or one that is not a
/// regular file, a file that is not UTF-8 text (NUL bytes, control characters, invalid UTF-8,
/// UTF-16), a line longer than 4096 bytes, a line with more than two fields or an empty field,
/// and for a list without entries (io::TextLineReader; quoted lines are cut short).
inline std::vector<ListEntry> read_list_file(const std::string& path) {
  const char* op = "nddr::data::read_list_file";
  io::TextLineReader in(op, path);
  std::vector<ListEntry> entries;
  std::string line;
  while (in.next(line)) {
    if (line.empty()) continue;
    const std::size_t space = line.find(' ');
    ListEntry e;
    if (space == std::string::npos) {
      e.image = e.label = line;
    } else {
      e.image = line.substr(0, space);
      e.label = line.substr(space + 1);
    }
    if (e.image.empty() || e.label.empty() || e.label.find(' ') != std::string::npos)
      in.fail_line(in.line_number(), "expected '<image path> <label path>', got '",
                   io::excerpt(line), "'");
    entries.push_back(std::move(e));
  }
  check<IoError>(!entries.empty(), op, ": list file '", path, "' has no entries");
  return entries;
}

namespace detail {

/// Image PNG -> (3, H, W) BGR float minus the mean. Gray is replicated, alpha dropped (as a
/// 3-channel decode).
inline Tensor<float> decode_bgr_image(const io::Image8& img, const std::string& path) {
  check<IoError>(img.channels >= 1 && img.channels != 2, "nddr::data: image '", path, "' has ",
                 img.channels, " channels, expected 1, 3 or 4");
  const std::int64_t h = img.height, w = img.width;
  Tensor<float> out(Shape{3, h, w});  // (3, H, W)
  for (std::int64_t y = 0; y < h; ++y)
    for (std::int64_t x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        const int src = img.channels >= 3 ? 2 - c : 0;  // BGR channel c reads RGB channel 2 - c
        out[(c * h + y) * w + x] =
            static_cast<float>(img.at(static_cast<int>(y), static_cast<int>(x), src)) - kBgrMean[c];
      }
  return out;
}

}  // namespace detail

/// Seg PNG -> (H, W) int32; ValueError naming the file, value and pixel for a value that is
/// neither a class id < kNyuClasses nor kIgnoreLabel.
inline Tensor<std::int32_t> decode_seg_label(const io::Image8& img, const std::string& path) {
  check<IoError>(img.channels == 1, "nddr::data: seg label '", path, "' has ", img.channels,
                 " channels, expected 1 (8-bit gray, not a palette)");
  const std::int64_t h = img.height, w = img.width;
  Tensor<std::int32_t> out(Shape{h, w});  // (H, W)
  for (std::int64_t y = 0; y < h; ++y)
    for (std::int64_t x = 0; x < w; ++x) {
      const std::int32_t v = img.at(static_cast<int>(y), static_cast<int>(x));
      check<ValueError>(v < kNyuClasses || v == kIgnoreLabel, "nddr::data: seg label '", path,
                        "': value ", v, " at pixel (row ", y, ", col ", x, ") is not in 0..",
                        kNyuClasses - 1, " or ", kIgnoreLabel);
      out[y * w + x] = v;
    }
  return out;
}

/// Normal PNG -> (3, H, W) float in `encoding`; invalid pixels (all three 255) -> zero vector.
inline Tensor<float> decode_normal_label(const io::Image8& img, const std::string& path,
                                         NormalEncoding encoding) {
  check<IoError>(img.channels == 3, "nddr::data: normal label '", path, "' has ", img.channels,
                 " channels, expected 3");
  const std::int64_t h = img.height, w = img.width;
  Tensor<float> out(Shape{3, h, w});  // (3, H, W), zero-initialised = invalid
  for (std::int64_t y = 0; y < h; ++y)
    for (std::int64_t x = 0; x < w; ++x) {
      const int r = static_cast<int>(y), col = static_cast<int>(x);
      const bool invalid =
          img.at(r, col, 0) == 255 && img.at(r, col, 1) == 255 && img.at(r, col, 2) == 255;
      if (invalid) continue;
      for (int c = 0; c < 3; ++c) {
        const float v = img.at(r, col, c);
        out[(c * h + y) * w + x] =
            encoding == NormalEncoding::kRawPaper ? v : (v - 127.5f) / 127.5f;
      }
    }
  return out;
}

/// NYUv2 (NDDR-CNN format) with both labels per frame.
class NyuV2Dataset {
 public:
  /// Reads and cross-checks the split's seg and normal lists; images are read by `load`.
  NyuV2Dataset(std::string data_dir, Split split, NyuV2Options options = {})
      : data_dir_(std::move(data_dir)), options_(std::move(options)) {
    const std::string dir = options_.list_dir.empty() ? data_dir_ + "/list" : options_.list_dir;
    const std::string stem = split == Split::kTrain ? "training" : "testing";
    seg_list_ = dir + "/" + stem + "_seg.txt";
    normal_list_ = dir + "/" + stem + "_normal_mask.txt";
    seg_ = read_list_file(seg_list_);
    normal_ = read_list_file(normal_list_);
    check<IoError>(seg_.size() == normal_.size(), "nddr::data::NyuV2Dataset: '", seg_list_,
                   "' has ", seg_.size(), " entries but '", normal_list_, "' has ", normal_.size());
    for (std::size_t i = 0; i < seg_.size(); ++i)
      check<IoError>(seg_[i].image == normal_[i].image, "nddr::data::NyuV2Dataset: entry ", i + 1,
                     " names image '", seg_[i].image, "' in '", seg_list_, "' but '",
                     normal_[i].image, "' in '", normal_list_, "' (the lists must agree)");
  }

  std::int64_t size() const { return static_cast<std::int64_t>(seg_.size()); }
  const NyuV2Options& options() const { return options_; }

  std::string image_path(std::int64_t i) const { return data_dir_ + entry(i).image; }
  std::string seg_path(std::int64_t i) const { return data_dir_ + entry(i).label; }
  std::string normal_path(std::int64_t i) const {
    return data_dir_ + normal_[static_cast<std::size_t>(i)].label;
  }

  /// Frame i at its stored size. Thread-safe (reads files only).
  NyuSample load(std::int64_t i) const {
    const std::string ip = image_path(i), sp = seg_path(i), np = normal_path(i);
    const io::Image8 img = io::read_png(ip);
    const io::Image8 seg = io::read_png(sp);
    const io::Image8 nrm = io::read_png(np);
    check<ShapeError>(seg.height == img.height && seg.width == img.width,
                      "nddr::data::NyuV2Dataset: seg label '", sp, "' is ", seg.height, "x",
                      seg.width, " but image '", ip, "' is ", img.height, "x", img.width);
    check<ShapeError>(nrm.height == img.height && nrm.width == img.width,
                      "nddr::data::NyuV2Dataset: normal label '", np, "' is ", nrm.height, "x",
                      nrm.width, " but image '", ip, "' is ", img.height, "x", img.width);
    return {detail::decode_bgr_image(img, ip), decode_seg_label(seg, sp),
            decode_normal_label(nrm, np, options_.normal_encoding)};
  }

 private:
  const ListEntry& entry(std::int64_t i) const {
    check<ValueError>(i >= 0 && i < size(), "nddr::data::NyuV2Dataset: index ", i,
                      " out of range [0, ", size(), ")");
    return seg_[static_cast<std::size_t>(i)];
  }

  std::string data_dir_;
  NyuV2Options options_;
  std::string seg_list_;
  std::string normal_list_;
  std::vector<ListEntry> seg_;
  std::vector<ListEntry> normal_;
};

/// Stacks equally sized samples into a batch; ShapeError naming the first differing sample.
inline NyuBatch collate(const std::vector<NyuSample>& samples) {
  const char* op = "nddr::data::collate";
  check<ShapeError>(!samples.empty(), op, ": no samples");
  const Shape s = samples.front().image.shape();
  const auto n = static_cast<std::int64_t>(samples.size());
  const std::int64_t h = s[1], w = s[2], plane = h * w;
  NyuBatch b{Tensor<float>(Shape::nchw(n, 3, h, w)), Tensor<std::int32_t>(Shape{n, h, w}),
             Tensor<float>(Shape::nchw(n, 3, h, w))};
  for (std::int64_t k = 0; k < n; ++k) {
    const NyuSample& x = samples[static_cast<std::size_t>(k)];
    check<ShapeError>(x.image.shape() == s && x.seg.shape() == Shape{h, w} && x.normal.shape() == s,
                      op, ": sample ", k, " has image ", x.image.shape(), ", seg ",
                      x.seg.shape(), ", normal ", x.normal.shape(),
                      "; sample 0 has image ", s);
    std::copy(x.image.data(), x.image.data() + 3 * plane, b.image.data() + k * 3 * plane);
    std::copy(x.seg.data(), x.seg.data() + plane, b.seg.data() + k * plane);
    std::copy(x.normal.data(), x.normal.data() + 3 * plane, b.normal.data() + k * 3 * plane);
  }
  return b;
}

}  // namespace nddr::data
