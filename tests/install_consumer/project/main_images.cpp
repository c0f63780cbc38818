// A user's program that reads and writes images against the installed package: nddr::image_io
// (nddr::nddr + libpng + zlib) and <nddr/image_io.hpp>. Writes a PNG, reads it back and renders a
// plot (viz/plot.hpp).
#include <nddr/image_io.hpp>
#include <nddr/nddr.hpp>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "consumer_image.png";
  nddr::io::Image8 img;
  img.height = 2;
  img.width = 3;
  img.channels = 1;
  img.pixels = {0, 50, 100, 150, 200, 250};
  nddr::io::write_png(path, img);
  const nddr::io::Image8 back = nddr::io::read_png(path);
  const nddr::viz::Series s{"loss", {0, 1, 2}, {2.0, 1.0, 0.5}, nddr::viz::series_color(0)};
  const nddr::io::Image8 plot = nddr::viz::render_line_plot({s});
  if (back.pixels != img.pixels || plot.width <= 0) {
    std::cout << "nddr image_io consumer: wrong results\n";
    return 1;
  }
  std::cout << "nddr image_io consumer ok\n";
  return 0;
}
