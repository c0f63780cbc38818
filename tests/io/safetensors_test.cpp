// Safetensors reader/writer and the JSON parser behind it: a file written by PyTorch
// (tools/reference/io_sample.py), round trips, every malformed-file error, atomic writes.
#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <nddr/io/json.hpp>
#include <nddr/io/safetensors.hpp>
#include <numbers>
#include <string>
#include <vector>

#include "../support/files.hpp"
#include "../support/temp_dir.hpp"

namespace fs = std::filesystem;
using Catch::Contains;
using nddr_test::TempDir;
using nddr::io::Dtype;
using nddr::io::SafetensorsFile;

namespace {

using nddr_test::slurp;
using nddr_test::spit;

const std::string kSample = NDDR_TEST_DATA_DIR "/io_sample.safetensors";

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file with header `json` (length prefix computed) followed by `data_bytes` zero bytes.
std::string craft(const std::string& json, std::size_t data_bytes = 0) {
  return le64(json.size()) + json + std::string(data_bytes, '\0');
}

// The message of the IoError thrown by reading `bytes` from a file called `name`.
std::string read_error(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir.file(name);
  spit(path, bytes);
  try {
    SafetensorsFile::read(path);
  } catch (const nddr::IoError& e) {
    return e.what();
  }
  FAIL("reading " << path << " did not throw");
  return {};
}

}  // namespace

// ----------------------------------------------------------------------------------------------
// JSON

TEST_CASE("json: values, numbers, escapes", "[io][json]") {
  namespace json = nddr::io::json;
  const json::Value v = json::parse(
      R"( {"a": [1, -2, 0, 9223372036854775807, 9223372036854775808, 1.5, -2e3, 0.25E+1],
           "s": "q\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "t": true, "f": false, "n": null,
           "o": {}, "e": []} )");
  REQUIRE(v.is_object());
  const auto& a = v.find("a")->as_array();
  REQUIRE(a.size() == 8);
  CHECK(a[0].is_int());
  CHECK(a[0].as_int() == 1);
  CHECK(a[1].as_int() == -2);
  CHECK(a[2].as_int() == 0);
  CHECK(a[3].as_int() == std::numeric_limits<std::int64_t>::max());
  CHECK(a[4].kind() == json::Value::Kind::kDouble);  // beyond int64: kept as a double
  CHECK(a[4].as_double() == 9223372036854775808.0);
  CHECK(a[5].as_double() == 1.5);
  CHECK_FALSE(a[6].is_int());
  CHECK(a[6].as_double() == -2000.0);
  CHECK(a[7].as_double() == 2.5);
  CHECK(v.find("s")->as_string() == "q\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80");
  CHECK(v.find("t")->as_bool());
  CHECK_FALSE(v.find("f")->as_bool());
  CHECK(v.find("n")->is_null());
  CHECK(v.find("o")->as_object().empty());
  CHECK(v.find("e")->as_array().empty());
  CHECK(v.find("missing") == nullptr);
  CHECK_THROWS_WITH(v.find("t")->as_string(), Contains("expected string, got boolean"));
  CHECK(v.as_object()[0].first == "a");  // file order kept

  const std::string text = std::string("a\"b\\c\n\x01") + "\xC3\xA9";
  CHECK(json::quote(text) == "\"a\\\"b\\\\c\\n\\u0001\xC3\xA9\"");
  CHECK(json::parse(json::quote(text)).as_string() == text);
}

TEST_CASE("json: errors carry the byte offset", "[io][json]") {
  namespace json = nddr::io::json;
  const auto offset_of = [](const std::string& text) -> long {
    try {
      json::parse(text);
    } catch (const json::ParseError& e) {
      return static_cast<long>(e.offset());
    }
    return -1;
  };
  CHECK(offset_of("{\"a\": 1,, }") == 8);
  CHECK(offset_of("[1, 2") == 5);
  CHECK(offset_of("[01]") == 1);
  CHECK(offset_of("{\"a\" 1}") == 5);
  CHECK(offset_of("\"abc") == 0);
  CHECK(offset_of("[\"a\\x\"]") == 3);
  CHECK(offset_of("\"\\ud800x\"") == 1);
  CHECK(offset_of("[tru]") == 1);
  CHECK(offset_of("{\"k\": 1, \"k\": 2}") == 9);
  CHECK(offset_of("1 2") == 2);
  CHECK(offset_of("") == 0);
  CHECK(offset_of(std::string("\"a\nb\"")) == 2);
  CHECK(offset_of("-") == 1);
  CHECK(offset_of("1.") == 2);
  CHECK(offset_of("1e999") == 0);
  CHECK_THROWS_WITH(json::parse("[1,]"), Contains("byte 3") && Contains("unexpected character"));
  CHECK_THROWS_WITH(json::parse("{\"k\": 1, \"k\": 2}"), Contains("duplicate key \"k\""));
  CHECK_THROWS_AS(json::parse("[1,]"), nddr::IoError);

  const std::string deep = std::string(65, '[') + std::string(65, ']');
  CHECK_THROWS_WITH(json::parse(deep), Contains("nesting deeper than 64"));
  CHECK_NOTHROW(json::parse(std::string(64, '[') + std::string(64, ']')));
  CHECK_NOTHROW(json::parse(deep, 65));
}

// ----------------------------------------------------------------------------------------------
// Reading a file written by PyTorch

TEST_CASE("safetensors: reads the PyTorch sample in every dtype", "[io][safetensors]") {
  const SafetensorsFile f = SafetensorsFile::read(kSample);
  CHECK(f.path() == kSample);
  CHECK(f.names() == std::vector<std::string>{"bf16", "empty", "f16", "f32", "f64", "i16", "i32",
                                              "i64", "i8", "mask", "nchw", "rank5", "scalar",
                                              "u8"});
  CHECK_FALSE(f.contains("__metadata__"));
  CHECK(f.contains("f64"));
  CHECK_FALSE(f.contains("f6"));

  CHECK(f.metadata().at("generator") == "tools/reference/io_sample.py");
  CHECK(f.metadata().at("note") == "\xC3\xB1 \"quoted\" \xF0\x9F\x98\x80 \\ end");

  SECTION("F64") {
    CHECK(f.dtype("f64") == Dtype::kF64);
    CHECK(f.shape("f64") == std::vector<std::int64_t>{2, 3, 4});
    const std::vector<double> v = f.values<double>("f64");
    REQUIRE(v.size() == 24);
    for (int i = 0; i < 24; ++i)
      CHECK(v[static_cast<std::size_t>(i)] == (i - 12) / 8.0 + (i == 5 ? std::numbers::pi : 0.0));
  }
  SECTION("F32, converted to double and to int") {
    CHECK(f.dtype("f32") == Dtype::kF32);
    CHECK(f.values<double>("f32") ==
          std::vector<double>{1.5, -2.25, 3.0, double(0.1f), double(1e-3f), -7.0});
    CHECK(f.values<float>("f32")[3] == 0.1f);
    CHECK(f.values<int>("f32") == std::vector<int>{1, -2, 3, 0, 0, -7});
  }
  SECTION("F16 decoded exactly, subnormal and infinities included") {
    CHECK(f.dtype("f16") == Dtype::kF16);
    const std::vector<double> v = f.values<double>("f16");
    REQUIRE(v.size() == 7);
    CHECK(v[0] == 1.0);
    CHECK(v[1] == -2.5);
    CHECK(v[2] == 0.0999755859375);
    CHECK(v[3] == 65504.0);
    CHECK(v[4] == std::ldexp(1.0, -24));
    CHECK(v[5] == std::numeric_limits<double>::infinity());
    CHECK(v[6] == -std::numeric_limits<double>::infinity());
  }
  SECTION("BF16") {
    CHECK(f.dtype("bf16") == Dtype::kBF16);
    CHECK(f.shape("bf16") == std::vector<std::int64_t>{3, 2});
    const std::vector<float> v = f.values<float>("bf16");
    CHECK(v == std::vector<float>{1.0f, -2.5f, 3.140625f, std::ldexp(1.0f, 100), 0.5f, -0.0f});
    CHECK(std::signbit(v[5]));
  }
  SECTION("integers and BOOL") {
    CHECK(f.values<std::int64_t>("i64") == std::vector<std::int64_t>{-(std::int64_t{1} << 62), -1,
                                                                     0, 7,
                                                                     (std::int64_t{1} << 40) + 3});
    CHECK(f.values<std::int64_t>("i32") ==
          std::vector<std::int64_t>{std::numeric_limits<std::int32_t>::min(),
                                    std::numeric_limits<std::int32_t>::max()});
    CHECK(f.values<int>("i16") == std::vector<int>{-32768, 12345});
    CHECK(f.values<int>("i8") == std::vector<int>{-128, 127, -1});
    CHECK(f.values<double>("u8") == std::vector<double>{0.0, 255.0, 7.0});
    CHECK(f.dtype("mask") == Dtype::kBool);
    CHECK(f.values<float>("mask") == std::vector<float>{1.0f, 0.0f, 1.0f, 1.0f});
    CHECK(f.values<std::uint8_t>("mask") == std::vector<std::uint8_t>{1, 0, 1, 1});
  }
  SECTION("integer targets refuse values out of their range") {
    CHECK_THROWS_WITH(f.values<int>("f16"), Contains("io_sample.safetensors") &&
                                                Contains("tensor 'f16' (F16) element 5") &&
                                                Contains("inf") &&
                                                Contains("[-2147483648, 2147483647]"));
    CHECK_THROWS_WITH(f.values<unsigned>("f32"), Contains("element 1 has value -2"));
    CHECK_THROWS_WITH(
        f.values<std::uint8_t>("i8"),
        Contains("tensor 'i8' (I8) element 0 has value -128") && Contains("[0, 255]"));
    CHECK_THROWS_WITH(f.values<std::int16_t>("i32"), Contains("element 0"));
    CHECK_THROWS_WITH(f.values<std::int32_t>("i64"), Contains("element 0"));
    CHECK(f.values<std::int8_t>("i8") == std::vector<std::int8_t>{-128, 127, -1});
    CHECK(f.values<std::uint64_t>("u8") == std::vector<std::uint64_t>{0, 255, 7});
    CHECK(f.values<std::int64_t>("f64")[0] == -1);
  }
  SECTION("tensor<T>: rank 0, empty, rank 4; rank 5 refused") {
    const nddr::Tensor<double> s = f.tensor<double>("scalar");
    CHECK(s.shape().rank() == 0);
    CHECK(s[0] == 3.25);
    const nddr::Tensor<float> e = f.tensor<float>("empty");
    CHECK(e.shape() == nddr::Shape{0, 3});
    CHECK(e.numel() == 0);
    const nddr::Tensor<double> x = f.tensor<double>("nchw");  // (N, C, H, W)
    CHECK(x.shape() == nddr::Shape::nchw(2, 3, 2, 2));
    CHECK(x(1, 2, 1, 0) == 0.5 * (((1 * 3 + 2) * 2 + 1) * 2 + 0));
    CHECK(f.values<double>("rank5").size() == 6);
    CHECK_THROWS_WITH(f.tensor<float>("rank5"),
                      Contains("io_sample.safetensors") && Contains("'rank5'") &&
                          Contains("(1, 1, 3, 2, 1)") && Contains("rank 0 to 4"));
  }
  SECTION("unknown names list what is available") {
    CHECK_THROWS_AS(f.values<double>("case0.x"), nddr::IoError);
    CHECK_THROWS_WITH(f.values<double>("case0.x"),
                      Contains("io_sample.safetensors") && Contains("no tensor named 'case0.x'") &&
                          Contains("14 tensors") && Contains("'bf16', 'empty'") && Contains("..."));
    CHECK_THROWS_WITH(f.shape("nope"), Contains("'nope'"));
    CHECK_THROWS_WITH(f.dtype("nope"), Contains("'nope'"));
    CHECK_THROWS_WITH(f.tensor<double>("nope"), Contains("'nope'"));
  }
}

// ----------------------------------------------------------------------------------------------
// Round trip

TEST_CASE("safetensors: write/read round trip with metadata", "[io][safetensors]") {
  TempDir dir("nddr_io_test_");
  const std::string path = dir.file("round.safetensors");

  nddr::Tensor<float> a(nddr::Shape::nchw(2, 3, 4, 5));  // (N, C, H, W)
  for (std::int64_t i = 0; i < a.numel(); ++i) a[i] = 0.1f * static_cast<float>(i) - 3.0f;
  nddr::Tensor<double> b(nddr::Shape{7});
  for (std::int64_t i = 0; i < b.numel(); ++i) b[i] = std::exp(static_cast<double>(i)) * 1e-300;
  const std::vector<std::int64_t> c = {std::numeric_limits<std::int64_t>::min(), -1, 0,
                                       std::numeric_limits<std::int64_t>::max()};
  const std::vector<std::uint8_t> d = {0, 1, 128, 255, 9, 10};
  const std::vector<std::int32_t> e = {-5, 6};
  const bool m[3] = {true, false, true};
  const double scalar = -0.75;
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"quote\"and\\slash", "line\nbreak \xC3\xA9"}, {"empty", ""}};

  // Deliberately unsorted: the writer sorts.
  nddr::io::write_safetensors(path,
                              {nddr::io::entry("z.a", a),
                               nddr::io::entry<double>("b", b.cview()),
                               {"c", Dtype::kI64, {2, 2}, c.data()},
                               {"d", Dtype::kU8, {2, 3}, d.data()},
                               {"e", Dtype::kI32, {2}, e.data()},
                               {"mask", Dtype::kBool, {3}, m},
                               {"scalar", Dtype::kF64, {}, &scalar},
                               {"none", Dtype::kF32, {0, 4}, nullptr}},
                              meta);

  const std::string bytes = slurp(path);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  CHECK(n % 8 == 0);
  CHECK(bytes.substr(8, 16) == "{\"__metadata__\":");
  const std::string header = bytes.substr(8, n);
  const std::size_t last = header.find_last_not_of(' ');
  CHECK(header[last] == '}');
  CHECK(n - last - 1 < 8);  // space padding only

  const SafetensorsFile f = SafetensorsFile::read(path);
  CHECK(f.names() == std::vector<std::string>{"b", "c", "d", "e", "mask", "none", "scalar", "z.a"});
  CHECK(f.metadata() == meta);

  CHECK(f.dtype("z.a") == Dtype::kF32);
  const nddr::Tensor<float> a2 = f.tensor<float>("z.a");
  CHECK(a2.shape() == a.shape());
  CHECK(std::memcmp(a2.data(), a.data(), a.bytes()) == 0);
  CHECK(f.dtype("b") == Dtype::kF64);
  CHECK(f.values<double>("b") == std::vector<double>(b.data(), b.data() + b.numel()));
  CHECK(f.dtype("c") == Dtype::kI64);
  CHECK(f.shape("c") == std::vector<std::int64_t>{2, 2});
  CHECK(f.values<std::int64_t>("c") == c);
  CHECK(f.values<std::uint8_t>("d") == d);
  CHECK(f.values<int>("e") == std::vector<int>{-5, 6});
  CHECK(f.values<int>("mask") == std::vector<int>{1, 0, 1});
  CHECK(f.shape("scalar").empty());
  CHECK(f.values<double>("scalar") == std::vector<double>{-0.75});
  CHECK(f.shape("none") == std::vector<std::int64_t>{0, 4});
  CHECK(f.values<float>("none").empty());

  SECTION("the writer is deterministic") {
    const std::string again = dir.file("again.safetensors");
    nddr::io::write_safetensors(again, {nddr::io::entry("x", a)}, meta);
    const std::string first = slurp(again);
    nddr::io::write_safetensors(again, {nddr::io::entry("x", a)}, meta);
    CHECK(slurp(again) == first);
  }
  SECTION("no metadata, no tensors") {
    const std::string empty = dir.file("empty.safetensors");
    nddr::io::write_safetensors(empty, {});
    CHECK(slurp(empty) == le64(8) + "{}      ");
    const SafetensorsFile g = SafetensorsFile::read(empty);
    CHECK(g.names().empty());
    CHECK(g.metadata().empty());
    CHECK_THROWS_WITH(g.values<float>("x"), Contains("the file has 0 tensors"));
  }
}

// ----------------------------------------------------------------------------------------------
// Malformed files

TEST_CASE("safetensors: malformed files name the file and the field", "[io][safetensors]") {
  TempDir dir("nddr_io_test_");
  const std::string ok_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  SECTION("missing file") {
    const std::string path = dir.file("missing.safetensors");
    CHECK_THROWS_AS(SafetensorsFile::read(path), nddr::IoError);
    CHECK_THROWS_WITH(SafetensorsFile::read(path),
                      Contains(path) && Contains("cannot open") && Contains("No such file"));
  }
  SECTION("a directory, a FIFO, a device: refused before any read") {
    CHECK_THROWS_WITH(SafetensorsFile::read(dir.file("")),
                      Contains("is a directory, expected a regular file"));
    const std::string fifo = dir.file("pipe.st");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_WITH(SafetensorsFile::read(fifo), Contains(fifo) && Contains("is a FIFO"));
    if (fs::exists("/dev/zero"))
      CHECK_THROWS_WITH(SafetensorsFile::read("/dev/zero"), Contains("a character device"));
  }
  SECTION("shorter than the length field") {
    CHECK_THAT(read_error(dir, "empty.st", ""),
               Contains("empty.st") && Contains("0 bytes, expected at least 8"));
    CHECK_THAT(read_error(dir, "five.st", "abcde"),
               Contains("five.st") && Contains("5 bytes, expected at least 8"));
  }
  SECTION("header length larger than the file") {
    CHECK_THAT(read_error(dir, "long.st", le64(1000) + "{}"),
               Contains("long.st") && Contains("header length 1000") &&
                   Contains("larger than the 2 bytes"));
    CHECK_THAT(read_error(dir, "huge.st", le64(std::uint64_t{1} << 40) + "{}"),
               Contains("huge.st") && Contains("exceeds the limit"));
    CHECK_THAT(read_error(dir, "max.st", le64(~std::uint64_t{0}) + "{}"),
               Contains("max.st") && Contains("exceeds the limit"));
  }
  SECTION("invalid JSON reports the byte offset") {
    CHECK_THAT(read_error(dir, "json.st", craft(R"({"a":{"dtype":"F32",,}})")),
               Contains("json.st") && Contains("not valid JSON") && Contains("header byte 20") &&
                   Contains("file byte 28"));
    CHECK_THAT(read_error(dir, "cut.st", craft(R"({"a":{"dtype":"F3)")),
               Contains("cut.st") && Contains("unterminated string"));
    CHECK_THAT(read_error(dir, "array.st", craft("[1, 2]")),
               Contains("array.st") && Contains("must start with '{' (a JSON object), got '[1, 2]'"));
    CHECK_THAT(
        read_error(dir, "dup.st", craft("{\"a\":" + ok_entry + ",\"a\":" + ok_entry + "}", 8)),
        Contains("dup.st") && Contains("duplicate key \"a\""));
    CHECK_THAT(read_error(dir, "deep.st",
                          craft("{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}")),
               Contains("deep.st") && Contains("nesting deeper"));
  }
  SECTION("missing fields and wrong JSON types") {
    CHECK_THAT(
        read_error(dir, "nodtype.st", craft(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8)),
        Contains("nodtype.st") && Contains("tensor 'w'") && Contains("missing field 'dtype'"));
    CHECK_THAT(
        read_error(dir, "noshape.st", craft(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8)),
        Contains("noshape.st") && Contains("tensor 'w'") && Contains("missing field 'shape'"));
    CHECK_THAT(
        read_error(dir, "nooff.st", craft(R"({"w":{"dtype":"F32","shape":[2]}})", 8)),
        Contains("nooff.st") && Contains("tensor 'w'") && Contains("missing field 'data_offsets'"));
    CHECK_THAT(
        read_error(dir, "notobj.st", craft(R"({"w":[1,2]})")),
        Contains("notobj.st") && Contains("tensor 'w' must be an object") && Contains("got array"));
    CHECK_THAT(read_error(dir, "dtnum.st",
                          craft(R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", 8)),
               Contains("dtnum.st") && Contains("field 'dtype' must be a string") &&
                   Contains("got integer"));
    CHECK_THAT(read_error(dir, "shstr.st",
                          craft(R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8)),
               Contains("shstr.st") && Contains("field 'shape' must be an array") &&
                   Contains("got string"));
    CHECK_THAT(read_error(dir, "shflt.st",
                          craft(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8)),
               Contains("shflt.st") && Contains("field 'shape' item 0") && Contains("got number"));
    CHECK_THAT(read_error(dir, "offcnt.st",
                          craft(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8)),
               Contains("offcnt.st") && Contains("field 'data_offsets' has 1 items, expected 2"));
    CHECK_THAT(read_error(dir, "meta.st", craft(R"({"__metadata__":{"k":1}})")),
               Contains("meta.st") && Contains("'__metadata__'") && Contains("key 'k'") &&
                   Contains("got integer"));
    CHECK_THAT(read_error(dir, "meta2.st", craft(R"({"__metadata__":["k"]})")),
               Contains("meta2.st") && Contains("'__metadata__' must be an object"));
  }
  SECTION("unknown dtype") {
    CHECK_THAT(
        read_error(dir, "dtype.st",
                   craft(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2)),
        Contains("dtype.st") && Contains("tensor 'w'") && Contains("unknown dtype 'F8_E4M3'") &&
            Contains("expected one of F64"));
  }
  SECTION("negative extents") {
    CHECK_THAT(read_error(dir, "neg.st",
                          craft(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", 8)),
               Contains("neg.st") && Contains("tensor 'w'") && Contains("field 'shape' item 1") &&
                   Contains("non-negative") && Contains("got -1"));
    CHECK_THAT(read_error(dir, "negoff.st",
                          craft(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8)),
               Contains("negoff.st") && Contains("field 'data_offsets' item 0"));
    CHECK_THAT(
        read_error(
            dir, "ovf.st",
            craft(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                  8)),
        Contains("ovf.st") && Contains("overflows"));
  }
  SECTION("data offsets") {
    CHECK_THAT(read_error(dir, "past.st",
                          craft(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8)),
               Contains("past.st") && Contains("tensor 'w'") && Contains("[4, 12]") &&
                   Contains("past the data section of 8 bytes"));
    CHECK_THAT(read_error(dir, "order.st",
                          craft(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8)),
               Contains("order.st") && Contains("tensor 'w'") && Contains("begin > end"));
    CHECK_THAT(read_error(dir, "size.st",
                          craft(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 16)),
               Contains("size.st") && Contains("tensor 'w'") && Contains("spans 8 bytes") &&
                   Contains("expected 12 for F32 shape (3)"));
    // The header of a valid file, with its data cut short.
    std::string whole = craft(R"({"w":)" + ok_entry + "}", 8);
    CHECK_THAT(read_error(dir, "cut.st", whole.substr(0, whole.size() - 1)),
               Contains("cut.st") && Contains("past the data section of 7 bytes"));
    spit(dir.file("whole.st"), whole);
    CHECK_NOTHROW(SafetensorsFile::read(dir.file("whole.st")));
  }
  SECTION("the header must be a '{'-first UTF-8 object") {
    CHECK_THAT(read_error(dir, "zero.st", le64(0)),
               Contains("zero.st") && Contains("must start with '{'"));
    CHECK_THAT(read_error(dir, "space.st", craft(" {}")), Contains("must start with '{'"));
    CHECK_THAT(read_error(dir, "utf8.st", craft("{\"\xC3\x28\":1}")),
               Contains("utf8.st") && Contains("not valid UTF-8 at header byte 2"));
    CHECK_THAT(read_error(dir, "ctl.st", craft(R"({"a\u0000b":)" + ok_entry + "}", 8)),
               Contains("ctl.st") && Contains("tensor name 'a\\x00b'") &&
                   Contains("control character"));
    // A long name is quoted cut short.
    const std::string long_name(3000, 'n');
    const std::string msg = read_error(
        dir, "long.st",
        craft(R"({")" + long_name + R"(":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}})", 8));
    CHECK_THAT(msg, Contains("unknown dtype") && Contains("... (3000 bytes)"));
    CHECK(msg.size() < 400);
  }
  SECTION("tensor byte ranges must tile the data section") {
    const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
    CHECK_THAT(
        read_error(dir, "overlap.st",
                   craft("{" + a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         12)),
        Contains("overlap.st") && Contains("tensors 'a' and 'b' overlap") &&
            Contains("begins at data byte 4 but 'a' ends at 8"));
    CHECK_THAT(
        read_error(dir, "gap.st",
                   craft("{" + a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                         20)),
        Contains("gap.st") && Contains("data bytes [8, 12) belong to no tensor") &&
            Contains("before tensor 'b'"));
    CHECK_THAT(read_error(dir, "tail.st", craft("{" + a + "}", 9)),
               Contains("tail.st") && Contains("data bytes [8, 9) after the last tensor"));
    CHECK_THAT(read_error(dir, "nodata.st", craft("{}", 3)),
               Contains("data bytes [0, 3) after the last tensor"));
    // Empty tensors take no bytes and may sit anywhere in the tiling.
    const std::string empty = R"("e":{"dtype":"F64","shape":[0,3],"data_offsets":[8,8]})";
    spit(dir.file("empty.st"), craft("{" + a + "," + empty + "}", 8));
    const SafetensorsFile f = SafetensorsFile::read(dir.file("empty.st"));
    CHECK(f.values<double>("e").empty());
    CHECK(f.values<float>("a").size() == 2);
  }
}

// ----------------------------------------------------------------------------------------------
// Atomic writes

TEST_CASE("safetensors: a failed write leaves the old file and no temporary file",
          "[io][safetensors]") {
  TempDir dir("nddr_io_test_");
  const std::string path = dir.file("model.safetensors");
  const std::vector<float> x = {1.0f, 2.0f, 3.0f};
  nddr::io::write_safetensors(path, {{"x", Dtype::kF32, {3}, x.data()}}, {{"step", "1"}});
  const std::string before = slurp(path);
  const std::vector<std::string> files = {"model.safetensors"};
  REQUIRE(dir.listing() == files);

  const auto fails_with = [&](const std::vector<nddr::io::SafetensorsEntry>& entries,
                              const std::string& what) {
    CHECK_THROWS_WITH(nddr::io::write_safetensors(path, entries, {{"step", "2"}}),
                      Contains(path) && Contains(what));
    CHECK(slurp(path) == before);
    CHECK(dir.listing() == files);
  };
  fails_with({{"x", Dtype::kF32, {3}, x.data()}, {"y", Dtype::kF32, {4}, nullptr}},
             "tensor 'y': data is null, expected 16 bytes for F32 shape (4)");
  fails_with({{"x", Dtype::kF32, {3, -1}, x.data()}}, "tensor 'x': shape (3, -1) has a negative");
  fails_with({{"x", Dtype::kF32, {3}, x.data()}, {"x", Dtype::kF32, {3}, x.data()}},
             "tensor 'x' appears twice");
  fails_with({{"__metadata__", Dtype::kF32, {3}, x.data()}}, "reserved");
  fails_with({{"", Dtype::kF32, {3}, x.data()}}, "reserved or empty");
  fails_with({{"x", Dtype::kF32, {1 << 30, 1 << 30, 1 << 30}, x.data()}}, "overflows");

  SECTION("a rename that fails removes the temporary file") {
    const std::string target = dir.file("occupied");
    fs::create_directories(fs::path(target) / "child");
    CHECK_THROWS_WITH(nddr::io::write_safetensors(target, {{"x", Dtype::kF32, {3}, x.data()}}),
                      Contains(target) && Contains("rename failed"));
    CHECK(dir.listing() == std::vector<std::string>{"model.safetensors", "occupied"});
    CHECK(fs::is_directory(fs::path(target) / "child"));
  }
  SECTION("an unwritable directory is reported") {
    const std::string nowhere = dir.file("no/such/dir/model.safetensors");
    CHECK_THROWS_WITH(nddr::io::write_safetensors(nowhere, {{"x", Dtype::kF32, {3}, x.data()}}),
                      Contains(nowhere) && Contains("cannot create temporary file"));
  }
  SECTION("a successful write replaces the file") {
    const std::vector<float> y = {4.0f, 5.0f};
    nddr::io::write_safetensors(path, {{"y", Dtype::kF32, {2}, y.data()}}, {{"step", "2"}});
    CHECK(dir.listing() == files);
    const SafetensorsFile f = SafetensorsFile::read(path);
    CHECK(f.names() == std::vector<std::string>{"y"});
    CHECK(f.metadata().at("step") == "2");
    CHECK(f.values<float>("y") == y);
  }
}
