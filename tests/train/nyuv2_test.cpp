// NYUv2 (NDDR-CNN format) and IMDB-WIKI datasets, augmentation, label down-sampling, on tiny
// synthetic datasets written to a temporary directory.

#include "nddr/data/nyuv2.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "nddr/core/random.hpp"
#include "nddr/data/augment.hpp"
#include "nddr/data/imdb_wiki.hpp"
#include "nddr/io/png.hpp"

namespace fs = std::filesystem;
using Catch::Contains;
using nddr::data::AugmentOptions;
using nddr::data::NormalEncoding;
using nddr::data::NyuSample;
using nddr::data::NyuV2Dataset;
using nddr::data::NyuV2Options;
using nddr::data::Split;

namespace {

constexpr int kH = 12;
constexpr int kW = 16;

/// A fresh empty directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() /
           ("nddr_" + tag + "_" +
            std::to_string(nddr::random_bits(static_cast<std::uint64_t>(std::time(nullptr)),
                                             reinterpret_cast<std::uintptr_t>(this))));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
};

std::uint8_t red(int s, int y, int x) { return static_cast<std::uint8_t>(10 * s + 3 * y + x); }
std::uint8_t green(int s, int y, int x) { return static_cast<std::uint8_t>(100 + s + y * x % 50); }
std::uint8_t blue(int s, int y, int x) { return static_cast<std::uint8_t>(200 + s + (x + y) % 40); }
std::uint8_t seg_value(int y, int x) { return y == 0 && x == 0 ? 255 : (y + 2 * x) % 40; }

nddr::io::Image8 image8(int h, int w, int c) {
  nddr::io::Image8 img;
  img.height = h;
  img.width = w;
  img.channels = c;
  img.pixels.assign(static_cast<std::size_t>(h * w * c), 0);
  return img;
}

/// Writes sample s (image, seg, normal) under dir/data/ with the given size.
void write_frame(const fs::path& dir, int s, int h = kH, int w = kW) {
  fs::create_directories(dir / "data");
  auto img = image8(h, w, 3), seg = image8(h, w, 1), nrm = image8(h, w, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      img.at(y, x, 0) = red(s, y, x);
      img.at(y, x, 1) = green(s, y, x);
      img.at(y, x, 2) = blue(s, y, x);
      seg.at(y, x) = seg_value(y, x);
      const bool invalid = y == 0 && x == 1;
      nrm.at(y, x, 0) = invalid ? 255 : static_cast<std::uint8_t>(x * 10);
      nrm.at(y, x, 1) = invalid ? 255 : 128;
      nrm.at(y, x, 2) = invalid ? 255 : static_cast<std::uint8_t>(250 - y);
    }
  const std::string n = std::to_string(s);
  nddr::io::write_png((dir / "data" / ("img" + n + ".png")).string(), img);
  nddr::io::write_png((dir / "data" / ("seg" + n + ".png")).string(), seg);
  nddr::io::write_png((dir / "data" / ("nrm" + n + ".png")).string(), nrm);
}

void write_text(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
}

std::string seg_line(int s) {
  return "/data/img" + std::to_string(s) + ".png /data/seg" + std::to_string(s) + ".png\n";
}
std::string normal_line(int s) {
  return "/data/img" + std::to_string(s) + ".png /data/nrm" + std::to_string(s) + ".png\n";
}

/// A 3-frame training split (and a 1-frame test split) in NDDR-CNN format.
void write_dataset(const fs::path& dir) {
  for (int s = 0; s < 3; ++s) write_frame(dir, s);
  write_text(dir / "list" / "training_seg.txt", seg_line(0) + seg_line(1) + seg_line(2));
  write_text(dir / "list" / "training_normal_mask.txt",
             normal_line(0) + normal_line(1) + normal_line(2));
  write_text(dir / "list" / "testing_seg.txt", seg_line(2));
  write_text(dir / "list" / "testing_normal_mask.txt", normal_line(2));
}

}  // namespace

TEST_CASE("NyuV2Dataset: BGR minus mean, seg labels and raw normals", "[train][data]") {
  TempDir tmp("nyu");
  write_dataset(tmp.path);
  const NyuV2Dataset train(tmp.str(), Split::kTrain);
  const NyuV2Dataset test(tmp.str(), Split::kTest);
  REQUIRE(train.size() == 3);
  REQUIRE(test.size() == 1);
  CHECK(train.image_path(1) == tmp.str() + "/data/img1.png");  // plain concatenation

  const NyuSample x = train.load(1);
  REQUIRE(x.image.shape() == nddr::Shape{3, kH, kW});
  REQUIRE(x.seg.shape() == nddr::Shape{kH, kW});
  REQUIRE(x.normal.shape() == nddr::Shape{3, kH, kW});
  for (int y = 0; y < kH; ++y)
    for (int xx = 0; xx < kW; ++xx) {
      const auto at = [&](int c) { return x.image[(c * kH + y) * kW + xx]; };
      REQUIRE(at(0) == Approx(blue(1, y, xx) - 104.00698793).margin(1e-4));
      REQUIRE(at(1) == Approx(green(1, y, xx) - 116.66876762).margin(1e-4));
      REQUIRE(at(2) == Approx(red(1, y, xx) - 122.67891434).margin(1e-4));
      REQUIRE(x.seg[y * kW + xx] == seg_value(y, xx));
    }
  CHECK(x.seg[0] == 255);
  // invalid normal pixel (0, 1) -> zero vector; valid pixels keep the raw triplet
  for (int c = 0; c < 3; ++c) CHECK(x.normal[(c * kH + 0) * kW + 1] == 0.0f);
  CHECK(x.normal[(0 * kH + 3) * kW + 5] == 50.0f);
  CHECK(x.normal[(1 * kH + 3) * kW + 5] == 128.0f);
  CHECK(x.normal[(2 * kH + 3) * kW + 5] == 247.0f);

  const NyuSample t = test.load(0);
  CHECK(t.image[0] == Approx(blue(2, 0, 0) - 104.00698793).margin(1e-4));
}

TEST_CASE("NyuV2Dataset: centred normal decoding", "[train][data]") {
  TempDir tmp("nyu_c");
  write_dataset(tmp.path);
  const NyuV2Dataset d(tmp.str(), Split::kTrain,
                       NyuV2Options{}.encoding(NormalEncoding::kCentered));
  const NyuSample x = d.load(0);
  CHECK(x.normal[(0 * kH + 3) * kW + 5] == Approx((50.0 - 127.5) / 127.5));
  CHECK(x.normal[(1 * kH + 3) * kW + 5] == Approx((128.0 - 127.5) / 127.5));
  CHECK(x.normal[(2 * kH + 3) * kW + 5] == Approx((247.0 - 127.5) / 127.5));
  for (int c = 0; c < 3; ++c) CHECK(x.normal[(c * kH + 0) * kW + 1] == 0.0f);
}

TEST_CASE("NyuV2Dataset: a line without a space names image and label", "[train][data]") {
  auto entries = [](const std::string& text) {
    TempDir tmp("nyu_list");
    write_text(tmp.path / "l.txt", text);
    return nddr::data::read_list_file((tmp.path / "l.txt").string());
  };
  const auto e = entries("/a.png /b.png\r\n/c.png\n\n");
  REQUIRE(e.size() == 2);
  CHECK(e[0].image == "/a.png");
  CHECK(e[0].label == "/b.png");
  CHECK(e[1].image == "/c.png");
  CHECK(e[1].label == "/c.png");
}

TEST_CASE("NyuV2Dataset: errors name files, lines, values and pixels", "[train][data]") {
  TempDir tmp("nyu_err");
  write_dataset(tmp.path);
  const fs::path list = tmp.path / "list";

  SECTION("missing list file") {
    fs::remove(list / "training_normal_mask.txt");
    CHECK_THROWS_AS(NyuV2Dataset(tmp.str(), Split::kTrain), nddr::IoError);
    CHECK_THROWS_WITH(NyuV2Dataset(tmp.str(), Split::kTrain), Contains("training_normal_mask.txt"));
  }
  SECTION("bad list line") {
    write_text(list / "training_seg.txt", seg_line(0) + "/a.png /b.png /c.png\n" + seg_line(2));
    CHECK_THROWS_AS(NyuV2Dataset(tmp.str(), Split::kTrain), nddr::IoError);
    CHECK_THROWS_WITH(NyuV2Dataset(tmp.str(), Split::kTrain), Contains("training_seg.txt' line 2"));
  }
  SECTION("empty list") {
    write_text(list / "testing_seg.txt", "\n");
    CHECK_THROWS_WITH(NyuV2Dataset(tmp.str(), Split::kTest), Contains("has no entries"));
  }
  SECTION("lists disagree") {
    write_text(list / "training_normal_mask.txt", normal_line(0) + normal_line(2) + normal_line(1));
    CHECK_THROWS_AS(NyuV2Dataset(tmp.str(), Split::kTrain), nddr::IoError);
    CHECK_THROWS_WITH(NyuV2Dataset(tmp.str(), Split::kTrain),
                      Contains("entry 2") && Contains("training_seg.txt") &&
                          Contains("training_normal_mask.txt") && Contains("img1.png"));
  }
  SECTION("lists of different length") {
    write_text(list / "training_normal_mask.txt", normal_line(0));
    CHECK_THROWS_WITH(NyuV2Dataset(tmp.str(), Split::kTrain),
                      Contains("training_seg.txt' has 3") && Contains("has 1"));
  }
  SECTION("missing image") {
    fs::remove(tmp.path / "data" / "img1.png");
    const NyuV2Dataset d(tmp.str(), Split::kTrain);
    CHECK_NOTHROW(d.load(0));
    CHECK_THROWS_AS(d.load(1), nddr::IoError);
    CHECK_THROWS_WITH(d.load(1), Contains("img1.png"));
  }
  SECTION("label out of range") {
    auto seg = nddr::io::read_png((tmp.path / "data" / "seg2.png").string());
    seg.at(4, 7) = 40;
    nddr::io::write_png((tmp.path / "data" / "seg2.png").string(), seg);
    const NyuV2Dataset d(tmp.str(), Split::kTrain);
    CHECK_THROWS_AS(d.load(2), nddr::ValueError);
    CHECK_THROWS_WITH(d.load(2),
                      Contains("seg2.png") && Contains("value 40") && Contains("row 4, col 7"));
  }
  SECTION("size mismatch") {
    write_frame(tmp.path / "other", 0, kH, kW + 1);
    fs::copy_file(tmp.path / "other" / "data" / "nrm0.png", tmp.path / "data" / "nrm0.png",
                  fs::copy_options::overwrite_existing);
    const NyuV2Dataset d(tmp.str(), Split::kTrain);
    CHECK_THROWS_AS(d.load(0), nddr::ShapeError);
    CHECK_THROWS_WITH(d.load(0), Contains("nrm0.png") && Contains("img0.png") &&
                                     Contains("12x17") && Contains("12x16"));
  }
  SECTION("corrupt PNG") {
    write_text(tmp.path / "data" / "seg0.png", "not a png at all");
    const NyuV2Dataset d(tmp.str(), Split::kTrain);
    CHECK_THROWS_AS(d.load(0), nddr::IoError);
    CHECK_THROWS_WITH(d.load(0), Contains("seg0.png"));
  }
  SECTION("wrong channel count") {
    nddr::io::write_png((tmp.path / "data" / "seg0.png").string(), image8(kH, kW, 3));
    const NyuV2Dataset d(tmp.str(), Split::kTrain);
    CHECK_THROWS_WITH(d.load(0), Contains("seg0.png") && Contains("3 channels"));
  }
}

namespace {

/// A sample whose image encodes its source column in channel 0 and row in channel 1.
NyuSample coordinate_sample(int h, int w) {
  NyuSample x{nddr::Tensor<float>(nddr::Shape{3, h, w}),
              nddr::Tensor<std::int32_t>(nddr::Shape{h, w}),
              nddr::Tensor<float>(nddr::Shape{3, h, w})};
  for (int y = 0; y < h; ++y)
    for (int c = 0; c < w; ++c) {
      x.image[(0 * h + y) * w + c] = static_cast<float>(c);
      x.image[(1 * h + y) * w + c] = static_cast<float>(y);
      x.image[(2 * h + y) * w + c] = 1.0f;
      x.seg[y * w + c] = c % 40;
      x.normal[(0 * h + y) * w + c] = 0.5f;
      x.normal[(1 * h + y) * w + c] = static_cast<float>(c);
      x.normal[(2 * h + y) * w + c] = 0.25f;
    }
  return x;
}

bool same(const NyuSample& a, const NyuSample& b) {
  auto eq = [](const auto& p, const auto& q) {
    if (!(p.shape() == q.shape())) return false;
    for (std::int64_t i = 0; i < p.numel(); ++i)
      if (p[i] != q[i]) return false;
    return true;
  };
  return eq(a.image, b.image) && eq(a.seg, b.seg) && eq(a.normal, b.normal);
}

}  // namespace

TEST_CASE("augment: deterministic, crop size, padding is ignore/invalid", "[train][data]") {
  const NyuSample in = coordinate_sample(kH, kW);
  const auto opt = AugmentOptions{}.crop(9);
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    nddr::Rng r1(seed), r2(seed);
    const NyuSample a = nddr::data::augment(in, r1, opt);
    const NyuSample b = nddr::data::augment(in, r2, opt);
    REQUIRE(same(a, b));
    REQUIRE(a.image.shape() == nddr::Shape{3, 9, 9});
    REQUIRE(a.seg.shape() == nddr::Shape{9, 9});
    REQUIRE(a.normal.shape() == nddr::Shape{3, 9, 9});
    CHECK(r1.state().counter == 4);  // scale, mirror, crop row, crop column
  }
  // A crop larger than any scaled image: padded bottom/right
  int padded = 0;
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    nddr::Rng rng(seed);
    const NyuSample a = nddr::data::augment(in, rng, AugmentOptions{}.crop(30));
    for (int y = 0; y < 30; ++y)
      for (int x = 0; x < 30; ++x) {
        // channel 2 is ~1 inside the (scaled) image and 0 in the padding
        const bool pad = a.image[(2 * 30 + y) * 30 + x] == 0.0f;
        if (!pad) continue;
        ++padded;
        REQUIRE(a.seg[y * 30 + x] == 255);
        for (int c = 0; c < 3; ++c) REQUIRE(a.normal[(c * 30 + y) * 30 + x] == 0.0f);
      }
    CHECK(a.image[(2 * 30 + 0) * 30 + 0] > 0.99f);  // offset is 0: image at the top-left
    CHECK(a.image[(2 * 30 + 29) * 30 + 29] == 0.0f);
  }
  CHECK(padded > 0);
}

TEST_CASE("augment: scale range and TF-legacy sizes", "[train][data]") {
  const NyuSample in = coordinate_sample(40, 60);
  double lo = 10, hi = 0;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    nddr::Rng rng(seed);
    const auto opt = AugmentOptions{}.mirror(false).crop(200);
    const NyuSample a = nddr::data::augment(in, rng, opt);
    // the scaled width = number of columns whose image channel 2 is 1 in row 0
    int w = 0, h = 0;
    for (int x = 0; x < 200; ++x) w += a.image[(2 * 200 + 0) * 200 + x] > 0.5f;
    for (int y = 0; y < 200; ++y) h += a.image[(2 * 200 + y) * 200 + 0] > 0.5f;
    nddr::Rng replay(seed);
    const auto s = static_cast<float>(0.5 + replay.uniform());
    REQUIRE(h == static_cast<int>(40.0f * s));
    REQUIRE(w == static_cast<int>(60.0f * s));
    lo = std::min(lo, static_cast<double>(w) / 60);
    hi = std::max(hi, static_cast<double>(w) / 60);
  }
  CHECK(lo >= 0.5);
  CHECK(lo < 0.55);
  CHECK(hi < 1.5);
  CHECK(hi > 1.45);
}

TEST_CASE("augment: mirror reverses columns, normals flipped only on request", "[train][data]") {
  const NyuSample in = coordinate_sample(kH, kW);
  const auto opt = AugmentOptions{}.no_scale().crop(kH);  // crop rows fully, columns randomly
  int mirrored = 0, kept = 0;
  for (std::uint64_t seed = 0; seed < 40; ++seed) {
    nddr::Rng rng(seed);
    const NyuSample a = nddr::data::augment(in, rng, opt);
    const bool flip = a.image[1] > a.image[2];  // column coordinate decreasing
    (flip ? mirrored : kept) += 1;
    for (int x = 0; x + 1 < kH; ++x) REQUIRE(a.image[x + 1] - a.image[x] == (flip ? -1.0f : 1.0f));
    REQUIRE(a.seg[0] == static_cast<int>(a.image[0]) % 40);
    REQUIRE(a.normal[0] == 0.5f);  // x-component not negated (paper code)
    REQUIRE(a.normal[kH * kH] == a.image[0]);

    nddr::Rng again(seed);
    const NyuSample c = nddr::data::augment(
        in, again, AugmentOptions{opt}.flip_normals(true, NormalEncoding::kCentered));
    REQUIRE(c.normal[0] == (flip ? -0.5f : 0.5f));
    nddr::Rng raw(seed);
    const NyuSample r = nddr::data::augment(
        in, raw, AugmentOptions{opt}.flip_normals(true, NormalEncoding::kRawPaper));
    REQUIRE(r.normal[0] == (flip ? 254.5f : 0.5f));
  }
  CHECK(mirrored > 5);
  CHECK(kept > 5);
}

TEST_CASE("augment: bad options and shapes", "[train][data]") {
  const NyuSample in = coordinate_sample(4, 5);
  nddr::Rng rng(1);
  CHECK_THROWS_WITH(nddr::data::augment(in, rng, AugmentOptions{}.crop(0)),
                    Contains("crop_size must be >= 1, got 0"));
  CHECK_THROWS_WITH(nddr::data::augment(in, rng, AugmentOptions{}.scale(0.0, 1.0)),
                    Contains("scale_min"));
  NyuSample bad = in;
  bad.seg = nddr::Tensor<std::int32_t>(nddr::Shape{4, 4});
  CHECK_THROWS_AS(nddr::data::augment(bad, rng, AugmentOptions{}), nddr::ShapeError);
}

TEST_CASE("downsample_labels / downsample_normals: TF-legacy nearest", "[train][data]") {
  nddr::Tensor<std::int32_t> seg(nddr::Shape{2, 6, 9});
  for (std::int64_t i = 0; i < seg.numel(); ++i) seg[i] = static_cast<std::int32_t>(i);
  const auto y = nddr::data::downsample_labels(seg.cview(), 4, 4);
  REQUIRE(y.shape() == nddr::Shape{2, 4, 4});
  for (int n = 0; n < 2; ++n)
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) {
        const int sr = r * 6 / 4, sc = static_cast<int>(c * (9.0f / 4.0f));
        REQUIRE(y[(n * 4 + r) * 4 + c] == seg[(n * 6 + sr) * 9 + sc]);
      }
  const auto y2 = nddr::data::downsample_labels(
      seg.cview().batch_slice(0, 1).reshaped(nddr::Shape{6, 9}), 4, 4);
  REQUIRE(y2.shape() == nddr::Shape{4, 4});
  CHECK(y2[5] == y[5]);

  nddr::Tensor<float> nrm(nddr::Shape{3, 6, 9});
  for (std::int64_t i = 0; i < nrm.numel(); ++i) nrm[i] = static_cast<float>(i);
  const auto z = nddr::data::downsample_normals(nrm.cview(), 3, 3);
  REQUIRE(z.shape() == nddr::Shape{3, 3, 3});
  CHECK(z[(2 * 3 + 1) * 3 + 2] == nrm[(2 * 6 + 2) * 9 + 6]);
  CHECK_THROWS_AS(nddr::data::downsample_normals(nrm.cview().reshaped(nddr::Shape{6, 27}), 3, 3),
                  nddr::ShapeError);
}

TEST_CASE("collate stacks NYUv2 samples", "[train][data]") {
  const NyuSample a = coordinate_sample(3, 4), b = coordinate_sample(3, 4);
  const auto batch = nddr::data::collate(std::vector<NyuSample>{a, b});
  CHECK(batch.image.shape() == nddr::Shape::nchw(2, 3, 3, 4));
  CHECK(batch.seg.shape() == nddr::Shape{2, 3, 4});
  CHECK(batch.image[3 * 12 + 3] == a.image[3]);
  CHECK_THROWS_AS(nddr::data::collate(std::vector<NyuSample>{a, coordinate_sample(4, 4)}),
                  nddr::ShapeError);
}

TEST_CASE("ImdbWikiDataset: list parsing, resize, BGR mean", "[train][data]") {
  TempDir tmp("imdb");
  auto img = image8(6, 8, 3);
  for (int y = 0; y < 6; ++y)
    for (int x = 0; x < 8; ++x) {
      img.at(y, x, 0) = 200;
      img.at(y, x, 1) = 100;
      img.at(y, x, 2) = static_cast<std::uint8_t>(10 * x);
    }
  fs::create_directories(tmp.path / "faces");
  nddr::io::write_png((tmp.path / "faces" / "a.png").string(), img);
  write_text(tmp.path / "train.txt", "faces/a.png 34 1\n\nfaces/a.png 0 0\r\n");
  const nddr::data::ImdbWikiDataset d((tmp.path / "train.txt").string(), tmp.str(),
                                      nddr::data::ImdbWikiOptions{}.size(4));
  REQUIRE(d.size() == 2);
  const auto s = d.load(0);
  CHECK(s.age == 34);
  CHECK(s.gender == 1);
  REQUIRE(s.image.shape() == nddr::Shape{3, 4, 4});
  CHECK(s.image[0] == Approx(0 - 104.00698793).margin(1e-4));          // B(0, 0)
  CHECK(s.image[3] == Approx(60 - 104.00698793).margin(1e-4));         // B at src col 6
  CHECK(s.image[16 + 5] == Approx(100 - 116.66876762).margin(1e-4));   // G
  CHECK(s.image[32 + 15] == Approx(200 - 122.67891434).margin(1e-4));  // R
  CHECK(d.load(1).age == 0);
  const auto batch = nddr::data::collate(std::vector<nddr::data::ImdbSample>{d.load(0), d.load(1)});
  CHECK(batch.age[0] == 34);
  CHECK(batch.gender[1] == 0);

  auto bad = [&](const std::string& text) {
    write_text(tmp.path / "bad.txt", text);
    return nddr::data::ImdbWikiDataset((tmp.path / "bad.txt").string(), tmp.str());
  };
  CHECK_THROWS_WITH(bad("a.png 3 1\nb.png 100 0\n"),
                    Contains("bad.txt' line 2") && Contains("age 100"));
  CHECK_THROWS_WITH(bad("a.png 3 2\n"), Contains("line 1") && Contains("gender 2"));
  CHECK_THROWS_WITH(bad("a.png 3\n"), Contains("line 1") && Contains("expected"));
  CHECK_THROWS_WITH(bad("a.png x 1\n"), Contains("line 1"));
  CHECK_THROWS_WITH(bad("a.png 3 1 extra\n"), Contains("line 1"));
  CHECK_THROWS_AS(bad("a.png -1 1\n"), nddr::IoError);
  CHECK_THROWS_WITH(nddr::data::ImdbWikiDataset((tmp.path / "none.txt").string(), tmp.str()),
                    Contains("none.txt"));
  const nddr::data::ImdbWikiDataset missing = bad("nope.png 3 1\n");
  CHECK_THROWS_WITH(missing.load(0), Contains("nope.png"));
}
