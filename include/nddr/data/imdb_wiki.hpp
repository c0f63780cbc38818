#pragma once
/// \file
/// IMDB-WIKI age + gender (paper-spec.md §6.4): a list file with lines
/// `<image path> <age> <gender>` (age 0..99, gender 0 or 1; paths relative to `image_root`).
/// Images (PNG) are resized to a fixed square with TF-legacy bilinear and turned into BGR minus
/// the DeepLab mean, like NYUv2.
///
/// Needs the `nddr::image_io` CMake target (libpng, io/png.hpp); umbrella <nddr/image_io.hpp>.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "nddr/ops/resize.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/data/nyuv2.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/png.hpp"

namespace nddr::data {

/// IMDB-WIKI age classes (0..99 years).
inline constexpr std::int32_t kAgeClasses = 100;

/// One face: image (3, S, S) BGR minus kBgrMean, age in 0..99, gender in {0, 1}.
struct ImdbSample {
  Tensor<float> image;  // (3, S, S)
  std::int32_t age = 0;
  std::int32_t gender = 0;
};

/// A batch of faces (see `collate`).
struct ImdbBatch {
  Tensor<float> image;          // (N, 3, S, S)
  Tensor<std::int32_t> age;     // (N)
  Tensor<std::int32_t> gender;  // (N)
};

/// One line of the list.
struct ImdbEntry {
  std::string image;
  std::int32_t age = 0;
  std::int32_t gender = 0;
};

/// Options of `ImdbWikiDataset`: `ImdbWikiOptions{}.size(224)`.
struct ImdbWikiOptions {
  std::int64_t image_size = 224;

  ImdbWikiOptions& size(std::int64_t side) {
    image_size = side;
    return *this;
  }
};

/// Parses an IMDB-WIKI list; IoError naming the file and line for a missing file or one that
/// is not a regular file, a file that is not UTF-8 text (NUL bytes, control characters other
/// than tab, invalid UTF-8, UTF-16), a line longer than 4096 bytes, a line that is not
/// `<path> <age> <gender>`, an age outside 0..99 or a gender other than 0/1, and for a list
/// without entries. Blank lines are skipped; quoted lines are cut short (io::excerpt).
inline std::vector<ImdbEntry> read_imdb_list(const std::string& path) {
  const char* op = "nddr::data::read_imdb_list";
  io::TextLineReader in(op, path);
  std::vector<ImdbEntry> entries;
  std::string line;
  while (in.next(line)) {
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::istringstream fields(line);
    ImdbEntry e;
    long long age = -1, gender = -1;
    std::string rest;
    const bool parsed = static_cast<bool>(fields >> e.image >> age >> gender) && !(fields >> rest);
    const std::int64_t number = in.line_number();
    if (!parsed)
      in.fail_line(number, "expected '<image path> <age> <gender>', got '", io::excerpt(line),
                   "'");
    if (age < 0 || age >= kAgeClasses)
      in.fail_line(number, "age ", age, " is not in 0..", kAgeClasses - 1);
    if (gender != 0 && gender != 1) in.fail_line(number, "gender ", gender, " is not 0 or 1");
    e.age = static_cast<std::int32_t>(age);
    e.gender = static_cast<std::int32_t>(gender);
    entries.push_back(std::move(e));
  }
  check<IoError>(!entries.empty(), op, ": list file '", path, "' has no entries");
  return entries;
}

/// IMDB-WIKI faces with age and gender labels.
class ImdbWikiDataset {
 public:
  ImdbWikiDataset(const std::string& list_file, std::string image_root,
                  ImdbWikiOptions options = {})
      : root_(std::move(image_root)), options_(options), entries_(read_imdb_list(list_file)) {
    check<OptionError>(options_.image_size >= 1, "nddr::data::ImdbWikiDataset: image_size must ",
                       "be >= 1, got ", options_.image_size);
  }

  std::int64_t size() const { return static_cast<std::int64_t>(entries_.size()); }
  const ImdbEntry& entry(std::int64_t i) const {
    check<ValueError>(i >= 0 && i < size(), "nddr::data::ImdbWikiDataset: index ", i,
                      " out of range [0, ", size(), ")");
    return entries_[static_cast<std::size_t>(i)];
  }
  std::string image_path(std::int64_t i) const {
    return root_.empty() ? entry(i).image
                         : (std::filesystem::path(root_) / entry(i).image).string();
  }

  /// Face i, resized to image_size x image_size. Thread-safe.
  ImdbSample load(std::int64_t i) const {
    const std::string path = image_path(i);
    const Tensor<float> bgr = detail::decode_bgr_image(io::read_png(path), path);  // (3, H, W)
    const std::int64_t s = options_.image_size;
    ImdbSample out{Tensor<float>(Shape{3, s, s}), entry(i).age, entry(i).gender};
    Context<Cpu> ctx(1);
    ops::resize_forward<float>(
        ctx, bgr.view().reshaped(Shape::nchw(1, 3, bgr.shape()[1], bgr.shape()[2])),
        out.image.view().reshaped(Shape::nchw(1, 3, s, s)),
        ResizeOptions{}.size(s, s).mode(ResizeMode::kBilinearTfLegacy));
    return out;
  }

 private:
  std::string root_;
  ImdbWikiOptions options_;
  std::vector<ImdbEntry> entries_;
};

/// Stacks faces into a batch; ShapeError naming the first sample of another size.
inline ImdbBatch collate(const std::vector<ImdbSample>& samples) {
  const char* op = "nddr::data::collate";
  check<ShapeError>(!samples.empty(), op, ": no samples");
  const Shape s = samples.front().image.shape();
  const auto n = static_cast<std::int64_t>(samples.size());
  ImdbBatch b{Tensor<float>(Shape::nchw(n, s[0], s[1], s[2])), Tensor<std::int32_t>(Shape{n}),
              Tensor<std::int32_t>(Shape{n})};
  for (std::int64_t k = 0; k < n; ++k) {
    const ImdbSample& x = samples[static_cast<std::size_t>(k)];
    check<ShapeError>(x.image.shape() == s, op, ": sample ", k, " has image ",
                      x.image.shape(), "; sample 0 has ", s);
    std::copy(x.image.data(), x.image.data() + x.image.numel(), b.image.data() + k * s.numel());
    b.age[k] = x.age;
    b.gender[k] = x.gender;
  }
  return b;
}

}  // namespace nddr::data
