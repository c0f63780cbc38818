#pragma once
/// \file
/// Reading and writing 8-bit PNG images with libpng.
///
/// `read_png` expands every PNG to 8-bit gray (1 channel), gray+alpha (2), RGB (3) or RGBA (4):
/// palettes become RGB (RGBA when the palette has transparency), gray below 8 bits is scaled
/// up, 16-bit samples are scaled down to 8 bits with rounding. `write_png` is atomic: the file
/// is encoded in memory, written to a temporary file in the same directory, fsync'ed and
/// renamed over the destination; on failure nothing partial is left behind.
///
/// Errors throw `nddr::IoError` naming the file and what went wrong (missing file, not a PNG,
/// truncated or corrupt data). libpng reports errors by longjmp; every libpng call runs inside
/// one function whose frame holds only trivially destructible state, so the jump skips no
/// destructor, and the C++ exception is thrown only after that function has returned.
///
/// Example:
///   nddr::io::Image8 img = nddr::io::read_png("label.png");   // img.pixels: HWC, row-major
///   nddr::io::write_png("copy.png", img);

#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "nddr/core/error.hpp"

namespace nddr::io {

/// An 8-bit image: `pixels` holds height * width * channels bytes, row-major, channels
/// interleaved (HWC). channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.
struct Image8 {
  int height = 0;
  int width = 0;
  int channels = 0;
  std::vector<std::uint8_t> pixels;

  /// Sample (row, col, channel).
  std::uint8_t& at(int row, int col, int channel = 0) {
    return pixels[(static_cast<std::size_t>(row) * width + col) * channels + channel];
  }
  std::uint8_t at(int row, int col, int channel = 0) const {
    return pixels[(static_cast<std::size_t>(row) * width + col) * channels + channel];
  }
};

namespace detail {

template <class... Args>
[[noreturn]] void png_fail(const char* who, const std::string& path, Args&&... args) {
  throw IoError(
      nddr::detail::concat("nddr::io::", who, ": '", path, "': ", std::forward<Args>(args)...));
}

// Everything libpng touches between setjmp and a possible longjmp lives here: plain data only,
// buffers from malloc, released by PngCodec's destructor after the jumping frame is gone.
struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char message[512] = {};
  // Reading: the encoded bytes and the read position; the decoded rows.
  const unsigned char* input = nullptr;
  std::size_t input_size = 0;
  std::size_t input_pos = 0;
  unsigned char* pixels = nullptr;
  png_bytep* rows = nullptr;
  png_uint_32 width = 0;
  png_uint_32 height = 0;
  int channels = 0;
  // Writing: the source image and the growing encoded buffer.
  const unsigned char* image = nullptr;
  int color_type = 0;
  unsigned char* output = nullptr;
  std::size_t output_size = 0;
  std::size_t output_capacity = 0;
};

extern "C" inline void nddr_png_error(png_structp png, png_const_charp message) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(s->message, sizeof s->message, "%s", message != nullptr ? message : "error");
  png_longjmp(png, 1);
}

extern "C" inline void nddr_png_warning(png_structp, png_const_charp) {}

extern "C" inline void nddr_png_read(png_structp png, png_bytep out, png_size_t count) {
  auto* s = static_cast<PngState*>(png_get_io_ptr(png));
  if (count > s->input_size - s->input_pos)
    png_error(png, "truncated file (unexpected end of data)");
  std::memcpy(out, s->input + s->input_pos, count);
  s->input_pos += count;
}

extern "C" inline void nddr_png_write(png_structp png, png_bytep data, png_size_t count) {
  auto* s = static_cast<PngState*>(png_get_io_ptr(png));
  if (count > s->output_capacity - s->output_size) {
    std::size_t capacity = s->output_capacity == 0 ? 4096 : s->output_capacity;
    while (capacity - s->output_size < count) capacity *= 2;
    void* grown = std::realloc(s->output, capacity);
    if (grown == nullptr) png_error(png, "out of memory while encoding");
    s->output = static_cast<unsigned char*>(grown);
    s->output_capacity = capacity;
  }
  std::memcpy(s->output + s->output_size, data, count);
  s->output_size += count;
}

extern "C" inline void nddr_png_flush(png_structp) {}

// All libpng decoding; returns false after a longjmp with the reason in s->message.
inline bool png_decode(PngState* s) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_read_fn(s->png, s, nddr_png_read);
  png_read_info(s->png, s->info);
  png_set_expand(s->png);  // palette -> RGB(A), gray < 8 bits -> 8 bits, tRNS -> alpha
  png_set_scale_16(s->png);
  png_set_interlace_handling(s->png);
  png_read_update_info(s->png, s->info);
  s->width = png_get_image_width(s->png, s->info);
  s->height = png_get_image_height(s->png, s->info);
  s->channels = png_get_channels(s->png, s->info);
  const std::size_t row_bytes = png_get_rowbytes(s->png, s->info);
  if (row_bytes != std::size_t{s->width} * static_cast<std::size_t>(s->channels))
    png_error(s->png, "unexpected row size after expansion to 8 bits");
  s->pixels = static_cast<unsigned char*>(std::malloc(row_bytes * s->height));
  s->rows = static_cast<png_bytep*>(std::malloc(sizeof(png_bytep) * s->height));
  if (s->pixels == nullptr || s->rows == nullptr) png_error(s->png, "out of memory");
  for (png_uint_32 r = 0; r < s->height; ++r) s->rows[r] = s->pixels + r * row_bytes;
  png_read_image(s->png, s->rows);
  png_read_end(s->png, nullptr);
  return true;
}

// All libpng encoding; returns false after a longjmp with the reason in s->message.
inline bool png_encode(PngState* s) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_write_fn(s->png, s, nddr_png_write, nddr_png_flush);
  png_set_IHDR(s->png, s->info, s->width, s->height, 8, s->color_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(s->png, s->info);
  const std::size_t row_bytes = std::size_t{s->width} * static_cast<std::size_t>(s->channels);
  for (png_uint_32 r = 0; r < s->height; ++r)
    png_write_row(s->png, const_cast<png_bytep>(s->image + r * row_bytes));
  png_write_end(s->png, nullptr);
  return true;
}

/// Owns the libpng structures and malloc'ed buffers of one read or write.
class PngCodec {
 public:
  PngCodec(bool reading, const char* who, const std::string& path) : reading_(reading) {
    state_.png = reading ? png_create_read_struct(PNG_LIBPNG_VER_STRING, &state_, nddr_png_error,
                                                  nddr_png_warning)
                         : png_create_write_struct(PNG_LIBPNG_VER_STRING, &state_, nddr_png_error,
                                                   nddr_png_warning);
    if (state_.png != nullptr) state_.info = png_create_info_struct(state_.png);
    if (state_.png == nullptr || state_.info == nullptr)
      png_fail(who, path, "cannot create the libpng structures (out of memory?)");
  }
  PngCodec(const PngCodec&) = delete;
  PngCodec& operator=(const PngCodec&) = delete;
  ~PngCodec() {
    if (reading_)
      png_destroy_read_struct(&state_.png, state_.info != nullptr ? &state_.info : nullptr,
                              nullptr);
    else
      png_destroy_write_struct(&state_.png, state_.info != nullptr ? &state_.info : nullptr);
    std::free(state_.pixels);
    std::free(state_.rows);
    std::free(state_.output);
  }
  PngState& state() { return state_; }

 private:
  bool reading_;
  PngState state_;
};

inline std::vector<unsigned char> read_file_bytes(const char* who, const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) png_fail(who, path, "cannot open for reading: ", std::strerror(errno));
  std::vector<unsigned char> bytes;
  struct ::stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) bytes.reserve(static_cast<std::size_t>(st.st_size));
  unsigned char buffer[1 << 16];
  for (;;) {
    const ::ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      png_fail(who, path, "read failed: ", std::strerror(err));
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), buffer, buffer + n);
  }
  ::close(fd);
  return bytes;
}

inline std::string png_temp_name(const std::string& path) {
  static std::atomic<unsigned> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

inline std::string png_parent_dir(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Writes `bytes` to `path` through a temporary file, fsync and rename.
inline void write_file_atomic(const char* who, const std::string& path, const unsigned char* bytes,
                              std::size_t count) {
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = png_temp_name(path);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt == 100))
      png_fail(who, path, "cannot create temporary file '", tmp, "': ", std::strerror(errno));
  }
  const auto abandon = [&](const char* step) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    png_fail(who, path, step, " failed (temporary file '", tmp, "'): ", std::strerror(err));
  };
  std::size_t done = 0;
  while (done < count) {
    const ::ssize_t n = ::write(fd, bytes + done, count - done);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) errno = EIO;
    if (n <= 0) abandon("write");
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) abandon("fsync");
  const int rc = ::close(fd);
  fd = -1;
  if (rc != 0) abandon("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) abandon("rename");
  // Persist the rename; a failure here cannot undo the completed write, so it is ignored.
  const int dir = ::open(png_parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace detail

/// Decodes the PNG file at `path` to 8 bits per sample (see the file comment for the
/// expansions). Throws IoError naming the file for a missing file, a file that is not a PNG,
/// or truncated / corrupt data.
inline Image8 read_png(const std::string& path) {
  const char* who = "read_png";
  const std::vector<unsigned char> bytes = detail::read_file_bytes(who, path);
  if (bytes.size() < 8 || png_sig_cmp(bytes.data(), 0, 8) != 0)
    detail::png_fail(who, path, "not a PNG file (",
                     bytes.size() < 8 ? "shorter than the 8-byte signature" : "bad signature", ")");
  detail::PngCodec codec(true, who, path);
  detail::PngState& s = codec.state();
  s.input = bytes.data();
  s.input_size = bytes.size();
  if (!detail::png_decode(&s)) detail::png_fail(who, path, "corrupt or truncated PNG: ", s.message);
  Image8 img;
  img.height = static_cast<int>(s.height);
  img.width = static_cast<int>(s.width);
  img.channels = s.channels;
  img.pixels.assign(s.pixels, s.pixels + std::size_t{s.height} * s.width * s.channels);
  return img;
}

/// Encodes `img` (8-bit, 1 to 4 channels) as a PNG and writes it to `path` atomically. Throws
/// ValueError naming the file for an inconsistent image and IoError for a failed write; an
/// existing `path` is then left untouched and no temporary file remains.
inline void write_png(const std::string& path, const Image8& img) {
  const char* who = "write_png";
  check<ValueError>(img.channels >= 1 && img.channels <= 4, "nddr::io::write_png: '", path,
                    "': channels is ", img.channels, ", expected 1 (gray), 2 (gray+alpha), 3 (RGB)",
                    " or 4 (RGBA)");
  check<ValueError>(img.height >= 1 && img.width >= 1, "nddr::io::write_png: '", path,
                    "': image is ", img.height, "x", img.width, ", expected at least 1x1");
  const std::size_t expected =
      static_cast<std::size_t>(img.height) * static_cast<std::size_t>(img.width) * img.channels;
  check<ValueError>(img.pixels.size() == expected, "nddr::io::write_png: '", path, "': pixels has ",
                    img.pixels.size(), " bytes, expected height*width*channels = ", expected);
  static constexpr int kColorTypes[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                        PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
  detail::PngCodec codec(false, who, path);
  detail::PngState& s = codec.state();
  s.image = img.pixels.data();
  s.width = static_cast<png_uint_32>(img.width);
  s.height = static_cast<png_uint_32>(img.height);
  s.channels = img.channels;
  s.color_type = kColorTypes[img.channels - 1];
  if (!detail::png_encode(&s)) detail::png_fail(who, path, "encoding failed: ", s.message);
  detail::write_file_atomic(who, path, s.output, s.output_size);
}

}  // namespace nddr::io
