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
///
/// Needs the `nddr::image_io` CMake target (libpng); umbrella <nddr/image_io.hpp>.

#include <png.h>

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
#include "nddr/io/file.hpp"

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

/// Widest and tallest PNG `read_png` decodes (libpng's user limits).
inline constexpr png_uint_32 kMaxPngSide = 32768;
/// Largest decoded image (height * width * channels bytes) `read_png` allocates.
inline constexpr std::size_t kMaxPngDecodedBytes = std::size_t{1} << 30;
/// Largest PNG file `read_png` reads.
inline constexpr std::uint64_t kMaxPngFileBytes = std::uint64_t{256} << 20;
/// Largest ancillary chunk libpng may allocate (text, ICC profiles).
inline constexpr png_alloc_size_t kMaxPngChunkBytes = png_alloc_size_t{8} << 20;

// Everything libpng touches between setjmp and a possible longjmp lives here: plain data only,
// buffers from malloc, released by PngCodec's destructor after the jumping frame is gone.
struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char message[512] = {};
  char warning[256] = {};  // the last libpng warning, which often says why the error came
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

extern "C" inline void nddr_png_warning(png_structp png, png_const_charp message) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(s->warning, sizeof s->warning, "%s", message != nullptr ? message : "");
}

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
  png_set_user_limits(s->png, kMaxPngSide, kMaxPngSide);
  png_set_chunk_malloc_max(s->png, kMaxPngChunkBytes);
  png_read_info(s->png, s->info);
  char why[160];
  // Deflate expands at most 1032:1, so the IDAT data a header declares (a filter byte per
  // row plus the packed samples) bounds the file size: refuse a lying header before allocating.
  const double raw_bytes = (static_cast<double>(png_get_rowbytes(s->png, s->info)) + 1.0) *
                           png_get_image_height(s->png, s->info);
  if (raw_bytes / 1032.0 > static_cast<double>(s->input_size)) {
    std::snprintf(why, sizeof why,
                  "the header declares %lux%lu pixels (%.0f bytes of image data), more than a "
                  "file of %zu bytes can hold",
                  static_cast<unsigned long>(png_get_image_width(s->png, s->info)),
                  static_cast<unsigned long>(png_get_image_height(s->png, s->info)), raw_bytes,
                  s->input_size);
    png_error(s->png, why);
  }
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
  if (row_bytes * s->height > kMaxPngDecodedBytes) {
    std::snprintf(why, sizeof why, "%lux%lu pixels of %d channels decode to more than %llu bytes",
                  static_cast<unsigned long>(s->width), static_cast<unsigned long>(s->height),
                  s->channels, static_cast<unsigned long long>(kMaxPngDecodedBytes));
    png_error(s->png, why);
  }
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

}  // namespace detail

/// Decodes the PNG file at `path` to 8 bits per sample (see the file comment for the
/// expansions). Throws IoError naming the file for a missing file or one that is not a regular
/// file (a FIFO, a device, a directory), a file over 256 MiB, a file that is not a PNG,
/// truncated / corrupt data (CRC errors included), a side over 32768 pixels, a decoded image
/// over 1 GiB, and a header declaring more pixels than the file can hold (checked before the
/// pixels are allocated).
inline Image8 read_png(const std::string& path) {
  const char* who = "read_png";
  const std::vector<unsigned char> bytes =
      read_regular_file("nddr::io::read_png", path, detail::kMaxPngFileBytes);
  if (bytes.size() < 8 || png_sig_cmp(bytes.data(), 0, 8) != 0)
    detail::png_fail(who, path, "not a PNG file (",
                     bytes.size() < 8 ? "shorter than the 8-byte signature" : "bad signature", ")");
  detail::PngCodec codec(true, who, path);
  detail::PngState& s = codec.state();
  s.input = bytes.data();
  s.input_size = bytes.size();
  if (!detail::png_decode(&s))
    detail::png_fail(who, path, "corrupt or truncated PNG: ", s.message,
                     s.warning[0] != '\0' ? " (libpng warned: " + excerpt(s.warning) + ")" : "");
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
  io::write_file_atomic(std::string("nddr::io::") + who, path, s.output, s.output_size);
}

}  // namespace nddr::io
