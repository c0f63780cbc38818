#pragma once
/// \file
/// Umbrella of everything in nddr that reads or writes images or gzip: PNG (`io::read_png`,
/// `io::write_png`), IDX (`io::read_idx`, gzipped or plain), the data sets read from them
/// (Fashion-MNIST and DenseFashion, NYUv2 with its augmentation, IMDB-WIKI) and the plots and
/// colour maps of `viz/plot.hpp`. Link the `nddr::image_io` CMake target, which adds libpng and
/// zlib to `nddr::nddr`; <nddr/nddr.hpp> includes none of these, so programs that never touch
/// images link neither library.

#include "nddr/io/idx.hpp"
#include "nddr/io/png.hpp"

#include "nddr/data/augment.hpp"
#include "nddr/data/fashion.hpp"
#include "nddr/data/imdb_wiki.hpp"
#include "nddr/data/nyuv2.hpp"

#include "nddr/viz/plot.hpp"
