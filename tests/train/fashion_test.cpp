// Fashion-MNIST loading and the two generated multi-task sets (MultiFashion, DenseFashion):
// determinism, label ranges, placement, the segmentation/intensity invariant and the normals.

#include "nddr/data/fashion.hpp"

#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using nddr::data::DenseFashion;
using nddr::data::DenseFashionOptions;
using nddr::data::FashionMnist;
using nddr::data::MultiFashion;

// Item k of class k % 10: a filled rectangle whose size and brightness depend on k, on black.
FashionMnist synthetic_source(std::int64_t n) {
  FashionMnist f;
  f.images = nddr::Tensor<std::uint8_t>(nddr::Shape{n, 28, 28});
  f.labels = nddr::Tensor<std::uint8_t>(nddr::Shape{n});
  for (std::int64_t k = 0; k < n; ++k) {
    f.labels[k] = static_cast<std::uint8_t>(k % 10);
    const int margin = static_cast<int>(k % 7);
    for (int r = margin; r < 28 - margin; ++r)
      for (int c = margin / 2; c < 28 - margin / 2; ++c)
        f.images[(k * 28 + r) * 28 + c] = static_cast<std::uint8_t>(100 + (k * 13 + r + c) % 156);
  }
  return f;
}

// Every item fully white: placement can be read off the canvas.
FashionMnist white_source() {
  FashionMnist f = synthetic_source(20);
  for (std::int64_t i = 0; i < f.images.numel(); ++i) f.images[i] = 255;
  return f;
}

std::vector<std::int64_t> iota(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), std::int64_t{0});
  return v;
}

template <class T>
bool same_bytes(const nddr::Tensor<T>& a, const nddr::Tensor<T>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

void gzip_bytes(const std::string& path, const std::vector<unsigned char>& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
  gzclose(f);
}

std::vector<unsigned char> idx_header(unsigned char rank, std::vector<std::uint32_t> dims) {
  std::vector<unsigned char> b = {0, 0, 8, rank};
  for (std::uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(d >> s));
  return b;
}

}  // namespace

TEST_CASE("FashionMnist: the installed package", "[train][data][fashion]") {
  if (!FashionMnist::available()) {
    WARN("SKIPPED: " << nddr::data::kFashionMnistDir
                     << " is absent (install Debian's dataset-fashion-mnist)");
    return;
  }
  const FashionMnist train = FashionMnist::load();
  CHECK(train.size() == 60000);
  CHECK(train.images.shape() == nddr::Shape{60000, 28, 28});
  const FashionMnist test =
      FashionMnist::load(nddr::data::kFashionMnistDir, nddr::data::Split::kTest);
  CHECK(test.size() == 10000);
  std::vector<int> counts(10, 0);
  for (std::int64_t i = 0; i < test.size(); ++i) {
    REQUIRE(test.label(i) >= 0);
    REQUIRE(test.label(i) < 10);
    ++counts[static_cast<std::size_t>(test.label(i))];
  }
  for (int c : counts) CHECK(c == 1000);
  CHECK(std::string(FashionMnist::class_name(train.label(0))) == "Ankle boot");
  // Mean pixel intensity of the training split: the well-known 0.2860.
  double sum = 0;
  for (std::int64_t i = 0; i < train.images.numel(); ++i) sum += train.images[i];
  CHECK(sum / 255.0 / static_cast<double>(train.images.numel()) == Approx(0.2860).margin(1e-4));
}

TEST_CASE("FashionMnist: missing or inconsistent files", "[train][data][fashion]") {
  using Catch::Contains;
  const fs::path dir = fs::temp_directory_path() / ("nddr_fashion_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  CHECK_FALSE(FashionMnist::available(dir.string()));
  CHECK_THROWS_AS(FashionMnist::load(dir.string()), nddr::IoError);
  CHECK_THROWS_WITH(
      FashionMnist::load(dir.string()),
      Contains("train-images-idx3-ubyte.gz") && Contains("install Debian's dataset-fashion-mnist"));

  auto images = idx_header(3, {2, 28, 28});
  images.resize(images.size() + 2 * 28 * 28, 7);
  gzip_bytes((dir / "t10k-images-idx3-ubyte.gz").string(), images);
  auto labels = idx_header(1, {3});
  labels.insert(labels.end(), {1, 2, 3});
  gzip_bytes((dir / "t10k-labels-idx1-ubyte.gz").string(), labels);
  CHECK_THROWS_WITH(FashionMnist::load(dir.string(), nddr::data::Split::kTest),
                    Contains("t10k-labels-idx1-ubyte.gz") && Contains("label count 3") &&
                        Contains("dims mismatch"));

  labels = idx_header(1, {2});
  labels.insert(labels.end(), {1, 12});
  gzip_bytes((dir / "t10k-labels-idx1-ubyte.gz").string(), labels);
  CHECK_THROWS_WITH(FashionMnist::load(dir.string(), nddr::data::Split::kTest),
                    Contains("label 12 of item 1"));

  labels[labels.size() - 1] = 9;
  gzip_bytes((dir / "t10k-labels-idx1-ubyte.gz").string(), labels);
  const FashionMnist ok = FashionMnist::load(dir.string(), nddr::data::Split::kTest);
  CHECK(ok.size() == 2);
  CHECK(ok.label(1) == 9);
  CHECK(ok.image(1)[5] == 7);

  auto wide = idx_header(3, {2, 28, 27});
  wide.resize(wide.size() + 2 * 28 * 27);
  gzip_bytes((dir / "t10k-images-idx3-ubyte.gz").string(), wide);
  CHECK_THROWS_WITH(FashionMnist::load(dir.string(), nddr::data::Split::kTest),
                    Contains("t10k-images-idx3-ubyte.gz") && Contains("expected (N, 28, 28)"));
  fs::remove_all(dir);
  CHECK_THROWS_WITH(FashionMnist::class_name(10), Contains("label 10"));
}

TEST_CASE("MultiFashion: deterministic, two different classes, labels and shapes",
          "[train][data][fashion]") {
  const FashionMnist src = synthetic_source(50);
  const MultiFashion a = nddr::data::make_multi_fashion(src, 300, 7);
  const MultiFashion b = nddr::data::make_multi_fashion(src, 300, 7);
  const MultiFashion c = nddr::data::make_multi_fashion(src, 300, 8);
  CHECK(a.images.shape() == nddr::Shape{300, 36, 36});
  CHECK(same_bytes(a.images, b.images));
  CHECK(same_bytes(a.left, b.left));
  CHECK(same_bytes(a.right, b.right));
  CHECK_FALSE(same_bytes(a.images, c.images));
  CHECK_FALSE(same_bytes(a.right, c.right));
  // Sample i does not depend on the count.
  const MultiFashion shorter = nddr::data::make_multi_fashion(src, 120, 7);
  CHECK(std::memcmp(shorter.images.data(), a.images.data(), shorter.images.bytes()) == 0);

  std::vector<int> right_counts(10, 0);
  for (std::int64_t i = 0; i < a.size(); ++i) {
    CHECK(a.left[i] == src.label(i % src.size()));
    REQUIRE(a.right[i] >= 0);
    REQUIRE(a.right[i] < 10);
    REQUIRE(a.left[i] != a.right[i]);
    ++right_counts[static_cast<std::size_t>(a.right[i])];
  }
  for (int n : right_counts) CHECK(n > 10);  // every class appears on the right

  const std::vector<std::int64_t> idx = {5, 0, 299};
  const auto batch = a.batch<float>(idx);
  CHECK(batch.image.shape() == nddr::Shape{3, 1, 36, 36});
  CHECK(batch.left.shape() == nddr::Shape{3});
  CHECK(batch.right[2] == a.right[299]);
  CHECK(batch.left[0] == a.left[5]);
  const double expected =
      (a.images[5 * 1296 + 17 * 36 + 17] / 255.0 - MultiFashion::kMean) / MultiFashion::kStd;
  CHECK(batch.image(0, 0, 17, 17) == Approx(expected).epsilon(1e-6));
  const auto dbatch = a.batch<double>(idx);
  CHECK(dbatch.image(2, 0, 3, 30) ==
        Approx((a.images[299 * 1296 + 3 * 36 + 30] / 255.0 - a.mean) / a.std).epsilon(1e-12));

  using Catch::Contains;
  const std::vector<std::int64_t> bad = {0, 300};
  CHECK_THROWS_AS(a.batch<float>(bad), nddr::ValueError);
  CHECK_THROWS_WITH(a.batch<float>(bad), Contains("sample index 300 outside [0, 300)"));
  CHECK_THROWS_AS(nddr::data::make_multi_fashion(src, -1, 0), nddr::OptionError);
  FashionMnist one_class = synthetic_source(10);
  for (std::int64_t i = 0; i < 10; ++i) one_class.labels[i] = 3;
  CHECK_THROWS_WITH(nddr::data::make_multi_fashion(one_class, 1, 0),
                    Contains("no class other than 3"));
}

TEST_CASE("MultiFashion: placement shifts of up to 4 pixels", "[train][data][fashion]") {
  const MultiFashion set = nddr::data::make_multi_fashion(white_source(), 3000, 11);
  int top_left_corner = 0, bottom_right_corner = 0;
  std::vector<int> first_row_seen(36, 0), last_row_seen(36, 0);
  for (std::int64_t i = 0; i < set.size(); ++i) {
    const std::uint8_t* p = set.images.data() + i * 36 * 36;
    // Rows/cols 12..23 are covered by both items whatever the shifts; rows 0..3 only by the
    // left item shifted up, and the first row/col is never beyond reach of a shift of 4.
    for (int r = 12; r < 24; ++r)
      for (int c = 12; c < 24; ++c) REQUIRE(p[r * 36 + c] == 255);
    int min_row = 36, max_row = -1;
    for (int r = 0; r < 36; ++r)
      for (int c = 0; c < 36; ++c)
        if (p[r * 36 + c] != 0) {
          min_row = std::min(min_row, r);
          max_row = std::max(max_row, r);
        }
    ++first_row_seen[static_cast<std::size_t>(min_row)];
    ++last_row_seen[static_cast<std::size_t>(max_row)];
    top_left_corner += p[0] != 0;
    bottom_right_corner += p[36 * 36 - 1] != 0;
  }
  // The first lit row is max(dy, 0) and the last min(8 + dy' + 27, 35), dy, dy' in [-4, 4].
  for (int r = 0; r < 36; ++r) {
    CAPTURE(r);
    CHECK((first_row_seen[static_cast<std::size_t>(r)] > 0) == (r <= 4));
    CHECK((last_row_seen[static_cast<std::size_t>(r)] > 0) == (r >= 31));
  }
  CHECK(first_row_seen[0] / 3000.0 == Approx(5.0 / 9.0).margin(0.04));
  // (0, 0) is covered when both shifts of the left item are <= 0: probability (5/9)^2.
  CHECK(top_left_corner / 3000.0 == Approx(25.0 / 81.0).margin(0.04));
  CHECK(bottom_right_corner / 3000.0 == Approx(25.0 / 81.0).margin(0.04));
}

TEST_CASE("MultiFashion: from the installed package", "[train][data][fashion]") {
  if (!FashionMnist::available()) {
    WARN("SKIPPED: " << nddr::data::kFashionMnistDir << " is absent");
    return;
  }
  const FashionMnist test =
      FashionMnist::load(nddr::data::kFashionMnistDir, nddr::data::Split::kTest);
  const MultiFashion set = nddr::data::make_multi_fashion(test, 20000, 1);
  CHECK(set.size() == 20000);
  std::vector<int> counts(10, 0);
  double sum = 0;
  for (std::int64_t i = 0; i < set.size(); ++i) {
    REQUIRE(set.left[i] != set.right[i]);
    ++counts[static_cast<std::size_t>(set.right[i])];
  }
  for (std::int64_t i = 0; i < set.images.numel(); ++i) sum += set.images[i];
  for (int n : counts) CHECK(n == Approx(2000).margin(250));
  // The test split's statistics are close to the fixed (training) normalisation constants.
  CHECK(sum / 255.0 / static_cast<double>(set.images.numel()) ==
        Approx(MultiFashion::kMean).margin(0.01));
}

TEST_CASE("height_field_normals: flat, ramp and unit length", "[train][data][fashion]") {
  constexpr int h = 20, w = 24;
  std::vector<double> n(3 * h * w);
  for (const std::uint8_t value : {std::uint8_t{0}, std::uint8_t{200}}) {
    const std::vector<std::uint8_t> flat(h * w, value);
    nddr::data::height_field_normals(flat.data(), h, w, 1.5, 4.0, n.data());
    for (int p = 0; p < h * w; ++p) {
      REQUIRE(n[static_cast<std::size_t>(p)] == 0.0);
      REQUIRE(n[static_cast<std::size_t>(h * w + p)] == 0.0);
      REQUIRE(n[static_cast<std::size_t>(2 * h * w + p)] == 1.0);
    }
  }
  // Intensity 10 * col: away from the border the blur keeps the ramp, so dh/dx = 4 * 10 / 255.
  std::vector<std::uint8_t> ramp(h * w);
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c)
      ramp[static_cast<std::size_t>(r * w + c)] = static_cast<std::uint8_t>(10 * c);
  nddr::data::height_field_normals(ramp.data(), h, w, 1.5, 4.0, n.data());
  const double g = 40.0 / 255.0;
  const int p = 10 * w + 12;
  CHECK(n[static_cast<std::size_t>(p)] == Approx(-g / std::sqrt(1 + g * g)).epsilon(1e-9));
  CHECK(n[static_cast<std::size_t>(h * w + p)] == Approx(0).margin(1e-12));
  CHECK(n[static_cast<std::size_t>(2 * h * w + p)] ==
        Approx(1 / std::sqrt(1 + g * g)).epsilon(1e-9));
  // A bright square seen from its left edge leans left (-x), from its top edge up (-y).
  std::vector<std::uint8_t> square(h * w, 0);
  for (int r = 6; r < 14; ++r)
    for (int c = 8; c < 16; ++c) square[static_cast<std::size_t>(r * w + c)] = 255;
  nddr::data::height_field_normals(square.data(), h, w, 1.5, 4.0, n.data());
  CHECK(n[static_cast<std::size_t>(10 * w + 7)] < -0.3);
  CHECK(n[static_cast<std::size_t>(10 * w + 16)] > 0.3);
  CHECK(n[static_cast<std::size_t>(h * w + 5 * w + 12)] < -0.3);
  for (int q = 0; q < h * w; ++q) {
    const double x = n[static_cast<std::size_t>(q)], y = n[static_cast<std::size_t>(h * w + q)],
                 z = n[static_cast<std::size_t>(2 * h * w + q)];
    REQUIRE(x * x + y * y + z * z == Approx(1).epsilon(1e-12));
    REQUIRE(z > 0);
  }
  CHECK_THROWS_AS(nddr::data::height_field_normals(square.data(), h, w, 0.0, 4.0, n.data()),
                  nddr::OptionError);
}

TEST_CASE("DenseFashion: deterministic, labels, invariant, normals, shapes",
          "[train][data][fashion]") {
  const FashionMnist src = synthetic_source(60);
  const auto opt = DenseFashionOptions{}.size(40).items(2, 3).threshold(32).seed(3);
  const DenseFashion a = nddr::data::make_dense_fashion(src, 50, opt);
  const DenseFashion b = nddr::data::make_dense_fashion(src, 50, opt);
  const DenseFashion c = nddr::data::make_dense_fashion(src, 50, DenseFashionOptions{opt}.seed(4));
  CHECK(a.size() == 50);
  CHECK(a.images.shape() == nddr::Shape{50, 40, 40});
  CHECK(same_bytes(a.images, b.images));
  CHECK(same_bytes(a.labels, b.labels));
  CHECK_FALSE(same_bytes(a.images, c.images));
  const DenseFashion shorter = nddr::data::make_dense_fashion(src, 20, opt);
  CHECK(std::memcmp(shorter.labels.data(), a.labels.data(), shorter.labels.bytes()) == 0);

  std::int64_t background = 0;
  for (std::int64_t i = 0; i < a.labels.numel(); ++i) {
    const int l = a.labels[i];
    REQUIRE(l >= 0);
    REQUIRE(l <= 10);
    // An item class exactly where the intensity exceeds the threshold.
    REQUIRE((l != DenseFashion::kBackground) == (a.images[i] > 32));
    background += l == DenseFashion::kBackground;
  }
  const double bg = static_cast<double>(background) / static_cast<double>(a.labels.numel());
  CHECK(bg > 0.2);
  CHECK(bg < 0.9);

  const auto idx = iota(a.size());
  const auto batch = a.batch<double>(idx);
  CHECK(batch.image.shape() == nddr::Shape{50, 1, 40, 40});
  CHECK(batch.seg.shape() == nddr::Shape{50, 40, 40});
  CHECK(batch.normal.shape() == nddr::Shape{50, 3, 40, 40});
  const auto again = b.batch<double>(idx);
  CHECK(same_bytes(batch.normal, again.normal));
  CHECK(same_bytes(batch.seg, again.seg));
  std::int64_t flat_checked = 0, tilted = 0;
  for (std::int64_t k = 0; k < 50; ++k)
    for (int r = 0; r < 40; ++r)
      for (int col = 0; col < 40; ++col) {
        const double x = batch.normal(k, 0, r, col), y = batch.normal(k, 1, r, col),
                     z = batch.normal(k, 2, r, col);
        REQUIRE(x * x + y * y + z * z == Approx(1).epsilon(1e-12));
        tilted += z < 0.95;
        REQUIRE(batch.seg[(k * 40 + r) * 40 + col] == a.labels[(k * 40 + r) * 40 + col]);
        REQUIRE(batch.image(k, 0, r, col) ==
                Approx((a.images[(k * 40 + r) * 40 + col] / 255.0 - DenseFashion::kMean) /
                       DenseFashion::kStd));
        // Constant image within the blur radius (5) plus one: the normal is exactly (0, 0, 1).
        bool constant = true;
        const std::uint8_t v0 = a.images[(k * 40 + r) * 40 + col];
        for (int dr = -6; dr <= 6 && constant; ++dr)
          for (int dc = -6; dc <= 6 && constant; ++dc) {
            const int rr = std::clamp(r + dr, 0, 39), cc = std::clamp(col + dc, 0, 39);
            constant = a.images[(k * 40 + rr) * 40 + cc] == v0;
          }
        if (constant) {
          ++flat_checked;
          REQUIRE(x == 0.0);
          REQUIRE(y == 0.0);
          REQUIRE(z == 1.0);
        }
      }
  CHECK(flat_checked > 100);
  CHECK(tilted > 1000);
  const auto fbatch = a.batch<float>(std::vector<std::int64_t>{3});
  CHECK(fbatch.normal(0, 1, 20, 20) == Approx(batch.normal(3, 1, 20, 20)).epsilon(1e-6));

  using Catch::Contains;
  CHECK_THROWS_WITH(a.batch<float>(std::vector<std::int64_t>{-1}), Contains("sample index -1"));
  CHECK_THROWS_WITH(nddr::data::make_dense_fashion(src, 1, DenseFashionOptions{}.size(20)),
                    Contains("option size is 20"));
  CHECK_THROWS_WITH(nddr::data::make_dense_fashion(src, 1, DenseFashionOptions{}.items(3, 2)),
                    Contains("option items is [3, 2]"));
  CHECK_THROWS_WITH(nddr::data::make_dense_fashion(src, 1, DenseFashionOptions{}.threshold(255)),
                    Contains("option threshold is 255"));
  CHECK_THROWS_AS(nddr::data::make_dense_fashion(src, 1, DenseFashionOptions{}.sigma(0)),
                  nddr::OptionError);
  CHECK_THROWS_AS(nddr::data::make_dense_fashion(src, 1, DenseFashionOptions{}.height(-1)),
                  nddr::OptionError);
}

TEST_CASE("DenseFashion: from the installed package", "[train][data][fashion]") {
  if (!FashionMnist::available()) {
    WARN("SKIPPED: " << nddr::data::kFashionMnistDir << " is absent");
    return;
  }
  const FashionMnist test =
      FashionMnist::load(nddr::data::kFashionMnistDir, nddr::data::Split::kTest);
  const DenseFashion set =
      nddr::data::make_dense_fashion(test, 2000, DenseFashionOptions{}.seed(1));
  CHECK(set.images.shape() == nddr::Shape{2000, 48, 48});
  std::vector<std::int64_t> counts(11, 0);
  double sum = 0;
  for (std::int64_t i = 0; i < set.labels.numel(); ++i) {
    ++counts[set.labels[i]];
    sum += set.images[i];
  }
  const double total = static_cast<double>(set.labels.numel());
  CHECK(counts[10] / total == Approx(0.65).margin(0.05));
  for (int cls = 0; cls < 10; ++cls) CHECK(counts[static_cast<std::size_t>(cls)] / total > 0.005);
  CHECK(sum / 255.0 / total == Approx(DenseFashion::kMean).margin(0.01));
}
