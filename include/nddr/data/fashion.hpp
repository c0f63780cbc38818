#pragma once
/// \file
/// Fashion-MNIST (Debian's dataset-fashion-mnist) and two seeded multi-task sets built from it:
///
/// - `MultiFashion` (`make_multi_fashion`): 36x36 canvases holding two items of different
///   classes, one near the top-left and one near the bottom-right corner, combined by max;
///   two 10-class classification tasks (left item, right item).
/// - `DenseFashion` (`make_dense_fashion`): larger canvases with several possibly overlapping
///   items; task 1 is 11-class per-pixel segmentation (the 10 item classes + background),
///   task 2 the surface normals of the image read as a smoothed height field.
///
/// Both are pure functions of (source split, count, options, seed): sample i uses its own
/// random stream `Rng(random_bits(seed, i))`, so it does not depend on `count`. The recipe is
/// documented in docs/data-fashion.md.
///
/// Example:
///   auto train = nddr::data::FashionMnist::load();   // 60000 items
///   auto set = nddr::data::make_multi_fashion(train, 120000, /*seed=*/1);
///   std::vector<std::int64_t> idx = {0, 1, 2, 3};
///   nddr::data::MultiFashionBatch<float> b = set.batch<float>(idx);   // b.image (4, 1, 36, 36)
///
/// Needs the `nddr::image_io` CMake target (zlib, io/idx.hpp); umbrella <nddr/image_io.hpp>.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "nddr/data/split.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/io/idx.hpp"

namespace nddr::data {


/// Where Debian's dataset-fashion-mnist installs its files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST: 28x28 uint8 grayscale items (white garment on black) with labels 0..9.
struct FashionMnist {
  static constexpr int kSide = 28;
  static constexpr int kClasses = 10;

  Tensor<std::uint8_t> images;  // (N, 28, 28)
  Tensor<std::uint8_t> labels;  // (N)

  std::int64_t size() const { return labels.numel(); }
  /// The 28 * 28 row-major pixels of item i.
  const std::uint8_t* image(std::int64_t i) const { return images.data() + i * kSide * kSide; }
  int label(std::int64_t i) const { return labels[i]; }

  /// The class names, in label order.
  static const char* class_name(int label) {
    static constexpr std::array<const char*, kClasses> names = {
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    check<ValueError>(label >= 0 && label < kClasses,
                      "nddr::data::FashionMnist::class_name: label ", label, " outside [0, 10)");
    return names[static_cast<std::size_t>(label)];
  }

  /// True when the four gzipped IDX files are present in `dir`.
  static bool available(const std::string& dir = kFashionMnistDir) {
    for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
      if (!std::filesystem::exists(std::filesystem::path(dir) / f)) return false;
    return true;
  }

  /// Reads `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` from `dir`. Throws IoError when the
  /// files are missing (saying which package installs them), malformed (everything
  /// `io::read_idx` refuses), or inconsistent (image extents other than (N, 28, 28) with
  /// N >= 1, label count != N, a label outside 0..9).
  static FashionMnist load(const std::string& dir = kFashionMnistDir, Split split = Split::kTrain) {
    const std::string prefix = dir + (split == Split::kTrain ? "/train" : "/t10k");
    const std::string image_path = prefix + "-images-idx3-ubyte.gz";
    const std::string label_path = prefix + "-labels-idx1-ubyte.gz";
    for (const std::string& p : {image_path, label_path})
      check<IoError>(std::filesystem::exists(p), "nddr::data::FashionMnist::load: '", p,
                     "' does not exist; install Debian's dataset-fashion-mnist "
                     "(apt-get install dataset-fashion-mnist) or pass the directory holding "
                     "the gzipped IDX files");
    const io::IdxArray im = io::read_idx(image_path);
    const io::IdxArray lb = io::read_idx(label_path);
    check<IoError>(im.dims.size() == 3 && im.dims[1] == kSide && im.dims[2] == kSide,
                   "nddr::data::FashionMnist::load: '", image_path, "': ", im.dims.size(),
                   "-d extents, expected (N, 28, 28)");
    check<IoError>(im.dims[0] >= 1, "nddr::data::FashionMnist::load: '", image_path,
                   "' holds no image (extents (0, 28, 28))");
    check<IoError>(lb.dims.size() == 1 && lb.dims[0] == im.dims[0],
                   "nddr::data::FashionMnist::load: '", label_path, "': label count ",
                   lb.dims.empty() ? -1 : lb.dims[0], " does not match the ", im.dims[0],
                   " images of '", image_path, "' (dims mismatch)");
    FashionMnist f;
    f.images = Tensor<std::uint8_t>(Shape{im.dims[0], kSide, kSide});
    f.labels = Tensor<std::uint8_t>(Shape{lb.dims[0]});
    std::copy(im.data.begin(), im.data.end(), f.images.data());
    for (std::size_t i = 0; i < lb.data.size(); ++i) {
      check<IoError>(lb.data[i] < kClasses, "nddr::data::FashionMnist::load: '", label_path,
                     "': label ", int{lb.data[i]}, " of item ", i, " outside [0, 10)");
      f.labels[static_cast<std::int64_t>(i)] = lb.data[i];
    }
    return f;
  }
};

/// A batch of `MultiFashion`: normalised images and the two label vectors.
template <class T>
struct MultiFashionBatch {
  Tensor<T> image;             // (B, 1, 36, 36)
  Tensor<std::int32_t> left;   // (B), class of the top-left item
  Tensor<std::int32_t> right;  // (B), class of the bottom-right item
};

/// A batch of `DenseFashion`: normalised images, segmentation labels and unit normals.
template <class T>
struct DenseFashionBatch {
  Tensor<T> image;           // (B, 1, S, S)
  Tensor<std::int32_t> seg;  // (B, S, S), 0..9 item class, 10 background
  Tensor<T> normal;          // (B, 3, S, S), unit length everywhere
};

namespace detail {

inline void check_index(const char* who, std::int64_t i, std::int64_t size) {
  check<ValueError>(i >= 0 && i < size, who, ": sample index ", i, " outside [0, ", size, ")");
}

// (x / 255 - mean) / std of `count` bytes into `out`.
template <class T>
void normalise(const std::uint8_t* in, std::int64_t count, double mean, double std, T* out) {
  for (std::int64_t k = 0; k < count; ++k) out[k] = static_cast<T>((in[k] / 255.0 - mean) / std);
}

// Item indices of the source grouped by class.
inline std::array<std::vector<std::int64_t>, FashionMnist::kClasses> by_class(
    const char* who, const FashionMnist& source) {
  std::array<std::vector<std::int64_t>, FashionMnist::kClasses> groups;
  for (std::int64_t i = 0; i < source.size(); ++i) {
    const int l = source.label(i);
    check<ValueError>(l >= 0 && l < FashionMnist::kClasses, who, ": source label ", l, " of item ",
                      i, " outside [0, 10)");
    groups[static_cast<std::size_t>(l)].push_back(i);
  }
  return groups;
}

// Draws the item's top-left corner on the canvas, pixels outside the canvas dropped.
inline void paste_max(const std::uint8_t* item, int row0, int col0, int side,
                      std::uint8_t* canvas) {
  for (int r = 0; r < FashionMnist::kSide; ++r) {
    const int y = row0 + r;
    if (y < 0 || y >= side) continue;
    for (int c = 0; c < FashionMnist::kSide; ++c) {
      const int x = col0 + c;
      if (x < 0 || x >= side) continue;
      std::uint8_t& dst = canvas[y * side + x];
      dst = std::max(dst, item[r * FashionMnist::kSide + c]);
    }
  }
}

}  // namespace detail

/// Two-item composites for two 10-class classification tasks (see `make_multi_fashion`).
class MultiFashion {
 public:
  static constexpr int kSide = 36;
  static constexpr int kClasses = 10;
  /// Pixel mean and standard deviation (of x / 255) of `make_multi_fashion(train, 120000, 1)`;
  /// fixed constants so that every split is normalised alike.
  static constexpr double kMean = 0.2966;
  static constexpr double kStd = 0.3628;

  Tensor<std::uint8_t> images;  // (N, 36, 36)
  Tensor<std::int32_t> left;    // (N)
  Tensor<std::int32_t> right;   // (N)
  double mean = kMean;
  double std = kStd;

  std::int64_t size() const { return left.numel(); }

  /// Samples `indices` (each in [0, size())) as network-ready tensors; images are normalised
  /// to (x / 255 - mean) / std. Throws ValueError naming a bad index.
  template <class T>
  MultiFashionBatch<T> batch(std::span<const std::int64_t> indices) const {
    const auto b = static_cast<std::int64_t>(indices.size());
    MultiFashionBatch<T> out{Tensor<T>(Shape{b, 1, kSide, kSide}), Tensor<std::int32_t>(Shape{b}),
                             Tensor<std::int32_t>(Shape{b})};
    constexpr std::int64_t pixels = kSide * kSide;
    for (std::int64_t k = 0; k < b; ++k) {
      const std::int64_t i = indices[static_cast<std::size_t>(k)];
      detail::check_index("nddr::data::MultiFashion::batch", i, size());
      detail::normalise(images.data() + i * pixels, pixels, mean, std,
                        out.image.data() + k * pixels);
      out.left[k] = left[i];
      out.right[k] = right[i];
    }
    return out;
  }
};

/// Builds `count` MultiFashion samples from `source` (a Fashion-MNIST split). Sample i: the
/// left item is source item i mod N; the right item is a uniformly drawn item of a uniformly
/// drawn *other* class. On a zeroed 36x36 canvas the left item's corner goes to (dy, dx) and
/// the right item's to (8 + dy', 8 + dx'), every shift uniform in [-4, 4]; pixels falling off
/// the canvas are dropped and overlapping pixels take the max. Deterministic in (source,
/// count, seed); sample i depends only on (source, i, seed).
inline MultiFashion make_multi_fashion(const FashionMnist& source, std::int64_t count,
                                       std::uint64_t seed) {
  const char* who = "nddr::data::make_multi_fashion";
  check<OptionError>(count >= 0, who, ": count is ", count, ", expected >= 0");
  check<ValueError>(source.size() > 0, who, ": the source set is empty");
  const auto groups = detail::by_class(who, source);
  constexpr int side = MultiFashion::kSide;
  constexpr int max_shift = 4;
  constexpr int far_corner = side - FashionMnist::kSide;  // 8
  MultiFashion set;
  set.images = Tensor<std::uint8_t>(Shape{count, side, side});
  set.left = Tensor<std::int32_t>(Shape{count});
  set.right = Tensor<std::int32_t>(Shape{count});
  for (std::int64_t i = 0; i < count; ++i) {
    Rng rng(random_bits(seed, static_cast<std::uint64_t>(i)));
    const std::int64_t a = i % source.size();
    const int left_class = source.label(a);
    // Some other class that the source actually holds.
    int right_class = left_class;
    for (int tries = 0; right_class == left_class; ++tries) {
      check<ValueError>(tries < 1000, who, ": the source holds no class other than ", left_class);
      const int c = (left_class + 1 + static_cast<int>(rng.below(FashionMnist::kClasses - 1))) %
                    FashionMnist::kClasses;
      if (!groups[static_cast<std::size_t>(c)].empty()) right_class = c;
    }
    const auto& members = groups[static_cast<std::size_t>(right_class)];
    const std::int64_t b = members[static_cast<std::size_t>(rng.below(members.size()))];
    const auto shift = [&rng] {
      return static_cast<int>(rng.below(2 * max_shift + 1)) - max_shift;
    };
    const int ly = shift(), lx = shift(), ry = shift(), rx = shift();
    std::uint8_t* canvas = set.images.data() + i * side * side;
    detail::paste_max(source.image(a), ly, lx, side, canvas);
    detail::paste_max(source.image(b), far_corner + ry, far_corner + rx, side, canvas);
    set.left[i] = left_class;
    set.right[i] = right_class;
  }
  return set;
}

/// Options of `make_dense_fashion`:
/// `DenseFashionOptions{}.size(48).items(3, 4).threshold(32).sigma(1.5).height(4).seed(7)`.
struct DenseFashionOptions {
  /// Canvas side S (>= 28).
  int canvas = 48;
  /// Items per canvas, uniform in [min_items, max_items].
  int min_items = 3;
  int max_items = 4;
  /// A pixel belongs to an item where the item's intensity exceeds this (0..254).
  int foreground_threshold = 32;
  /// Gaussian blur of the height field (pixels, > 0).
  double blur_sigma = 1.5;
  /// Height of a white pixel (the height field is height_scale * blur(x / 255); > 0).
  double height_scale = 4.0;
  std::uint64_t base_seed = 0;

  DenseFashionOptions& size(int v) {
    canvas = v;
    return *this;
  }
  DenseFashionOptions& items(int lo, int hi) {
    min_items = lo;
    max_items = hi;
    return *this;
  }
  DenseFashionOptions& threshold(int v) {
    foreground_threshold = v;
    return *this;
  }
  DenseFashionOptions& sigma(double v) {
    blur_sigma = v;
    return *this;
  }
  DenseFashionOptions& height(double v) {
    height_scale = v;
    return *this;
  }
  DenseFashionOptions& seed(std::uint64_t v) {
    base_seed = v;
    return *this;
  }
};

/// Unit surface normals (3, H, W) of the height field h = height_scale * G_sigma * (x / 255)
/// of the uint8 image `x` (H, W): n = normalize(-dh/dx, -dh/dy, 1), x to the right (columns),
/// y downwards (rows), z towards the viewer. Blur and differences replicate the border; the
/// derivatives are central differences (one-sided at the border). A locally constant image
/// gives exactly (0, 0, 1).
template <class T>
void height_field_normals(const std::uint8_t* x, int height, int width, double sigma,
                          double height_scale, T* normal) {
  check<OptionError>(sigma > 0 && height_scale > 0, "nddr::data::height_field_normals: sigma ",
                     sigma, " and height_scale ", height_scale, " must be > 0");
  const int radius = static_cast<int>(std::ceil(3 * sigma));
  std::vector<double> kernel(static_cast<std::size_t>(2 * radius + 1));
  double total = 0;
  for (int k = -radius; k <= radius; ++k)
    total += kernel[static_cast<std::size_t>(k + radius)] =
        std::exp(-0.5 * k * k / (sigma * sigma));
  for (double& w : kernel) w /= total;
  const auto clamp = [](int v, int n) { return std::min(std::max(v, 0), n - 1); };
  const std::size_t plane = static_cast<std::size_t>(height) * static_cast<std::size_t>(width);
  std::vector<double> rows(plane), h(plane);  // horizontal pass, then the full blur
  for (int r = 0; r < height; ++r)
    for (int c = 0; c < width; ++c) {
      double s = 0;
      for (int k = -radius; k <= radius; ++k)
        s += kernel[static_cast<std::size_t>(k + radius)] * x[r * width + clamp(c + k, width)];
      rows[static_cast<std::size_t>(r * width + c)] = s;
    }
  for (int r = 0; r < height; ++r)
    for (int c = 0; c < width; ++c) {
      double s = 0;
      for (int k = -radius; k <= radius; ++k)
        s += kernel[static_cast<std::size_t>(k + radius)] *
             rows[static_cast<std::size_t>(clamp(r + k, height) * width + c)];
      h[static_cast<std::size_t>(r * width + c)] = s * (height_scale / 255.0);
    }
  const auto at = [&](int r, int c) { return h[static_cast<std::size_t>(r * width + c)]; };
  for (int r = 0; r < height; ++r)
    for (int c = 0; c < width; ++c) {
      const int c0 = clamp(c - 1, width), c1 = clamp(c + 1, width);
      const int r0 = clamp(r - 1, height), r1 = clamp(r + 1, height);
      const double dx = c1 > c0 ? (at(r, c1) - at(r, c0)) / (c1 - c0) : 0.0;
      const double dy = r1 > r0 ? (at(r1, c) - at(r0, c)) / (r1 - r0) : 0.0;
      const double inv = 1.0 / std::sqrt(dx * dx + dy * dy + 1.0);
      const std::size_t p = static_cast<std::size_t>(r * width + c);
      normal[p] = static_cast<T>(-dx * inv);
      normal[plane + p] = static_cast<T>(-dy * inv);
      normal[2 * plane + p] = static_cast<T>(inv);
    }
}

/// Several overlapping items per canvas for segmentation + surface normals (see
/// `make_dense_fashion`). Stores images and labels as bytes; normals are computed per batch.
class DenseFashion {
 public:
  /// Segmentation classes: the 10 item classes and background.
  static constexpr int kClasses = 11;
  static constexpr std::int32_t kBackground = 10;
  /// Pixel mean and standard deviation (of x / 255) of `make_dense_fashion(train, 20000,
  /// DenseFashionOptions{}.seed(1))`; fixed so that every split is normalised alike.
  static constexpr double kMean = 0.2235;
  static constexpr double kStd = 0.3337;

  Tensor<std::uint8_t> images;  // (N, S, S)
  Tensor<std::uint8_t> labels;  // (N, S, S), 0..10
  DenseFashionOptions options;
  double mean = kMean;
  double std = kStd;

  std::int64_t size() const { return images.numel() == 0 ? 0 : images.shape()[0]; }
  int side() const { return options.canvas; }

  /// Samples `indices` as network-ready tensors: normalised images, int32 labels and the unit
  /// normals of each image's height field. Throws ValueError naming a bad index.
  template <class T>
  DenseFashionBatch<T> batch(std::span<const std::int64_t> indices) const {
    const auto b = static_cast<std::int64_t>(indices.size());
    const std::int64_t s = side();
    DenseFashionBatch<T> out{Tensor<T>(Shape{b, 1, s, s}), Tensor<std::int32_t>(Shape{b, s, s}),
                             Tensor<T>(Shape{b, 3, s, s})};
    const std::int64_t pixels = s * s;
    for (std::int64_t k = 0; k < b; ++k) {
      const std::int64_t i = indices[static_cast<std::size_t>(k)];
      detail::check_index("nddr::data::DenseFashion::batch", i, size());
      const std::uint8_t* img = images.data() + i * pixels;
      detail::normalise(img, pixels, mean, std, out.image.data() + k * pixels);
      std::copy(labels.data() + i * pixels, labels.data() + (i + 1) * pixels,
                out.seg.data() + k * pixels);
      height_field_normals(img, side(), side(), options.blur_sigma, options.height_scale,
                           out.normal.data() + k * 3 * pixels);
    }
    return out;
  }
};

/// Builds `count` DenseFashion samples from `source`. Sample i: n items, n uniform in
/// [min_items, max_items]; for each, a uniformly drawn source item (any class) with its corner
/// uniform in [0, S - 28]^2, drawn in order onto a zeroed S x S canvas. Where the item's pixel
/// exceeds the threshold it overwrites the canvas and the label becomes its class; elsewhere the
/// canvas keeps max(canvas, pixel) and its label. Untouched pixels are background (10), so a
/// pixel is labelled with an item class exactly when its intensity exceeds the threshold.
/// Deterministic in (source, count, options); sample i depends only on (source, i, options).
inline DenseFashion make_dense_fashion(const FashionMnist& source, std::int64_t count,
                                       const DenseFashionOptions& opt = {}) {
  const char* who = "nddr::data::make_dense_fashion";
  check<OptionError>(count >= 0, who, ": count is ", count, ", expected >= 0");
  check<OptionError>(opt.canvas >= FashionMnist::kSide && opt.canvas <= 4096, who,
                     ": option size is ", opt.canvas, ", expected 28 to 4096");
  check<OptionError>(opt.min_items >= 1 && opt.min_items <= opt.max_items, who,
                     ": option items is [", opt.min_items, ", ", opt.max_items,
                     "], expected 1 <= min <= max");
  check<OptionError>(opt.foreground_threshold >= 0 && opt.foreground_threshold <= 254, who,
                     ": option threshold is ", opt.foreground_threshold, ", expected 0 to 254");
  check<OptionError>(opt.blur_sigma > 0, who, ": option sigma is ", opt.blur_sigma,
                     ", expected > 0");
  check<OptionError>(opt.height_scale > 0, who, ": option height is ", opt.height_scale,
                     ", expected > 0");
  check<ValueError>(source.size() > 0, who, ": the source set is empty");
  const int side = opt.canvas;
  const int span = side - FashionMnist::kSide + 1;
  DenseFashion set;
  set.options = opt;
  set.images = Tensor<std::uint8_t>(Shape{count, side, side});
  set.labels = Tensor<std::uint8_t>(Shape{count, side, side},
                                    static_cast<std::uint8_t>(DenseFashion::kBackground));
  for (std::int64_t i = 0; i < count; ++i) {
    Rng rng(random_bits(opt.base_seed, static_cast<std::uint64_t>(i)));
    std::uint8_t* canvas = set.images.data() + i * side * side;
    std::uint8_t* label = set.labels.data() + i * side * side;
    const auto n =
        opt.min_items +
        static_cast<int>(rng.below(static_cast<std::uint64_t>(opt.max_items - opt.min_items + 1)));
    for (int item = 0; item < n; ++item) {
      const auto j =
          static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(source.size())));
      const int cls = source.label(j);
      check<ValueError>(cls >= 0 && cls < FashionMnist::kClasses, who, ": source label ", cls,
                        " of item ", j, " outside [0, 10)");
      const int row0 = static_cast<int>(rng.below(static_cast<std::uint64_t>(span)));
      const int col0 = static_cast<int>(rng.below(static_cast<std::uint64_t>(span)));
      const std::uint8_t* src = source.image(j);
      for (int r = 0; r < FashionMnist::kSide; ++r)
        for (int c = 0; c < FashionMnist::kSide; ++c) {
          const std::uint8_t v = src[r * FashionMnist::kSide + c];
          const int p = (row0 + r) * side + col0 + c;
          if (v > opt.foreground_threshold) {
            canvas[p] = v;
            label[p] = static_cast<std::uint8_t>(cls);
          } else {
            canvas[p] = std::max(canvas[p], v);
          }
        }
    }
  }
  return set;
}

}  // namespace nddr::data
