// IDX and PNG readers/writers: real Fashion-MNIST files when installed, crafted good and bad
// files, PNG round trips, expansions (palette, 16-bit, low bit depth) and atomic writes.

#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "nddr/io/idx.hpp"
#include "nddr/io/png.hpp"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<unsigned char>;

const char* const kFashionDir = "/usr/share/datasets/fashion-mnist";

// A fresh directory per test case, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("nddr_png_idx_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void gzip_bytes(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
  gzclose(f);
}

Bytes idx_bytes(unsigned char type, const std::vector<std::uint32_t>& dims, std::size_t data_len) {
  Bytes b = {0, 0, type, static_cast<unsigned char>(dims.size())};
  for (std::uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(d >> s));
  for (std::size_t i = 0; i < data_len; ++i) b.push_back(static_cast<unsigned char>(i * 7));
  return b;
}

// ---- a hand-made PNG encoder (zlib + CRC), independent of libpng ----
void put_u32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
}

void put_chunk(Bytes& b, const char* type, const Bytes& data) {
  put_u32(b, static_cast<std::uint32_t>(data.size()));
  Bytes typed(type, type + 4);
  typed.insert(typed.end(), data.begin(), data.end());
  b.insert(b.end(), typed.begin(), typed.end());
  put_u32(b, static_cast<std::uint32_t>(crc32(0, typed.data(), static_cast<uInt>(typed.size()))));
}

// `rows`: packed sample bytes of each row (filter byte 0 is prepended here).
Bytes hand_png(std::uint32_t width, std::uint32_t height, int depth, int color_type,
               const std::vector<Bytes>& rows, const Bytes& plte = {}, const Bytes& trns = {}) {
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  Bytes ihdr;
  put_u32(ihdr, width);
  put_u32(ihdr, height);
  ihdr.insert(ihdr.end(),
              {static_cast<unsigned char>(depth), static_cast<unsigned char>(color_type), 0, 0, 0});
  put_chunk(out, "IHDR", ihdr);
  if (!plte.empty()) put_chunk(out, "PLTE", plte);
  if (!trns.empty()) put_chunk(out, "tRNS", trns);
  Bytes raw;
  for (const Bytes& r : rows) {
    raw.push_back(0);
    raw.insert(raw.end(), r.begin(), r.end());
  }
  uLongf len = compressBound(static_cast<uLong>(raw.size()));
  Bytes z(len);
  REQUIRE(compress(z.data(), &len, raw.data(), static_cast<uLong>(raw.size())) == Z_OK);
  z.resize(len);
  put_chunk(out, "IDAT", z);
  put_chunk(out, "IEND", {});
  return out;
}

nddr::io::Image8 pattern_image(int h, int w, int c) {
  nddr::io::Image8 img{h, w, c, {}};
  img.pixels.resize(static_cast<std::size_t>(h * w * c));
  for (std::size_t i = 0; i < img.pixels.size(); ++i)
    img.pixels[i] = static_cast<std::uint8_t>((i * 37 + i / 5) & 255);
  return img;
}

std::size_t count_files(const fs::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

}  // namespace

TEST_CASE("IDX: the installed Fashion-MNIST files", "[train][data][idx]") {
  if (!fs::exists(fs::path(kFashionDir) / "train-images-idx3-ubyte.gz")) {
    WARN("SKIPPED: " << kFashionDir << " is absent (install Debian's dataset-fashion-mnist)");
    return;
  }
  const std::string dir = kFashionDir;
  const auto images = nddr::io::read_idx(dir + "/train-images-idx3-ubyte.gz");
  CHECK(images.dims == std::vector<std::int64_t>{60000, 28, 28});
  CHECK(images.data.size() == 60000u * 28 * 28);
  const auto labels = nddr::io::read_idx(dir + "/train-labels-idx1-ubyte.gz");
  REQUIRE(labels.dims == std::vector<std::int64_t>{60000});
  std::vector<int> counts(10, 0);
  for (std::uint8_t l : labels.data) {
    REQUIRE(l < 10);
    ++counts[l];
  }
  for (int c : counts) CHECK(c == 6000);  // Fashion-MNIST is balanced
  const auto test_labels = nddr::io::read_idx(dir + "/t10k-labels-idx1-ubyte.gz");
  CHECK(test_labels.dims == std::vector<std::int64_t>{10000});
  // The first training item is an ankle boot (class 9), per the dataset's documentation.
  CHECK(labels.data[0] == 9);
}

TEST_CASE("IDX: crafted files, plain and gzipped", "[train][data][idx]") {
  TempDir tmp;
  const Bytes good = idx_bytes(0x08, {2, 3, 4}, 24);
  write_bytes(tmp.file("plain.idx"), good);
  gzip_bytes(tmp.file("zipped.idx.gz"), good);
  for (const char* name : {"plain.idx", "zipped.idx.gz"}) {
    const auto a = nddr::io::read_idx(tmp.file(name));
    CHECK(a.dims == std::vector<std::int64_t>{2, 3, 4});
    CHECK(a.numel() == 24);
    REQUIRE(a.data.size() == 24);
    CHECK(a.data[5] == 35);
  }
  using Catch::Contains;
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.file("missing.idx")),
                    Contains("missing.idx") && Contains("cannot open"));

  Bytes bad_magic = good;
  bad_magic[0] = 0x1F;
  write_bytes(tmp.file("magic.idx"), bad_magic);
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.file("magic.idx")),
                    Contains("magic.idx") && Contains("bad magic") && Contains("0x1F"));

  write_bytes(tmp.file("float.idx"), idx_bytes(0x0D, {2}, 8));
  CHECK_THROWS_WITH(
      nddr::io::read_idx(tmp.file("float.idx")),
      Contains("float.idx") && Contains("unsupported element type 0x0D") && Contains("float32"));

  write_bytes(tmp.file("rank.idx"), idx_bytes(0x08, {}, 0));
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.file("rank.idx")), Contains("bad rank 0"));

  Bytes short_dims = idx_bytes(0x08, {2, 3}, 0);
  short_dims.resize(10);
  write_bytes(tmp.file("dims.idx"), short_dims);
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.file("dims.idx")),
                    Contains("dims.idx") && Contains("extent 1 of 2 is missing"));

  gzip_bytes(tmp.file("trunc.idx.gz"), idx_bytes(0x08, {2, 3, 4}, 23));
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.file("trunc.idx.gz")),
                    Contains("trunc.idx.gz") && Contains("truncated data: 23 of 24"));

  write_bytes(tmp.file("long.idx"), idx_bytes(0x08, {2, 3, 4}, 25));
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.file("long.idx")),
                    Contains("long.idx") && Contains("dims mismatch"));

  write_bytes(tmp.file("empty.idx"), {});
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.file("empty.idx")),
                    Contains("empty.idx") && Contains("truncated header"));

  // A gzip file cut in the middle of its deflate stream.
  gzip_bytes(tmp.file("cut.idx.gz"), idx_bytes(0x08, {100, 100}, 10000));
  Bytes cut = read_bytes(tmp.file("cut.idx.gz"));
  cut.resize(cut.size() / 2);
  write_bytes(tmp.file("cut.idx.gz"), cut);
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.file("cut.idx.gz")), Contains("cut.idx.gz"));
}

TEST_CASE("IDX: gzip streams are checked to their end, sizes before allocating",
          "[train][data][idx]") {
  TempDir tmp;
  using Catch::Contains;
  const Bytes good = idx_bytes(0x08, {10, 10}, 100);
  gzip_bytes(tmp.file("good.idx.gz"), good);
  const Bytes z = read_bytes(tmp.file("good.idx.gz"));
  auto refused = [&](const std::string& name, const Bytes& bytes) {
    write_bytes(tmp.file(name), bytes);
    try {
      nddr::io::read_idx(tmp.file(name));
    } catch (const nddr::IoError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  // zlib's gzread returned these without complaint: the trailer is what proves the data.
  CHECK_THAT(refused("notrailer.gz", Bytes(z.begin(), z.end() - 8)),
             Contains("notrailer.gz") && Contains("truncated gzip stream"));
  Bytes crc = z;
  crc[crc.size() - 8] ^= 0x01;
  CHECK_THAT(refused("crc.gz", crc), Contains("crc.gz") && Contains("incorrect data check"));
  Bytes junk = z;
  junk.insert(junk.end(), {'j', 'u', 'n', 'k'});
  CHECK_THAT(refused("junk.gz", junk), Contains("4 bytes of trailing data"));
  // Two gzip members (as `cat a.gz b.gz` makes) are one stream.
  gzip_bytes(tmp.file("a.gz"), Bytes(good.begin(), good.begin() + 30));
  gzip_bytes(tmp.file("b.gz"), Bytes(good.begin() + 30, good.end()));
  Bytes two = read_bytes(tmp.file("a.gz"));
  const Bytes second = read_bytes(tmp.file("b.gz"));
  two.insert(two.end(), second.begin(), second.end());
  write_bytes(tmp.file("two.idx.gz"), two);
  CHECK(nddr::io::read_idx(tmp.file("two.idx.gz")).data ==
        nddr::io::read_idx(tmp.file("good.idx.gz")).data);
  // Headers that overflow or lie about the size are refused before any allocation.
  CHECK_THAT(refused("wrap.idx", idx_bytes(0x08, {1u << 17, 1u << 17, 1u << 30}, 8)),
             Contains("wrap.idx") && Contains("exceed 17179869184 elements (2^34) at extent 2"));
  CHECK_THAT(refused("lie.idx", idx_bytes(0x08, {65536, 65536}, 24)),
             Contains("lie.idx") && Contains("truncated data: 24 of 4294967296"));
  gzip_bytes(tmp.file("lie.idx.gz"), idx_bytes(0x08, {65536, 65536}, 0));
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.file("lie.idx.gz")),
                    Contains("cannot hold more than 1032 times its size"));
  CHECK_THROWS_WITH(nddr::io::read_idx(tmp.path.string()), Contains("is a directory"));
}

TEST_CASE("PNG: a header declaring more pixels than the file holds is refused",
          "[train][data][png]") {
  TempDir tmp;
  using Catch::Contains;
  // 30000 x 30000 RGB (2.7 GB decoded) from a few dozen bytes: refused before allocating.
  write_bytes(tmp.file("huge.png"), hand_png(30000, 30000, 8, 2, {Bytes(30)}));
  CHECK_THROWS_WITH(nddr::io::read_png(tmp.file("huge.png")),
                    Contains("huge.png") && Contains("30000x30000 pixels") &&
                        Contains("more than a file of"));
  write_bytes(tmp.file("wide.png"), hand_png(40000, 1, 8, 0, {Bytes(40000)}));
  CHECK_THROWS_WITH(nddr::io::read_png(tmp.file("wide.png")),
                    Contains("wide.png") && Contains("exceeds user limit"));
  CHECK_THROWS_WITH(nddr::io::read_png(tmp.path.string()), Contains("is a directory"));
}

TEST_CASE("PNG: round trips of gray, gray+alpha, RGB and RGBA", "[train][data][png]") {
  TempDir tmp;
  for (int c = 1; c <= 4; ++c) {
    const nddr::io::Image8 img = pattern_image(7, 13, c);
    const std::string path = tmp.file("img" + std::to_string(c) + ".png");
    nddr::io::write_png(path, img);
    const nddr::io::Image8 back = nddr::io::read_png(path);
    CHECK(back.height == 7);
    CHECK(back.width == 13);
    CHECK(back.channels == c);
    CHECK(back.pixels == img.pixels);
  }
  // Only the four PNGs remain: no temporary file is left behind.
  CHECK(count_files(tmp.path) == 4);
  // Overwriting replaces the file.
  nddr::io::write_png(tmp.file("img1.png"), pattern_image(2, 3, 1));
  CHECK(nddr::io::read_png(tmp.file("img1.png")).width == 3);
  CHECK(count_files(tmp.path) == 4);
}

TEST_CASE("PNG: palette, tRNS, 16-bit and 2-bit files are expanded to 8 bits",
          "[train][data][png]") {
  TempDir tmp;
  const Bytes plte = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
  // 4 x 2 palette image, 8-bit indices.
  write_bytes(tmp.file("pal.png"), hand_png(4, 2, 8, 3, {{0, 1, 2, 3}, {3, 2, 1, 0}}, plte));
  const auto pal = nddr::io::read_png(tmp.file("pal.png"));
  REQUIRE(pal.channels == 3);
  REQUIRE(pal.width == 4);
  REQUIRE(pal.height == 2);
  CHECK(pal.at(0, 0, 0) == 255);
  CHECK(pal.at(0, 1, 1) == 255);
  CHECK(pal.at(0, 2, 2) == 255);
  CHECK(pal.at(0, 3, 0) == 10);
  CHECK(pal.at(0, 3, 2) == 30);
  CHECK(pal.at(1, 0, 1) == 20);

  // The same with 2-bit indices and a transparency table: RGBA.
  write_bytes(tmp.file("pal_t.png"), hand_png(4, 1, 2, 3, {{0b00011011}}, plte, Bytes{0, 128}));
  const auto pt = nddr::io::read_png(tmp.file("pal_t.png"));
  REQUIRE(pt.channels == 4);
  CHECK(pt.at(0, 0, 3) == 0);
  CHECK(pt.at(0, 1, 3) == 128);
  CHECK(pt.at(0, 2, 3) == 255);
  CHECK(pt.at(0, 3, 0) == 10);

  // 16-bit gray: scaled to 8 bits with rounding (0xFFFF -> 255, 0x8080 -> 128, 0x0100 -> 1).
  write_bytes(tmp.file("g16.png"), hand_png(3, 1, 16, 0, {{0xFF, 0xFF, 0x80, 0x80, 0x01, 0x00}}));
  const auto g16 = nddr::io::read_png(tmp.file("g16.png"));
  REQUIRE(g16.channels == 1);
  CHECK(g16.pixels == std::vector<std::uint8_t>{255, 128, 1});

  // 16-bit RGB.
  write_bytes(tmp.file("rgb16.png"), hand_png(1, 1, 16, 2, {{0, 0, 0xFF, 0xFF, 0x7F, 0x00}}));
  CHECK(nddr::io::read_png(tmp.file("rgb16.png")).pixels == std::vector<std::uint8_t>{0, 255, 127});

  // 2-bit gray: 0..3 -> 0, 85, 170, 255.
  write_bytes(tmp.file("g2.png"), hand_png(4, 1, 2, 0, {{0b00011011}}));
  CHECK(nddr::io::read_png(tmp.file("g2.png")).pixels ==
        std::vector<std::uint8_t>{0, 85, 170, 255});
}

TEST_CASE("PNG: errors name the file", "[train][data][png]") {
  TempDir tmp;
  using Catch::Contains;
  CHECK_THROWS_AS(nddr::io::read_png(tmp.file("none.png")), nddr::IoError);
  CHECK_THROWS_WITH(nddr::io::read_png(tmp.file("none.png")),
                    Contains("none.png") && Contains("cannot open"));

  write_bytes(tmp.file("text.png"), Bytes{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'});
  CHECK_THROWS_WITH(nddr::io::read_png(tmp.file("text.png")),
                    Contains("text.png") && Contains("not a PNG"));
  write_bytes(tmp.file("tiny.png"), Bytes{0x89, 'P'});
  CHECK_THROWS_WITH(nddr::io::read_png(tmp.file("tiny.png")),
                    Contains("tiny.png") && Contains("not a PNG"));

  nddr::io::write_png(tmp.file("full.png"), pattern_image(40, 40, 3));
  const Bytes full = read_bytes(tmp.file("full.png"));
  for (const std::size_t keep : {full.size() - 12, full.size() / 2, std::size_t{20}}) {
    write_bytes(tmp.file("cut.png"), Bytes(full.begin(), full.begin() + static_cast<long>(keep)));
    CHECK_THROWS_WITH(nddr::io::read_png(tmp.file("cut.png")),
                      Contains("cut.png") && Contains("truncated"));
  }
  Bytes corrupt = full;
  corrupt[40] ^= 0xFF;  // inside IDAT: the CRC no longer matches
  write_bytes(tmp.file("crc.png"), corrupt);
  CHECK_THROWS_WITH(nddr::io::read_png(tmp.file("crc.png")),
                    Contains("crc.png") && Contains("corrupt"));
}

TEST_CASE("PNG: a failed write leaves nothing behind", "[train][data][png]") {
  TempDir tmp;
  using Catch::Contains;
  nddr::io::Image8 bad = pattern_image(3, 3, 3);
  bad.pixels.pop_back();
  CHECK_THROWS_AS(nddr::io::write_png(tmp.file("bad.png"), bad), nddr::ValueError);
  CHECK_THROWS_WITH(nddr::io::write_png(tmp.file("bad.png"), bad),
                    Contains("bad.png") && Contains("26 bytes, expected"));
  bad = pattern_image(3, 3, 5);
  CHECK_THROWS_WITH(nddr::io::write_png(tmp.file("bad.png"), bad), Contains("channels is 5"));
  CHECK(count_files(tmp.path) == 0);

  // An existing file survives a failed replacement (the rename target is a directory).
  fs::create_directories(tmp.path / "dir.png");
  CHECK_THROWS_WITH(nddr::io::write_png(tmp.file("dir.png"), pattern_image(2, 2, 1)),
                    Contains("dir.png") && Contains("rename"));
  CHECK(count_files(tmp.path) == 1);
  CHECK_THROWS_WITH(nddr::io::write_png(tmp.file("no/such/dir.png"), pattern_image(2, 2, 1)),
                    Contains("no/such/dir.png") && Contains("temporary"));
}
