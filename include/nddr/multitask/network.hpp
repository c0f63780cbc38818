#pragma once
/// \file
/// `Network<Spec, D, T>`: a `MultiTask` spec instantiated on device D with element type T. It owns
/// the parameters (one `ParameterStore`), the K x S grid of stage instances, the fusion layers
/// after every stage, the optional shortcut modules and the K heads, and runs explicit forward and
/// backward passes over the whole grid.
///
/// Data flow (task k, stage s; f[k][-1] = the input image):
///   a[k][s] = stage[k][s](f[k][s-1])            (shared stages: computed once, a[*][s] alias)
///   f[*][s] = fusion[s](a[*][s])                (identity for shared and unfused stages:
///                                                `Spec::fused(s)`, see `At<F, ...>`)
///   h[k]    = shortcut ? shortcut_k(f[k][0..S-1]) : f[k][S-1]
///   out[k]  = head[k](h[k])
/// Backward visits the same grid in reverse; every consumer *adds* into its input's gradient
/// (the Layer contract), so a feature read by K fusion branches, or a shared trunk read by K
/// columns, collects all K contributions.

#include <algorithm>
#include <array>
#include <deque>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/hana/for_each.hpp>
#include <boost/hana/range.hpp>

#include "nddr/core/context.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/fusion/none.hpp"
#include "nddr/fusion/shortcut.hpp"
#include "nddr/layers/sequential.hpp"
#include "nddr/multitask/multitask.hpp"

namespace nddr {

/// Run-time options of a `Network`.
template <class Spec>
struct NetworkOptions {
  typename Spec::fusion::options fusion{};  ///< options of every fusion layer
  std::int64_t shortcut_channels = 512;     ///< output channels of the shortcut 1x1 conv
  double fusion_lr_mult = 100.0;            ///< group "nddr": fusion and shortcut parameters
  double fusion_weight_decay_mult = 1.0;    ///< weight-decay multiplier of group "nddr"
  double fc8_weight_lr_mult = 10.0;         ///< group "fc8.weight"
  double fc8_bias_lr_mult = 20.0;           ///< group "fc8.bias"
  std::uint64_t seed = 1234;                ///< initialisation seed
};

template <class Spec, class D = Cpu, class T = float>
class Network {
 public:
  using spec_type = Spec;
  using value_type = T;
  using device_type = D;
  static constexpr std::size_t kTasks = Spec::tasks;
  static constexpr std::size_t kStages = Spec::stages;
  static constexpr std::size_t kShared = Spec::shared_stages;
  using FusionLayerType = typename Spec::fusion::template layer<T, D>;
  /// Whether the fusion layers learn (NDDR, cross-stitch, sluice; not `None`/`Shared<S>`): then
  /// the shortcut modules train with them in group "nddr", as in the authors' NDDR-CNN-Shortcut;
  /// the single-task and split shortcut baselines train theirs at the base rate (paper-spec §3.3).
  static constexpr bool kLearnedFusion =
      !std::is_same_v<FusionLayerType, IdentityFusion<T, D>> &&
      []<std::size_t... S>(std::index_sequence<S...>) { return (Spec::fused(S) || ...); }(
          std::make_index_sequence<kStages>{});

  /// `outputs[k]` = head channels of task k (40 for NYUv2 segmentation, 3 for normals, ...).
  explicit Network(const std::array<std::int64_t, kTasks>& outputs,
                   const NetworkOptions<Spec>& opt = {})
      : opt_(opt) {
    namespace hana = boost::hana;
    store_.add_group({"nddr", opt.fusion_lr_mult, opt.fusion_weight_decay_mult});
    store_.add_group({"fc8.weight", opt.fc8_weight_lr_mult, 1.0});
    store_.add_group({"fc8.bias", opt.fc8_bias_lr_mult, 1.0});
    // The fusion layers, after the stages `Spec::fused` names.
    for (std::size_t s = 0; s < kStages; ++s)
      if (Spec::fused(s))
        fusion_[s] = std::make_unique<FusionLayerType>(kTasks, Spec::channels(s), opt.fusion);
    // The K x S grid: backbone types differ per task, so iterate them at compile time.
    hana::for_each(hana::make_range(hana::size_c<0>, hana::size_c<kTasks>), [&](auto k) {
      using B = typename Spec::template backbone<decltype(k)::value>;
      hana::for_each(hana::make_range(hana::size_c<0>, hana::size_c<kStages>), [&](auto s) {
        using S = stage_t<B, decltype(s)::value>;
        if (decltype(s)::value >= kShared || decltype(k)::value == 0)
          stages_[decltype(k)::value].push_back(
              std::make_unique<Sequential<T, D>>(S::template build<T, D>()));
      });
      // A head reads the shortcut's output, or the last stage's fused feature, whose channels
      // are the fusion layer's `output_shapes` (a fusion may change them).
      const std::int64_t head_in =
          Spec::shortcut ? opt.shortcut_channels : fused_channels(decltype(k)::value, kStages - 1);
      heads_[decltype(k)::value] =
          B::head::template build<T, D>(head_in, outputs[decltype(k)::value]);
    });
    if constexpr (Spec::shortcut) {
      for (std::size_t k = 0; k < shortcut_count(); ++k) {
        std::vector<std::int64_t> ch;
        for (std::size_t s = 0; s < kStages; ++s) ch.push_back(fused_channels(k, s));
        shortcuts_.push_back(std::make_unique<ShortcutModule<T, D>>(ch, opt.shortcut_channels));
      }
    }
    // Stages and heads run one after the other: in inference mode they share two buffers.
    for (auto& col : stages_)
      for (auto& st : col) st->share_inference_buffers(&arena_);
    for (auto& h : heads_) h.share_inference_buffers(&arena_);
    declare_all();
    store_.allocate();
    if constexpr (std::is_same_v<D, Cpu>) {
      Rng rng(opt.seed);
      for (auto& col : stages_)
        for (auto& st : col) st->initialize(rng);
      for (auto& f : fusion_)
        if (f) f->initialize(rng);
      for (auto& m : shortcuts_) m->initialize(rng);
      for (auto& h : heads_) h.initialize(rng);
    } else {
      initialize_from_host(outputs, opt);
    }
  }

  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  ParameterStore<T, D>& parameters() { return store_; }
  const ParameterStore<T, D>& parameters() const { return store_; }
  /// Every trainable parameter's name, shape, offset and group (PyTorch's named_parameters()).
  const std::vector<ParamEntry>& named_parameters() const { return store_.parameters(); }

  /// Stage `s` (0-based) of task `k`; shared stages are owned by task 0.
  Sequential<T, D>& stage(std::size_t k, std::size_t s) {
    return *stages_[s < kShared ? 0 : k][s < kShared ? s : s - (k == 0 ? 0 : kShared)];
  }
  Sequential<T, D>& head(std::size_t k) { return heads_[k]; }
  /// The fusion layer after stage `s` (0-based; one that `Spec::fused(s)` names).
  FusionLayerType& fusion(std::size_t s) {
    check<OptionError>(s < kStages && fusion_[s] != nullptr, "nddr::Network::fusion: no fusion layer "
                       "follows stage ", s, " (0-based)");
    return *fusion_[s];
  }

  /// Shortcut modules (`Spec::shortcut` only): one per task, or one for a fully shared trunk.
  std::size_t shortcut_count() const { return kShared == kStages ? 1 : kTasks; }
  /// Shortcut module `k` (< shortcut_count()); its parameters are `shortcut.task{k}.*`, or
  /// `shortcut.shared.*` when one module serves K > 1 tasks.
  ShortcutModule<T, D>& shortcut(std::size_t k) {
    check<OptionError>(k < shortcuts_.size(), "nddr::Network::shortcut: module ", k, " of ",
                       shortcuts_.size());
    return *shortcuts_[k];
  }

  /// Every random stream of the network (dropout layers) in a fixed order: with the parameters,
  /// buffers and optimiser state, this is the whole state a checkpoint needs for exact resume.
  std::vector<Rng*> rngs() {
    std::vector<Rng*> out;
    for (auto& col : stages_)
      for (auto& st : col) st->collect_rngs(out);
    for (auto& h : heads_) h.collect_rngs(out);
    return out;
  }

  void set_training(bool on) {
    training_ = on;
    for (auto& col : stages_)
      for (auto& st : col) st->set_training(on);
    for (auto& f : fusion_)
      if (f) f->set_training(on);
    for (auto& m : shortcuts_) m->set_training(on);
    for (auto& h : heads_) h.set_training(on);
  }
  bool training() const { return training_; }

  /// Output shape of task k's head for an input image of shape `in`.
  /// Incremented whenever the activation buffers are reallocated (a new input shape): device
  /// work recorded against the old buffers (a CUDA Graph) must be recorded again.
  std::uint64_t layout_version() const { return layout_version_; }

  Shape output_shape(std::size_t k, const Shape& in) {
    check<OptionError>(k < kTasks, "nddr::Network::output_shape: task ", k, " of ", kTasks);
    return heads_[k].output_shape(head_input_shape(k, shape_grid(in)));
  }

  /// Runs every task on image `x` (N, C, H, W). The returned views stay valid until the next
  /// forward with another input shape.
  std::array<TensorView<const T, D>, kTasks> forward(Context<D>& ctx, TensorView<const T, D> x) {
    prepare(x.shape());
    if (training_ != planned_training_) {  // the stages and heads re-plan their buffers
      planned_training_ = training_;
      ++layout_version_;
    }
    for (std::size_t s = 0; s < kStages; ++s) {
      for (std::size_t k = 0; k < kTasks; ++k) {
        if (s < kShared && k > 0) continue;
        stage(k, s).forward(ctx, input_of(k, s, x), a_[k][s]->view());
      }
      if (Spec::fused(s)) {
        auto xs = views(a_, s);
        auto ys = mut_views(f_, s);
        fusion(s).forward(ctx, std::span<const TensorView<const T, D>>(xs),
                          std::span<const TensorView<T, D>>(ys));
      }
    }
    std::array<TensorView<const T, D>, kTasks> out;
    for (std::size_t k = 0; k < kTasks; ++k) {
      if constexpr (Spec::shortcut) {
        if (k < shortcut_count()) {
          auto xs = column_views(f_, k);
          shortcuts_[k]->forward(ctx, std::span<const TensorView<const T, D>>(xs), h_[k].view());
        }
      }
      heads_[k].forward(ctx, head_input(k), out_[k].view());
      out[k] = out_[k].cview();
    }
    return out;
  }

  /// Elements of every activation-gradient buffer held now (the grid's, the stages' and the
  /// heads'): none until the first backward, so a network used for inference holds none.
  std::int64_t gradient_elements() const {
    std::int64_t n = 0;
    for (const auto& g : grads_) n += g.numel();
    for (const auto& g : dh_) n += g.numel();
    for (const auto& col : stages_)
      for (const auto& st : col) n += st->gradient_elements();
    for (const auto& h : heads_) n += h.gradient_elements();
    return n;
  }

  /// Back-propagates `douts[k]` (the gradient of the loss w.r.t. task k's output; an empty view
  /// means zero) through the whole grid after the matching `forward`. Parameter gradients are
  /// assigned. If `dx` is non-empty, the input gradient is accumulated into it.
  void backward(Context<D>& ctx, TensorView<const T, D> x,
                std::span<const TensorView<const T, D>> douts, TensorView<T, D> dx = {}) {
    check<Error>(douts.size() == kTasks, "nddr::Network::backward: expected ", kTasks,
                 " output gradients, got ", douts.size());
    check<Error>(x.shape() == in_shape_, "nddr::Network::backward: call forward with ",
                 x.shape(), " first");
    allocate_gradients();
    for (auto& g : grads_) g.zero();
    for (auto& g : dh_) g.zero();
    store_.zero_grad();  // layers that get no gradient this step must report zero
    for (std::size_t k = 0; k < kTasks; ++k) {
      if (douts[k].empty()) continue;
      check_shape("nddr::Network::backward", "douts[k]", douts[k].shape(), out_[k].shape());
      heads_[k].backward(ctx, head_input(k), out_[k].cview(), douts[k], head_input_grad(k));
    }
    if constexpr (Spec::shortcut) {
      for (std::size_t k = 0; k < shortcut_count(); ++k) {
        auto xs = column_views(f_, k);
        auto dxs = column_mut_views(df_, k);
        shortcuts_[k]->backward(ctx, std::span<const TensorView<const T, D>>(xs), h_[k].cview(),
                                dh_[k].cview(), std::span<const TensorView<T, D>>(dxs));
      }
    }
    for (std::size_t s = kStages; s-- > 0;) {
      if (Spec::fused(s)) {
        auto xs = views(a_, s);
        auto ys = views(f_, s);
        auto dys = views(df_, s);
        auto dxs = mut_views(da_, s);
        fusion(s).backward(ctx, std::span<const TensorView<const T, D>>(xs),
                           std::span<const TensorView<const T, D>>(ys),
                           std::span<const TensorView<const T, D>>(dys),
                           std::span<const TensorView<T, D>>(dxs));
      }
      for (std::size_t k = 0; k < kTasks; ++k) {
        if (s < kShared && k > 0) continue;
        TensorView<T, D> din = s == 0 ? dx : df_[k][s - 1]->view();
        stage(k, s).backward(ctx, input_of(k, s, x), a_[k][s]->cview(), da_[k][s]->cview(), din);
      }
    }
  }

 private:
  // A device network starts exactly where the same network on the CPU starts: build that twin
  // (same seed, same declaration order, hence the same flat layout) and upload its buffers and
  // random streams.
  void initialize_from_host(const std::array<std::int64_t, kTasks>& outputs,
                            const NetworkOptions<Spec>& opt) {
    Network<Spec, Cpu, T> host(outputs, opt);
    auto upload = [](TensorView<T, D> dst, TensorView<const T, Cpu> src) {
      check<Error>(dst.numel() == src.numel(),
                   "nddr::Network: device and host parameter layouts differ");
      Storage<D>::upload(dst.data(), src.data(), static_cast<std::size_t>(src.numel()) * sizeof(T));
    };
    const auto& hs = host.parameters();
    upload(store_.values(), hs.values());
    upload(store_.buffer_values(), hs.buffer_values());
    auto mine = rngs();
    auto theirs = host.rngs();
    check<Error>(mine.size() == theirs.size(), "nddr::Network: random streams differ");
    for (std::size_t i = 0; i < mine.size(); ++i) mine[i]->set_state(theirs[i]->state());
  }

  void declare_all() {
    for (std::size_t k = 0; k < kTasks; ++k)
      for (std::size_t s = 0; s < kStages; ++s) {
        if (s < kShared && k > 0) continue;
        const std::string prefix = s < kShared ? "shared.stage" + std::to_string(s + 1)
                                               : "task" + std::to_string(k) + ".stage" +
                                                     std::to_string(s + 1);
        stage(k, s).declare(store_, prefix);
      }
    for (std::size_t s = 0; s < kStages; ++s)
      if (Spec::fused(s)) fusion(s).declare(store_, "fusion.stage" + std::to_string(s + 1));
    {
      std::optional<typename ParameterStore<T, D>::GroupScope> group;
      if constexpr (kLearnedFusion) group.emplace(store_, "nddr");
      for (std::size_t k = 0; k < shortcuts_.size(); ++k)
        shortcuts_[k]->declare(store_, shortcuts_.size() == 1 && kTasks > 1
                                           ? std::string("shortcut.shared")
                                           : "shortcut.task" + std::to_string(k));
    }
    for (std::size_t k = 0; k < kTasks; ++k) {
      const std::string prefix = "task" + std::to_string(k) + ".head";
      const std::size_t first = store_.parameters().size();
      heads_[k].declare(store_, prefix);
      // The paper's lr multipliers: fc8 weights x10, fc8 biases x20.
      for (std::size_t i = first; i < store_.parameters().size(); ++i) {
        const std::string& n = store_.parameters()[i].name;
        if (n == prefix + ".fc8.weight") store_.move_to_group(ParamId{i}, "fc8.weight");
        if (n == prefix + ".fc8.bias") store_.move_to_group(ParamId{i}, "fc8.bias");
      }
    }
  }

  using Grid = std::array<std::array<Tensor<T, D>*, kStages>, kTasks>;

  // Allocates every activation for input shape `in` (only when it changes); their gradients
  // wait for the first backward (allocate_gradients), so inference never holds them.
  void prepare(const Shape& in) {
    if (in == in_shape_) return;
    grads_.clear();
    tensors_.clear();
    for (auto& g : dh_) g = Tensor<T, D>();
    const ShapeGrid grid = shape_grid(in);
    fill_grid(tensors_, a_, f_, grid);
    for (std::size_t k = 0; k < kTasks; ++k) {
      const Shape hin = head_input_shape(k, grid);
      if constexpr (Spec::shortcut) h_[k] = Tensor<T, D>(hin);
      out_[k] = Tensor<T, D>(heads_[k].output_shape(hin));
    }
    in_shape_ = in;
    ++layout_version_;
  }

  // The gradients of the activations that prepare() allocated, same shapes and aliasing.
  void allocate_gradients() {
    store_.grads();
    if (!grads_.empty()) return;
    fill_grid(grads_, da_, df_, shape_grid(in_shape_));
    if constexpr (Spec::shortcut)
      for (std::size_t k = 0; k < kTasks; ++k) dh_[k] = Tensor<T, D>(h_[k].shape());
    ++layout_version_;
  }

  // The shapes of every stage output (a) and every fusion output (f, what the fusion layer's
  // `output_shapes` gives; a copy of a where no fusion follows the stage) for input shape `in`.
  // Shared stages exist once: every task sees task 0's. The one walk behind output_shape(),
  // prepare() and allocate_gradients().
  struct ShapeGrid {
    std::array<std::array<Shape, kStages>, kTasks> a, f;
  };
  ShapeGrid shape_grid(const Shape& in) {
    ShapeGrid grid;
    std::array<Shape, kTasks> cur;
    cur.fill(in);
    for (std::size_t s = 0; s < kStages; ++s) {
      for (std::size_t k = 0; k < kTasks; ++k) {
        cur[k] = s < kShared && k > 0 ? grid.a[0][s] : stage(k, s).output_shape(cur[k]);
        grid.a[k][s] = cur[k];
      }
      if (Spec::fused(s)) {
        const std::vector<Shape> fused = fusion(s).output_shapes(std::span<const Shape>(cur));
        check<ShapeError>(fused.size() == kTasks, "nddr::Network: the fusion layer after stage ",
                          s + 1, " returned ", fused.size(), " output shapes, expected ", kTasks);
        std::copy(fused.begin(), fused.end(), cur.begin());
      }
      for (std::size_t k = 0; k < kTasks; ++k) grid.f[k][s] = cur[k];
    }
    return grid;
  }

  // The shape task k's head reads: the last stage's fused feature, or its shortcut's output.
  Shape head_input_shape(std::size_t k, const ShapeGrid& grid) {
    if constexpr (Spec::shortcut)
      return shortcuts_[shortcut_count() == 1 ? 0 : k]->output_shape(
          std::span<const Shape>(grid.f[k].data(), kStages));
    return grid.f[k][kStages - 1];
  }

  // Fills the stage grid `a` (stage outputs) and `f` (fusion outputs) with tensors of `grid`'s
  // shapes appended to `pool`: shared stages exist once (every task sees task 0's), and shared
  // and unfused stages alias f to a.
  void fill_grid(std::deque<Tensor<T, D>>& pool, Grid& a, Grid& f, const ShapeGrid& grid) {
    for (std::size_t s = 0; s < kStages; ++s) {
      for (std::size_t k = 0; k < kTasks; ++k)
        a[k][s] = s < kShared && k > 0 ? a[0][s] : &pool.emplace_back(grid.a[k][s]);
      for (std::size_t k = 0; k < kTasks; ++k)
        f[k][s] = Spec::fused(s) ? &pool.emplace_back(grid.f[k][s]) : a[k][s];
    }
  }

  // Channels of task k's feature after stage s: the stage's, or its fusion layer's output
  // (asked with a probe image of the stage's channels).
  std::int64_t fused_channels(std::size_t k, std::size_t s) const {
    check<OptionError>(s < kStages, "nddr::Network: stage ", s, " of ", kStages);
    if (!Spec::fused(s)) return Spec::channels(s);
    const std::vector<Shape> in(kTasks, Shape::nchw(1, Spec::channels(s), 8, 8));
    const std::vector<Shape> out = fusion_[s]->output_shapes(std::span<const Shape>(in));
    check<ShapeError>(out.size() == kTasks && out[k].rank() == 4,
                      "nddr::Network: the fusion layer after stage ", s + 1,
                      " does not give ", kTasks, " rank-4 output shapes");
    return out[k].c();
  }

  TensorView<const T, D> input_of(std::size_t k, std::size_t s, TensorView<const T, D> x) const {
    return s == 0 ? x : f_[k][s - 1]->cview();
  }
  TensorView<const T, D> head_input(std::size_t k) const {
    if constexpr (Spec::shortcut) return h_[shortcut_count() == 1 ? 0 : k].cview();
    return f_[k][kStages - 1]->cview();
  }
  TensorView<T, D> head_input_grad(std::size_t k) {
    if constexpr (Spec::shortcut) return dh_[shortcut_count() == 1 ? 0 : k].view();
    return df_[k][kStages - 1]->view();
  }

  static std::vector<TensorView<const T, D>> views(const Grid& g, std::size_t s) {
    std::vector<TensorView<const T, D>> v;
    for (std::size_t k = 0; k < kTasks; ++k) v.push_back(g[k][s]->cview());
    return v;
  }
  static std::vector<TensorView<T, D>> mut_views(const Grid& g, std::size_t s) {
    std::vector<TensorView<T, D>> v;
    for (std::size_t k = 0; k < kTasks; ++k) v.push_back(g[k][s]->view());
    return v;
  }
  static std::vector<TensorView<const T, D>> column_views(const Grid& g, std::size_t k) {
    std::vector<TensorView<const T, D>> v;
    for (std::size_t s = 0; s < kStages; ++s) v.push_back(g[k][s]->cview());
    return v;
  }
  static std::vector<TensorView<T, D>> column_mut_views(const Grid& g, std::size_t k) {
    std::vector<TensorView<T, D>> v;
    for (std::size_t s = 0; s < kStages; ++s) v.push_back(g[k][s]->view());
    return v;
  }

  NetworkOptions<Spec> opt_;
  ParameterStore<T, D> store_;
  ActivationArena<T, D> arena_;  // the stages' and heads' inference-mode intermediate outputs
  std::array<std::vector<std::unique_ptr<Sequential<T, D>>>, kTasks> stages_;
  std::array<std::unique_ptr<FusionLayerType>, kStages> fusion_;  // null after unfused stages
  std::vector<std::unique_ptr<ShortcutModule<T, D>>> shortcuts_;
  std::array<Sequential<T, D>, kTasks> heads_;
  // Activations and their gradients; a deque keeps the grid's pointers valid while it grows.
  std::deque<Tensor<T, D>> tensors_, grads_;
  Grid a_{}, f_{}, da_{}, df_{};
  std::array<Tensor<T, D>, kTasks> h_, dh_, out_;
  Shape in_shape_{};
  std::uint64_t layout_version_ = 0;
  bool training_ = true;
  bool planned_training_ = true;  // the mode of the last forward
};

}  // namespace nddr
