#pragma once
/// \file
/// `ShortcutModule<T, D>`: the NDDR-CNN-Shortcut fusion of one task (paper-spec §3). The task's
/// S stage outputs are resized to the spatial size of the last one, concatenated in stage
/// order, and reduced by a 1x1 convolution (no bias, Glorot init) + BatchNorm + ReLU to
/// `out_channels` (512 in the paper), which replaces the last stage output as the head's input.
/// Its purpose in the paper: a short gradient path from the head to every lower stage.

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "nddr/ops/activation.hpp"
#include "nddr/ops/concat.hpp"
#include "nddr/ops/resize.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/layers/batch_norm.hpp"
#include "nddr/layers/conv2d.hpp"

namespace nddr {

/// Options of `ShortcutModule`.
struct ShortcutOptions {
  /// How the lower stages are brought to the last stage's size (default: TF legacy bilinear,
  /// align_corners = False, as the authors' `tf.image.resize_bilinear`).
  ResizeMode resize_mode = ResizeMode::kBilinearTfLegacy;
  /// BatchNorm after the 1x1 convolution (default: the TF-slim BN of the paper code).
  BatchNormOptions batch_norm_options = BatchNormOptions::tf_slim();

  ShortcutOptions& resize(ResizeMode m) {
    resize_mode = m;
    return *this;
  }
  ShortcutOptions& batch_norm(BatchNormOptions o) {
    batch_norm_options = o;
    return *this;
  }
};

/// One task's shortcut fusion. Parameters (in the store's current group: `Network` puts them in
/// "nddr" when its fusion layers learn, in "default" for the single-task and split baselines, as
/// the authors' code does, paper-spec §3.2-3.4): `prefix.conv.weight`
/// (out, sum C_s, 1, 1), `prefix.bn.weight`, `prefix.bn.bias`; buffers `prefix.bn.running_mean`,
/// `prefix.bn.running_var`.
template <class T, class D = Cpu>
class ShortcutModule {
 public:
  using value_type = T;
  using device_type = D;

  /// Fuses stage outputs with `stage_channels[s]` channels each (at least one stage, every
  /// count >= 1) into `out_channels`. Throws OptionError otherwise.
  explicit ShortcutModule(std::vector<std::int64_t> stage_channels, std::int64_t out_channels = 512,
                          ShortcutOptions opt = {})
      : channels_(checked(std::move(stage_channels))),
        out_(out_channels),
        opt_(opt),
        conv_(std::accumulate(channels_.begin(), channels_.end(), std::int64_t{0}), out_channels, 1,
              Conv2dOptions{}.bias(false)),
        bn_(out_channels, BatchNormOptions(opt.batch_norm_options).relu(true)),
        resized_(channels_.size()),
        dresized_(channels_.size()) {}

  std::size_t stages() const { return channels_.size(); }
  const std::vector<std::int64_t>& stage_channels() const { return channels_; }
  std::int64_t out_channels() const { return out_; }
  /// Sum of the stage channels: the input channels of the 1x1 convolution.
  std::int64_t concat_channels() const { return conv_.weight_shape().c(); }
  const ShortcutOptions& options() const { return opt_; }

  /// (N, out_channels, H_S, W_S) for the stage output shapes `in` (H_S, W_S: the last stage's).
  /// Throws ShapeError for a wrong number of stages, a rank other than 4, a channel count
  /// differing from the constructor's, a batch size differing from the last stage's, or an
  /// empty image; the message names the stage index.
  Shape output_shape(std::span<const Shape> in) const {
    constexpr const char* kWho = "nddr::ShortcutModule";
    check<ShapeError>(in.size() == channels_.size(), kWho, ": expected ", channels_.size(),
                      " stage outputs, got ", in.size());
    const Shape& last = in.back();
    for (std::size_t s = 0; s < in.size(); ++s) {
      check<ShapeError>(in[s].rank() == 4 && in[s].c() == channels_[s], kWho, ": stage ", s,
                        " output has shape ", in[s], ", expected (N, ", channels_[s],
                        ", H, W)");
      check<ShapeError>(in[s].n() == last.n() && in[s].h() > 0 && in[s].w() > 0, kWho, ": stage ",
                        s, " output has shape ", in[s], " but the last stage's is ",
                        last, "; every stage needs the same N and a non-empty image");
    }
    return Shape::nchw(last.n(), out_, last.h(), last.w());
  }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    conv_.declare(store, prefix + ".conv");
    bn_.declare(store, prefix + ".bn");
  }

  void initialize(Rng& rng) {
    conv_.initialize(rng);
    bn_.initialize(rng);
  }

  void set_training(bool on) {
    training_ = on;
    bn_.set_training(on);
  }
  bool training() const { return training_; }

  /// y = ReLU(BN(conv1x1(concat_s resize(xs[s])))); y must have `output_shape` of the inputs.
  void forward(Context<D>& ctx, std::span<const TensorView<const T, D>> xs, TensorView<T, D> y) {
    const Shape out = output_shape(shapes_of(xs));
    check_shape("nddr::ShortcutModule::forward", "y", y.shape(), out);
    std::vector<TensorView<const T, D>> parts(xs.size());
    for (std::size_t s = 0; s < xs.size(); ++s) {
      if (same_size(xs[s].shape(), out)) {
        parts[s] = xs[s];
        continue;
      }
      resized_[s].resize(resized_shape(s, out));  // (N, C_s, H_S, W_S)
      ops::resize_forward(ctx, xs[s], resized_[s].view(), resize_options(out));
      parts[s] = resized_[s].cview();
    }
    const Shape fused = Shape::nchw(out.n(), concat_channels(), out.h(), out.w());
    concat_.resize(fused);  // (N, sum C_s, H_S, W_S)
    conv_out_.resize(out);  // (N, out, H_S, W_S)
    ops::concat_channels_forward<T>(ctx, parts, concat_.view());
    conv_.forward(ctx, concat_.cview(), conv_out_.view());
    bn_.forward(ctx, conv_out_.cview(), y);  // BatchNorm with the ReLU fused
    forwarded_ = true;
  }

  /// Parameter gradients assigned; every non-empty dxs[s] accumulated (+=). Requires the
  /// preceding `forward` with the same xs, which produced y.
  void backward(Context<D>& ctx, std::span<const TensorView<const T, D>> xs,
                TensorView<const T, D> y, TensorView<const T, D> dy,
                std::span<const TensorView<T, D>> dxs) {
    constexpr const char* kWho = "nddr::ShortcutModule::backward";
    check<Error>(forwarded_, kWho, ": call forward first");
    const Shape out = output_shape(shapes_of(xs));
    check_shape(kWho, "y", y.shape(), out);
    check_shape(kWho, "dy", dy.shape(), out);
    check<ShapeError>(dxs.size() == xs.size(), kWho, ": ", xs.size(), " inputs but ", dxs.size(),
                      " input gradients");
    for (std::size_t s = 0; s < dxs.size(); ++s)
      if (!dxs[s].empty()) check_shape(kWho, "dx", dxs[s].shape(), xs[s].shape());

    dconv_out_.resize(out);  // (N, out, H_S, W_S)
    dconv_out_.zero();
    bn_.backward(ctx, conv_out_.cview(), y, dy, dconv_out_.view());  // ReLU's mask read from y
    dconcat_.resize(concat_.shape());  // (N, sum C_s, H_S, W_S)
    dconcat_.zero();
    conv_.backward(ctx, concat_.cview(), conv_out_.cview(), dconv_out_.cview(), dconcat_.view());

    // Stages at the target size receive their slice of dconcat directly; the others go
    // through a scratch gradient and the transposed resize. Empty parts carry their shape only.
    std::vector<TensorView<T, D>> parts(xs.size());
    for (std::size_t s = 0; s < xs.size(); ++s) {
      const Shape part = resized_shape(s, out);
      if (dxs[s].empty()) {
        parts[s] = TensorView<T, D>(nullptr, part);
      } else if (same_size(xs[s].shape(), out)) {
        parts[s] = dxs[s];
      } else {
        dresized_[s].resize(part);  // (N, C_s, H_S, W_S)
        dresized_[s].zero();
        parts[s] = dresized_[s].view();
      }
    }
    ops::concat_channels_backward<T>(ctx, dconcat_.cview(), parts);
    for (std::size_t s = 0; s < xs.size(); ++s)
      if (!dxs[s].empty() && !same_size(xs[s].shape(), out))
        ops::resize_backward(ctx, xs[s], dresized_[s].cview(), dxs[s], resize_options(out));
  }

 private:
  static std::vector<std::int64_t> checked(std::vector<std::int64_t> c) {
    check<OptionError>(!c.empty(), "nddr::ShortcutModule: stage_channels must not be empty");
    for (std::size_t s = 0; s < c.size(); ++s)
      check<OptionError>(c[s] >= 1, "nddr::ShortcutModule: stage_channels[", s,
                         "] must be >= 1, got ", c[s]);
    return c;
  }
  static std::vector<Shape> shapes_of(std::span<const TensorView<const T, D>> xs) {
    std::vector<Shape> s;
    s.reserve(xs.size());
    for (const auto& x : xs) s.push_back(x.shape());
    return s;
  }
  static bool same_size(const Shape& a, const Shape& b) { return a.h() == b.h() && a.w() == b.w(); }
  Shape resized_shape(std::size_t s, const Shape& out) const {
    return Shape::nchw(out.n(), channels_[s], out.h(), out.w());
  }
  ResizeOptions resize_options(const Shape& out) const {
    return ResizeOptions{}.size(out.h(), out.w()).mode(opt_.resize_mode);
  }

  std::vector<std::int64_t> channels_;
  std::int64_t out_;
  ShortcutOptions opt_;
  Conv2d<T, D> conv_;
  BatchNorm2d<T, D> bn_;
  bool training_ = true;
  bool forwarded_ = false;
  std::vector<Tensor<T, D>> resized_;   // per stage (N, C_s, H_S, W_S); unused at target size
  std::vector<Tensor<T, D>> dresized_;  // their gradients
  Tensor<T, D> concat_;                 // (N, sum C_s, H_S, W_S)
  Tensor<T, D> conv_out_;               // (N, out, H_S, W_S)
  Tensor<T, D> dconv_out_;              // (N, out, H_S, W_S)
  Tensor<T, D> dconcat_;                // (N, sum C_s, H_S, W_S)
};

}  // namespace nddr
