#pragma once
/// \file
/// `nddr-nyuv2 --check-data DIR` (docs/data-nyuv2.md, "Checking a folder"): validates an
/// NDDR-CNN-format NYUv2 folder and reports every problem, not only the first.
///
/// Checked: the four list files (readable UTF-8 `<image> <label>` lines, io::TextLineReader
/// rules), 795 training and 654 test frames, seg and normal lists naming the same images in the
/// same order, no image in both splits, and per frame: each PNG readable, the image with 1, 3 or
/// 4 channels, the seg label 1-channel with values 0..39 or 255, the normal label 3-channel with
/// at least one valid pixel (not all three 255), both labels of the image's size. Notes (not
/// problems): the normal labels' mean length under --centered-normals ((v - 127.5) / 127.5),
/// which is about 1 for real normals: far from 1 suggests a different encoding.
///
/// Needs nddr::image_io (libpng).

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/data/nyuv2.hpp"
#include "nddr/io/png.hpp"
#include "nddr_apps/cli.hpp"

namespace nddr::apps {

/// What `check_nyuv2_data` expects.
struct NyuCheckOptions {
  std::int64_t train_frames = 795;
  std::int64_t test_frames = 654;
};

/// What `check_nyuv2_data` found.
struct NyuCheckReport {
  std::vector<std::string> problems;  ///< one line each; empty when the folder is usable
  std::vector<std::string> notes;
  std::int64_t frames = 0;  ///< frames whose files were read
  bool ok() const { return problems.empty(); }
};

/// Checks NYUv2 folder `dir` (see the file comment). Never throws for what the folder holds.
inline NyuCheckReport check_nyuv2_data(const std::string& dir, const NyuCheckOptions& o = {}) {
  NyuCheckReport rep;
  auto problem = [&](auto&&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    rep.problems.push_back(os.str());
  };
  if (!std::filesystem::is_directory(dir)) {
    problem("'", dir, "': not a directory");
    return rep;
  }
  double norm_sum = 0;
  std::int64_t norm_count = 0;
  std::map<std::string, std::string> split_of;  // image path -> split
  for (const auto& [stem, expected] :
       {std::pair<std::string, std::int64_t>{"training", o.train_frames},
        std::pair<std::string, std::int64_t>{"testing", o.test_frames}}) {
    std::vector<data::ListEntry> lists[2];
    bool readable[2] = {false, false};
    const std::string names[2] = {dir + "/list/" + stem + "_seg.txt",
                                  dir + "/list/" + stem + "_normal_mask.txt"};
    for (int k = 0; k < 2; ++k) {
      try {
        lists[k] = data::read_list_file(names[k]);
        readable[k] = true;
        if (static_cast<std::int64_t>(lists[k].size()) != expected)
          problem("'", names[k], "': ", lists[k].size(), " entries, expected ", expected);
      } catch (const std::exception& e) {
        problem(e.what());
      }
    }
    if (readable[0] && readable[1] && lists[0].size() != lists[1].size())
      problem("'", names[0], "' has ", lists[0].size(), " entries but '", names[1], "' has ",
              lists[1].size());
    const std::size_t n = readable[0] ? lists[0].size() : readable[1] ? lists[1].size() : 0;
    for (std::size_t i = 0; i < n; ++i) {
      const bool has_seg = readable[0] && i < lists[0].size();
      const bool has_nrm = readable[1] && i < lists[1].size();
      const std::string image = has_seg ? lists[0][i].image : lists[1][i].image;
      if (has_seg && has_nrm && lists[0][i].image != lists[1][i].image)
        problem("'", names[0], "' line ", i + 1, " names image '", lists[0][i].image, "' but '",
                names[1], "' names '", lists[1][i].image, "'");
      std::vector<std::string> named{image};
      if (has_seg && has_nrm && lists[1][i].image != image) named.push_back(lists[1][i].image);
      for (const std::string& name : named) {
        const auto [it, fresh] = split_of.emplace(name, stem);
        if (!fresh)
          problem("image '", name, "' is listed twice (", it->second, " and ", stem, " line ",
                  i + 1, ")");
      }
      std::optional<io::Image8> img, seg, nrm;
      auto read = [&](std::optional<io::Image8>& out, const std::string& path) {
        try {
          out = io::read_png(path);
        } catch (const std::exception& e) {
          problem(e.what());
        }
      };
      const std::string ip = dir + image;
      read(img, ip);
      if (img && (img->channels == 2))
        problem("image '", ip, "' has 2 channels (gray+alpha), expected 1, 3 or 4");
      if (has_seg) {
        const std::string sp = dir + lists[0][i].label;
        read(seg, sp);
        if (seg && seg->channels != 1) {
          problem("seg label '", sp, "' has ", seg->channels,
                  " channels, expected 1 (8-bit gray, not a palette)");
        } else if (seg) {
          std::int64_t bad = 0;
          int first = -1;
          std::int64_t at = 0;
          for (std::size_t p = 0; p < seg->pixels.size(); ++p) {
            const int v = seg->pixels[p];
            if (v >= data::kNyuClasses && v != data::kIgnoreLabel) {
              if (bad++ == 0) {
                first = v;
                at = static_cast<std::int64_t>(p);
              }
            }
          }
          if (bad > 0)
            problem("seg label '", sp, "': ", bad, " pixels not in 0..", data::kNyuClasses - 1,
                    " or ", data::kIgnoreLabel, " (first: value ", first, " at row ",
                    at / seg->width, ", col ", at % seg->width, ")");
        }
        if (img && seg && (seg->height != img->height || seg->width != img->width))
          problem("seg label '", sp, "' is ", seg->height, "x", seg->width, " but image '", ip,
                  "' is ", img->height, "x", img->width);
      }
      if (has_nrm) {
        const std::string np = dir + lists[1][i].label;
        read(nrm, np);
        if (nrm && nrm->channels != 3) {
          problem("normal label '", np, "' has ", nrm->channels, " channels, expected 3");
        } else if (nrm) {
          std::int64_t valid = 0;
          for (std::size_t p = 0; p + 2 < nrm->pixels.size(); p += 3) {
            const int a = nrm->pixels[p], b = nrm->pixels[p + 1], c = nrm->pixels[p + 2];
            if (a == 255 && b == 255 && c == 255) continue;
            ++valid;
            const double x = (a - 127.5) / 127.5, y = (b - 127.5) / 127.5, z = (c - 127.5) / 127.5;
            norm_sum += std::sqrt(x * x + y * y + z * z);
            ++norm_count;
          }
          if (valid == 0)
            problem("normal label '", np, "': every pixel is invalid (255,255,255)");
        }
        if (img && nrm && (nrm->height != img->height || nrm->width != img->width))
          problem("normal label '", np, "' is ", nrm->height, "x", nrm->width, " but image '",
                  ip, "' is ", img->height, "x", img->width);
      }
      if (img) ++rep.frames;
    }
  }
  if (norm_count > 0) {
    const double mean = norm_sum / static_cast<double>(norm_count);
    std::ostringstream os;
    os << "normal labels: mean length " << mean << " under --centered-normals ((v - 127.5) / "
       << "127.5) over " << norm_count << " valid pixels"
       << (std::abs(mean - 1.0) > 0.2 ? " (not unit normals: check the encoding)" : "");
    rep.notes.push_back(os.str());
  }
  return rep;
}

/// Whether the command line asks for `--check-data` (then `check_data_main` handles it).
inline bool wants_check_data(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--" ) break;
    if (a == "--check-data" || a.starts_with("--check-data=")) return true;
  }
  return false;
}

/// `PROGRAM --check-data DIR` (no other flag): the problems on `out`, one per line, then a
/// summary; returns 0 when there are none, 1 otherwise, 2 for a bad command line.
inline int check_data_main(const std::string& program, int argc, const char* const* argv,
                           std::ostream& out, std::ostream& err) {
  std::string dir;
  cli::ArgParser p(program, "--check-data DIR: checks an NDDR-format NYUv2 folder (list files, "
                            "795/654 frames, image and label sizes, label values) and reports "
                            "every problem; no other flag");
  p.path("check-data", dir, "the folder to check (as --data-dir)", "DIR").required();
  if (const auto status = p.parse_or_exit(argc, argv, out, err)) return *status;
  const NyuCheckReport r = check_nyuv2_data(dir);
  for (const std::string& line : r.problems) out << "problem: " << line << "\n";
  for (const std::string& line : r.notes) out << "note: " << line << "\n";
  out << "'" << dir << "': " << r.frames << " frames read, " << r.problems.size()
      << (r.problems.size() == 1 ? " problem" : " problems") << "\n";
  return r.ok() ? 0 : 1;
}

}  // namespace nddr::apps
