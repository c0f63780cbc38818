#pragma once
/// \file
/// Reading TensorFlow V2 checkpoints ("tensor bundles") without TensorFlow: the `P.index` file
/// (a LevelDB-style SSTable mapping tensor names to serialized `BundleEntryProto`s, plus a
/// `BundleHeaderProto` under the empty key) and the data shards `P.data-SSSSS-of-NNNNN`
/// (raw little-endian, row-major tensor bytes). Layout details: docs/weights.md
/// "TensorFlow checkpoints".
///
/// `TfCheckpoint::open` validates the whole index before returning: the footer magic, every
/// block's trailer (type byte and masked CRC32C), every entry's varints and key prefix
/// compression, strictly increasing keys, the header (shard count, byte order, version) and
/// every tensor entry (dtype, shape, shard, byte range inside its shard, size matching dtype
/// and shape). Tensor data is read on request and its CRC32C checked. Every failure throws
/// `nddr::IoError` naming the file, the tensor or field, and what was expected (with the byte
/// offset for corrupt bytes).
///
/// Example:
///   auto ckpt = nddr::io::TfCheckpoint::open("model.ckpt-20000");  // or
///   ".../model.ckpt-20000.index" for (const std::string& name : ckpt.names()) std::cout << name <<
///   "\n"; const nddr::io::TfTensorInfo& i = ckpt.info("vgg_16/conv1/conv1_1/weights");  // HWIO
///   shape nddr::Tensor<float> w = ckpt.tensor<float>("vgg_16/conv1/conv1_1/weights");

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/safetensors.hpp"

namespace nddr::io {

namespace detail {

inline constexpr std::string_view kTfWho = "nddr::io::TfCheckpoint";

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as LevelDB and TensorFlow use it.
inline std::uint32_t crc32c_extend(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  static constexpr std::array<std::uint32_t, 256> kTable = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = kTable[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

inline std::uint32_t crc32c(const unsigned char* p, std::size_t n) {
  return crc32c_extend(0, p, n);
}

// TF stores CRCs "masked" (tensorflow/core/lib/hash/crc32c.h) so that a CRC of data that
// itself holds CRCs stays well distributed.
inline constexpr std::uint32_t kCrcMaskDelta = 0xa282ead8u;
inline std::uint32_t crc32c_mask(std::uint32_t c) {
  return ((c >> 15) | (c << 17)) + kCrcMaskDelta;
}
inline std::uint32_t crc32c_unmask(std::uint32_t m) {
  const std::uint32_t r = m - kCrcMaskDelta;
  return (r >> 17) | (r << 15);
}

inline constexpr std::size_t kSstFooterBytes = 48;  // two padded BlockHandles + 8-byte magic
inline constexpr std::size_t kSstTrailerBytes = 5;  // type byte + masked CRC32C
inline constexpr std::uint64_t kSstMagic = 0xdb4775248b80fb57ull;

// A byte range [pos, end) of an in-memory file, decoded front to back; every read is bounds
// checked and a failure names the file, what was being decoded and the absolute file offset.
class ByteReader {
 public:
  ByteReader(const std::string& path, const std::vector<unsigned char>& bytes, std::size_t pos,
             std::size_t end, std::string what)
      : path_(path), bytes_(bytes), pos_(pos), end_(end), what_(std::move(what)) {}

  bool done() const { return pos_ >= end_; }
  std::size_t pos() const { return pos_; }
  std::size_t left() const { return end_ - pos_; }

  std::uint64_t varint64(std::string_view field) {
    const std::size_t start = pos_;
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= end_) fail_at(start, field, ": varint runs past the end of its ", what_);
      const unsigned char b = bytes_[pos_++];
      if (shift == 63 && b > 1) fail_at(start, field, ": varint overflows 64 bits");
      v |= static_cast<std::uint64_t>(b & 0x7Fu) << shift;
      if ((b & 0x80u) == 0) return v;
    }
    fail_at(start, field, ": varint longer than 10 bytes");
  }

  std::uint32_t varint32(std::string_view field) {
    const std::size_t start = pos_;
    const std::uint64_t v = varint64(field);
    if (v > std::numeric_limits<std::uint32_t>::max())
      fail_at(start, field, ": value ", v, " does not fit 32 bits");
    return static_cast<std::uint32_t>(v);
  }

  std::uint32_t fixed32(std::string_view field) {
    if (left() < 4) fail_at(pos_, field, ": 4-byte integer runs past the end of its ", what_);
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(bytes_[pos_ + i]) << (8 * i);
    pos_ += 4;
    return v;
  }

  // `n` bytes as [begin, end) file offsets.
  std::pair<std::size_t, std::size_t> span(std::uint64_t n, std::string_view field) {
    if (n > left())
      fail_at(pos_, field, ": length ", n, " runs past the end of its ", what_, " (", left(),
              " bytes left)");
    const std::size_t begin = pos_;
    pos_ += static_cast<std::size_t>(n);
    return {begin, pos_};
  }

  void skip(std::size_t n) { pos_ += n; }

  template <class... Args>
  [[noreturn]] void fail_at(std::size_t offset, Args&&... args) const {
    throw IoError(nddr::detail::concat(kTfWho, ": '", path_, "': ", what_, ": ",
                                       std::forward<Args>(args)..., " (at byte ", offset, ")"));
  }

 private:
  const std::string& path_;
  const std::vector<unsigned char>& bytes_;
  std::size_t pos_;
  std::size_t end_;
  std::string what_;
};

// Protobuf wire format (proto3): a tag varint (field << 3 | wire type) then the value.
struct ProtoField {
  std::uint32_t number = 0;
  std::uint32_t wire = 0;
  std::size_t at = 0;  // file offset of the tag
};

inline ProtoField next_field(ByteReader& r) {
  ProtoField f;
  f.at = r.pos();
  const std::uint64_t tag = r.varint64("field tag");
  f.number = static_cast<std::uint32_t>(std::min<std::uint64_t>(tag >> 3, 0xFFFFFFFFu));
  f.wire = static_cast<std::uint32_t>(tag & 7u);
  if (f.number == 0) r.fail_at(f.at, "field number 0 (not a protobuf message)");
  return f;
}

inline void skip_field(ByteReader& r, const ProtoField& f) {
  switch (f.wire) {
    case 0:
      r.varint64("unknown varint field");
      return;
    case 1:
      r.span(8, "unknown 64-bit field");
      return;
    case 2:
      r.span(r.varint64("unknown field length"), "unknown length-delimited field");
      return;
    case 5:
      r.span(4, "unknown 32-bit field");
      return;
    default:
      r.fail_at(f.at, "field ", f.number, " has wire type ", f.wire,
                ", expected 0, 1, 2 or 5 (groups are not used by TensorFlow bundles)");
  }
}

inline void expect_wire(ByteReader& r, const ProtoField& f, std::uint32_t wire,
                        std::string_view field) {
  if (f.wire != wire)
    r.fail_at(f.at, "field ", f.number, " (", field, ") has wire type ", f.wire, ", expected ",
              wire);
}

// A proto int64 (two's complement in a 64-bit varint) that must be >= 0.
inline std::uint64_t proto_non_negative(ByteReader& r, std::string_view field) {
  const std::size_t at = r.pos();
  const std::uint64_t v = r.varint64(field);
  if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    r.fail_at(at, field, " is negative (", static_cast<std::int64_t>(v), "), expected >= 0");
  return v;
}

// TF DataType values (tensorflow/core/framework/types.proto) nddr reads, as nddr dtypes.
inline std::optional<Dtype> dtype_from_tf(int tf_dtype) {
  switch (tf_dtype) {
    case 1:
      return Dtype::kF32;
    case 2:
      return Dtype::kF64;
    case 3:
      return Dtype::kI32;
    case 9:
      return Dtype::kI64;
    case 14:
      return Dtype::kBF16;
    case 19:
      return Dtype::kF16;
    default:
      return std::nullopt;
  }
}

inline std::string tf_dtype_name(int tf_dtype) {
  switch (tf_dtype) {
    case 1:
      return "DT_FLOAT";
    case 2:
      return "DT_DOUBLE";
    case 3:
      return "DT_INT32";
    case 4:
      return "DT_UINT8";
    case 5:
      return "DT_INT16";
    case 6:
      return "DT_INT8";
    case 7:
      return "DT_STRING";
    case 9:
      return "DT_INT64";
    case 10:
      return "DT_BOOL";
    case 14:
      return "DT_BFLOAT16";
    case 19:
      return "DT_HALF";
    default:
      return "DataType " + std::to_string(tf_dtype);
  }
}

// "P.data-00003-of-00008" (TF's "%s.data-%05d-of-%05d").
inline std::string tf_shard_path(const std::string& prefix, std::int64_t shard,
                                 std::int64_t count) {
  auto pad = [](std::int64_t v) {
    std::string s = std::to_string(v);
    return s.size() < 5 ? std::string(5 - s.size(), '0') + s : s;
  };
  return prefix + ".data-" + pad(shard) + "-of-" + pad(count);
}

inline bool ends_with_sst_magic(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  try {
    const RegularFile f = open_regular_file(kTfWho, path);
    if (f.size < kSstFooterBytes) return false;
    unsigned char m[8];
    read_exact_at(kTfWho, path, f.fd.get(), f.size - 8, m, 8);
    return load_le_bits<std::uint64_t>(m) == kSstMagic;
  } catch (const IoError&) {
    return false;
  }
}

}  // namespace detail

/// What the index says about one tensor of a TensorFlow checkpoint.
struct TfTensorInfo {
  int tf_dtype = 0;                 ///< TF `DataType` value (1 DT_FLOAT, 2 DT_DOUBLE, ...)
  std::optional<Dtype> dtype;       ///< the nddr dtype, nullopt when nddr cannot read it
  std::vector<std::int64_t> shape;  ///< TF order (outermost first); conv kernels are HWIO
  std::int64_t numel = 0;
  std::int32_t shard_id = 0;  ///< which `.data-*` file
  std::uint64_t offset = 0;   ///< byte offset in that file
  std::uint64_t size = 0;     ///< byte length
  std::uint32_t crc32c = 0;   ///< unmasked CRC32C of the bytes
  bool partitioned = false;   ///< stored as slices (not supported)

  /// "DT_FLOAT", "DT_HALF", ..., or "DataType N".
  std::string dtype_name() const { return detail::tf_dtype_name(tf_dtype); }
};

namespace detail {

// The string of a text-format proto field `key: "..."` on `line`, C escapes undone, or nullopt
// when the line is another field. IoError (via `fail_line`) for a malformed value.
inline std::optional<std::string> quoted_field(const TextLineReader& in, std::string_view line,
                                               std::string_view key) {
  const std::size_t start = line.find_first_not_of(" \t");
  if (start == std::string_view::npos || !line.substr(start).starts_with(key)) return std::nullopt;
  std::string_view rest = line.substr(start + key.size());
  const std::size_t colon = rest.find_first_not_of(" \t");
  if (colon == std::string_view::npos || rest[colon] != ':') return std::nullopt;
  rest.remove_prefix(colon + 1);
  rest.remove_prefix(std::min(rest.size(), rest.find_first_not_of(" \t")));
  if (rest.size() < 2 || rest.front() != '"' || rest.back() != '"')
    in.fail_line(in.line_number(), key, ": expected a double-quoted string, got '", excerpt(rest),
                 "'");
  rest = rest.substr(1, rest.size() - 2);
  const auto octal = [](char c) { return c >= '0' && c <= '7'; };  // \NNN: one byte
  std::string out;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] != '\\') {
      out += rest[i];
      continue;
    }
    const char e = i + 1 < rest.size() ? rest[++i] : '\0';
    if (e == '"' || e == '\\' || e == '\'') {
      out += e;
    } else if (e == 'n') {
      out += '\n';
    } else if (e == 't') {
      out += '\t';
    } else if (i + 2 < rest.size() && octal(e) && octal(rest[i + 1]) && octal(rest[i + 2])) {
      out += static_cast<char>(((e - '0') << 6) | ((rest[i + 1] - '0') << 3) | (rest[i + 2] - '0'));
      i += 2;
    } else {
      in.fail_line(in.line_number(), key, ": unsupported escape in '", excerpt(rest), "'");
    }
  }
  return out;
}

}  // namespace detail

/// The prefix of the newest checkpoint in directory `dir`, as its `checkpoint` file (text-format
/// CheckpointState, written by TensorFlow's savers) names it in `model_checkpoint_path`. A
/// relative path is taken relative to `dir`; an absolute path that no longer holds the
/// checkpoint (a directory moved or copied from another machine) is looked up in `dir` by its
/// file name. IoError naming the file when it is missing or malformed, or when neither place
/// holds `<prefix>.index`.
inline std::string latest_tf_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string state = (fs::path(dir) / "checkpoint").string();
  std::error_code ec;
  if (!fs::exists(state, ec))
    throw IoError(nddr::detail::concat(detail::kTfWho, ": '", dir,
                                       "': no 'checkpoint' file naming the latest checkpoint; "
                                       "pass the checkpoint's prefix instead"));
  TextLineReader in(
      detail::kTfWho, state,
      TextLimits{.max_line_bytes = 1 << 16, .max_file_bytes = std::uint64_t{1} << 24});
  std::string line;
  std::optional<std::string> path;
  while (!path && in.next(line)) path = detail::quoted_field(in, line, "model_checkpoint_path");
  if (!path || path->empty())
    throw IoError(nddr::detail::concat(detail::kTfWho, ": '", state,
                                       "': no model_checkpoint_path line, expected "
                                       "'model_checkpoint_path: \"<prefix>\"'"));
  const fs::path p(*path);
  const std::string here = (p.is_absolute() ? p : fs::path(dir) / p).string();
  if (fs::exists(here + ".index", ec)) return here;
  const std::string moved = (fs::path(dir) / p.filename()).string();
  if (p.is_absolute() && fs::exists(moved + ".index", ec)) return moved;
  throw IoError(nddr::detail::concat(
      detail::kTfWho, ": '", state, "': names checkpoint '", excerpt(*path, 200), "', but '", here,
      ".index' does not exist", p.is_absolute() ? " (nor '" + moved + ".index')" : ""));
}

/// A TensorFlow V2 checkpoint opened for reading (see the file comment for what is checked).
///
/// Readable dtypes: DT_FLOAT, DT_DOUBLE, DT_BFLOAT16, DT_HALF, DT_INT32, DT_INT64. Entries of
/// other dtypes (the DT_STRING object graph of `tf.train.Checkpoint`, ...) are listed by
/// `names()` and described by `info()`, but reading them throws. Refused at `open`: a V1
/// checkpoint (no `.index`), a missing or short shard, Snappy-compressed index blocks (TF
/// never writes them for bundles), big-endian tensor data, a bundle version this reader does
/// not accept.
class TfCheckpoint {
 public:
  /// Opens the checkpoint with prefix `prefix` (the path without `.index`; a path ending in
  /// `.index` is taken as the index itself; a directory means its latest checkpoint, see
  /// `latest_tf_checkpoint`). Validates the index and the shards' sizes.
  static TfCheckpoint open(const std::string& prefix) {
    TfCheckpoint c;
    std::error_code ec;
    c.prefix_ = std::filesystem::is_directory(prefix, ec) ? latest_tf_checkpoint(prefix) : prefix;
    if (c.prefix_.size() > 6 && c.prefix_.ends_with(".index"))
      c.prefix_.resize(c.prefix_.size() - 6);
    c.index_path_ = c.prefix_ + ".index";
    c.refuse_if_not_v2();
    c.read_index();
    c.open_shards();
    return c;
  }

  /// Tensor names in the index's (bytewise) order, without the header entry.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }

  bool contains(std::string_view name) const { return entries_.find(name) != entries_.end(); }

  /// The index entry of tensor `name`; IoError listing some names when there is none.
  const TfTensorInfo& info(std::string_view name) const {
    const auto it = entries_.find(name);
    if (it != entries_.end()) return it->second;
    std::vector<std::string> some;
    for (const auto& kv : entries_) {
      if (some.size() == 8) break;
      some.push_back(kv.first);
    }
    std::string list;
    for (const std::string& s : some) list += (list.empty() ? "'" : ", '") + excerpt(s) + "'";
    if (entries_.size() > some.size()) list += ", ...";
    fail(index_path_, "no tensor named '", excerpt(name), "'; the checkpoint has ", entries_.size(),
         " tensors", list.empty() ? "" : ": ", list);
  }

  /// Elements of tensor `name`, row-major over its TF shape, converted to `T`: floating `T`
  /// from any readable dtype (DT_BFLOAT16 and DT_HALF widened exactly), integer `T` from
  /// DT_INT32 / DT_INT64 only, every value checked against `T`'s range. The bytes' CRC32C is
  /// checked against the index first.
  template <class T>
  std::vector<T> values(std::string_view name) const {
    static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>,
                  "nddr::io::TfCheckpoint::values: T must be a floating or integer type");
    const TfTensorInfo& e = info(name);
    const std::vector<unsigned char> bytes = read_bytes(name, e);
    std::vector<T> out(static_cast<std::size_t>(e.numel));
    const Dtype d = *e.dtype;
    if constexpr (std::is_floating_point_v<T>) {
      for (std::size_t i = 0; i < out.size(); ++i)
        out[i] = detail::load_element<T>(d, bytes.data(), i);
    } else {
      if (detail::is_floating(d))
        fail(data_path(e), "tensor '", excerpt(name), "' is ", e.dtype_name(),
             ", expected DT_INT32 or DT_INT64 for an integer element type");
      for (std::size_t i = 0; i < out.size(); ++i) {
        const auto v = detail::load_element<std::int64_t>(d, bytes.data(), i);
        if (!std::in_range<T>(v))
          fail(data_path(e), "tensor '", excerpt(name), "' element ", i, " is ", v,
               ", outside the range of the requested integer type");
        out[i] = static_cast<T>(v);
      }
    }
    return out;
  }

  /// Tensor `name` (rank 0 to 4, TF order: a conv kernel stays HWIO) as an owning CPU tensor.
  template <class T>
  Tensor<T, Cpu> tensor(std::string_view name) const {
    const TfTensorInfo& e = info(name);
    if (e.shape.size() > static_cast<std::size_t>(Shape::kMaxRank))
      fail(index_path_, "tensor '", excerpt(name), "' has shape ", detail::shape_str(e.shape),
           ", expected rank 0 to ", Shape::kMaxRank, " for nddr::Tensor (use values<T>())");
    const std::vector<T> v = values<T>(name);
    const std::vector<std::int64_t>& d = e.shape;
    const std::size_t rank = d.size();
    Tensor<T, Cpu> t(rank == 0   ? Shape{}
                     : rank == 1 ? Shape{d[0]}
                     : rank == 2 ? Shape{d[0], d[1]}
                     : rank == 3 ? Shape{d[0], d[1], d[2]}
                                 : Shape{d[0], d[1], d[2], d[3]});
    std::copy(v.begin(), v.end(), t.data());
    return t;
  }

  /// The prefix (without `.index`).
  const std::string& prefix() const { return prefix_; }
  /// Number of `.data` shards (the header's num_shards).
  std::int32_t num_shards() const { return num_shards_; }

 private:
  template <class... Args>
  [[noreturn]] static void fail(const std::string& path, Args&&... args) {
    throw IoError(
        nddr::detail::concat(detail::kTfWho, ": '", path, "': ", std::forward<Args>(args)...));
  }

  std::string data_path(const TfTensorInfo& e) const {
    return detail::tf_shard_path(prefix_, e.shard_id, num_shards_);
  }

  // V1 checkpoints have no `.index`: the prefix (or `P-00000-of-N`) is itself an SSTable.
  void refuse_if_not_v2() const {
    std::error_code ec;
    if (std::filesystem::exists(index_path_, ec)) return;
    const std::string v1_shard = prefix_ + "-00000-of-00001";
    if (detail::ends_with_sst_magic(prefix_) || detail::ends_with_sst_magic(v1_shard))
      fail(prefix_, "is a TensorFlow V1 checkpoint (no '", index_path_,
           "'); only the V2 format is supported: re-save it with "
           "tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V2)");
    if (std::filesystem::exists(prefix_ + ".meta", ec))
      fail(index_path_, "does not exist (only '", prefix_,
           ".meta' is there: a graph without variables, or the .index was not copied)");
    fail(index_path_,
         "does not exist, expected the index of a TensorFlow V2 checkpoint with "
         "prefix '",
         prefix_, "'");
  }

  void read_index() {
    // Bundle indexes are a few KB to a few MB; 1 GiB bounds a hostile one.
    const std::vector<unsigned char> bytes =
        read_regular_file(detail::kTfWho, index_path_, std::uint64_t{1} << 30);
    if (bytes.size() < detail::kSstFooterBytes)
      fail(index_path_, "is ", bytes.size(), " bytes, shorter than the ", detail::kSstFooterBytes,
           "-byte SSTable footer (truncated, or not a checkpoint index)");
    const std::size_t footer = bytes.size() - detail::kSstFooterBytes;
    const auto magic = detail::load_le_bits<std::uint64_t>(bytes.data() + bytes.size() - 8);
    if (magic != detail::kSstMagic)
      fail(index_path_, "the last 8 bytes (at byte ", bytes.size() - 8,
           ") are not the SSTable magic 57 fb 80 8b 24 75 47 db (truncated, or not a "
           "checkpoint index)");
    detail::ByteReader f(index_path_, bytes, footer, footer + 40, "footer");
    const Handle metaindex{f.varint64("metaindex offset"), f.varint64("metaindex size")};
    const Handle index{f.varint64("index offset"), f.varint64("index size")};
    // The metaindex is empty in TF tables (no filters); its trailer is still checked.
    block(bytes, metaindex, footer, "metaindex block");
    const auto [ib, ie] = block(bytes, index, footer, "index block");
    std::string key;
    bool first = true;
    for_each_entry(
        bytes, ib, ie, "index block", [&](std::string_view sep, std::size_t vb, std::size_t ve) {
          detail::ByteReader h(index_path_, bytes, vb, ve,
                               "index block entry '" + excerpt(sep) + "'");
          const Handle data{h.varint64("block offset"), h.varint64("block size")};
          const auto [db, de] =
              block(bytes, data, footer, "data block at byte " + std::to_string(data.offset));
          for_each_entry(bytes, db, de, "data block at byte " + std::to_string(data.offset),
                         [&](std::string_view k, std::size_t kb, std::size_t ke) {
                           if (!first && !(key < k))
                             fail(index_path_, "key '", excerpt(k), "' (value at byte ", kb,
                                  ") does not follow '", excerpt(key),
                                  "' in increasing order (corrupt index)");
                           if (first && !k.empty())
                             fail(index_path_, "first key is '", excerpt(k),
                                  "', expected the empty key of the BundleHeaderProto (not a V2 "
                                  "checkpoint index)");
                           key.assign(k);
                           if (first) {
                             read_header(bytes, kb, ke);
                           } else {
                             add_entry(bytes, key, kb, ke);
                           }
                           first = false;
                         });
        });
    if (first) fail(index_path_, "holds no entries, expected at least the header entry");
  }

  struct Handle {
    std::uint64_t offset;
    std::uint64_t size;
  };

  // Checks block `h` (in bounds, trailer type 0, CRC) and returns its [begin, end) offsets.
  std::pair<std::size_t, std::size_t> block(const std::vector<unsigned char>& bytes, Handle h,
                                            std::size_t limit, const std::string& what) const {
    if (h.offset > limit || h.size > limit - h.offset ||
        detail::kSstTrailerBytes > limit - h.offset - h.size)
      fail(index_path_, what, ": block handle (offset ", h.offset, ", size ", h.size,
           " + 5-byte trailer) reaches past byte ", limit, " where the footer starts");
    const auto b = static_cast<std::size_t>(h.offset);
    const auto e = static_cast<std::size_t>(h.offset + h.size);
    const unsigned char type = bytes[e];
    if (type == 1)
      fail(index_path_, what, ": Snappy-compressed block (type byte 1 at byte ", e,
           "), which this reader does not decompress; TensorFlow writes bundle indexes "
           "uncompressed");
    if (type != 0)
      fail(index_path_, what, ": block type byte ", static_cast<int>(type), " at byte ", e,
           ", expected 0 (uncompressed)");
    const auto stored = detail::load_le_bits<std::uint32_t>(bytes.data() + e + 1);
    const std::uint32_t actual = detail::crc32c(bytes.data() + b, h.size + 1);
    if (detail::crc32c_unmask(stored) != actual)
      fail(index_path_, what, ": CRC32C mismatch (bytes ", b, " to ", e, " hash to ", actual,
           ", the trailer at byte ", e + 1, " says ", detail::crc32c_unmask(stored),
           "): corrupt file");
    return {b, e};
  }

  // Calls fn(key, value_begin, value_end) for every entry of the block [b, e), undoing the
  // key prefix compression; checks the restart array.
  template <class Fn>
  void for_each_entry(const std::vector<unsigned char>& bytes, std::size_t b, std::size_t e,
                      const std::string& what, Fn&& fn) const {
    if (e - b < 4)
      fail(index_path_, what, ": ", e - b, " bytes at byte ", b,
           ", expected at least 4 (the restart count)");
    const auto restarts = detail::load_le_bits<std::uint32_t>(bytes.data() + e - 4);
    if (restarts == 0 || restarts > (e - b - 4) / 4)
      fail(index_path_, what, ": restart count ", restarts, " at byte ", e - 4,
           " does not fit the block of ", e - b, " bytes");
    const std::size_t limit = e - 4 * (static_cast<std::size_t>(restarts) + 1);
    std::uint32_t previous = 0;
    for (std::uint32_t i = 0; i < restarts; ++i) {
      const std::size_t at = limit + 4 * i;
      const auto r = detail::load_le_bits<std::uint32_t>(bytes.data() + at);
      if ((i == 0 && r != 0) || (i > 0 && r <= previous) || (r > 0 && r >= limit - b))
        fail(index_path_, what, ": restart point ", i, " = ", r, " at byte ", at,
             " is out of order or outside the ", limit - b, " bytes of entries");
      previous = r;
    }
    detail::ByteReader r(index_path_, bytes, b, limit, what);
    std::string key;
    while (!r.done()) {
      const std::size_t at = r.pos();
      const std::uint32_t shared = r.varint32("shared key length");
      const std::uint32_t non_shared = r.varint32("unshared key length");
      const std::uint32_t value_len = r.varint32("value length");
      if (shared > key.size())
        r.fail_at(at, "entry shares ", shared, " key bytes with a previous key of ", key.size());
      const auto [kb, ke] = r.span(non_shared, "key");
      key.resize(shared);
      key.append(reinterpret_cast<const char*>(bytes.data() + kb), ke - kb);
      if (value_len > r.left())  // checked here to name the key without a string per entry
        r.fail_at(r.pos(), "value of '", excerpt(key), "': length ", value_len,
                  " runs past the end of the block (", r.left(), " bytes left)");
      const auto [vb, ve] = r.span(value_len, "value");
      fn(std::string_view(key), vb, ve);
    }
  }

  void read_header(const std::vector<unsigned char>& bytes, std::size_t b, std::size_t e) {
    detail::ByteReader r(index_path_, bytes, b, e, "header entry (BundleHeaderProto)");
    std::int64_t shards = 0;
    while (!r.done()) {
      const detail::ProtoField f = detail::next_field(r);
      if (f.number == 1) {
        detail::expect_wire(r, f, 0, "num_shards");
        shards = static_cast<std::int64_t>(r.varint64("num_shards"));
      } else if (f.number == 2) {
        detail::expect_wire(r, f, 0, "endianness");
        const std::uint64_t endian = r.varint64("endianness");
        if (endian != 0)
          r.fail_at(f.at, "endianness ", endian,
                    " (BIG); only little-endian tensor data is supported");
      } else if (f.number == 3) {
        detail::expect_wire(r, f, 2, "version");
        const auto [vb, ve] = r.span(r.varint64("version length"), "version");
        read_version(bytes, vb, ve);
      } else {
        detail::skip_field(r, f);
      }
    }
    // 2^16 shards bounds the files opened for a hostile header; TF uses one per device.
    if (shards < 1 || shards > 65536)
      fail(index_path_, "header entry: num_shards is ", shards, ", expected 1 to 65536");
    num_shards_ = static_cast<std::int32_t>(shards);
  }

  // VersionDef: producer 1, min_consumer 2, bad_consumers 3. This reader is consumer version 1.
  void read_version(const std::vector<unsigned char>& bytes, std::size_t b, std::size_t e) const {
    detail::ByteReader r(index_path_, bytes, b, e, "header entry version (VersionDef)");
    while (!r.done()) {
      const detail::ProtoField f = detail::next_field(r);
      if (f.number == 2 || f.number == 3) {
        if (f.number == 3 && f.wire == 2) {  // packed repeated
          const auto [pb, pe] = r.span(r.varint64("bad_consumers length"), "bad_consumers");
          detail::ByteReader p(index_path_, bytes, pb, pe, "header entry bad_consumers");
          while (!p.done())
            if (static_cast<std::int64_t>(p.varint64("bad_consumers")) == 1)
              p.fail_at(pb, "bad_consumers lists version 1, which this reader implements");
          continue;
        }
        detail::expect_wire(r, f, 0, f.number == 2 ? "min_consumer" : "bad_consumers");
        const auto v = static_cast<std::int64_t>(r.varint64("version field"));
        if (f.number == 2 && v > 1)
          r.fail_at(f.at, "min_consumer is ", v,
                    ", expected <= 1 (written by a newer TensorFlow bundle format)");
        if (f.number == 3 && v == 1)
          r.fail_at(f.at, "bad_consumers lists version 1, which this reader implements");
      } else {
        detail::skip_field(r, f);
      }
    }
  }

  void add_entry(const std::vector<unsigned char>& bytes, const std::string& key, std::size_t b,
                 std::size_t e) {
    // Slices of partitioned variables live under binary keys starting with NUL; their
    // full-tensor entry is marked partitioned below.
    if (key.front() == '\0') return;
    const std::string what = "tensor '" + excerpt(key) + "' (BundleEntryProto)";
    detail::ByteReader r(index_path_, bytes, b, e, what);
    TfTensorInfo t;
    bool has_dtype = false;
    while (!r.done()) {
      const detail::ProtoField f = detail::next_field(r);
      switch (f.number) {
        case 1: {
          detail::expect_wire(r, f, 0, "dtype");
          const std::uint64_t d = r.varint64("dtype");
          if (d > 1000) r.fail_at(f.at, "dtype ", d, " is not a TensorFlow DataType");
          t.tf_dtype = static_cast<int>(d);
          has_dtype = true;
          break;
        }
        case 2: {
          detail::expect_wire(r, f, 2, "shape");
          const auto [sb, se] = r.span(r.varint64("shape length"), "shape");
          t.shape = read_shape(bytes, sb, se, what);
          break;
        }
        case 3: {
          detail::expect_wire(r, f, 0, "shard_id");
          const std::uint64_t s = r.varint64("shard_id");
          if (s >= static_cast<std::uint64_t>(num_shards_))
            r.fail_at(f.at, "shard_id ", static_cast<std::int64_t>(s), ", expected 0 to ",
                      num_shards_ - 1, " (num_shards is ", num_shards_, ")");
          t.shard_id = static_cast<std::int32_t>(s);
          break;
        }
        case 4:
          detail::expect_wire(r, f, 0, "offset");
          t.offset = detail::proto_non_negative(r, "offset");
          break;
        case 5:
          detail::expect_wire(r, f, 0, "size");
          t.size = detail::proto_non_negative(r, "size");
          break;
        case 6:
          detail::expect_wire(r, f, 5, "crc32c");
          t.crc32c = detail::crc32c_unmask(r.fixed32("crc32c"));
          break;
        case 7:
          detail::skip_field(r, f);
          t.partitioned = true;
          break;
        default:
          detail::skip_field(r, f);
      }
    }
    if (!has_dtype) fail(index_path_, what, ": no dtype field");
    const std::optional<std::int64_t> numel = detail::checked_numel(t.shape);
    if (!numel || *numel > std::numeric_limits<std::int64_t>::max() / 8)
      fail(index_path_, what, ": shape ", detail::shape_str(t.shape),
           " overflows the element count");
    t.numel = *numel;
    t.dtype = detail::dtype_from_tf(t.tf_dtype);
    if (t.dtype && !t.partitioned &&
        t.size != static_cast<std::uint64_t>(t.numel) * dtype_size(*t.dtype))
      fail(index_path_, what, ": size ", t.size, " bytes, expected ",
           static_cast<std::uint64_t>(t.numel) * dtype_size(*t.dtype), " for ", t.dtype_name(),
           " shape ", detail::shape_str(t.shape));
    entries_.emplace(key, std::move(t));
  }

  std::vector<std::int64_t> read_shape(const std::vector<unsigned char>& bytes, std::size_t b,
                                       std::size_t e, const std::string& what) const {
    detail::ByteReader r(index_path_, bytes, b, e, what + " shape (TensorShapeProto)");
    std::vector<std::int64_t> shape;
    while (!r.done()) {
      const detail::ProtoField f = detail::next_field(r);
      if (f.number == 2) {
        detail::expect_wire(r, f, 2, "dim");
        const auto [db, de] = r.span(r.varint64("dim length"), "dim");
        detail::ByteReader d(index_path_, bytes, db, de,
                             what + " shape dim " + std::to_string(shape.size()));
        std::int64_t size = 0;
        while (!d.done()) {
          const detail::ProtoField g = detail::next_field(d);
          if (g.number == 1) {
            detail::expect_wire(d, g, 0, "size");
            size = static_cast<std::int64_t>(detail::proto_non_negative(d, "size"));
          } else {
            detail::skip_field(d, g);
          }
        }
        // A hostile shape of millions of dims fails on its element count, not on memory:
        // every dim costs at least 2 bytes of the (bounded) index.
        shape.push_back(size);
      } else if (f.number == 3) {
        detail::expect_wire(r, f, 0, "unknown_rank");
        if (r.varint64("unknown_rank") != 0)
          r.fail_at(f.at, "unknown_rank is set, expected a fully defined shape");
      } else {
        detail::skip_field(r, f);
      }
    }
    return shape;
  }

  // Opens every shard and checks that each tensor's byte range lies inside its shard.
  void open_shards() {
    for (std::int32_t s = 0; s < num_shards_; ++s) {
      const std::string path = detail::tf_shard_path(prefix_, s, num_shards_);
      std::error_code ec;
      if (!std::filesystem::exists(path, ec))
        fail(path, "data shard ", s, " of ", num_shards_, " named by '", index_path_,
             "' does not exist");
      shards_.push_back(open_regular_file(detail::kTfWho, path));
    }
    for (const auto& [name, t] : entries_) {
      if (t.partitioned || !t.dtype) continue;
      const std::uint64_t size = shards_[static_cast<std::size_t>(t.shard_id)].size;
      if (t.offset > size || t.size > size - t.offset)
        fail(data_path(t), "tensor '", excerpt(name), "': bytes [", t.offset, ", ",
             t.offset + t.size, ") named by the index reach past the end of the shard (", size,
             " bytes; truncated shard, or an index for other data)");
    }
  }

  std::vector<unsigned char> read_bytes(std::string_view name, const TfTensorInfo& e) const {
    if (e.partitioned)
      fail(index_path_, "tensor '", excerpt(name),
           "' is a partitioned variable (stored as slices), which is not supported");
    if (!e.dtype)
      fail(index_path_, "tensor '", excerpt(name), "' has dtype ", e.dtype_name(),
           ", expected DT_FLOAT, DT_DOUBLE, DT_BFLOAT16, DT_HALF, DT_INT32 or DT_INT64");
    const std::string path = data_path(e);
    const RegularFile& f = shards_[static_cast<std::size_t>(e.shard_id)];
    std::vector<unsigned char> bytes(static_cast<std::size_t>(e.size));
    read_exact_at(detail::kTfWho, path, f.fd.get(), e.offset, bytes.data(), bytes.size());
    const std::uint32_t actual = detail::crc32c(bytes.data(), bytes.size());
    if (actual != e.crc32c)
      fail(path, "tensor '", excerpt(name), "': CRC32C mismatch over bytes [", e.offset, ", ",
           e.offset + e.size, "): the data hash to ", actual, ", the index says ", e.crc32c,
           " (corrupt shard)");
    return bytes;
  }

  std::string prefix_;
  std::string index_path_;
  std::int32_t num_shards_ = 0;
  std::map<std::string, TfTensorInfo, std::less<>> entries_;
  std::vector<RegularFile> shards_;
};

}  // namespace nddr::io
