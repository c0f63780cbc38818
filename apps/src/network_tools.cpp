// nddr-summary and nddr-forward (nddr_apps/network_tools.hpp, docs/tools.md), compiled once in
// the nddr_apps library. Instantiated: every tiny-* and vgg16-* network of network_names.hpp on
// the CPU; the summary builds Network<Spec, Cpu, float> (no forward), nddr-forward the forward
// and backward of Network<Spec, Cpu, float>. f64, resnet101-* and CUDA are refused with a
// message: their instantiations would cost CI more compile time than the tools are worth (f32
// for all 20 networks and f64 for the 10 tiny-* ones measured over 217 CPU-s at -O3; the budget
// of this TU is about 150).
#include "nddr_apps/network_tools.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/backbones/tiny.hpp"
#include "nddr/backbones/vgg16.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/io/safetensors.hpp"
#include "nddr/io/weights.hpp"
#include "nddr/layers/batch_norm.hpp"
#include "nddr/layers/conv2d.hpp"
#include "nddr/layers/dropout.hpp"
#include "nddr/layers/pool.hpp"
#include "nddr/layers/relu.hpp"
#include "nddr/layers/resize.hpp"
#include "nddr/layers/sequential.hpp"
#include "nddr/multitask/network.hpp"
#include "nddr/tasks/tasks.hpp"
#include "nddr_apps/cli.hpp"
#include "nddr_apps/network_names.hpp"

namespace nddr::apps {

namespace {

constexpr std::array<std::string_view, 2> kToolBackbones = {"tiny", "vgg16"};

std::optional<NetworkName> tool_network(const std::string& s) {
  return parse_network_name(s, kToolBackbones, true);
}

// Calls f(std::type_identity<Spec>) for the network `n` (tiny or vgg16).
template <class F>
decltype(auto) with_tool_network(const NetworkName& n, F&& f) {
  if (n.backbone == "tiny") return with_network_spec<TinyNet, true>(n, f);
  check<OptionError>(n.backbone == "vgg16", "network '", n.text(),
                     "' is not built by the network tools (tiny-* and vgg16-* only)");
  return with_network_spec<VGG16, true>(n, f);
}

// "40,3" -> {40, 3}: 1 or 2 integers in [1, 100000].
std::optional<std::vector<std::int64_t>> parse_ints(const std::string& s, std::size_t max_count,
                                                    std::int64_t max_value) {
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i <= s.size();) {
    const std::size_t j = std::min(s.find(',', i), s.size());
    const auto v = cli::parse_integer<std::int64_t>(std::string_view(s).substr(i, j - i));
    if (!v || *v < 1 || *v > max_value || out.size() == max_count) return std::nullopt;
    out.push_back(*v);
    i = j + 1;
  }
  return out;
}

std::string shape_text(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (int i = 0; i < s.rank(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

// ---------------------------------------------------------------------------------------------
// nddr-summary

// The output shape and multiply-adds of child i of `seq` (the layer types of the tiny and
// VGG-16 networks; Error naming the layer for another).
template <class T>
std::pair<Shape, std::int64_t> child_shape(const Sequential<T, Cpu>& seq, std::size_t i,
                                           const Shape& in, const std::string& name) {
  if (const auto* l = seq.template child_if<Conv2d<T, Cpu>>(i)) {
    const Shape out = l->output_shape(in);
    const Shape w = l->weight_shape();
    return {out, out.numel() * w.c() * w.h() * w.w()};
  }
  if (const auto* l = seq.template child_if<OutputConv2d<T, Cpu>>(i)) {
    const Shape out = l->output_shape(in);
    const Shape w = l->weight_shape();
    return {out, out.numel() * w.c() * w.h() * w.w()};
  }
  if (const auto* l = seq.template child_if<BatchNorm2d<T, Cpu>>(i))
    return {l->output_shape(in), 0};
  if (const auto* l = seq.template child_if<ReLU<T, Cpu>>(i)) return {l->output_shape(in), 0};
  if (const auto* l = seq.template child_if<MaxPool2d<T, Cpu>>(i)) return {l->output_shape(in), 0};
  if (const auto* l = seq.template child_if<AvgPool2d<T, Cpu>>(i)) return {l->output_shape(in), 0};
  if (const auto* l = seq.template child_if<Dropout<T, Cpu>>(i)) return {l->output_shape(in), 0};
  if (const auto* l = seq.template child_if<Resize<T, Cpu>>(i)) return {l->output_shape(in), 0};
  throw Error("nddr-summary: layer '" + name + "' has a type the summary does not know");
}

class SummaryBuilder {
 public:
  SummaryBuilder(const std::vector<ParamEntry>& params, const std::vector<ParamGroup>& groups)
      : params_(params), groups_(groups) {}

  void add(std::string name, std::string shape, std::int64_t macs) {
    s_.macs += macs;
    s_.rows.push_back(SummaryRow{std::move(name), std::move(shape), 0, macs, ""});
  }

  // Rows for every child of `seq` named `prefix.<child>`; returns the output shape.
  template <class T>
  Shape sequential(const Sequential<T, Cpu>& seq, const std::string& prefix, Shape in) {
    for (std::size_t i = 0; i < seq.size(); ++i) {
      const std::string name = prefix + "." + seq.names()[i];
      if (const auto* inner = seq.template child_if<Sequential<T, Cpu>>(i)) {
        in = sequential(*inner, name, in);
        continue;
      }
      const auto [out, macs] = child_shape(seq, i, in, name);
      add(name, shape_text(out), macs);
      in = out;
    }
    return in;
  }

  // Every parameter goes to the row with the longest name it starts with ("conv1_1.bn.gamma"
  // to the row conv1_1.bn, not conv1_1).
  NetworkSummary take(std::int64_t parameters, std::int64_t buffers) {
    std::vector<std::set<std::string>> groups(s_.rows.size());
    for (const ParamEntry& e : params_) {
      std::size_t best = s_.rows.size();
      for (std::size_t i = 0; i < s_.rows.size(); ++i)
        if (e.name.starts_with(s_.rows[i].name + ".") &&
            (best == s_.rows.size() || s_.rows[i].name.size() > s_.rows[best].name.size()))
          best = i;
      check<Error>(best < s_.rows.size(), "nddr-summary: parameter '", e.name, "' has no row");
      s_.rows[best].parameters += e.shape.numel();
      groups[best].insert(groups_.at(e.group).name);
    }
    for (std::size_t i = 0; i < s_.rows.size(); ++i) {
      for (const auto& g : groups[i]) s_.rows[i].group += (s_.rows[i].group.empty() ? "" : "+") + g;
      if (s_.rows[i].group.empty()) s_.rows[i].group = "-";
    }
    s_.parameters = parameters;
    s_.buffers = buffers;
    return std::move(s_);
  }

 private:
  const std::vector<ParamEntry>& params_;
  const std::vector<ParamGroup>& groups_;
  NetworkSummary s_;
};

// The walk of Network::forward over shapes only (network.hpp's shape_grid), a row per layer.
template <class Spec>
NetworkSummary summarize(const std::vector<std::int64_t>& classes, const Shape& input) {
  using Net = Network<Spec, Cpu, float>;
  constexpr std::size_t K = Net::kTasks, S = Net::kStages;
  using FusionLayer = typename Net::FusionLayerType;
  std::array<std::int64_t, K> outputs{};
  std::copy_n(classes.begin(), K, outputs.begin());
  Net net(outputs);
  const auto& store = net.parameters();
  SummaryBuilder b(store.parameters(), store.groups());
  std::array<std::array<Shape, S>, K> f;  // task k's feature after stage s and its fusion
  for (std::size_t s = 0; s < S; ++s) {
    std::array<Shape, K> cur;
    for (std::size_t k = 0; k < K; ++k) {
      if (s < Net::kShared && k > 0) {
        cur[k] = cur[0];
        continue;
      }
      const std::string stage = "stage" + std::to_string(s + 1);
      const std::string prefix =
          s < Net::kShared ? "shared." + stage : "task" + std::to_string(k) + "." + stage;
      cur[k] = b.sequential(net.stage(k, s), prefix, s == 0 ? input : f[k][s - 1]);
    }
    if (Spec::fused(s)) {
      auto& layer = net.fusion(s);
      const std::vector<Shape> fused = layer.output_shapes(std::span<const Shape>(cur));
      const std::string name = "fusion.stage" + std::to_string(s + 1);
      // P = K S: the side of a cross-stitch or sluice mixing matrix, name.alpha (P, P).
      std::int64_t subspaces_p = 0;
      for (const ParamEntry& e : store.parameters())
        if (e.name == name + ".alpha") subspaces_p = e.shape[0];
      std::int64_t macs = 0;
      for (std::size_t k = 0; k < K; ++k) {
        if constexpr (std::is_same_v<FusionLayer, NddrLayer<float, Cpu>>)
          macs += fused[k].numel() * layer.conv(k).weight_shape().c();  // 1x1 conv of K C inputs
        else if constexpr (std::derived_from<FusionLayer,
                                             nddr::detail::SubspaceMixLayer<float, Cpu>>)
          macs += fused[k].numel() * subspaces_p;  // a mix of K S subspaces per element
      }
      std::string shapes = shape_text(fused[0]);
      const bool same = std::all_of(fused.begin(), fused.end(),
                                    [&](const Shape& x) { return x == fused[0]; });
      if (same) {
        shapes = std::to_string(K) + " x " + shapes;
      } else {
        for (std::size_t k = 1; k < K; ++k) shapes += " " + shape_text(fused[k]);
      }
      b.add(name, shapes, macs);
      std::copy(fused.begin(), fused.end(), cur.begin());
    }
    for (std::size_t k = 0; k < K; ++k) f[k][s] = cur[k];
  }
  std::array<Shape, K> head_in;
  for (std::size_t k = 0; k < K; ++k) head_in[k] = f[k][S - 1];
  if constexpr (Spec::shortcut) {
    for (std::size_t m = 0; m < net.shortcut_count(); ++m) {
      auto& sc = net.shortcut(m);
      const Shape out = sc.output_shape(std::span<const Shape>(f[m].data(), S));
      b.add(net.shortcut_count() == 1 && K > 1 ? std::string("shortcut.shared")
                                                : "shortcut.task" + std::to_string(m),
            shape_text(out), out.numel() * sc.concat_channels());
      if (net.shortcut_count() == 1)
        head_in.fill(out);
      else
        head_in[m] = out;
    }
  }
  for (std::size_t k = 0; k < K; ++k)
    b.sequential(net.head(k), "task" + std::to_string(k) + ".head", head_in[k]);
  std::int64_t buffers = 0;
  for (const ParamEntry& e : store.buffers()) buffers += e.shape.numel();
  std::int64_t parameters = 0;
  for (const ParamEntry& e : store.parameters()) parameters += e.shape.numel();
  return b.take(parameters, buffers);
}

// ---------------------------------------------------------------------------------------------
// nddr-forward

struct ForwardRequest {
  NetworkName network;
  std::vector<std::int64_t> classes;
  std::string weights, input, output, targets;
  std::vector<double> loss_weights;
  bool train = false;
};

constexpr const char* kForward = "nddr-forward";

// IoError "nddr-forward: FILE: what".
template <class... Args>
[[noreturn]] void file_fail(const std::string& path, const Args&... what) {
  throw IoError(nddr::detail::concat(kForward, ": ", path, ": ", what...));
}

// One task's target: int labels (softmax cross-entropy) or floating normals (cosine loss).
template <class T>
struct Target {
  std::optional<Tensor<std::int32_t>> labels;
  std::optional<Tensor<T>> normals;
};

template <class T>
Target<T> read_target(const io::SafetensorsFile& f, const std::string& name, const Shape& out) {
  const std::string& path = f.path();
  if (!f.contains(name))
    file_fail(path, "no tensor '", name, "' (--targets needs one per task: task0[, task1])");
  const auto dims = f.shape(name);
  std::vector<std::int64_t> want_labels = {out.n(), out.h(), out.w()};
  std::vector<std::int64_t> want_labels4 = {out.n(), 1, out.h(), out.w()};
  std::vector<std::int64_t> want_normals = {out.n(), out.c(), out.h(), out.w()};
  Target<T> t;
  if (io::detail::is_floating(f.dtype(name))) {
    if (out.c() != 3 || dims != want_normals)
      file_fail(path, "tensor '", name, "' is floating point (surface normals) of shape ",
                io::detail::shape_str(dims), ", expected a 3-channel output and shape ",
                io::detail::shape_str(want_normals));
    t.normals = f.tensor<T>(name);
  } else {
    if (dims != want_labels && dims != want_labels4)
      file_fail(path, "tensor '", name, "' holds integer labels of shape ",
                io::detail::shape_str(dims), ", expected ", io::detail::shape_str(want_labels),
                " or ", io::detail::shape_str(want_labels4));
    t.labels = f.tensor<std::int32_t>(name);  // (N, 1, H, W) is read as (N, H, W)
  }
  return t;
}

template <class Spec, class T>
std::string run_forward(const ForwardRequest& r) {
  using Net = Network<Spec, Cpu, T>;
  constexpr std::size_t K = Net::kTasks;
  std::array<std::int64_t, K> outputs{};
  std::copy_n(r.classes.begin(), K, outputs.begin());
  Net net(outputs);
  // Everything read and checked before any computation.
  io::load_parameters(r.weights, net.parameters());
  const io::SafetensorsFile in = io::SafetensorsFile::read(r.input);
  if (!in.contains("image"))
    file_fail(r.input, "no tensor 'image' (the input, (N, 3, H, W))");
  const auto dims = in.shape("image");
  const std::int64_t channels = Spec::template backbone<0>::input_channels;
  if (dims.size() != 4 || dims[1] != channels || dims[0] < 1 || dims[2] < 1 || dims[3] < 1)
    file_fail(r.input, "tensor 'image' has shape ", io::detail::shape_str(dims),
              ", expected (N, ", channels, ", H, W)");
  const Tensor<T> x = in.tensor<T>("image");
  std::array<Shape, K> out_shapes;
  try {
    for (std::size_t k = 0; k < K; ++k) out_shapes[k] = net.output_shape(k, x.shape());
  } catch (const ShapeError& e) {
    file_fail(r.input, "tensor 'image' of shape ", io::detail::shape_str(dims),
              " is not an input of ", r.network.text(), ": ", e.what());
  }
  std::vector<Target<T>> targets;
  if (!r.targets.empty()) {
    const io::SafetensorsFile tf = io::SafetensorsFile::read(r.targets);
    for (std::size_t k = 0; k < K; ++k)
      targets.push_back(read_target<T>(tf, "task" + std::to_string(k), out_shapes[k]));
  }
  net.set_training(r.train);
  Context<Cpu> ctx;
  const auto y = net.forward(ctx, x.cview());
  std::vector<io::SafetensorsEntry> entries;
  for (std::size_t k = 0; k < K; ++k)
    entries.push_back(io::entry<T>("task" + std::to_string(k), y[k]));
  std::vector<Tensor<T>> losses;
  std::vector<Tensor<T>> douts;
  if (!targets.empty()) {
    T total = 0;
    for (std::size_t k = 0; k < K; ++k) {
      douts.emplace_back(y[k].shape());
      douts.back().zero();
      const T w = static_cast<T>(r.loss_weights.empty() ? 1.0 : r.loss_weights[k]);
      T value;
      if (targets[k].labels) {
        const Tensor<std::int32_t>& l = *targets[k].labels;
        LossSink<T, Cpu> sink(ctx, static_cast<double>(w));
        nddr::detail::task_cross_entropy(
            "nddr-forward: the segmentation loss", y[k].shape().c(),
            Segmentation<1>::ignore_label, sink, y[k],
            TensorView<const std::int32_t>(l.data(), Shape{y[k].shape().n(), y[k].shape().h(),
                                                           y[k].shape().w()}),
            douts.back().view());
        value = sink.value();
      } else {
        value = nddr::task_loss<SurfaceNormal>(ctx, y[k], targets[k].normals->cview(),
                                               douts.back().view(), w);
      }
      losses.emplace_back(Shape{1});
      losses.back()[0] = value;
      total += value;
    }
    losses.emplace_back(Shape{1});
    losses.back()[0] = total;
    std::vector<TensorView<const T>> dviews;
    for (const auto& d : douts) dviews.push_back(d.cview());
    net.backward(ctx, x.cview(), dviews);
    entries.push_back(io::entry<T>("loss", losses.back()));
    for (std::size_t k = 0; k < K; ++k)
      entries.push_back(io::entry<T>("loss/task" + std::to_string(k), losses[k]));
    const auto& store = net.parameters();
    for (std::size_t i = 0; i < store.parameters().size(); ++i)
      entries.push_back(
          io::entry<T>("grad/" + store.parameters()[i].name, store.grad(ParamId{i})));
  }
  io::write_safetensors(r.output, entries,
                        {{"network", r.network.text()}, {"mode", r.train ? "train" : "inference"}});
  return std::to_string(entries.size()) + " tensors";
}

}  // namespace

NetworkSummary summarize_network(const std::string& network,
                                 const std::vector<std::int64_t>& classes, const Shape& input) {
  const auto n = tool_network(network);
  check<OptionError>(n.has_value(), "nddr-summary: unknown network '", network, "'");
  check<OptionError>(classes.size() == n->tasks(), "nddr-summary: ", network, " has ",
                     n->tasks(), " task(s), got ", classes.size(), " class counts");
  return with_tool_network(*n, [&](auto spec) {
    return summarize<typename decltype(spec)::type>(classes, input);
  });
}

namespace {

// --network and --classes of both tools.
struct NetworkFlags {
  std::string network, classes;
  std::optional<NetworkName> name;
  std::vector<std::int64_t> counts;

  void declare(cli::ArgParser& p) {
    p.text("network", network,
           "the network, BACKBONE-METHOD[-shortcut]: BACKBONE tiny or vgg16; METHOD st "
           "(single-task), mt (split), cross-stitch, sluice, nddr",
           network_names_text(kToolBackbones, true),
           [](const std::string& s) { return tool_network(s).has_value(); }, "NAME")
        .required()
        .text("classes", classes, "outputs per task, one value per task (default 40,3; -st: 40)",
              "one or two integers in [1, 100000], comma-separated",
              [](const std::string& s) { return parse_ints(s, 2, 100000).has_value(); },
              "N[,N]");
  }

  // After parse: the counts, one per task.
  void check(const cli::ArgParser& p) {
    name = tool_network(network);
    if (classes.empty()) classes = name->tasks() == 1 ? "40" : "40,3";
    counts = *parse_ints(classes, 2, 100000);
    if (counts.size() != name->tasks())
      p.fail("classes", std::to_string(name->tasks()) + " value(s) for " + network, classes);
  }
};

void print_summary(std::ostream& out, const NetworkFlags& nf, const Shape& input,
                   const NetworkSummary& s) {
  std::size_t name_w = 5, shape_w = 12;
  for (const auto& r : s.rows) {
    name_w = std::max(name_w, r.name.size());
    shape_w = std::max(shape_w, r.shape.size());
  }
  const auto pad = [](std::string t, std::size_t w, bool right) {
    if (t.size() >= w) return t;
    return right ? std::string(w - t.size(), ' ') + t : t + std::string(w - t.size(), ' ');
  };
  out << "nddr-summary: " << nf.name->text() << ", classes " << nf.classes << ", input "
      << shape_text(input) << "\n";
  const std::string header = pad("Layer", name_w, false) + "  " + pad("Output shape", shape_w,
                                                                       false) +
                             "  " + pad("Param #", 11, true) + "  " + pad("Mult-adds", 15, true) +
                             "  LR group";
  out << header << "\n" << std::string(header.size(), '-') << "\n";
  for (const auto& r : s.rows)
    out << pad(r.name, name_w, false) << "  " << pad(r.shape, shape_w, false) << "  "
        << pad(std::to_string(r.parameters), 11, true) << "  "
        << pad(std::to_string(r.macs), 15, true) << "  " << r.group << "\n";
  out << std::string(header.size(), '-') << "\n";
  out << "buffers (BatchNorm statistics, not trained): " << s.buffers << "\n";
  out << "mult-adds: " << s.macs << "\n";
  out << "trainable parameters: " << s.parameters << "\n";
}

}  // namespace

int summary_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  constexpr const char* kProgram = "nddr-summary";
  NetworkFlags nf;
  std::string input = "1,3,321,321";
  cli::ArgParser p(kProgram,
                   "Prints a network's layers (output shape, parameters, multiply-adds, lr "
                   "group) and its trainable parameter count (docs/tools.md).");
  nf.declare(p);
  p.text("input", input, "input shape N,C,H,W", "four integers in [1, 100000] (N,3,H,W)",
         [](const std::string& s) {
           const auto v = parse_ints(s, 4, 100000);
           return v && v->size() == 4 && (*v)[1] == 3;
         },
         "N,C,H,W");
  Shape in_shape;
  try {
    if (!p.parse(args, out)) return 0;
    nf.check(p);
    const auto v = *parse_ints(input, 4, 100000);
    in_shape = Shape::nchw(v[0], v[1], v[2], v[3]);
  } catch (const cli::UsageError& e) {
    err << e.what() << "\n";
    return cli::kUsageExitCode;
  }
  NetworkSummary s;
  try {
    s = summarize_network(nf.network, nf.counts, in_shape);
  } catch (const ShapeError& e) {
    err << cli::bad_value_message(kProgram, "input",
                                  "an input shape " + nf.network + " accepts (larger H, W)", input)
        << "\n";
    return cli::kUsageExitCode;
  } catch (const std::exception& e) {
    err << kProgram << ": " << e.what() << "\n";
    return 1;
  }
  print_summary(out, nf, in_shape, s);
  return 0;
}

int forward_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  NetworkFlags nf;
  ForwardRequest r;
  std::string device = "cpu", dtype = "f32";
  cli::ArgParser p(kForward,
                   "Runs one forward pass of a network on the CPU (and, with --targets, the loss "
                   "and every parameter gradient) and writes the results as safetensors "
                   "(docs/tools.md).");
  nf.declare(p);
  p.path("weights", r.weights, "safetensors file of the network's parameters (save_parameters)",
         "FILE")
      .required()
      .path("input", r.input, "safetensors file holding tensor 'image' (N, 3, H, W)", "FILE")
      .required()
      .path("output", r.output,
            "the safetensors file to write (atomically): task0[, task1]; with --targets also "
            "loss, loss/taskK and grad/<parameter>",
            "FILE")
      .required()
      .path("targets", r.targets,
            "safetensors file of targets task0[, task1]: int labels (N, H, W) (softmax "
            "cross-entropy, 255 ignored) or float normals (N, 3, H, W) (cosine loss)",
            "FILE")
      .reals("loss-weights", r.loss_weights,
             "loss weight per task (default 1 each; needs --targets)",
             cli::RealRange::non_negative(), 2)
      .flag("train", r.train, "training mode (BatchNorm batch statistics, dropout)")
      .device("device", device, "cpu (nddr-forward runs on the CPU only)")
      .choice("dtype", dtype, "element type of the computation", {"f32", "f64"});
  try {
    if (!p.parse(args, out)) return 0;
    nf.check(p);
    if (dtype != "f32")
      p.fail("dtype", "f32 (nddr-forward computes in float only: the f64 instantiations are "
                      "left out of nddr_apps for their compile time)", dtype);
    if (cli::parse_device_value(device)->cuda)
      p.fail("device", "cpu (nddr-forward runs on the CPU only; its CUDA instantiation is left "
                       "out of nddr_apps)", device);
    if (!r.loss_weights.empty() && r.targets.empty())
      p.fail("loss-weights", "--targets with it", std::nullopt);
    if (!r.loss_weights.empty() && r.loss_weights.size() != nf.name->tasks())
      p.fail("loss-weights", std::to_string(nf.name->tasks()) + " value(s) for " + nf.network,
             std::to_string(r.loss_weights.size()) + " value(s)");
    namespace fs = std::filesystem;
    std::error_code ec;
    using FlagPath = std::pair<const char*, const std::string*>;
    for (const auto& [flag, path] :
         {FlagPath{"weights", &r.weights}, FlagPath{"input", &r.input},
          FlagPath{"targets", &r.targets}})
      if (!path->empty() && !fs::is_regular_file(*path, ec))
        p.fail(flag, "an existing regular file", *path);
    const fs::path dir = fs::path(r.output).parent_path();
    if (fs::is_directory(r.output, ec) || !fs::is_directory(dir.empty() ? "." : dir, ec))
      p.fail("output", "a file name in an existing directory", r.output);
    for (const std::string* path : {&r.weights, &r.input, &r.targets})
      if (!path->empty() && fs::equivalent(*path, r.output, ec))
        p.fail("output", "a file other than the input files", r.output);
  } catch (const cli::UsageError& e) {
    err << e.what() << "\n";
    return cli::kUsageExitCode;
  }
  r.network = *nf.name;
  r.classes = nf.counts;
  try {
    const std::string what = with_tool_network(r.network, [&](auto spec) {
      using Spec = typename decltype(spec)::type;
      return run_forward<Spec, float>(r);
    });
    out << kForward << ": wrote " << r.output << " (" << what << ", " << dtype << ", "
        << (r.train ? "train" : "inference") << " mode)\n";
    return 0;
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    err << (msg.starts_with(kForward) ? "" : std::string(kForward) + ": ") << msg << "\n";
    return 1;
  }
}

}  // namespace nddr::apps
