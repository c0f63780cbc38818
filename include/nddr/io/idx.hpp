#pragma once
/// \file
/// Reading IDX files (the MNIST / Fashion-MNIST container), gzipped or plain.
///
/// Layout: two zero bytes, a type byte (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
/// 0x0C int32, 0x0D float32, 0x0E float64), a rank byte, `rank` big-endian uint32 extents, then
/// the row-major data. Only unsigned bytes (0x08) are read; that is what the datasets use.
///
/// Every failure throws `nddr::IoError` naming the file and the field (magic, type, rank,
/// extent k, data) and what was expected.
///
/// Example:
///   nddr::io::IdxArray a = nddr::io::read_idx("/usr/share/datasets/fashion-mnist/"
///                                             "train-labels-idx1-ubyte.gz");
///   // a.dims == {60000}, a.data.size() == 60000

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

inline std::string hex_byte(int v) {
  static const char digits[] = "0123456789ABCDEF";
  return std::string("0x") + digits[(v >> 4) & 15] + digits[v & 15];
}

/// Closes the gz stream on every exit path.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    errno = 0;
    file_ = ::gzopen(path.c_str(), "rb");
    if (file_ == nullptr)
      idx_fail(path,
               "cannot open for reading: ", errno != 0 ? std::strerror(errno) : "out of memory");
    ::gzbuffer(file_, 1 << 17);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  ~GzFile() { ::gzclose(file_); }

  /// Reads up to `count` bytes; returns how many were read (short only at the end of data).
  std::size_t read(void* out, std::size_t count) {
    auto* p = static_cast<unsigned char*>(out);
    std::size_t done = 0;
    while (done < count) {
      const std::size_t chunk = std::min<std::size_t>(count - done, 1u << 30);
      const int n = ::gzread(file_, p + done, static_cast<unsigned>(chunk));
      if (n < 0) {
        int code = 0;
        const char* msg = ::gzerror(file_, &code);
        idx_fail(path_, "decompression failed: ", msg != nullptr ? msg : "unknown zlib error");
      }
      if (n == 0) break;
      done += static_cast<std::size_t>(n);
    }
    return done;
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

}  // namespace detail

/// Reads the unsigned-byte IDX file at `path` (gzip-compressed or plain; zlib detects which).
/// Throws IoError for a missing file, a bad magic (the first two bytes must be zero), a type
/// other than 0x08, a rank outside 1..4, data shorter or longer than the product of the
/// extents (dims mismatch), or a corrupt gzip stream.
inline IdxArray read_idx(const std::string& path) {
  detail::GzFile file(path);
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
  std::int64_t count = 1;
  for (int k = 0; k < rank; ++k) {
    unsigned char b[4];
    if (file.read(b, 4) < 4)
      detail::idx_fail(path, "truncated header: extent ", k, " of ", rank, " is missing");
    const std::int64_t d = (std::int64_t{b[0]} << 24) | (std::int64_t{b[1]} << 16) |
                           (std::int64_t{b[2]} << 8) | std::int64_t{b[3]};
    a.dims.push_back(d);
    count *= d;
    if (count > (std::int64_t{1} << 34))
      detail::idx_fail(path, "extents exceed 2^34 elements at extent ", k, " (", d, ")");
  }

  a.data.resize(static_cast<std::size_t>(count));
  const std::size_t read = file.read(a.data.data(), a.data.size());
  if (read < a.data.size())
    detail::idx_fail(path, "truncated data: ", read, " of ", count,
                     " bytes present for the extents in the header");
  unsigned char extra = 0;
  if (file.read(&extra, 1) != 0)
    detail::idx_fail(path, "data longer than the extents in the header (", count,
                     " bytes expected): dims mismatch");
  return a;
}

}  // namespace nddr::io
