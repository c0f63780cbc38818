#pragma once
/// \file
/// Reading IDX files (the MNIST / Fashion-MNIST container), gzipped or plain.
///
/// Layout: two zero bytes, a type byte (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
/// 0x0C int32, 0x0D float32, 0x0E float64), a rank byte, `rank` big-endian uint32 extents, then
/// the row-major data. Only unsigned bytes (0x08) are read; that is what the datasets use.
///
/// Every failure throws `nddr::IoError` naming the file and the field (magic, type, rank,
/// extent k, data) and what was expected; what is refused is listed at `read_idx`.
///
/// Example:
///   nddr::io::IdxArray a = nddr::io::read_idx("/usr/share/datasets/fashion-mnist/"
///                                             "train-labels-idx1-ubyte.gz");
///   // a.dims == {60000}, a.data.size() == 60000
///
/// Needs the `nddr::image_io` CMake target (zlib); umbrella <nddr/image_io.hpp>.

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/io/file.hpp"

namespace nddr::io {

/// An unsigned-byte IDX array: extents (outermost first) and the row-major elements.
struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;

  /// Product of the extents (1 for rank 0).
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (const std::int64_t d : dims) n *= d;
    return n;
  }
};

namespace detail {

template <class... Args>
[[noreturn]] void idx_fail(const std::string& path, Args&&... args) {
  throw IoError(
      nddr::detail::concat("nddr::io::read_idx: '", path, "': ", std::forward<Args>(args)...));
}

inline const char* idx_type_name(int type) {
  switch (type) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return "unknown";
  }
}

inline std::string dims_str(const std::vector<std::int64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

inline std::string hex_byte(int v) {
  static const char digits[] = "0123456789ABCDEF";
  return std::string("0x") + digits[(v >> 4) & 15] + digits[v & 15];
}

/// The decoded bytes of an IDX file, raw or gzip (RFC 1952), read from a regular file in
/// blocks. A gzip stream is inflated here rather than through gzread so that a stream cut
/// before its end, a bad CRC-32 or length trailer, or bytes after the last member are errors
/// instead of a silently short or accepted file.
class IdxSource {
 public:
  explicit IdxSource(const std::string& path)
      : path_(path), file_(open_regular_file(kWho, path)) {
    unsigned char magic[2] = {0, 0};
    if (file_.size >= 2) read_exact_at(kWho, path_, file_.fd.get(), 0, magic, 2);
    gzip_ = magic[0] == 0x1F && magic[1] == 0x8B;
    if (!gzip_) return;
    // 16 + MAX_WBITS: a gzip header and trailer, whose CRC-32 and length inflate checks.
    if (::inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK)
      idx_fail(path_, "cannot initialise zlib (out of memory?)");
    z_open_ = true;
  }
  IdxSource(const IdxSource&) = delete;
  IdxSource& operator=(const IdxSource&) = delete;
  ~IdxSource() {
    if (z_open_) ::inflateEnd(&z_);
  }

  bool gzip() const { return gzip_; }
  std::uint64_t file_size() const { return file_.size; }

  /// Reads up to `count` bytes; returns how many were read (short only at the end of data).
  std::size_t read(void* out, std::size_t count) {
    return gzip_ ? inflate_some(static_cast<unsigned char*>(out), count)
                 : read_raw(static_cast<unsigned char*>(out), count);
  }

 private:
  static constexpr const char* kWho = "nddr::io::read_idx";

  std::size_t read_raw(unsigned char* out, std::size_t count) {
    const std::uint64_t left = file_.size - std::min(file_.size, offset_);
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(count, left));
    read_exact_at(kWho, path_, file_.fd.get(), offset_, out, n);
    offset_ += n;
    return n;
  }

  // Compressed bytes not yet handed to zlib.
  bool input_left() const { return z_.avail_in > 0 || offset_ < file_.size; }

  void refill() {
    const auto n = static_cast<std::size_t>(
        std::min<std::uint64_t>(input_.size(), file_.size - offset_));
    read_exact_at(kWho, path_, file_.fd.get(), offset_, input_.data(), n);
    offset_ += n;
    z_.next_in = input_.data();
    z_.avail_in = static_cast<uInt>(n);
  }

  std::size_t inflate_some(unsigned char* out, std::size_t count) {
    std::size_t done = 0;
    while (done < count && !ended_) {
      if (z_.avail_in == 0 && offset_ < file_.size) refill();
      z_.next_out = out + done;
      z_.avail_out = static_cast<uInt>(std::min<std::size_t>(count - done, 1u << 30));
      const uInt before = z_.avail_out;
      const int rc = ::inflate(&z_, Z_NO_FLUSH);
      done += before - z_.avail_out;
      if (rc == Z_STREAM_END) {
        next_member();
      } else if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT) {
        idx_fail(path_, "corrupt gzip data after ", total_out(),
                 " decompressed bytes: ", z_.msg != nullptr ? z_.msg : "invalid data");
      } else if (rc == Z_MEM_ERROR) {
        idx_fail(path_, "out of memory while decompressing");
      } else if (!input_left() && (rc == Z_BUF_ERROR || z_.avail_out > 0)) {
        idx_fail(path_, "truncated gzip stream: the file ends after ", total_out(),
                 " decompressed bytes, before the end of the compressed data and its CRC-32 "
                 "trailer");
      }
    }
    return done;
  }

  // After a member's trailer checked out: another member, or the end of the file.
  void next_member() {
    produced_ += z_.total_out;
    if (!input_left()) {
      ended_ = true;
      return;
    }
    if (z_.avail_in == 0) refill();
    if (z_.next_in[0] != 0x1F)
      idx_fail(path_, file_.size - offset_ + z_.avail_in,
               " bytes of trailing data after the end of the gzip stream");
    ::inflateReset(&z_);
  }

  std::uint64_t total_out() const { return produced_ + z_.total_out; }

  std::string path_;
  RegularFile file_;
  bool gzip_ = false;
  bool z_open_ = false;
  bool ended_ = false;
  z_stream z_{};
  std::vector<unsigned char> input_ = std::vector<unsigned char>(1 << 16);
  std::uint64_t offset_ = 0;
  std::uint64_t produced_ = 0;
};

}  // namespace detail

/// Elements an IDX file may declare (16 GiB of bytes): larger products are refused as corrupt.
inline constexpr std::uint64_t kMaxIdxElements = std::uint64_t{1} << 34;

/// Reads the unsigned-byte IDX file at `path` (gzip-compressed or plain, told apart by the gzip
/// magic bytes). Throws IoError naming the file for a missing file or one that is not a regular
/// file (a FIFO, a device, a directory), a bad magic (the first two bytes must be zero), a type
/// other than 0x08, a rank outside 1..4, extents whose product exceeds 2^34, data shorter or
/// longer than the product of the extents (dims mismatch), and for a gzip stream that is
/// corrupt, cut short (its CRC-32 trailer missing) or followed by junk. Memory stays bounded by
/// the file: a raw file's declared size is compared with its real size before anything is
/// allocated, a gzip file may not declare more than deflate's 1032:1 ratio allows, nor any file
/// more than the machine's physical memory; the data is read in blocks of at most 64 MiB.
inline IdxArray read_idx(const std::string& path) {
  detail::IdxSource file(path);
  unsigned char head[4];
  const std::size_t got = file.read(head, 4);
  if (got < 4) detail::idx_fail(path, "truncated header: ", got, " of 4 magic bytes present");
  if (head[0] != 0 || head[1] != 0)
    detail::idx_fail(path, "bad magic: first two bytes are ", detail::hex_byte(head[0]), " ",
                     detail::hex_byte(head[1]), ", expected 0x00 0x00 (not an IDX file)");
  if (head[2] != 0x08)
    detail::idx_fail(path, "unsupported element type ", detail::hex_byte(head[2]), " (",
                     detail::idx_type_name(head[2]), "); only 0x08 (unsigned byte) is read");
  const int rank = head[3];
  if (rank < 1 || rank > 4)
    detail::idx_fail(path, "bad rank ", rank, " in the magic number, expected 1 to 4");

  IdxArray a;
  std::uint64_t count = 1;
  for (int k = 0; k < rank; ++k) {
    unsigned char b[4];
    if (file.read(b, 4) < 4)
      detail::idx_fail(path, "truncated header: extent ", k, " of ", rank, " is missing");
    const std::uint64_t d = (std::uint64_t{b[0]} << 24) | (std::uint64_t{b[1]} << 16) |
                            (std::uint64_t{b[2]} << 8) | std::uint64_t{b[3]};
    a.dims.push_back(static_cast<std::int64_t>(d));
    // Checked before multiplying: the product can neither wrap nor pass the limit.
    if (d != 0 && count > kMaxIdxElements / d)
      detail::idx_fail(path, "extents ", detail::dims_str(a.dims), " exceed ", kMaxIdxElements,
                       " elements (2^34) at extent ", k, " (corrupt header)");
    count *= d;
  }

  if (!file.gzip()) {
    const std::uint64_t present = file.file_size() - 4 - 4 * static_cast<std::uint64_t>(rank);
    if (present < count)
      detail::idx_fail(path, "truncated data: ", present, " of ", count,
                       " bytes present for the extents ", detail::dims_str(a.dims),
                       " in the header");
    if (present > count)
      detail::idx_fail(path, "data longer than the extents ", detail::dims_str(a.dims),
                       " in the header (", present, " bytes present, ", count,
                       " expected): dims mismatch");
  }
  // Deflate expands at most 1032:1: a larger claim cannot be true, whatever the stream holds.
  if (file.gzip() && count / 1032 > file.file_size())
    detail::idx_fail(path, "the header declares ", count, " bytes of data (extents ",
                     detail::dims_str(a.dims), ") but a gzip file of ", file.file_size(),
                     " bytes cannot hold more than 1032 times its size");

  const std::uint64_t memory = physical_memory_bytes();
  if (memory != 0 && count > memory)
    detail::idx_fail(path, "the header declares ", count, " bytes of data (extents ",
                     detail::dims_str(a.dims), "), more than this machine's memory (", memory,
                     " bytes)");

  constexpr std::uint64_t kBlock = std::uint64_t{64} << 20;
  while (a.data.size() < count) {
    const std::size_t old = a.data.size();
    const auto block = static_cast<std::size_t>(std::min<std::uint64_t>(count - old, kBlock));
    a.data.resize(old + block);
    const std::size_t read = file.read(a.data.data() + old, block);
    if (read < block)
      detail::idx_fail(path, "truncated data: ", old + read, " of ", count,
                       " bytes present for the extents in the header");
  }
  unsigned char extra = 0;
  if (file.read(&extra, 1) != 0)
    detail::idx_fail(path, "data longer than the extents in the header (", count,
                     " bytes expected): dims mismatch");
  return a;
}

}  // namespace nddr::io
