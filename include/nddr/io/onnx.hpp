#pragma once
/// \file
/// ONNX export of a network's inference-mode forward (docs/onnx.md): `onnx_model(net)` builds
/// the `onnx::ModelProto`, `onnx_model_bytes(net)` serialises it, `export_onnx(net, path)`
/// writes it atomically. Needs the target `nddr::onnx` (Debian's libonnx-dev and
/// libprotobuf-dev: `onnx/onnx_pb.h`, `onnx/checker.h`).
///
/// The graph: one input (default `image`, float32 NCHW, dimensions `batch`, C, `height`,
/// `width`, all but C symbolic), one output per task (default `task0`, `task1`, ...; float32
/// (batch, outputs_k, H', W')), opset 17 of the default domain, IR version 8. Every parameter
/// and BatchNorm statistic is an initializer under nddr's own name (`task0.stage1.conv1_1.weight`,
/// `fusion.stage2.task1.bn.running_var`, ...), converted to float32. Operators: Conv (TF 'SAME'
/// as explicit pads at stride 1, auto_pad SAME_UPPER at larger strides; dilations),
/// BatchNormalization (the layer's eps; the running statistics, whatever the network's mode),
/// Relu, MaxPool, AveragePool, Concat,
/// Resize (nddr's bilinear conventions, see `resize_attributes`), Add, Sum, Shape, Slice,
/// Reshape, Transpose, MatMul, Split (cross-stitch and sluice mixing). Dropout is the identity
/// in inference and emits nothing. The model passes `onnx::checker::check_model` before it is
/// returned.
///
/// Example:
///   nddr::Network<nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>> net({5, 3});
///   nddr::io::export_onnx(net, "nddr.onnx", nddr::io::OnnxExportOptions{}.outputs({"seg", "normal"}));

#include <array>
#include <bit>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include "nddr/backbones/heads.hpp"
#include "nddr/backbones/resnet101.hpp"
#include "nddr/core/error.hpp"
#include "nddr/fusion/cross_stitch.hpp"
#include "nddr/fusion/nddr.hpp"
#include "nddr/fusion/none.hpp"
#include "nddr/fusion/shortcut.hpp"
#include "nddr/io/file.hpp"
#include "nddr/layers/batch_norm.hpp"
#include "nddr/layers/conv2d.hpp"
#include "nddr/layers/dropout.hpp"
#include "nddr/layers/pool.hpp"
#include "nddr/layers/relu.hpp"
#include "nddr/layers/resize.hpp"
#include "nddr/layers/sequential.hpp"
#include "nddr/multitask/network.hpp"

namespace nddr::io {

/// The ONNX opset (default domain) and IR version of every exported model: ONNX 1.12 (Debian
/// 12's libonnx-dev) knows opsets up to 17 and IR version 8.
inline constexpr std::int64_t kOnnxOpset = 17;
inline constexpr std::int64_t kOnnxIrVersion = 8;

/// Names of an exported graph. `outputs` empty: `task0`, `task1`, ...
struct OnnxExportOptions {
  std::string input_name = "image";
  std::vector<std::string> output_names;
  std::string graph_name = "nddr";
  std::string doc_string;  ///< free text stored in the model (e.g. the method and weights)

  OnnxExportOptions& input(std::string name) {
    input_name = std::move(name);
    return *this;
  }
  OnnxExportOptions& outputs(std::vector<std::string> names) {
    output_names = std::move(names);
    return *this;
  }
  OnnxExportOptions& doc(std::string text) {
    doc_string = std::move(text);
    return *this;
  }
};

/// ONNX Resize attributes (mode, coordinate_transformation_mode, nearest_mode) equal to nddr's
/// `ResizeMode`: TF legacy bilinear f = d in/out is `asymmetric`; PyTorch's half-pixel f =
/// max((d + 0.5) in/out - 0.5, 0) is `half_pixel` (ONNX Runtime clamps the coordinate to the
/// input like nddr); align-corners f = d (in - 1)/(out - 1) is `align_corners`; TF legacy
/// nearest is `asymmetric` + `floor`.
struct OnnxResizeAttributes {
  const char* mode;
  const char* coordinate_transformation_mode;
  const char* nearest_mode;
};
inline OnnxResizeAttributes resize_attributes(ResizeMode m) {
  switch (m) {
    case ResizeMode::kBilinearTfLegacy:
      return {"linear", "asymmetric", "floor"};
    case ResizeMode::kBilinearHalfPixel:
      return {"linear", "half_pixel", "floor"};
    case ResizeMode::kBilinearAlignCorners:
      return {"linear", "align_corners", "floor"};
    case ResizeMode::kNearestTfLegacy:
      return {"nearest", "asymmetric", "floor"};
  }
  throw OptionError("nddr::io::resize_attributes: unknown ResizeMode");
}

namespace detail {

/// Appends nodes and initializers to a GraphProto; value names are nddr's layer names.
template <class T>
class OnnxGraphBuilder {
 public:
  OnnxGraphBuilder(onnx::GraphProto& g, const ParameterStore<T, Cpu>& store)
      : g_(g), store_(store) {}

  onnx::NodeProto& node(const char* op, std::vector<std::string> inputs, const std::string& out) {
    check<Error>(used_.insert(out).second, "nddr::io::export_onnx: value name '", out,
                 "' produced twice");
    onnx::NodeProto& n = *g_.add_node();
    n.set_op_type(op);
    n.set_name(out);
    for (auto& i : inputs) n.add_input(std::move(i));
    n.add_output(out);
    return n;
  }

  static void attr(onnx::NodeProto& n, const char* name, std::int64_t v) {
    auto& a = *n.add_attribute();
    a.set_name(name);
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(v);
  }
  static void attr(onnx::NodeProto& n, const char* name, float v) {
    auto& a = *n.add_attribute();
    a.set_name(name);
    a.set_type(onnx::AttributeProto::FLOAT);
    a.set_f(v);
  }
  static void attr(onnx::NodeProto& n, const char* name, const char* v) {
    auto& a = *n.add_attribute();
    a.set_name(name);
    a.set_type(onnx::AttributeProto::STRING);
    a.set_s(v);
  }
  static void attr(onnx::NodeProto& n, const char* name, const std::vector<std::int64_t>& v) {
    auto& a = *n.add_attribute();
    a.set_name(name);
    a.set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a.add_ints(x);
  }

  /// The parameter (or buffer) `name` as a float32 initializer of its own shape; returns name.
  std::string parameter(const std::string& name) {
    if (!initializers_.insert(name).second) return name;
    TensorView<const T, Cpu> v;
    if (auto id = store_.find(name))
      v = store_.value(*id);
    else if (auto b = store_.find_buffer(name))
      v = store_.buffer(*b);
    else
      throw Error(nddr::detail::concat("nddr::io::export_onnx: the network has no parameter or "
                                       "buffer '", name, "' (the exporter's names and the "
                                       "layers' declare() differ)"));
    std::vector<std::int64_t> dims;
    for (int i = 0; i < v.shape().rank(); ++i) dims.push_back(v.shape()[i]);
    add_float(name, dims, v.data(), v.numel());
    return name;
  }

  /// A float32 constant of `count` copies of `value`, shape (count).
  std::string constant_fill(const std::string& name, std::int64_t count, float value) {
    if (initializers_.insert(name).second) {
      const std::vector<float> v(static_cast<std::size_t>(count), value);
      add_float(name, {count}, v.data(), count);
    }
    return name;
  }

  /// An int64 constant of shape (values.size()), named `onnx.<label>`.
  std::string int64_constant(const std::string& label, const std::vector<std::int64_t>& values) {
    const std::string name = "onnx." + label;
    if (!initializers_.insert(name).second) return name;
    auto& t = *g_.add_initializer();
    t.set_name(name);
    t.set_data_type(onnx::TensorProto::INT64);
    t.add_dims(static_cast<std::int64_t>(values.size()));
    for (auto x : values) t.add_int64_data(x);
    return name;
  }

  onnx::GraphProto& graph() { return g_; }

 private:
  template <class U>
  void add_float(const std::string& name, const std::vector<std::int64_t>& dims, const U* data,
                 std::int64_t count) {
    static_assert(std::endian::native == std::endian::little,
                  "nddr::io::export_onnx: raw_data is little-endian; big-endian hosts unsupported");
    auto& t = *g_.add_initializer();
    t.set_name(name);
    t.set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : dims) t.add_dims(d);
    std::string raw(static_cast<std::size_t>(count) * sizeof(float), '\0');
    for (std::int64_t i = 0; i < count; ++i) {
      const auto f = static_cast<float>(data[i]);
      std::memcpy(raw.data() + i * sizeof(float), &f, sizeof(float));
    }
    t.set_raw_data(std::move(raw));
  }

  onnx::GraphProto& g_;
  const ParameterStore<T, Cpu>& store_;
  std::set<std::string> used_, initializers_;
};

/// Emits the layers of a network in graph order; every function returns its output's name.
template <class T>
class OnnxEmitter {
  using C = Cpu;

 public:
  OnnxEmitter(onnx::GraphProto& g, const ParameterStore<T, C>& store) : b_(g, store) {}

  OnnxGraphBuilder<T>& builder() { return b_; }

  std::string conv(const std::string& x, const std::string& name, const Shape& w,
                   const Conv2dOptions& opt) {
    std::vector<std::string> in{x, b_.parameter(name + ".weight")};
    if (opt.use_bias) in.push_back(b_.parameter(name + ".bias"));
    auto& n = b_.node("Conv", in, name);
    b_.attr(n, "kernel_shape", std::vector<std::int64_t>{w.h(), w.w()});
    b_.attr(n, "strides", std::vector<std::int64_t>{opt.stride_h, opt.stride_w});
    b_.attr(n, "dilations", std::vector<std::int64_t>{opt.dilation_h, opt.dilation_w});
    padding(n, name, opt.same_padding, w.h(), w.w(), opt.stride_h, opt.stride_w,
            opt.dilation_h, opt.dilation_w, opt.pad_h, opt.pad_w);
    b_.attr(n, "group", std::int64_t{1});
    return name;
  }

  /// Conv/pool padding. TF 'SAME' (the odd cell after, as nddr's) at stride 1 pads (k - 1) d
  /// whatever the input size: explicit pads. At a larger stride it depends on the size:
  /// auto_pad SAME_UPPER, which ONNX Runtime refuses with dilation (no nddr backbone has a
  /// strided dilated SAME layer; such a layer is an Error here).
  void padding(onnx::NodeProto& n, const std::string& name, bool same, std::int64_t kh,
               std::int64_t kw, std::int64_t sh, std::int64_t sw, std::int64_t dh,
               std::int64_t dw, std::int64_t ph, std::int64_t pw) {
    if (!same) {
      b_.attr(n, "pads", std::vector<std::int64_t>{ph, pw, ph, pw});
      return;
    }
    if (sh == 1 && sw == 1) {
      const std::int64_t th = (kh - 1) * dh, tw = (kw - 1) * dw;
      b_.attr(n, "pads", std::vector<std::int64_t>{th / 2, tw / 2, th - th / 2, tw - tw / 2});
      return;
    }
    check<Error>(dh == 1 && dw == 1, "nddr::io::export_onnx: layer '", name,
                 "' has TF 'SAME' padding with stride > 1 and dilation > 1, which ONNX (auto_pad "
                 "with dilation) runtimes do not support");
    b_.attr(n, "auto_pad", "SAME_UPPER");
  }

  std::string batch_norm(const std::string& x, const std::string& name, std::int64_t channels,
                         const BatchNormOptions& opt) {
    const std::string scale = opt.affine() ? b_.parameter(name + ".weight")
                                           : b_.constant_fill(name + ".onnx_ones", channels, 1.0f);
    const std::string shift = opt.affine() ? b_.parameter(name + ".bias")
                                           : b_.constant_fill(name + ".onnx_zeros", channels, 0.0f);
    auto& n = b_.node("BatchNormalization",
                      {x, scale, shift, b_.parameter(name + ".running_mean"),
                       b_.parameter(name + ".running_var")},
                      name);
    b_.attr(n, "epsilon", static_cast<float>(opt.eps()));
    if (!opt.relu()) return name;
    b_.node("Relu", {name}, name + ".relu");
    return name + ".relu";
  }

  std::string pool(const char* op, const std::string& x, const std::string& name,
                   const Pool2dOptions& opt) {
    auto& n = b_.node(op, {x}, name);
    b_.attr(n, "kernel_shape", std::vector<std::int64_t>{opt.kernel_h, opt.kernel_w});
    b_.attr(n, "strides", std::vector<std::int64_t>{opt.stride_h, opt.stride_w});
    padding(n, name, opt.same_padding, opt.kernel_h, opt.kernel_w, opt.stride_h, opt.stride_w, 1,
            1, opt.pad_h, opt.pad_w);
    if (std::string_view(op) == "AveragePool")
      b_.attr(n, "count_include_pad", std::int64_t{opt.include_pad ? 1 : 0});
    return name;
  }

  /// x resized to the spatial size of `like`'s (N, C, H, W) shape value `like_shape`, or to the
  /// fixed (h, w) when `like_shape` is empty.
  std::string resize(const std::string& x, const std::string& name, ResizeMode mode,
                     const std::string& like_shape, std::int64_t h = 0, std::int64_t w = 0) {
    b_.node("Shape", {x}, name + ".in_shape");
    b_.node("Slice", {name + ".in_shape", b_.int64_constant("0", {0}), b_.int64_constant("2", {2})},
            name + ".nc");
    const std::string hw =
        like_shape.empty()
            ? b_.int64_constant(name + ".hw", {h, w})
            : slice_hw(like_shape);
    auto& c = b_.node("Concat", {name + ".nc", hw}, name + ".sizes");
    b_.attr(c, "axis", std::int64_t{0});
    const OnnxResizeAttributes a = resize_attributes(mode);
    auto& n = b_.node("Resize", {x, "", "", name + ".sizes"}, name);
    b_.attr(n, "mode", a.mode);
    b_.attr(n, "coordinate_transformation_mode", a.coordinate_transformation_mode);
    b_.attr(n, "nearest_mode", a.nearest_mode);
    return name;
  }

  /// The layers of `seq` in order, parameter names under `prefix`.
  std::string sequential(const Sequential<T, C>& seq, const std::string& prefix, std::string x) {
    for (std::size_t i = 0; i < seq.size(); ++i) {
      const std::string name = prefix.empty() ? seq.names()[i] : prefix + "." + seq.names()[i];
      x = layer(seq, i, name, x);
    }
    return x;
  }

  std::string concat(const std::vector<std::string>& xs, const std::string& name) {
    auto& n = b_.node("Concat", xs, name);
    b_.attr(n, "axis", std::int64_t{1});
    return name;
  }

  /// Cross-stitch / sluice: the K S subspace tensors of the concatenated tasks mixed by alpha
  /// (P = K S square): Y_p = sum_q alpha[p][q] X_q, as a MatMul over the subspace axis.
  std::vector<std::string> subspace_mix(const std::vector<std::string>& xs,
                                        const std::string& prefix, std::int64_t channels,
                                        std::int64_t subspaces) {
    const auto tasks = static_cast<std::int64_t>(xs.size());
    const std::int64_t p = tasks * subspaces;
    const std::string cat = concat(xs, prefix + ".concat");  // (N, K C, H, W)
    b_.node("Shape", {cat}, prefix + ".concat_shape");
    b_.node("Reshape",
            {cat, b_.int64_constant(prefix + ".subspaces", {0, p, channels / subspaces, -1})},
            prefix + ".subspaces");  // (N, P, C / S, H W)
    auto& t1 = b_.node("Transpose", {prefix + ".subspaces"}, prefix + ".subspaces_last");
    b_.attr(t1, "perm", std::vector<std::int64_t>{0, 2, 3, 1});  // (N, C / S, H W, P)
    auto& ta = b_.node("Transpose", {b_.parameter(prefix + ".alpha")}, prefix + ".alpha_t");
    b_.attr(ta, "perm", std::vector<std::int64_t>{1, 0});
    b_.node("MatMul", {prefix + ".subspaces_last", prefix + ".alpha_t"}, prefix + ".mixed_last");
    auto& t2 = b_.node("Transpose", {prefix + ".mixed_last"}, prefix + ".mixed");
    b_.attr(t2, "perm", std::vector<std::int64_t>{0, 3, 1, 2});  // (N, P, C / S, H W)
    b_.node("Reshape", {prefix + ".mixed", prefix + ".concat_shape"}, prefix + ".mixed_nchw");
    std::vector<std::string> outs;
    for (std::int64_t k = 0; k < tasks; ++k) outs.push_back(prefix + ".task" + std::to_string(k));
    onnx::NodeProto& split = b_.node(
        "Split",
        {prefix + ".mixed_nchw",
         b_.int64_constant(prefix + ".split", std::vector<std::int64_t>(xs.size(), channels))},
        outs[0]);
    for (std::size_t k = 1; k < outs.size(); ++k) split.add_output(outs[k]);
    b_.attr(split, "axis", std::int64_t{1});
    return outs;
  }

  std::string slice_hw(const std::string& shape) {
    const std::string out = shape + ".hw";
    if (!sliced_.insert(out).second) return out;
    b_.node("Slice", {shape, b_.int64_constant("2", {2}), b_.int64_constant("4", {4})}, out);
    return out;
  }

 private:
  std::string layer(const Sequential<T, C>& seq, std::size_t i, const std::string& name,
                    const std::string& x) {
    if (const auto* l = seq.template child_if<Conv2d<T, C>>(i))
      return conv(x, name, l->weight_shape(), l->options());
    if (const auto* l = seq.template child_if<OutputConv2d<T, C>>(i))
      return conv(x, name, l->weight_shape(), l->options());
    if (const auto* l = seq.template child_if<BatchNorm2d<T, C>>(i))
      return batch_norm(x, name, l->channels(), l->options());
    if (seq.template child_if<ReLU<T, C>>(i) != nullptr) {
      b_.node("Relu", {x}, name);
      return name;
    }
    if (const auto* l = seq.template child_if<MaxPool2d<T, C>>(i))
      return pool("MaxPool", x, name, l->options());
    if (const auto* l = seq.template child_if<AvgPool2d<T, C>>(i))
      return pool("AveragePool", x, name, l->options());
    if (seq.template child_if<Dropout<T, C>>(i) != nullptr) return x;  // inference: identity
    if (const auto* l = seq.template child_if<Resize<T, C>>(i))
      return resize(x, name, l->options().resize_mode, "", l->options().out_h,
                    l->options().out_w);
    if (const auto* l = seq.template child_if<Sequential<T, C>>(i))
      return sequential(*l, name, x);
    if (const auto* l = seq.template child_if<Bottleneck<T, C>>(i)) return bottleneck(*l, name, x);
    if (const auto* l = seq.template child_if<Aspp<T, C>>(i)) return aspp(*l, name, x);
    throw Error(nddr::detail::concat("nddr::io::export_onnx: layer '", name,
                                     "' has a type the ONNX exporter does not know (it exports "
                                     "Conv2d, OutputConv2d, BatchNorm2d, ReLU, MaxPool2d, "
                                     "AvgPool2d, Dropout, Resize, Sequential, Bottleneck, Aspp)"));
  }

  // y = relu(main(x) + shortcut(x)); main and projection declare under the unit's own prefix.
  std::string bottleneck(const Bottleneck<T, C>& l, const std::string& name,
                         const std::string& x) {
    const std::string m = sequential(l.main_branch(), name, x);
    const std::string s = l.has_projection() ? sequential(l.projection(), name, x) : x;
    b_.node("Add", {m, s}, name + ".add");
    b_.node("Relu", {name + ".add"}, name);
    return name;
  }

  std::string aspp(const Aspp<T, C>& l, const std::string& name, const std::string& x) {
    std::vector<std::string> parts;
    for (std::size_t i = 0; i < l.branches(); ++i) {
      const std::string c = name + ".c" + std::to_string(i);
      parts.push_back(conv(x, c, l.branch(i).weight_shape(), l.branch(i).options()));
    }
    b_.node("Sum", parts, name);
    return name;
  }

  OnnxGraphBuilder<T> b_;
  std::set<std::string> sliced_;
};

inline void set_tensor_type(onnx::ValueInfoProto& v, const std::string& name,
                            const std::vector<std::string>& symbolic,
                            const std::vector<std::int64_t>& fixed) {
  v.set_name(name);
  auto& tt = *v.mutable_type()->mutable_tensor_type();
  tt.set_elem_type(onnx::TensorProto::FLOAT);
  auto& shape = *tt.mutable_shape();
  for (std::size_t i = 0; i < symbolic.size(); ++i) {
    auto& d = *shape.add_dim();
    if (!symbolic[i].empty())
      d.set_dim_param(symbolic[i]);
    else if (fixed[i] > 0)
      d.set_dim_value(fixed[i]);
  }
}

}  // namespace detail

/// The ONNX model of `net`'s inference-mode forward (see the file comment). The network is not
/// modified; its mode does not matter (BatchNorm exports its running statistics, Dropout
/// nothing). Throws OptionError for output names that are not one per task or collide, Error for
/// a layer the exporter does not know, and onnx's ValidationError if the checker rejects the
/// model.
template <class Spec, class T>
onnx::ModelProto onnx_model(Network<Spec, Cpu, T>& net, const OnnxExportOptions& opt = {}) {
  using Net = Network<Spec, Cpu, T>;
  constexpr std::size_t K = Net::kTasks, S = Net::kStages;
  using FusionLayer = typename Net::FusionLayerType;
  constexpr const char* kWho = "nddr::io::export_onnx";

  std::vector<std::string> outputs = opt.output_names;
  if (outputs.empty())
    for (std::size_t k = 0; k < K; ++k) outputs.push_back("task" + std::to_string(k));
  check<OptionError>(outputs.size() == K, kWho, ": OnnxExportOptions.output_names has ",
                     outputs.size(), " names, expected one per task (", K, ")");
  check<OptionError>(!opt.input_name.empty(), kWho, ": OnnxExportOptions.input_name is empty");
  for (std::size_t k = 0; k < K; ++k) {
    check<OptionError>(!outputs[k].empty(), kWho, ": output name ", k, " is empty");
    check<OptionError>(outputs[k] != opt.input_name, kWho, ": output name '", outputs[k],
                       "' is also the input's");
    for (std::size_t j = 0; j < k; ++j)
      check<OptionError>(outputs[j] != outputs[k], kWho, ": output name '", outputs[k],
                         "' given twice");
  }

  onnx::ModelProto model;
  model.set_ir_version(kOnnxIrVersion);
  model.set_producer_name("nddr");
  model.set_model_version(1);
  if (!opt.doc_string.empty()) model.set_doc_string(opt.doc_string);
  auto& opset = *model.add_opset_import();
  opset.set_domain("");
  opset.set_version(kOnnxOpset);
  onnx::GraphProto& g = *model.mutable_graph();
  g.set_name(opt.graph_name);

  const std::int64_t in_c = Spec::template backbone<0>::input_channels;
  detail::set_tensor_type(*g.add_input(), opt.input_name, {"batch", "", "height", "width"},
                          {0, in_c, 0, 0});

  detail::OnnxEmitter<T> e(g, net.parameters());
  // f[k][s]: task k's feature after stage s and its fusion (names of graph values).
  std::array<std::array<std::string, S>, K> f;
  for (std::size_t s = 0; s < S; ++s) {
    std::array<std::string, K> a;
    for (std::size_t k = 0; k < K; ++k) {
      if (s < Net::kShared && k > 0) {
        a[k] = a[0];
        continue;
      }
      const std::string prefix = s < Net::kShared
                                     ? "shared.stage" + std::to_string(s + 1)
                                     : "task" + std::to_string(k) + ".stage" + std::to_string(s + 1);
      a[k] = e.sequential(net.stage(k, s), prefix, s == 0 ? opt.input_name : f[k][s - 1]);
    }
    std::vector<std::string> fused(a.begin(), a.end());
    if (Spec::fused(s)) {
      const std::string prefix = "fusion.stage" + std::to_string(s + 1);
      if constexpr (std::is_same_v<FusionLayer, IdentityFusion<T, Cpu>>) {
        // K independent columns: nothing to emit.
      } else if constexpr (std::is_same_v<FusionLayer, NddrLayer<T, Cpu>>) {
        auto& layer = net.fusion(s);
        const NddrOptions& no = layer.options();
        const std::string cat = e.concat(fused, prefix + ".concat");
        for (std::size_t k = 0; k < K; ++k) {
          const std::string p = prefix + ".task" + std::to_string(k);
          std::string y = e.conv(cat, p + ".conv", layer.conv(k).weight_shape(),
                                 layer.conv(k).options());
          if (no.use_batch_norm) {
            y = e.batch_norm(y, p + ".bn", layer.channels(), layer.batch_norm(k).options());
          } else if (no.use_relu) {
            e.builder().node("Relu", {y}, y + ".relu");
            y += ".relu";
          }
          fused[k] = y;
        }
      } else if constexpr (std::derived_from<FusionLayer, nddr::detail::SubspaceMixLayer<T, Cpu>>) {
        auto& layer = net.fusion(s);
        std::int64_t subspaces = 1;
        if constexpr (requires { layer.subspaces(); }) subspaces = layer.subspaces();
        fused = e.subspace_mix(fused, prefix, layer.channels(), subspaces);
      } else {
        static_assert(sizeof(FusionLayer) == 0,
                      "nddr::io::export_onnx: this fusion layer has no ONNX export (supported: "
                      "None, Shared<S>, NDDR, CrossStitch, Sluice, Shortcut<...>, At<...>)");
      }
    }
    for (std::size_t k = 0; k < K; ++k) f[k][s] = fused[k];
  }

  std::array<std::string, K> head_in;
  for (std::size_t k = 0; k < K; ++k) head_in[k] = f[k][S - 1];
  if constexpr (Spec::shortcut) {
    for (std::size_t m = 0; m < net.shortcut_count(); ++m) {
      auto& sc = net.shortcut(m);
      const std::string prefix = net.shortcut_count() == 1 && K > 1
                                     ? std::string("shortcut.shared")
                                     : "shortcut.task" + std::to_string(m);
      const std::string last = f[m][S - 1];
      e.builder().node("Shape", {last}, prefix + ".target_shape");
      std::vector<std::string> parts;
      for (std::size_t s = 0; s + 1 < S; ++s)  // resizing to the same size is the identity
        parts.push_back(e.resize(f[m][s], prefix + ".resize" + std::to_string(s + 1),
                                 sc.options().resize_mode, prefix + ".target_shape"));
      parts.push_back(last);
      const std::string cat = e.concat(parts, prefix + ".concat");
      const std::string y = e.conv(cat, prefix + ".conv",
                                   Shape::nchw(sc.out_channels(), sc.concat_channels(), 1, 1),
                                   Conv2dOptions{}.bias(false));
      const std::string out = e.batch_norm(
          y, prefix + ".bn", sc.out_channels(),
          BatchNormOptions(sc.options().batch_norm_options).relu(true));
      if (net.shortcut_count() == 1)
        head_in.fill(out);  // one module for a fully shared trunk serves every task
      else
        head_in[m] = out;
    }
  }

  const Shape probe = Shape::nchw(1, in_c, 64, 64);
  for (std::size_t k = 0; k < K; ++k) {
    const int before = g.node_size();
    const std::string y =
        e.sequential(net.head(k), "task" + std::to_string(k) + ".head", head_in[k]);
    onnx::NodeProto* last = g.node_size() > before ? g.mutable_node(g.node_size() - 1) : nullptr;
    if (last != nullptr && last->output_size() == 1 && last->output(0) == y) {
      last->set_output(0, outputs[k]);
    } else {
      e.builder().node("Identity", {y}, outputs[k]);
    }
    detail::set_tensor_type(*g.add_output(), outputs[k], {"batch", "", "", ""},
                            {0, net.output_shape(k, probe).c(), 0, 0});
  }
  onnx::checker::check_model(model);
  return model;
}

/// `onnx_model(net, opt)` serialised (protobuf wire format, the bytes of a `.onnx` file).
template <class Spec, class T>
std::string onnx_model_bytes(Network<Spec, Cpu, T>& net, const OnnxExportOptions& opt = {}) {
  std::string bytes;
  check<Error>(onnx_model(net, opt).SerializeToString(&bytes),
               "nddr::io::export_onnx: protobuf serialisation failed (a model over 2 GiB?)");
  return bytes;
}

/// Writes `onnx_model(net, opt)` to `path` atomically (io/file.hpp): the model is built and
/// checked first, so a failure leaves an existing file untouched.
template <class Spec, class T>
void export_onnx(Network<Spec, Cpu, T>& net, const std::string& path,
                 const OnnxExportOptions& opt = {}) {
  const std::string bytes = onnx_model_bytes(net, opt);
  write_file_atomic("nddr::io::export_onnx", path, bytes.data(), bytes.size());
}

}  // namespace nddr::io
