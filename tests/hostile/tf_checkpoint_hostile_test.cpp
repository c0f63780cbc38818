// Hostile TensorFlow checkpoints under ASan + UBSan: every byte flip and every truncation of a
// real TensorFlow index and shard, fuzzed entries and blocks behind valid checksums, and sizes
// meant to make the reader allocate terabytes. Each must open and read or throw IoError naming
// a file of the checkpoint, with a short message: no crash, no other exception, no huge
// allocation. (tests/io/tf_checkpoint_test.cpp checks the exact messages.)
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "../support/files.hpp"
#include "../support/temp_dir.hpp"
#include "../support/tf_bundle.hpp"
#include "nddr/io/tf_checkpoint.hpp"

namespace {

using nddr_test::slurp;
using nddr_test::spit;

namespace fs = std::filesystem;
namespace tb = nddr_test::tf;
using nddr::io::TfCheckpoint;

const std::string kTf = NDDR_TEST_DATA_DIR "/tf";

// Opens `prefix` and reads every tensor; returns whether everything succeeded. Only IoError may
// escape the reader, and its message must name the checkpoint's directory and stay short.
bool exercise(const std::string& prefix) {
  try {
    const TfCheckpoint c = TfCheckpoint::open(prefix);
    for (const std::string& name : c.names()) {
      const nddr::io::TfTensorInfo& info = c.info(name);
      if (info.dtype && !info.partitioned) (void)c.values<double>(name);
    }
    return true;
  } catch (const nddr::IoError& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find(fs::path(prefix).parent_path().string()) != std::string::npos);
    CHECK(what.size() < 1000);
    return false;
  }
}

}  // namespace

TEST_CASE("hostile tf_checkpoint: every byte flip and truncation of a TensorFlow index",
          "[hostile][tf_checkpoint]") {
  nddr_test::TempDir dir("nddr_hostile_tf_");
  const std::string prefix = dir.file("ckpt");
  const std::string index = slurp(kTf + "/dtypes/ckpt.index");
  fs::copy_file(kTf + "/dtypes/ckpt.data-00000-of-00001", prefix + ".data-00000-of-00001");
  REQUIRE(index.size() > 100);
  int opened = 0;
  for (std::size_t i = 0; i < index.size(); ++i) {
    for (unsigned char mask : {0x01, 0x80}) {
      std::string bad = index;
      bad[i] = static_cast<char>(static_cast<unsigned char>(bad[i]) ^ mask);
      spit(prefix + ".index", bad);
      opened += exercise(prefix) ? 1 : 0;
    }
  }
  // Only the footer's zero padding is not covered by a checksum or the magic.
  CHECK(opened <= 2 * 40);
  for (std::size_t n = 0; n < index.size(); ++n) {
    spit(prefix + ".index", index.substr(0, n));
    CHECK_FALSE(exercise(prefix));
  }
}

TEST_CASE("hostile tf_checkpoint: every truncation and byte flip of a shard",
          "[hostile][tf_checkpoint]") {
  nddr_test::TempDir dir("nddr_hostile_tf_");
  const std::string prefix = dir.file("ckpt");
  const std::string shard_path = prefix + ".data-00000-of-00001";
  const std::string data = slurp(kTf + "/dtypes/ckpt.data-00000-of-00001");
  fs::copy_file(kTf + "/dtypes/ckpt.index", prefix + ".index");
  for (std::size_t n = 0; n < data.size(); ++n) {
    spit(shard_path, data.substr(0, n));
    CHECK_FALSE(exercise(prefix));
  }
  for (std::size_t i = 0; i < data.size(); ++i) {
    std::string bad = data;
    bad[i] = static_cast<char>(bad[i] ^ 0x04);
    spit(shard_path, bad);
    CHECK_FALSE(exercise(prefix));
  }
}

TEST_CASE("hostile tf_checkpoint: fuzzed entries and blocks behind valid checksums",
          "[hostile][tf_checkpoint]") {
  nddr_test::TempDir dir("nddr_hostile_tf_");
  const std::string prefix = dir.file("f");
  const std::string data(64, '\x3f');
  spit(prefix + ".data-00000-of-00001", data);
  const tb::Entries entries = {
      {"", tb::header(1)},
      {"a/bf16", tb::entry(14, {2, 3}, 0, data.substr(0, 12))},
      {"a/f64", tb::entry(2, {1, 1, 2, 1}, 16, data.substr(16, 16))},
      {"a/i64", tb::entry(9, {}, 40, data.substr(40, 8))},
      {"a/string", tb::pb_varint(1, 7) + tb::pb_bytes(2, "") + tb::pb_varint(5, 3)},
  };
  std::mt19937 rng(19);
  auto mutate = [&](std::string s) {
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits && !s.empty(); ++k) {
      const std::size_t at = rng() % s.size();
      switch (rng() % 4) {
        case 0:
          s.erase(at, 1);
          break;
        case 1:
          s.insert(at, 1, static_cast<char>(rng()));
          break;
        case 2:
          s[at] = static_cast<char>(0x80 | rng());  // varint continuation bytes
          break;
        default:
          s[at] = static_cast<char>(rng());
      }
    }
    return s;
  };
  int opened = 0;
  for (int iteration = 0; iteration < 3000; ++iteration) {
    if (iteration % 2 == 0) {
      tb::Entries e = entries;
      auto& victim = e[rng() % e.size()];
      victim.second = mutate(victim.second);
      spit(prefix + ".index", tb::table({e}));
    } else {
      spit(prefix + ".index", tb::raw_table({{"a/string", mutate(tb::block(entries, 2))}}));
    }
    opened += exercise(prefix) ? 1 : 0;
  }
  CHECK(opened > 0);
  CHECK(opened < 3000);
}

TEST_CASE("hostile tf_checkpoint: terabyte sizes and absurd counts fail before allocating",
          "[hostile][tf_checkpoint]") {
  nddr_test::TempDir dir("nddr_hostile_tf_");
  const std::string prefix = dir.file("h");
  spit(prefix + ".data-00000-of-00001", std::string(16, '\0'));
  auto dim = [](std::uint64_t d) { return tb::pb_bytes(2, tb::pb_varint(1, d)); };
  const std::uint64_t tera = std::uint64_t{1} << 40;
  auto fails = [&](const tb::Entries& e, const std::string& what) {
    spit(prefix + ".index", tb::table({e}));
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Catch::Contains(what));
  };
  fails({{"", tb::header(1)},
         {"big", tb::pb_varint(1, 1) + tb::pb_bytes(2, dim(tera)) + tb::pb_varint(5, 4 * tera)}},
        "reach past the end of the shard (16 bytes");
  fails({{"", tb::header(1)},
         {"big", tb::pb_varint(1, 1) + tb::pb_bytes(2, dim(tera) + dim(tera) + dim(tera))}},
        "overflows the element count");
  fails({{"", tb::header(1)},
         {"big", tb::pb_varint(1, 1) + tb::pb_varint(5, ~std::uint64_t{0} >> 1)}},
        "size 9223372036854775807 bytes, expected 4");
  fails({{"", tb::header(65536)}}, "h.data-00000-of-65536");
  fails({{"", tb::header(1) + tb::pb_varint(1, std::uint64_t{1} << 40)}}, "num_shards is");

  // A block whose restart count claims four billion restarts.
  const std::string block = tb::block({{"", tb::header(1)}});
  spit(prefix + ".index",
       tb::raw_table({{"", block.substr(0, block.size() - 4) + tb::fixed32(0xFFFFFFFFu)}}));
  CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Catch::Contains("restart count 4294967295"));
  // A key that claims to share more bytes than the previous key has.
  const std::string h = tb::header(1);
  spit(prefix + ".index",
       tb::raw_table(
           {{"x", tb::varint(0) + tb::varint(0) + tb::varint(h.size()) + h + tb::varint(9) +
                      tb::varint(1) + tb::varint(0) + "x" + tb::fixed32(0) + tb::fixed32(1)}}));
  CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Catch::Contains("shares 9 key bytes"));
  // A value that claims more bytes than the block holds.
  spit(prefix + ".index",
       tb::raw_table(
           {{"x", tb::varint(0) + tb::varint(0) + tb::varint(h.size()) + h + tb::varint(0) +
                      tb::varint(1) + tb::varint(50) + "x" + tb::fixed32(0) + tb::fixed32(1)}}));
  CHECK_THROWS_WITH(TfCheckpoint::open(prefix),
                    Catch::Contains("value of 'x': length 50 runs past the end of the block"));
}
