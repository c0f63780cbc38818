#pragma once
// Test support: writes TensorFlow V2 bundle indexes byte by byte (an SSTable of serialized
// protos), so tests can build the cases TensorFlow never writes (several data blocks, Snappy
// blocks, big-endian headers, bad entries) with valid block checksums. Layout as in
// docs/weights.md "TensorFlow checkpoints"; nddr::io::TfCheckpoint reads it.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nddr/io/tf_checkpoint.hpp"

namespace nddr_test::tf {

using Entries = std::vector<std::pair<std::string, std::string>>;

inline std::string varint(std::uint64_t v) {
  std::string s;
  while (v >= 0x80) {
    s += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  s += static_cast<char>(v);
  return s;
}

inline std::string fixed32(std::uint32_t v) {
  std::string s;
  for (int i = 0; i < 4; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

// Protobuf fields: varint (wire 0), length-delimited (wire 2), fixed32 (wire 5).
inline std::string pb_varint(int field, std::uint64_t v) { return varint(field << 3) + varint(v); }
inline std::string pb_bytes(int field, const std::string& b) {
  return varint((field << 3) | 2) + varint(b.size()) + b;
}
inline std::string pb_fixed32(int field, std::uint32_t v) {
  return varint((field << 3) | 5) + fixed32(v);
}

/// BundleHeaderProto { num_shards, endianness, version { producer 1, min_consumer } }.
inline std::string header(std::int64_t shards, int endianness = 0, int min_consumer = 0) {
  std::string h = pb_varint(1, static_cast<std::uint64_t>(shards));
  if (endianness != 0) h += pb_varint(2, static_cast<std::uint64_t>(endianness));
  std::string version = pb_varint(1, 1);
  if (min_consumer != 0) version += pb_varint(2, static_cast<std::uint64_t>(min_consumer));
  return h + pb_bytes(3, version);
}

/// BundleEntryProto for `bytes` at `offset` of shard `shard`, crc32c computed (masked).
inline std::string entry(int dtype, const std::vector<std::int64_t>& shape, std::uint64_t offset,
                         const std::string& bytes, int shard = 0) {
  std::string s;
  for (std::int64_t d : shape) s += pb_bytes(2, pb_varint(1, static_cast<std::uint64_t>(d)));
  std::string e = pb_varint(1, static_cast<std::uint64_t>(dtype)) + pb_bytes(2, s);
  if (shard != 0) e += pb_varint(3, static_cast<std::uint64_t>(shard));
  if (offset != 0) e += pb_varint(4, offset);
  if (!bytes.empty()) e += pb_varint(5, bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  return e +
         pb_fixed32(6, nddr::io::detail::crc32c_mask(nddr::io::detail::crc32c(p, bytes.size())));
}

/// Block contents: entries with key prefix compression, a restart point every `interval`.
inline std::string block(const Entries& kv, std::size_t interval = 16) {
  std::string out;
  std::vector<std::uint32_t> restarts;
  std::string previous;
  for (std::size_t i = 0; i < kv.size(); ++i) {
    const auto& [key, value] = kv[i];
    std::size_t shared = 0;
    if (i % interval == 0) {
      restarts.push_back(static_cast<std::uint32_t>(out.size()));
    } else {
      while (shared < key.size() && shared < previous.size() && key[shared] == previous[shared])
        ++shared;
    }
    out += varint(shared) + varint(key.size() - shared) + varint(value.size());
    out += key.substr(shared) + value;
    previous = key;
  }
  if (restarts.empty()) restarts.push_back(0);
  for (std::uint32_t r : restarts) out += fixed32(r);
  return out + fixed32(static_cast<std::uint32_t>(restarts.size()));
}

/// An SSTable of already encoded data blocks (`last key`, block contents), as TF writes
/// bundle indexes: blocks with 5-byte trailers (type byte `type`, masked CRC32C of contents and
/// type), an empty metaindex block, an index block keyed by each block's last key, and the
/// 48-byte footer. Contents need not be valid: the checksums are computed over whatever is given.
inline std::string raw_table(const std::vector<std::pair<std::string, std::string>>& blocks,
                             unsigned char type = 0) {
  std::string file;
  auto put = [&](const std::string& contents) {
    const std::string handle = varint(file.size()) + varint(contents.size());
    const std::string with_type = contents + static_cast<char>(type);
    const auto* p = reinterpret_cast<const unsigned char*>(with_type.data());
    file += with_type +
            fixed32(nddr::io::detail::crc32c_mask(nddr::io::detail::crc32c(p, with_type.size())));
    return handle;
  };
  Entries index;
  for (const auto& [last_key, contents] : blocks) index.emplace_back(last_key, put(contents));
  const std::string metaindex = put(block({}));
  std::string footer = metaindex + put(block(index, 1));
  footer.resize(40, '\0');
  return file + footer + fixed32(0x8b80fb57u) + fixed32(0xdb477524u);
}

/// `raw_table` of `data_blocks`, each a sorted list of entries.
inline std::string table(const std::vector<Entries>& data_blocks, unsigned char type = 0) {
  std::vector<std::pair<std::string, std::string>> blocks;
  for (const Entries& b : data_blocks) blocks.emplace_back(b.back().first, block(b));
  return raw_table(blocks, type);
}

}  // namespace nddr_test::tf
