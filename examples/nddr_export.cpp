// nddr-export: writes the inference forward of an nddr network as an ONNX model (docs/onnx.md).
//
// The network is one of `{tiny,vgg16,resnet101}-{st,mt,cross-stitch,sluice,nddr,nddr-shortcut}`
// (single-task, split multi-task with every stage shared, cross-stitch, sluice, NDDR-CNN,
// NDDR-CNN-Shortcut; two tasks except `-st`), with `--classes` outputs per task, its weights
// from `--weights` (a safetensors file of nddr's parameter names: save_parameters, the
// programs' `weights.safetensors`) or, without it, the seeded initialisation. The ONNX graph
// has one input `image` (float32 N x 3 x H x W, N, H and W free) and one output per task.
//
// Usage: nddr-export --network vgg16-nddr --weights W.safetensors --output nddr.onnx
//                    [--classes 40,3] [--outputs seg,normal] [--seed 1234]   (nddr-export --help)
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <system_error>
#include <nddr/backbones/resnet101.hpp>
#include <nddr/backbones/tiny.hpp>
#include <nddr/backbones/vgg16.hpp>
#include <nddr/fusion/cross_stitch.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/fusion/none.hpp>
#include <nddr/fusion/sluice.hpp>
#include <nddr/io/onnx.hpp>
#include <nddr/io/weights.hpp>
#include <nddr/multitask/network.hpp>
#include <nddr_apps/cli.hpp>
#include <nddr_apps/network_names.hpp>
#include <string>
#include <vector>

namespace {

constexpr const char* kProgram = "nddr-export";

struct Request {
  std::vector<std::int64_t> classes;
  std::vector<std::string> outputs;
  std::string weights, output;
  std::uint64_t seed = 1234;
};

template <class Spec>
int export_network(const Request& r) {
  std::array<std::int64_t, Spec::tasks> classes{};
  std::copy_n(r.classes.begin(), Spec::tasks, classes.begin());
  nddr::NetworkOptions<Spec> opt;
  opt.seed = r.seed;
  nddr::Network<Spec> net(classes, opt);
  if (!r.weights.empty()) nddr::io::load_parameters(r.weights, net.parameters());
  net.set_training(false);
  nddr::io::export_onnx(net, r.output,
                        nddr::io::OnnxExportOptions{}.outputs(r.outputs).doc(
                            r.weights.empty() ? "seeded initialisation" : "weights: " + r.weights));
  std::printf("%s: wrote %s (%zu task%s, opset %lld)\n", kProgram, r.output.c_str(), Spec::tasks,
              Spec::tasks == 1 ? "" : "s",
              static_cast<long long>(nddr::io::kOnnxOpset));
  return 0;
}

template <class B>
int export_method(const nddr::apps::NetworkName& n, const Request& r) {
  return nddr::apps::with_network_spec<B, false>(
      n, [&](auto spec) { return export_network<typename decltype(spec)::type>(r); });
}

// "40,3" -> {40, 3}: positive integers up to 100000.
bool parse_classes(const std::string& s, std::vector<std::int64_t>& out) {
  out.clear();
  std::size_t i = 0;
  while (i <= s.size()) {
    const std::size_t j = std::min(s.find(',', i), s.size());
    const std::string part = s.substr(i, j - i);
    if (part.empty() || part.size() > 6 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    const std::int64_t v = std::stoll(part);
    if (v < 1 || v > 100000) return false;
    out.push_back(v);
    i = j + 1;
  }
  return !out.empty() && out.size() <= 2;
}

// "seg,normal" -> names: non-empty, distinct, [A-Za-z0-9_.-] only, not "image".
bool parse_outputs(const std::string& s, std::vector<std::string>& out) {
  out.clear();
  std::size_t i = 0;
  while (i <= s.size()) {
    const std::size_t j = std::min(s.find(',', i), s.size());
    const std::string part = s.substr(i, j - i);
    const auto ok = [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '.' || c == '-';
    };
    if (part.empty() || part.size() > 64 || part == "image" || !std::all_of(part.begin(), part.end(), ok) ||
        std::find(out.begin(), out.end(), part) != out.end())
      return false;
    out.push_back(part);
    i = j + 1;
  }
  return !out.empty() && out.size() <= 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string network, classes, outputs;
  Request r;
  nddr::cli::ArgParser p(kProgram,
                         "Writes the inference forward of an nddr network as an ONNX model "
                         "(opset 17; docs/onnx.md).");
  p.text("network", network,
         "the network, BACKBONE-METHOD: BACKBONE tiny, vgg16, resnet101; METHOD st (single-task), "
         "mt (split), cross-stitch, sluice, nddr, nddr-shortcut",
         nddr::apps::network_names_text(nddr::apps::kAllBackbones, false),
         [](const std::string& s) {
           return nddr::apps::parse_network_name(s, nddr::apps::kAllBackbones, false).has_value();
         },
         "NAME")
      .required()
      .path("weights", r.weights,
            "safetensors file of nddr's parameter names (save_parameters); default: the "
            "seeded initialisation",
            "FILE")
      .path("output", r.output, "the .onnx file to write (atomically)", "FILE")
      .required()
      .text("classes", classes, "outputs per task, one value per task (default 40,3; -st: 40)",
            "one or two integers in [1, 100000], comma-separated",
            [](const std::string& s) {
              std::vector<std::int64_t> v;
              return parse_classes(s, v);
            },
            "N[,N]")
      .text("outputs", outputs, "names of the graph outputs, one per task (default task0,task1)",
            "one or two distinct names of [A-Za-z0-9_.-], not 'image'",
            [](const std::string& s) {
              std::vector<std::string> v;
              return parse_outputs(s, v);
            },
            "NAME[,NAME]")
      .integer("seed", r.seed, "initialisation seed (without --weights)", std::uint64_t{0},
               std::uint64_t{1} << 62);
  if (const auto status = p.parse_or_exit(argc, argv)) return *status;
  const bool single = network.ends_with("-st");
  const std::size_t tasks = single ? 1 : 2;
  if (classes.empty()) classes = single ? "40" : "40,3";
  parse_classes(classes, r.classes);
  if (r.classes.size() != tasks)
    return p.usage_error("classes", std::to_string(tasks) + " value(s) for " + network, classes);
  if (!outputs.empty()) {
    parse_outputs(outputs, r.outputs);
    if (r.outputs.size() != tasks)
      return p.usage_error("outputs", std::to_string(tasks) + " name(s) for " + network, outputs);
  }
  // Files last: a missing weights file or output directory is refused before any work.
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!r.weights.empty() && !fs::is_regular_file(r.weights, ec))
    return p.usage_error("weights", "an existing regular file", r.weights);
  const fs::path dir = fs::path(r.output).parent_path();
  if (fs::is_directory(r.output, ec) || !fs::is_directory(dir.empty() ? "." : dir, ec))
    return p.usage_error("output", "a file name in an existing directory", r.output);
  try {
    const auto n = *nddr::apps::parse_network_name(network, nddr::apps::kAllBackbones, false);
    if (n.backbone == "tiny") return export_method<nddr::TinyNet>(n, r);
    if (n.backbone == "vgg16") return export_method<nddr::VGG16>(n, r);
    return export_method<nddr::ResNet101>(n, r);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return 1;
  }
}
