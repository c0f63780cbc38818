#pragma once
/// \file
/// The one place nddr opens, reads and atomically writes files (POSIX).
///
/// Reading: `open_regular_file` refuses anything but a regular file *before* it can block or
/// stream forever (FIFOs are opened non-blocking, then rejected; `/dev/zero`, directories and
/// sockets are rejected the same way), and `read_regular_file` takes a byte limit so a huge or
/// sparse file is refused by its size, not by running out of memory. `TextLineReader` reads
/// text lists line by line with a bound on the line length, refusing binary and UTF-16 files;
/// `excerpt` keeps untrusted text quoted in an error message short and printable.
///
/// Writing: `write_file_atomic` writes to a temporary file beside the target
/// (`<target>.tmp.<host>.<pid>.<k>`), fsyncs it, renames it over the target and fsyncs the
/// directory; on any failure the temporary file is removed, the target is untouched and IoError
/// names the file and the step that failed. A writer killed mid-write leaves its temporary
/// behind: `remove_stale_temporaries` deletes those whose writer is gone.
///
/// Example:
///   auto bytes = nddr::io::read_regular_file("nddr::io::read_idx", path, 1ull << 32);
///   nddr::io::write_file_atomic("nddr::save", "out.bin", [&](nddr::io::AtomicWriter& w) {
///     w.write(header.data(), header.size());
///     w.write(payload.data(), payload.size());
///   });

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "nddr/core/error.hpp"

namespace nddr::io {

/// An owned POSIX file descriptor (closed on destruction).
class FileDescriptor {
 public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(FileDescriptor&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  FileDescriptor& operator=(FileDescriptor&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  /// Closes now; returns close()'s result (0 when already closed).
  int reset() {
    if (fd_ < 0) return 0;
    return ::close(std::exchange(fd_, -1));
  }

 private:
  int fd_ = -1;
};

/// A regular file opened for reading, with its size at open time.
struct RegularFile {
  FileDescriptor fd;
  std::uint64_t size = 0;
};

namespace detail {

template <class... Args>
[[noreturn]] void file_fail(std::string_view who, const std::string& path, Args&&... args) {
  throw IoError(nddr::detail::concat(who, ": '", path, "': ", std::forward<Args>(args)...));
}

inline const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

inline std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  std::string h(buf);
  // Keep the temporary's name parseable: no '/' and no '.'-only fields.
  for (char& c : h)
    if (c == '/' || c == '.') c = '_';
  return h;
}

inline std::string parent_dir(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace detail

/// Opens `path` read-only if it is a regular file; IoError "<who>: '<path>': ..." otherwise
/// (missing, unreadable, a directory, a FIFO, a device, a socket). Never blocks: the open is
/// non-blocking and the type is checked on the open descriptor, so a FIFO with no writer or a
/// path swapped between a check and the open cannot hang or stream.
inline RegularFile open_regular_file(std::string_view who, const std::string& path) {
  check<IoError>(!path.empty(), who, ": the file name is empty");
  check<IoError>(path.find('\0') == std::string::npos, who, ": file name '", path.c_str(),
                 "...' contains a NUL byte");
  const int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (raw < 0) detail::file_fail(who, path, "cannot open for reading: ", std::strerror(errno));
  RegularFile f{FileDescriptor(raw), 0};
  struct stat st {};
  if (::fstat(raw, &st) != 0) detail::file_fail(who, path, "cannot stat: ", std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    detail::file_fail(who, path, "is ", detail::file_kind(st.st_mode), ", expected a regular file");
  // Regular files ignore O_NONBLOCK, but clear it so the descriptor behaves normally.
  const int flags = ::fcntl(raw, F_GETFL);
  if (flags >= 0) ::fcntl(raw, F_SETFL, flags & ~O_NONBLOCK);
  f.size = static_cast<std::uint64_t>(st.st_size);
  return f;
}

/// Reads exactly `count` bytes at `offset` of an open file; IoError naming `path` when the file
/// ends first (truncated, or shrank while reading) or the read fails.
inline void read_exact_at(std::string_view who, const std::string& path, int fd,
                          std::uint64_t offset, void* dst, std::size_t count) {
  auto* out = static_cast<unsigned char*>(dst);
  std::size_t done = 0;
  while (done < count) {
    const ::ssize_t n = ::pread(fd, out + done, count - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) detail::file_fail(who, path, "read failed: ", std::strerror(errno));
    if (n == 0)
      detail::file_fail(who, path, "ends after ", offset + done, " bytes, expected at least ",
                        offset + count);
    done += static_cast<std::size_t>(n);
  }
}

/// The whole of regular file `path`, refused (IoError naming the size and the limit) when it is
/// larger than `max_bytes` (checked before anything is allocated).
inline std::vector<unsigned char> read_regular_file(
    std::string_view who, const std::string& path,
    std::uint64_t max_bytes = std::numeric_limits<std::uint64_t>::max()) {
  RegularFile f = open_regular_file(who, path);
  if (f.size > max_bytes)
    detail::file_fail(who, path, "is ", f.size, " bytes, more than the ", max_bytes,
                      " bytes this reader accepts");
  check<IoError>(f.size <= std::numeric_limits<std::size_t>::max() / 2, who, ": '", path,
                 "': is too large to read (", f.size, " bytes)");
  std::vector<unsigned char> bytes(static_cast<std::size_t>(f.size));
  read_exact_at(who, path, f.fd.get(), 0, bytes.data(), bytes.size());
  // A file that grew after the open is read as it was: the size seen by fstat.
  return bytes;
}

/// Byte length of the UTF-8 sequence starting at `s[i]` (1 to 4), or 0 when it is not valid
/// UTF-8 (a stray continuation byte, an overlong form, a surrogate, beyond U+10FFFF, or cut).
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong 3-byte forms
    if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // no overlong 4-byte forms
    if (c == 0xF4) hi = 0x8F;  // nothing beyond U+10FFFF
  } else {
    return 0;
  }
  if (s.size() - i < n || b(1) < lo || b(1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (b(k) < 0x80 || b(k) > 0xBF) return 0;
  return n;
}

/// Untrusted text for an error message: at most `max_bytes` bytes of `s`, with control
/// characters, '\\' and bytes that are not UTF-8 written as `\xNN`, and " ... (N bytes)" when
/// cut, so a hostile megabyte line or binary name cannot make a megabyte (or
/// terminal-controlling) message.
inline std::string excerpt(std::string_view s, std::size_t max_bytes = 60) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max_bytes;) {
    const auto u = static_cast<unsigned char>(s[i]);
    const std::size_t n = utf8_sequence_length(s, i);
    // Printable ASCII and UTF-8 characters stay; C0/C1 controls, DEL, '\\' and bad bytes don't.
    const bool c1 = u == 0xC2 && n == 2 && static_cast<unsigned char>(s[i + 1]) < 0xA0;
    if ((u >= 0x20 && u < 0x7F && u != '\\') || (n > 1 && !c1 && i + n <= max_bytes)) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
      ++i;
    }
  }
  if (s.size() > max_bytes) out += nddr::detail::concat(" ... (", s.size(), " bytes)");
  return out;
}

/// Offset of the first byte of `s` that is not valid UTF-8, or npos when all of it is.
inline std::size_t find_invalid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

/// Limits of `TextLineReader`.
struct TextLimits {
  /// Longest accepted line in bytes, without its line break (PATH_MAX on Linux).
  std::size_t max_line_bytes = 4096;
  /// Largest accepted file.
  std::uint64_t max_file_bytes = std::uint64_t{256} << 20;
};

/// Reads a UTF-8 text file (a list of paths and labels) line by line, refusing what is not
/// such a file instead of parsing it as entries. IoError "<who>: '<path>' line L: ..." for a
/// line longer than `max_line_bytes`, a NUL byte or another control character (tab and a final
/// '\r' excepted), invalid UTF-8, and for UTF-16/UTF-32 text (a byte order mark, or NULs); the
/// file must be a regular file no larger than `max_file_bytes`. A UTF-8 byte order mark at the
/// start is skipped. Lines are read in 64 KiB blocks: memory stays bounded whatever the file.
class TextLineReader {
 public:
  TextLineReader(std::string_view who, std::string path, TextLimits limits = {})
      : who_(who), path_(std::move(path)), limits_(limits), file_(open_regular_file(who_, path_)) {
    if (file_.size > limits_.max_file_bytes)
      detail::file_fail(who_, path_, "is ", file_.size, " bytes, more than the ",
                        limits_.max_file_bytes, " bytes a text list may have");
  }

  /// The next line (without "\n" or "\r\n") in `line`; false at the end of the file.
  bool next(std::string& line) {
    line.clear();
    bool any = false;
    for (;;) {
      if (pos_ == end_ && !refill()) {
        if (!any) return false;
        break;
      }
      any = true;
      const auto* begin = buffer_.data() + pos_;
      const auto* stop = static_cast<const unsigned char*>(std::memchr(begin, '\n', end_ - pos_));
      const std::size_t take = stop != nullptr ? static_cast<std::size_t>(stop - begin) : end_ - pos_;
      if (line.size() + take > limits_.max_line_bytes)
        fail_line(line_ + 1, "longer than ", limits_.max_line_bytes,
                  " bytes (binary data, or a line break missing?)");
      line.append(reinterpret_cast<const char*>(begin), take);
      pos_ += take;
      if (stop != nullptr) {
        ++pos_;
        break;
      }
    }
    ++line_;
    if (line_ == 1) strip_byte_order_mark(line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    check_text(line);
    return true;
  }

  /// Number of the line `next` returned last (1-based).
  std::int64_t line_number() const { return line_; }
  const std::string& path() const { return path_; }

  /// Throws IoError "<who>: '<path>' line <n>: <args...>".
  template <class... Args>
  [[noreturn]] void fail_line(std::int64_t n, Args&&... args) const {
    throw IoError(nddr::detail::concat(who_, ": '", path_, "' line ", n, ": ",
                                       std::forward<Args>(args)...));
  }

 private:
  bool refill() {
    if (offset_ >= file_.size) return false;
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(buffer_.size(), file_.size - offset_));
    read_exact_at(who_, path_, file_.fd.get(), offset_, buffer_.data(), want);
    offset_ += want;
    pos_ = 0;
    end_ = want;
    return true;
  }

  void strip_byte_order_mark(std::string& line) const {
    const auto starts = [&](std::string_view bom) { return std::string_view(line).starts_with(bom); };
    if (starts("\xFF\xFE") || starts("\xFE\xFF") || starts(std::string_view("\0\0\xFE\xFF", 4)))
      fail_line(1, "UTF-16 or UTF-32 text (a byte order mark); save the list as UTF-8");
    if (starts("\xEF\xBB\xBF")) line.erase(0, 3);
  }

  void check_text(const std::string& line) const {
    for (std::size_t i = 0; i < line.size(); ++i) {
      const auto u = static_cast<unsigned char>(line[i]);
      if (u == 0)
        fail_line(line_, "NUL byte at byte ", i + 1,
                  " (binary data, or UTF-16 text; expected UTF-8 text)");
      if ((u < 0x20 && u != '\t') || u == 0x7F)
        fail_line(line_, "control character ", excerpt(line.substr(i, 1)), " at byte ", i + 1,
                  ", expected text");
    }
    const std::size_t bad = find_invalid_utf8(line);
    if (bad != std::string::npos)
      fail_line(line_, "invalid UTF-8 at byte ", bad + 1, " (",
                excerpt(std::string_view(line).substr(bad, 4), 4), "...), expected UTF-8 text");
  }

  std::string_view who_;
  std::string path_;
  TextLimits limits_;
  RegularFile file_;
  std::vector<unsigned char> buffer_ = std::vector<unsigned char>(1 << 16);
  std::uint64_t offset_ = 0;
  std::size_t pos_ = 0;
  std::size_t end_ = 0;
  std::int64_t line_ = 0;
};

/// Bytes of physical memory (0 when unknown): a bound for what a reader may allocate.
inline std::uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
}

/// The name parts of a temporary file written by `write_file_atomic`.
struct TempFileName {
  std::string target;  ///< the file name it was going to become (no directory)
  std::string host;
  long long pid = 0;
};

/// `<target>.tmp.<host>.<pid>.<k>` for a target path, unique among concurrent writers of this
/// and other processes and hosts.
inline std::string temp_name_for(const std::string& path) {
  static std::atomic<unsigned long long> counter{0};
  return path + ".tmp." + detail::host_name() + "." + std::to_string(::getpid()) + "." +
         std::to_string(counter++);
}

/// Parses a file name (no directory) made by `temp_name_for`, or by nddr before 2026-12
/// (`<target>.tmp.<pid>.<k>`, taken as written on this host); nullopt for any other name.
inline std::optional<TempFileName> parse_temp_name(const std::string& name) {
  auto digits = [](std::string_view s) {
    return !s.empty() && s.size() <= 18 && s.find_first_not_of("0123456789") == std::string_view::npos;
  };
  // Split at the last three dots: <head>.<a>.<b>.<k>.
  std::vector<std::size_t> dots;
  for (std::size_t i = name.size(); i-- > 0 && dots.size() < 3;)
    if (name[i] == '.') dots.push_back(i);
  if (dots.size() < 2) return std::nullopt;
  const std::string_view n(name);
  if (!digits(n.substr(dots[0] + 1)) || !digits(n.substr(dots[1] + 1, dots[0] - dots[1] - 1)))
    return std::nullopt;
  TempFileName t;
  t.pid = std::stoll(std::string(n.substr(dots[1] + 1, dots[0] - dots[1] - 1)));
  if (dots.size() == 3 && dots[2] >= 4 && n.substr(dots[2] - 4, 4) == ".tmp" &&
      dots[1] > dots[2] + 1) {
    t.target = name.substr(0, dots[2] - 4);  // <target>.tmp.<host>.<pid>.<k>
    t.host = name.substr(dots[2] + 1, dots[1] - dots[2] - 1);
  } else if (dots.size() == 3 && n.substr(dots[2] + 1, dots[1] - dots[2] - 1) == "tmp") {
    t.target = name.substr(0, dots[2]);  // <target>.tmp.<pid>.<k>
    t.host = detail::host_name();
  } else {
    return std::nullopt;
  }
  if (t.target.empty()) return std::nullopt;
  return t;
}

/// Whether the writer of a temporary file may still be running: on this host, its process
/// exists; on another host (a shared file system), it touched the file within `quiet`.
inline bool temp_writer_alive(const TempFileName& t, const std::filesystem::path& file,
                              std::chrono::seconds quiet = std::chrono::hours(1)) {
  if (t.host == detail::host_name()) {
    if (t.pid == ::getpid()) return true;
    if (t.pid <= 0 || t.pid > std::numeric_limits<pid_t>::max()) return false;
    return ::kill(static_cast<pid_t>(t.pid), 0) == 0 || errno == EPERM;
  }
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(file, ec);
  if (ec) return false;
  return std::filesystem::file_time_type::clock::now() - mtime < quiet;
}

/// Deletes, in `dir`, the temporaries of `write_file_atomic` whose target name satisfies
/// `is_target` and whose writer is gone (killed mid-write); returns the paths removed. A
/// missing directory removes nothing.
template <class Pred>
std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path& dir,
                                                            Pred is_target) {
  std::vector<std::filesystem::path> removed;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec), end;
  if (ec) return removed;
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    const auto t = parse_temp_name(it->path().filename().string());
    if (!t || !is_target(t->target)) continue;
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) continue;
    if (temp_writer_alive(*t, it->path())) continue;
    std::error_code rm_ec;
    if (std::filesystem::remove(it->path(), rm_ec)) removed.push_back(it->path());
  }
  return removed;
}

/// The sink `write_file_atomic` hands its body: every byte written goes to the temporary file;
/// a failed write throws IoError naming the target (and the temporary is removed).
class AtomicWriter {
 public:
  AtomicWriter(std::string_view who, const std::string& target, const std::string& tmp, int fd)
      : who_(who), target_(target), tmp_(tmp), fd_(fd) {}

  void write(const void* data, std::size_t count) {
    const auto* p = static_cast<const unsigned char*>(data);
    std::size_t done = 0;
    while (done < count) {
      const ::ssize_t n = ::write(fd_, p + done, count - done);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) errno = EIO;  // a zero-byte write makes no progress and sets no errno
      if (n <= 0)
        detail::file_fail(who_, target_, "write failed (temporary file '", tmp_,
                          "'): ", std::strerror(errno));
      done += static_cast<std::size_t>(n);
    }
    written_ += count;
  }
  void write(std::string_view text) { write(text.data(), text.size()); }
  std::uint64_t written() const { return written_; }

 private:
  std::string_view who_;
  const std::string& target_;
  const std::string& tmp_;
  int fd_;
  std::uint64_t written_ = 0;
};

/// Writes `path` atomically: `body(AtomicWriter&)` writes the contents to a temporary file in the
/// same directory, which is fsync'ed, renamed over `path`, and the directory fsync'ed. On any
/// failure (including an exception from `body`) the temporary file is removed, an existing
/// `path` is left as it was, and the error propagates (IoError naming `path`, the step and the
/// temporary). The parent directory must exist.
template <class Body>
void write_file_atomic(std::string_view who, const std::string& path, Body&& body) {
  check<IoError>(!path.empty(), who, ": the output file name is empty");
  std::string tmp;
  FileDescriptor fd;
  for (int attempt = 0; !fd; ++attempt) {
    tmp = temp_name_for(path);
    fd = FileDescriptor(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
    if (!fd && (errno != EEXIST || attempt == 100))
      detail::file_fail(who, path, "cannot create temporary file '", tmp, "': ", std::strerror(errno));
  }
  struct Remover {
    const std::string& tmp;
    bool armed = true;
    ~Remover() {
      if (armed) ::unlink(tmp.c_str());
    }
  } remover{tmp};
  AtomicWriter writer(who, path, tmp, fd.get());
  std::forward<Body>(body)(writer);
  auto fail = [&](const char* step) {
    detail::file_fail(who, path, step, " failed (temporary file '", tmp, "'): ", std::strerror(errno));
  };
  if (::fsync(fd.get()) != 0) fail("fsync");
  if (fd.reset() != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
  remover.armed = false;
  // Persist the rename itself; a failure here cannot undo the completed write, so it is ignored.
  const FileDescriptor dir(::open(detail::parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir) ::fsync(dir.get());
}

/// `write_file_atomic` of a byte range.
inline void write_file_atomic(std::string_view who, const std::string& path, const void* bytes,
                              std::size_t count) {
  write_file_atomic(who, path, [&](AtomicWriter& w) { w.write(bytes, count); });
}

}  // namespace nddr::io
