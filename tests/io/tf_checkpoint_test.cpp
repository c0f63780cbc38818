// TensorFlow V2 checkpoint reader (nddr::io::TfCheckpoint): checkpoints written by TensorFlow
// (tools/reference/tf_checkpoints.py, tests/data/tf/) read bit for bit against TensorFlow's own
// reading of them (expected.safetensors), and every corrupt or unsupported variant refused
// with a message naming the file and what was wrong.
#include <sys/stat.h>

#include <bit>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nddr/io/safetensors.hpp>
#include <nddr/io/tf_checkpoint.hpp>
#include <string>
#include <vector>

#include "../support/files.hpp"
#include "../support/temp_dir.hpp"
#include "../support/tf_bundle.hpp"

namespace fs = std::filesystem;
using Catch::Contains;
using nddr::io::Dtype;
using nddr::io::SafetensorsFile;
using nddr::io::TfCheckpoint;

namespace {

using nddr_test::slurp;
using nddr_test::spit;

const std::string kTf = NDDR_TEST_DATA_DIR "/tf";

// Every tensor of `expected.safetensors` beside the checkpoint has the same dtype, shape and
// bits in the checkpoint, and the checkpoint has no readable tensor the dump lacks.
void check_against_dump(const std::string& prefix) {
  const TfCheckpoint c = TfCheckpoint::open(prefix);
  const SafetensorsFile want =
      SafetensorsFile::read(fs::path(prefix).parent_path().string() + "/expected.safetensors");
  std::size_t readable = 0;
  for (const std::string& name : c.names())
    if (c.info(name).dtype) ++readable;
  CHECK(readable == want.names().size());
  for (const std::string& name : want.names()) {
    INFO(prefix << ": " << name);
    REQUIRE(c.contains(name));
    const nddr::io::TfTensorInfo& i = c.info(name);
    REQUIRE(i.dtype.has_value());
    CHECK(*i.dtype == want.dtype(name));
    CHECK(i.shape == want.shape(name));
    if (i.dtype == Dtype::kI32 || i.dtype == Dtype::kI64) {
      CHECK(c.values<std::int64_t>(name) == want.values<std::int64_t>(name));
    } else {
      // Widening to double is exact for every dtype, so equal bits mean equal stored values
      // (-0.0, subnormals and infinities included).
      const std::vector<double> got = c.values<double>(name);
      const std::vector<double> ref = want.values<double>(name);
      REQUIRE(got.size() == ref.size());
      for (std::size_t k = 0; k < got.size(); ++k)
        CHECK(std::bit_cast<std::uint64_t>(got[k]) == std::bit_cast<std::uint64_t>(ref[k]));
    }
  }
}

// A copy of the dtypes fixture in a temporary directory, for damaging.
struct Copy {
  nddr_test::TempDir dir{"nddr_tf_"};
  std::string prefix = dir.file("ckpt");
  std::string index = prefix + ".index";
  std::string data = prefix + ".data-00000-of-00001";
  Copy() {
    fs::copy_file(kTf + "/dtypes/ckpt.index", index);
    fs::copy_file(kTf + "/dtypes/ckpt.data-00000-of-00001", data);
  }
};

}  // namespace

TEST_CASE("tf_checkpoint: CRC32C and its mask match LevelDB/TensorFlow", "[io][tf_checkpoint]") {
  const std::string s = "123456789";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  CHECK(nddr::io::detail::crc32c(p, s.size()) == 0xE3069283u);
  CHECK(nddr::io::detail::crc32c_extend(nddr::io::detail::crc32c(p, 4), p + 4, 5) == 0xE3069283u);
  for (std::uint32_t c : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu})
    CHECK(nddr::io::detail::crc32c_unmask(nddr::io::detail::crc32c_mask(c)) == c);
}

TEST_CASE("tf_checkpoint: every dtype and shape read bit for bit", "[io][tf_checkpoint]") {
  check_against_dump(kTf + "/dtypes/ckpt");
  const TfCheckpoint c = TfCheckpoint::open(kTf + "/dtypes/ckpt.index");  // .index accepted
  CHECK(c.prefix() == kTf + "/dtypes/ckpt");
  CHECK(c.num_shards() == 1);
  CHECK(c.names().size() == 30);
  CHECK(c.info("vec_bf16").dtype_name() == "DT_BFLOAT16");
  CHECK(c.info("mat_half").tf_dtype == 19);

  const nddr::Tensor<float> k = c.tensor<float>("kernel_f32");  // HWIO, as stored
  CHECK(k.shape() == nddr::Shape{2, 3, 1, 4});
  const nddr::Tensor<double> scalar = c.tensor<double>("scalar_f32");
  CHECK(scalar.shape().rank() == 0);
  CHECK(scalar.data()[0] == 3.25);
  CHECK(c.tensor<float>("empty_f32").shape() == nddr::Shape{0, 3});
  CHECK(c.values<std::int32_t>("vec_i32") ==
        std::vector<std::int32_t>{-2147483647 - 1, -1, 0, 2147483647});
  CHECK(c.values<std::int64_t>("scalar_i64") ==
        std::vector<std::int64_t>{(std::int64_t{1} << 62) + 1});
  const std::vector<double> half = c.values<double>("mat_half");
  CHECK(half[0] == std::ldexp(1.0, -24));
  CHECK(half[1] == 65504.0);

  CHECK_THROWS_WITH(c.values<std::int32_t>("vec_i64"),
                    Contains("vec_i64") && Contains("element 0") && Contains("outside the range"));
  CHECK_THROWS_WITH(c.values<std::int64_t>("vec_f32"),
                    Contains("'vec_f32' is DT_FLOAT, expected DT_INT32 or DT_INT64"));
  CHECK_THROWS_WITH(c.info("vgg_16/fc8/weights"),
                    Contains("ckpt.index") && Contains("no tensor named 'vgg_16/fc8/weights'") &&
                        Contains("30 tensors"));
}

TEST_CASE("tf_checkpoint: two shards, object-based names, the authors' names",
          "[io][tf_checkpoint]") {
  check_against_dump(kTf + "/sharded/ckpt");
  const TfCheckpoint sharded = TfCheckpoint::open(kTf + "/sharded/ckpt");
  CHECK(sharded.num_shards() == 2);
  CHECK(sharded.info("shard1/weights").shard_id == 1);

  check_against_dump(kTf + "/object/ckpt-1");
  const TfCheckpoint object = TfCheckpoint::open(kTf + "/object/ckpt-1");
  CHECK(object.info("_CHECKPOINTABLE_OBJECT_GRAPH").tf_dtype == 7);
  CHECK_THROWS_WITH(object.values<float>("_CHECKPOINTABLE_OBJECT_GRAPH"),
                    Contains("has dtype DT_STRING, expected DT_FLOAT"));
  CHECK(object.values<float>("dense/.ATTRIBUTES/VARIABLE_VALUE") == std::vector<float>{0, 1, 2, 3});

  check_against_dump(kTf + "/st_mini/model.ckpt-0");
  const TfCheckpoint st = TfCheckpoint::open(kTf + "/st_mini/model.ckpt-0");
  CHECK(st.info("vgg_16/conv1/conv1_1/weights").shape == std::vector<std::int64_t>{3, 3, 3, 2});
  CHECK(st.contains("vgg_16/conv1/conv1_1/weights/Momentum"));
  CHECK(st.contains("vgg_16/fc7/BatchNorm/moving_variance"));
  CHECK_FALSE(st.contains("vgg_16/conv1/conv1_1/biases"));

  check_against_dump(kTf + "/mt_mini/model.ckpt-0");
  check_against_dump(kTf + "/nddr_mini/model.ckpt-0");
  const TfCheckpoint nddr = TfCheckpoint::open(kTf + "/nddr_mini/model.ckpt-0");
  CHECK(nddr.info("nddr_3/nddr_3_n2/weights").shape == std::vector<std::int64_t>{1, 1, 6, 3});
  CHECK(nddr.info("vgg_16_2_6/fc8_voc12/biases").shape == std::vector<std::int64_t>{2});
  CHECK(nddr.contains("vgg_16_1_5/conv5/conv5_3/BatchNorm/moving_mean"));
  CHECK(nddr.info("nddr_shortcut_2/weights").shape == std::vector<std::int64_t>{1, 1, 15, 4});
}

TEST_CASE("tf_checkpoint: unsupported checkpoints are refused with the reason",
          "[io][tf_checkpoint]") {
  const TfCheckpoint p = TfCheckpoint::open(kTf + "/partitioned/ckpt");
  CHECK(p.names() == std::vector<std::string>{"split", "whole"});
  CHECK(p.values<float>("whole") == std::vector<float>{1.5f});
  CHECK(p.info("split").partitioned);
  CHECK_THROWS_WITH(p.values<float>("split"),
                    Contains("'split' is a partitioned variable") && Contains("not supported"));

  CHECK_THROWS_WITH(
      TfCheckpoint::open(kTf + "/v1/ckpt"),
      Contains("v1/ckpt") && Contains("TensorFlow V1 checkpoint") && Contains("SaverDef.V2"));
  CHECK_THROWS_WITH(TfCheckpoint::open(kTf + "/nowhere/ckpt"),
                    Contains("nowhere/ckpt.index': does not exist"));
  nddr_test::TempDir dir("nddr_tf_");
  spit(dir.file("m.meta"), "graph");
  CHECK_THROWS_WITH(TfCheckpoint::open(dir.file("m")), Contains("only '") && Contains("m.meta"));
  fs::create_directory(dir.file("d.index"));
  CHECK_THROWS_WITH(TfCheckpoint::open(dir.file("d")),
                    Contains("d.index") && Contains("is a directory"));
  REQUIRE(::mkfifo(dir.file("f.index").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(TfCheckpoint::open(dir.file("f")), Contains("f.index") && Contains("FIFO"));
}

TEST_CASE("tf_checkpoint: damaged files name the file and what is wrong", "[io][tf_checkpoint]") {
  SECTION("index shorter than the footer") {
    Copy c;
    spit(c.index, slurp(c.index).substr(0, 30));
    CHECK_THROWS_WITH(TfCheckpoint::open(c.prefix),
                      Contains("ckpt.index") && Contains("30 bytes, shorter than the 48-byte"));
  }
  SECTION("truncated index: no magic at the end") {
    Copy c;
    const std::string bytes = slurp(c.index);
    spit(c.index, bytes.substr(0, bytes.size() - 100));
    CHECK_THROWS_WITH(TfCheckpoint::open(c.prefix),
                      Contains("ckpt.index") && Contains("not the SSTable magic"));
  }
  SECTION("bad magic") {
    Copy c;
    std::string bytes = slurp(c.index);
    bytes.back() = 'x';
    spit(c.index, bytes);
    CHECK_THROWS_WITH(
        TfCheckpoint::open(c.prefix),
        Contains("at byte " + std::to_string(bytes.size() - 8)) && Contains("SSTable magic"));
  }
  SECTION("a flipped index byte fails its block checksum") {
    Copy c;
    std::string bytes = slurp(c.index);
    bytes[40] = static_cast<char>(bytes[40] ^ 0x01);
    spit(c.index, bytes);
    CHECK_THROWS_WITH(TfCheckpoint::open(c.prefix),
                      Contains("ckpt.index': data block at byte 0: CRC32C mismatch"));
  }
  SECTION("a flipped data byte fails the tensor's checksum") {
    Copy c;
    const nddr::io::TfTensorInfo info = TfCheckpoint::open(c.prefix).info("mat_f64");
    std::string bytes = slurp(c.data);
    bytes[info.offset + 3] = static_cast<char>(bytes[info.offset + 3] ^ 0x10);
    spit(c.data, bytes);
    const TfCheckpoint ckpt = TfCheckpoint::open(c.prefix);
    CHECK_THROWS_WITH(ckpt.values<double>("mat_f64"),
                      Contains("ckpt.data-00000-of-00001") && Contains("'mat_f64'") &&
                          Contains("CRC32C mismatch over bytes [" + std::to_string(info.offset)));
    CHECK(ckpt.values<float>("scalar_f32") == std::vector<float>{3.25f});
  }
  SECTION("missing shard") {
    Copy c;
    fs::remove(c.data);
    CHECK_THROWS_WITH(TfCheckpoint::open(c.prefix),
                      Contains("ckpt.data-00000-of-00001") && Contains("does not exist"));
  }
  SECTION("shard too short for the offsets in the index") {
    Copy c;
    const std::string bytes = slurp(c.data);
    spit(c.data, bytes.substr(0, bytes.size() - 1));
    CHECK_THROWS_WITH(TfCheckpoint::open(c.prefix),
                      Contains("ckpt.data-00000-of-00001") &&
                          Contains("reach past the end of the shard (" +
                                   std::to_string(bytes.size() - 1) + " bytes"));
  }
}

TEST_CASE("tf_checkpoint: hand-built indexes (what TensorFlow never writes)",
          "[io][tf_checkpoint]") {
  namespace tb = nddr_test::tf;
  nddr_test::TempDir dir("nddr_tf_");
  const std::string prefix = dir.file("h");
  const std::string f32 = std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);  // 1.0f, 2.0f
  spit(prefix + ".data-00000-of-00001", f32 + f32);
  auto write = [&](const std::vector<tb::Entries>& blocks, unsigned char type = 0) {
    spit(prefix + ".index", tb::table(blocks, type));
  };
  const std::string good = tb::entry(1, {2}, 0, f32);

  SECTION("several data blocks and prefix-compressed keys") {
    write({{{"", tb::header(1)}, {"layer/a", good}},
           {{"layer/b", tb::entry(1, {1, 2}, 8, f32)},
            {"layer/c", tb::entry(1, {}, 4, f32.substr(4))}}});
    const TfCheckpoint c = TfCheckpoint::open(prefix);
    CHECK(c.names() == std::vector<std::string>{"layer/a", "layer/b", "layer/c"});
    CHECK(c.values<float>("layer/b") == std::vector<float>{1.0f, 2.0f});
    CHECK(c.values<float>("layer/c") == std::vector<float>{2.0f});
  }
  SECTION("Snappy blocks") {
    write({{{"", tb::header(1)}, {"a", good}}}, 1);
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Contains("h.index") && Contains("Snappy"));
  }
  SECTION("no header entry") {
    write({{{"a", good}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix),
                      Contains("first key is 'a', expected the empty key"));
  }
  SECTION("keys out of order") {
    write({{{"", tb::header(1)}, {"b", good}}, {{"a", good}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix),
                      Contains("key 'a'") && Contains("does not follow 'b'"));
  }
  SECTION("big-endian data, newer format, bad shard count") {
    write({{{"", tb::header(1, 1)}, {"a", good}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Contains("header entry") && Contains("BIG"));
    write({{{"", tb::header(1, 0, 2)}, {"a", good}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Contains("min_consumer is 2"));
    write({{{"", tb::header(0)}, {"a", good}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Contains("num_shards is 0, expected 1 to 65536"));
  }
  SECTION("entries that contradict themselves or the shards") {
    write({{{"", tb::header(1)}, {"a", tb::entry(1, {3}, 0, f32)}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix),
                      Contains("tensor 'a' (BundleEntryProto): size 8 bytes, expected 12 for "
                               "DT_FLOAT shape (3)"));
    write({{{"", tb::header(1)}, {"a", tb::entry(1, {2}, 12, f32)}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix),
                      Contains("h.data-00000-of-00001") && Contains("tensor 'a': bytes [12, 20)"));
    write({{{"", tb::header(1)}, {"a", tb::entry(1, {2}, 0, f32, 3)}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Contains("tensor 'a' (BundleEntryProto)") &&
                                                      Contains("shard_id 3, expected 0 to 0"));
    write({{{"", tb::header(1)}, {"a", tb::pb_bytes(1, "x")}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix),
                      Contains("field 1 (dtype) has wire type 2, expected 0"));
    write(
        {{{"", tb::header(1)}, {"a", tb::pb_varint(1, 1) + tb::pb_varint(4, ~std::uint64_t{0})}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Contains("offset is negative (-1)"));
    write({{{"", tb::header(1)}, {"a", tb::pb_varint(1, 1) + "\x12\x05\x12"}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix),
                      Contains("tensor 'a' (BundleEntryProto): shape: length 5 runs past the end"));
    write({{{"", tb::header(1)}, {"a", tb::entry(1, {2, -1}, 0, f32)}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix), Contains("size is negative (-1)"));
  }
  SECTION("a second shard of another checkpoint is not this one's") {
    write({{{"", tb::header(2)}, {"a", good}}});
    CHECK_THROWS_WITH(TfCheckpoint::open(prefix),
                      Contains("h.data-00000-of-00002") && Contains("does not exist"));
  }
}

TEST_CASE("tf_checkpoint: the latest checkpoint of a directory", "[io][tf_checkpoint]") {
  nddr_test::TempDir dir("nddr_tf_");
  for (const char* f : {"model.ckpt-0.index", "model.ckpt-0.data-00000-of-00001"})
    fs::copy_file(kTf + "/st_mini/" + f, dir.file(f));
  const std::string state = dir.file("checkpoint");
  const std::string prefix = dir.file("model.ckpt-0");

  // Relative, as CheckpointManager writes it.
  spit(state,
       "model_checkpoint_path: \"model.ckpt-0\"\nall_model_checkpoint_paths: \"model.ckpt-0\"\n");
  CHECK(nddr::io::latest_tf_checkpoint(dir.file("")) == prefix);
  CHECK(TfCheckpoint::open(dir.file("")).prefix() == prefix);
  // Absolute and stale (a directory copied from the authors' machine): found here by name.
  spit(state, "model_checkpoint_path: \"/data/nddr/ckpt/model.ckpt-0\"\n");
  CHECK(TfCheckpoint::open(dir.file("")).contains("vgg_16/fc6/weights"));
  // Absolute and current, with an escaped character.
  spit(state, "model_checkpoint_path: \"" + dir.file("model\\056ckpt-0") + "\"\n");
  CHECK(nddr::io::latest_tf_checkpoint(dir.file("")) == prefix);

  spit(state, "model_checkpoint_path: \"model.ckpt-5000\"\n");
  CHECK_THROWS_WITH(nddr::io::latest_tf_checkpoint(dir.file("")),
                    Contains("checkpoint': names checkpoint 'model.ckpt-5000'") &&
                        Contains("model.ckpt-5000.index' does not exist"));
  spit(state, "all_model_checkpoint_paths: \"model.ckpt-0\"\n");
  CHECK_THROWS_WITH(nddr::io::latest_tf_checkpoint(dir.file("")),
                    Contains("no model_checkpoint_path line"));
  spit(state, "model_checkpoint_path: model.ckpt-0\n");
  CHECK_THROWS_WITH(
      nddr::io::latest_tf_checkpoint(dir.file("")),
      Contains("checkpoint' line 1: model_checkpoint_path: expected a double-quoted"));
  fs::remove(state);
  CHECK_THROWS_WITH(TfCheckpoint::open(dir.file("")), Contains("no 'checkpoint' file"));
}
