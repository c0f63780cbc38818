#pragma once
/// \file
/// A small line-plot rasteriser and the colour maps of the demo, writing PNGs via `io::write_png`.
///
/// - `Canvas`: an RGB image with pixels, lines, rectangles and text in a built-in 3x5 bitmap font
///   (digits, letters (lower case drawn as upper case), and `.,-+_/:()=%?<>`).
/// - `render_line_plot(series, options)`: axes, "nice" ticks (1, 2, 5 x 10^k) labelled with
///   numbers, light grid lines, several coloured series and a legend; `plot_layout(options)` gives
///   the pixel rectangle of the plotting area (the axes run along its left and bottom edges).
/// - Colour maps: `segmentation_color(label)` (12-colour palette, 255 = ignore is black),
///   `normal_color(n)` = round((n + 1) / 2 * 255) per component, and image helpers that turn label
///   maps, normal maps and grey images into `io::Image8`, upscale them and place them side by side.
///
/// Example:
///   nddr::viz::Series s{"loss", {0, 1, 2}, {2.3, 1.1, 0.7}, nddr::viz::series_color(0)};
///   nddr::viz::write_line_plot("loss.png", {s}, nddr::viz::PlotOptions{}.with_title("Training loss"));
///
/// Needs the `nddr::image_io` CMake target (libpng, io/png.hpp); umbrella <nddr/image_io.hpp>.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/io/png.hpp"

namespace nddr::viz {

/// An 8-bit RGB colour.
struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

inline constexpr Rgb kBlack{0, 0, 0};
inline constexpr Rgb kWhite{255, 255, 255};
inline constexpr Rgb kGrid{225, 225, 225};

/// The i-th colour of a categorical palette for plot series (Tableau 10, cycling).
inline Rgb series_color(std::size_t i) {
  static constexpr std::array<Rgb, 10> palette{{{31, 119, 180},
                                                {255, 127, 14},
                                                {44, 160, 44},
                                                {214, 39, 40},
                                                {148, 103, 189},
                                                {140, 86, 75},
                                                {227, 119, 194},
                                                {127, 127, 127},
                                                {188, 189, 34},
                                                {23, 190, 207}}};
  return palette[i % palette.size()];
}

namespace detail {

// Rows of a 3x5 glyph, top to bottom, '1' = ink.
struct Glyph {
  char c;
  const char* rows;
};

inline constexpr std::array<Glyph, 51> kFont{{
    {'0', "111101101101111"}, {'1', "010110010010111"}, {'2', "111001111100111"},
    {'3', "111001111001111"}, {'4', "101101111001001"}, {'5', "111100111001111"},
    {'6', "111100111101111"}, {'7', "111001001001001"}, {'8', "111101111101111"},
    {'9', "111101111001111"}, {'A', "010101111101101"}, {'B', "110101110101110"},
    {'C', "011100100100011"}, {'D', "110101101101110"}, {'E', "111100110100111"},
    {'F', "111100110100100"}, {'G', "011100101101011"}, {'H', "101101111101101"},
    {'I', "111010010010111"}, {'J', "001001001101010"}, {'K', "101101110101101"},
    {'L', "100100100100111"}, {'M', "101111111101101"}, {'N', "110101101101101"},
    {'O', "010101101101010"}, {'P', "110101110100100"}, {'Q', "010101101110011"},
    {'R', "110101110101101"}, {'S', "011100010001110"}, {'T', "111010010010010"},
    {'U', "101101101101111"}, {'V', "101101101101010"}, {'W', "101101111111101"},
    {'X', "101101010101101"}, {'Y', "101101010010010"}, {'Z', "111001010100111"},
    {'.', "000000000000010"}, {'-', "000000111000000"}, {'+', "000010111010000"},
    {'_', "000000000000111"}, {'/', "001001010100100"}, {':', "000010000010000"},
    {'(', "001010010010001"}, {')', "100010010010100"}, {'=', "000111000111000"},
    {'%', "101001010100101"}, {'?', "111001010000010"}, {' ', "000000000000000"},
    {',', "000000000010100"}, {'<', "001010100010001"}, {'>', "100010001010100"},
}};

inline const char* glyph_rows(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  for (const Glyph& g : kFont)
    if (g.c == c) return g.rows;
  return glyph_rows('?');
}

}  // namespace detail

/// An RGB raster (row 0 at the top) with simple drawing primitives; out-of-range pixels are
/// clipped silently.
class Canvas {
 public:
  static constexpr int kGlyphWidth = 3;
  static constexpr int kGlyphHeight = 5;

  Canvas(int width, int height, Rgb background = kWhite) {
    check<OptionError>(width >= 1 && height >= 1, "nddr::viz::Canvas: size ", width, "x", height,
                       " must be at least 1x1");
    image_.width = width;
    image_.height = height;
    image_.channels = 3;
    image_.pixels.resize(static_cast<std::size_t>(width) * height * 3);
    fill_rect(0, 0, width, height, background);
  }

  int width() const { return image_.width; }
  int height() const { return image_.height; }
  const io::Image8& image() const { return image_; }

  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= image_.width || y >= image_.height) return;
    image_.at(y, x, 0) = c.r;
    image_.at(y, x, 1) = c.g;
    image_.at(y, x, 2) = c.b;
  }
  Rgb get(int x, int y) const { return {image_.at(y, x, 0), image_.at(y, x, 1), image_.at(y, x, 2)}; }

  /// Fills [x, x + w) x [y, y + h).
  void fill_rect(int x, int y, int w, int h, Rgb c) {
    for (int r = y; r < y + h; ++r)
      for (int q = x; q < x + w; ++q) set(q, r, c);
  }

  /// A line from (x0, y0) to (x1, y1) (Bresenham), `thickness` pixels wide (square pen).
  void line(int x0, int y0, int x1, int y1, Rgb c, int thickness = 1) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    const int lo = -(thickness - 1) / 2;
    int err = dx + dy;
    for (;;) {
      fill_rect(x0 + lo, y0 + lo, thickness, thickness, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }

  /// Draws `text` with its top-left corner at (x, y), each font pixel `scale` x `scale`.
  void text(int x, int y, const std::string& text, Rgb c, int scale = 2) {
    for (char ch : text) {
      const char* rows = detail::glyph_rows(ch);
      for (int r = 0; r < kGlyphHeight; ++r)
        for (int q = 0; q < kGlyphWidth; ++q)
          if (rows[r * kGlyphWidth + q] == '1') fill_rect(x + q * scale, y + r * scale, scale, scale, c);
      x += (kGlyphWidth + 1) * scale;
    }
  }
  /// Width and height in pixels of `text` drawn at `scale`.
  static int text_width(const std::string& text, int scale = 2) {
    return text.empty() ? 0 : static_cast<int>(text.size()) * (kGlyphWidth + 1) * scale - scale;
  }
  static int text_height(int scale = 2) { return kGlyphHeight * scale; }

 private:
  io::Image8 image_;
};

/// One line of a plot: points (x[i], y[i]) joined in order; non-finite points break the line.
struct Series {
  std::string label;
  std::vector<double> x;
  std::vector<double> y;
  Rgb color = series_color(0);
};

/// Options of `render_line_plot`: `PlotOptions{}.size(640, 400).with_title("Loss").labels("step", "")`.
struct PlotOptions {
  int width = 640;
  int height = 400;
  std::string title;
  std::string x_label;
  std::string y_label;
  int text_scale = 2;     ///< font pixel size
  int line_width = 2;     ///< series line thickness in pixels
  bool legend = true;

  PlotOptions& size(int w, int h) {
    width = w;
    height = h;
    return *this;
  }
  PlotOptions& with_title(std::string t) {
    title = std::move(t);
    return *this;
  }
  PlotOptions& labels(std::string x, std::string y) {
    x_label = std::move(x);
    y_label = std::move(y);
    return *this;
  }
};

/// The plotting area in pixels: columns [left, right], rows [top, bottom]; the y axis is the
/// column `left`, the x axis the row `bottom`.
struct PlotLayout {
  int left = 0, right = 0, top = 0, bottom = 0;
};

/// Where `render_line_plot` puts the plotting area for `opt`.
inline PlotLayout plot_layout(const PlotOptions& opt) {
  const int s = opt.text_scale;
  const int th = Canvas::text_height(s);
  PlotLayout l;
  l.left = 10 * (Canvas::kGlyphWidth + 1) * s + (opt.y_label.empty() ? 0 : th + 2 * s);
  l.right = opt.width - 8 * s;
  l.top = (opt.title.empty() ? 4 * s : th + 6 * s);
  l.bottom = opt.height - (th + 6 * s) - (opt.x_label.empty() ? 0 : th + 4 * s);
  check<OptionError>(l.right - l.left >= 20 && l.bottom - l.top >= 20,
                     "nddr::viz::plot_layout: PlotOptions size ", opt.width, "x", opt.height,
                     " leaves no room for the plotting area at text_scale ", s);
  return l;
}

namespace detail {

// About `target` "nice" tick positions (1, 2 or 5 x 10^k apart) covering [lo, hi].
inline std::vector<double> nice_ticks(double lo, double hi, int target = 5) {
  const double span = hi - lo;
  const double raw = span / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step)
    t.push_back(std::abs(v) < 1e-12 * step ? 0.0 : v);
  return t;
}

// Compact tick label: %g with up to 4 significant digits.
inline std::string tick_label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace detail

/// Rasterises `series` as a line plot (white background, black axes, light grid, tick numbers,
/// legend in the top-right corner). The ranges cover every finite point, padded by 5% in y.
/// Throws OptionError for a size too small to hold the axes and ValueError for a series whose
/// x and y differ in length.
inline io::Image8 render_line_plot(const std::vector<Series>& series, const PlotOptions& opt = {}) {
  const PlotLayout l = plot_layout(opt);
  const int s = opt.text_scale;
  Canvas cv(opt.width, opt.height);
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const Series& se : series) {
    check<ValueError>(se.x.size() == se.y.size(), "nddr::viz::render_line_plot: series '",
                      se.label, "' has ", se.x.size(), " x values and ", se.y.size(), " y values");
    for (std::size_t i = 0; i < se.x.size(); ++i) {
      if (!std::isfinite(se.x[i]) || !std::isfinite(se.y[i])) continue;
      xmin = std::min(xmin, se.x[i]);
      xmax = std::max(xmax, se.x[i]);
      ymin = std::min(ymin, se.y[i]);
      ymax = std::max(ymax, se.y[i]);
    }
  }
  if (!(xmin <= xmax)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;  // nothing finite to show
  if (xmax - xmin <= 0) xmin -= 0.5, xmax += 0.5;
  if (ymax - ymin <= 0) ymin -= 0.5, ymax += 0.5;
  const double pad = 0.05 * (ymax - ymin);
  ymin -= pad;
  ymax += pad;
  const auto px = [&](double x) {
    return l.left + static_cast<int>(std::lround((x - xmin) / (xmax - xmin) * (l.right - l.left)));
  };
  const auto py = [&](double y) {
    return l.bottom - static_cast<int>(std::lround((y - ymin) / (ymax - ymin) * (l.bottom - l.top)));
  };
  const int th = Canvas::text_height(s);
  for (double t : detail::nice_ticks(xmin, xmax)) {
    const int x = px(t);
    cv.line(x, l.top, x, l.bottom - 1, kGrid);
    cv.line(x, l.bottom, x, l.bottom + 2 * s, kBlack);
    const std::string lab = detail::tick_label(t);
    cv.text(x - Canvas::text_width(lab, s) / 2, l.bottom + 3 * s, lab, kBlack, s);
  }
  for (double t : detail::nice_ticks(ymin, ymax)) {
    const int y = py(t);
    cv.line(l.left + 1, y, l.right, y, kGrid);
    cv.line(l.left - 2 * s, y, l.left, y, kBlack);
    const std::string lab = detail::tick_label(t);
    cv.text(l.left - 3 * s - Canvas::text_width(lab, s), y - th / 2, lab, kBlack, s);
  }
  for (const Series& se : series)
    for (std::size_t i = 1; i < se.x.size(); ++i) {
      const bool ok = std::isfinite(se.x[i - 1]) && std::isfinite(se.y[i - 1]) &&
                      std::isfinite(se.x[i]) && std::isfinite(se.y[i]);
      if (ok) cv.line(px(se.x[i - 1]), py(se.y[i - 1]), px(se.x[i]), py(se.y[i]), se.color, opt.line_width);
    }
  // Axes last, so that series never hide them.
  cv.line(l.left, l.top, l.left, l.bottom, kBlack);
  cv.line(l.left, l.bottom, l.right, l.bottom, kBlack);
  if (!opt.title.empty())
    cv.text((opt.width - Canvas::text_width(opt.title, s)) / 2, 2 * s, opt.title, kBlack, s);
  if (!opt.x_label.empty())
    cv.text((l.left + l.right - Canvas::text_width(opt.x_label, s)) / 2,
            l.bottom + th + 8 * s, opt.x_label, kBlack, s);
  if (!opt.y_label.empty()) cv.text(2 * s, l.top, opt.y_label, kBlack, s);
  if (opt.legend && !series.empty()) {
    int wmax = 0;
    for (const Series& se : series) wmax = std::max(wmax, Canvas::text_width(se.label, s));
    const int row = th + 3 * s, swatch = 6 * s;
    const int w = wmax + swatch + 7 * s, h = static_cast<int>(series.size()) * row + 3 * s;
    const int x0 = l.right - w - 2 * s, y0 = l.top + 2 * s;
    cv.fill_rect(x0, y0, w, h, kWhite);
    cv.line(x0, y0, x0 + w, y0, kBlack);
    cv.line(x0, y0 + h, x0 + w, y0 + h, kBlack);
    cv.line(x0, y0, x0, y0 + h, kBlack);
    cv.line(x0 + w, y0, x0 + w, y0 + h, kBlack);
    for (std::size_t i = 0; i < series.size(); ++i) {
      const int y = y0 + 3 * s + static_cast<int>(i) * row;
      cv.fill_rect(x0 + 2 * s, y + th / 2 - s, swatch, 2 * s, series[i].color);
      cv.text(x0 + swatch + 4 * s, y, series[i].label, kBlack, s);
    }
  }
  return cv.image();
}

/// Renders and writes a line plot as a PNG (see `render_line_plot`).
inline void write_line_plot(const std::string& path, const std::vector<Series>& series,
                            const PlotOptions& opt = {}) {
  io::write_png(path, render_line_plot(series, opt));
}

// ---------------------------------------------------------------------------------------------
// Colour maps and image helpers

/// Colour of segmentation label `label`: a 12-colour palette for labels 0..11 (DenseFashion uses
/// 0..9 for item classes and 10 for background, drawn dark grey); 255 (ignore) is black; any
/// other label throws ValueError.
inline Rgb segmentation_color(int label) {
  static constexpr std::array<Rgb, 12> palette{{{230, 25, 75},
                                                {60, 180, 75},
                                                {255, 225, 25},
                                                {0, 130, 200},
                                                {245, 130, 48},
                                                {145, 30, 180},
                                                {70, 240, 240},
                                                {240, 50, 230},
                                                {210, 245, 60},
                                                {250, 190, 212},
                                                {64, 64, 64},
                                                {170, 110, 40}}};
  if (label == 255) return kBlack;
  check<ValueError>(label >= 0 && label < 12, "nddr::viz::segmentation_color: label ", label,
                    " outside [0, 12) and not 255 (ignore)");
  return palette[static_cast<std::size_t>(label)];
}

/// The usual normal-map colouring: each component n in [-1, 1] maps to round((n + 1) / 2 * 255),
/// clamped to [0, 255] (x -> red, y -> green, z -> blue); a flat (0, 0, 1) normal is (128, 128, 255).
inline Rgb normal_color(double nx, double ny, double nz) {
  const auto f = [](double v) {
    const double c = std::lround((v + 1.0) * 0.5 * 255.0);
    return static_cast<std::uint8_t>(std::clamp(std::isfinite(c) ? c : 0.0, 0.0, 255.0));
  };
  return {f(nx), f(ny), f(nz)};
}

/// An RGB image of a label map (H, W) through `segmentation_color`.
inline io::Image8 segmentation_image(TensorView<const std::int32_t> labels) {
  check<ShapeError>(labels.shape().rank() == 2, "nddr::viz::segmentation_image: labels have shape ",
                    labels.shape(), ", expected (H, W)");
  Canvas cv(static_cast<int>(labels.shape()[1]), static_cast<int>(labels.shape()[0]));
  for (int y = 0; y < cv.height(); ++y)
    for (int x = 0; x < cv.width(); ++x) cv.set(x, y, segmentation_color(labels[y * cv.width() + x]));
  return cv.image();
}

/// An RGB image of a normal map (3, H, W) through `normal_color`.
template <class T>
io::Image8 normal_image(TensorView<const T> normals) {
  check<ShapeError>(normals.shape().rank() == 3 && normals.shape()[0] == 3,
                    "nddr::viz::normal_image: normals have shape ", normals.shape(),
                    ", expected (3, H, W)");
  const int h = static_cast<int>(normals.shape()[1]), w = static_cast<int>(normals.shape()[2]);
  const std::int64_t plane = static_cast<std::int64_t>(h) * w;
  Canvas cv(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const std::int64_t p = static_cast<std::int64_t>(y) * w + x;
      cv.set(x, y, normal_color(normals[p], normals[plane + p], normals[2 * plane + p]));
    }
  return cv.image();
}

/// An RGB image of a grey image (H, W), linearly mapping [lo, hi] to [0, 255] (clamped).
template <class T>
io::Image8 gray_image(TensorView<const T> x, double lo, double hi) {
  check<ShapeError>(x.shape().rank() == 2, "nddr::viz::gray_image: image has shape ",
                    x.shape(), ", expected (H, W)");
  check<OptionError>(hi > lo, "nddr::viz::gray_image: range [", lo, ", ", hi, "] is empty");
  Canvas cv(static_cast<int>(x.shape()[1]), static_cast<int>(x.shape()[0]));
  for (int y = 0; y < cv.height(); ++y)
    for (int q = 0; q < cv.width(); ++q) {
      const double v = std::clamp((static_cast<double>(x[y * cv.width() + q]) - lo) / (hi - lo), 0.0, 1.0);
      const auto g = static_cast<std::uint8_t>(std::lround(v * 255.0));
      cv.set(q, y, {g, g, g});
    }
  return cv.image();
}

/// `img` enlarged `factor` times with nearest-neighbour sampling.
inline io::Image8 upscale_nearest(const io::Image8& img, int factor) {
  check<OptionError>(factor >= 1, "nddr::viz::upscale_nearest: factor ", factor, " must be >= 1");
  io::Image8 out;
  out.width = img.width * factor;
  out.height = img.height * factor;
  out.channels = img.channels;
  out.pixels.resize(static_cast<std::size_t>(out.width) * out.height * out.channels);
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x)
      for (int c = 0; c < img.channels; ++c) out.at(y, x, c) = img.at(y / factor, x / factor, c);
  return out;
}

/// RGB images placed left to right, top-aligned, `gap` background pixels apart.
inline io::Image8 hconcat(const std::vector<io::Image8>& images, int gap = 4,
                          Rgb background = kWhite) {
  check<ValueError>(!images.empty(), "nddr::viz::hconcat: no images given");
  int w = gap * (static_cast<int>(images.size()) - 1), h = 0;
  for (const io::Image8& im : images) {
    check<ValueError>(im.channels == 3, "nddr::viz::hconcat: expected RGB images, got ",
                      im.channels, " channels");
    w += im.width;
    h = std::max(h, im.height);
  }
  Canvas cv(w, h, background);
  int x0 = 0;
  for (const io::Image8& im : images) {
    for (int y = 0; y < im.height; ++y)
      for (int x = 0; x < im.width; ++x)
        cv.set(x0 + x, y, {im.at(y, x, 0), im.at(y, x, 1), im.at(y, x, 2)});
    x0 += im.width + gap;
  }
  return cv.image();
}

/// RGB images stacked top to bottom, left-aligned, `gap` background pixels apart.
inline io::Image8 vconcat(const std::vector<io::Image8>& images, int gap = 4,
                          Rgb background = kWhite) {
  check<ValueError>(!images.empty(), "nddr::viz::vconcat: no images given");
  int h = gap * (static_cast<int>(images.size()) - 1), w = 0;
  for (const io::Image8& im : images) {
    check<ValueError>(im.channels == 3, "nddr::viz::vconcat: expected RGB images, got ",
                      im.channels, " channels");
    h += im.height;
    w = std::max(w, im.width);
  }
  Canvas cv(w, h, background);
  int y0 = 0;
  for (const io::Image8& im : images) {
    for (int y = 0; y < im.height; ++y)
      for (int x = 0; x < im.width; ++x)
        cv.set(x, y0 + y, {im.at(y, x, 0), im.at(y, x, 1), im.at(y, x, 2)});
    y0 += im.height + gap;
  }
  return cv.image();
}

}  // namespace nddr::viz
