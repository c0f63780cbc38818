// nddr-nyuv2's driver, instantiated once for every method and backbone of kNyuV2Table (the
// nddr_apps library, apps/CMakeLists.txt), and its --save-predictions writer.
#include "nddr_apps/nyuv2_experiment.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "nddr/io/png.hpp"

namespace nddr::experiments {

ExperimentResult run_nyuv2(const NyuV2Config& c, std::ostream& out) {
  validate_nyuv2(c);
  return with_backbone(kNyuV2Table, c.backbone, [&](auto backbone) {
    return run_nyuv2_with<typename decltype(backbone)::type>(c, out);
  });
}

std::array<std::uint8_t, 3> nyuv2_label_color(int label) {
  if (label < 0 || label >= data::kNyuClasses) return {0, 0, 0};
  // The PASCAL VOC colour map: the bits of label + 1 spread over the channels' high bits (label
  // 0 is not black, which stays for "ignore").
  std::array<std::uint8_t, 3> rgb{0, 0, 0};
  int id = label + 1;
  for (int shift = 7; id > 0; --shift, id >>= 3)
    for (int ch = 0; ch < 3; ++ch)
      rgb[static_cast<std::size_t>(ch)] |= static_cast<std::uint8_t>(((id >> ch) & 1) << shift);
  return rgb;
}

std::vector<std::string> nyuv2_prediction_names(const std::string& image,
                                                std::span<const char* const> tasks) {
  const std::string stem = std::filesystem::path(image).stem().string();
  std::vector<std::string> names;
  for (const char* t : tasks) {
    if (std::string_view(t) == NyuSeg::name) {
      names.push_back(stem + "_seg.png");
      names.push_back(stem + "_seg_color.png");
    } else {
      names.push_back(stem + "_normal.png");
    }
  }
  return names;
}

void prepare_prediction_dir(const NyuV2Config& c, const data::NyuV2Dataset& test) {
  const std::int64_t n = c.eval_limit > 0 ? std::min(c.eval_limit, test.size()) : test.size();
  std::map<std::string, std::int64_t> stems;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::string stem = std::filesystem::path(test.image_path(i)).stem().string();
    const auto [it, fresh] = stems.emplace(stem, i);
    check<IoError>(fresh, c.program, ": --save-predictions: test images '",
                   test.image_path(it->second), "' and '", test.image_path(i),
                   "' share the name '", stem, "', so their prediction files would collide");
  }
  std::error_code ec;
  std::filesystem::create_directories(c.save_predictions, ec);
  check<IoError>(!ec && std::filesystem::is_directory(c.save_predictions), c.program,
                 ": --save-predictions: cannot create the directory '", c.save_predictions,
                 "': ", ec ? ec.message() : "a file is in the way");
}

void NyuV2Data::save_prediction(std::int64_t i, std::span<const Tensor<float>> outputs,
                                std::span<const char* const> tasks) const {
  const std::string image = test.image_path(i);
  const std::vector<std::string> names = nyuv2_prediction_names(image, tasks);
  const std::filesystem::path dir(save_dir);
  std::size_t file = 0;
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    const Tensor<float>& o = outputs[k];  // (1, C, H, W)
    const Shape& s = o.shape();
    check<ShapeError>(s.rank() == 4 && s.n() == 1, "nddr-nyuv2: --save-predictions: the output "
                      "of task ", tasks[k], " for '", image, "' has shape ", s,
                      ", expected (1, C, H, W)");
    const auto h = static_cast<int>(s.h()), w = static_cast<int>(s.w());
    const std::int64_t hw = s.h() * s.w();
    if (std::string_view(tasks[k]) == NyuSeg::name) {
      io::Image8 ids{h, w, 1, std::vector<std::uint8_t>(static_cast<std::size_t>(hw))};
      io::Image8 colour{h, w, 3, std::vector<std::uint8_t>(static_cast<std::size_t>(hw) * 3)};
      for (std::int64_t p = 0; p < hw; ++p) {
        int best = 0;  // the arg-max over classes, the first on ties (as the metrics take it)
        for (std::int64_t c = 1; c < s.c(); ++c)
          if (o[c * hw + p] > o[best * hw + p]) best = static_cast<int>(c);
        ids.pixels[static_cast<std::size_t>(p)] = static_cast<std::uint8_t>(best);
        const auto rgb = nyuv2_label_color(best);
        std::copy(rgb.begin(), rgb.end(), colour.pixels.begin() + p * 3);
      }
      io::write_png((dir / names[file++]).string(), ids);
      io::write_png((dir / names[file++]).string(), colour);
    } else {
      // The label encoding: raw triplets as they are (kRawPaper: the network regresses the
      // stored bytes), or unit vectors as 127.5 (n + 1) (kCentered); (255, 255, 255) means
      // "invalid" in the labels, so a prediction never takes it.
      const bool raw = test.options().normal_encoding == data::NormalEncoding::kRawPaper;
      io::Image8 rgb{h, w, 3, std::vector<std::uint8_t>(static_cast<std::size_t>(hw) * 3)};
      for (std::int64_t p = 0; p < hw; ++p) {
        const double x = o[p], y = o[hw + p], z = o[2 * hw + p];
        const double norm = raw ? 1.0 : std::sqrt(std::max(x * x + y * y + z * z, 1e-12));
        bool all_max = true;
        for (int ch = 0; ch < 3; ++ch) {
          const double v = (ch == 0 ? x : ch == 1 ? y : z) / norm;
          const double e = raw ? v : 127.5 * (v + 1.0);
          const double b = std::isfinite(e) ? std::clamp(std::round(e), 0.0, 255.0) : 0.0;
          rgb.pixels[static_cast<std::size_t>(p * 3 + ch)] = static_cast<std::uint8_t>(b);
          all_max = all_max && b == 255.0;
        }
        if (all_max) rgb.pixels[static_cast<std::size_t>(p * 3 + 2)] = 254;
      }
      io::write_png((dir / names[file++]).string(), rgb);
    }
  }
}

}  // namespace nddr::experiments
