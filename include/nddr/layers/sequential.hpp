#pragma once
/// \file
/// `Sequential<T, D>`: a chain of named layers that is itself a `Layer`.
///
/// Children are type-erased (one virtual call per layer per pass), so a network of any depth is
/// one instantiation per (T, D) instead of a nested template; the intermediate activations and
/// their gradients are owned here and reallocated only when the input shape or the mode
/// changes (see `forward`); the gradient buffers only exist after the first backward.

#include <algorithm>
#include <array>
#include <concepts>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/concepts/layer.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/storage.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/layers/layer_traits.hpp"

namespace nddr {

/// Two scratch buffers that several `Sequential`s run one after the other (a network's stages
/// and heads) share for their inference-mode intermediate outputs, instead of two each; they
/// grow to the largest request. A Sequential nested inside another must not share its parent's
/// arena: both would write the same buffers at once.
template <class T, class D = Cpu>
class ActivationArena {
 public:
  /// Buffer `i` (0 or 1) with room for at least `count` elements; contents unspecified.
  T* buffer(std::size_t i, std::int64_t count) {
    if (buffers_[i].numel() < count) {
      buffers_[i] = Tensor<T, D>();  // free before allocating the larger one
      buffers_[i] = Tensor<T, D>(Shape{count});
    }
    return buffers_[i].data();
  }
  /// Elements held now (diagnostics and tests).
  std::int64_t elements() const { return buffers_[0].numel() + buffers_[1].numel(); }

 private:
  std::array<Tensor<T, D>, 2> buffers_;
};

template <class T, class D = Cpu>
class Sequential {
 public:
  using value_type = T;
  using device_type = D;

  Sequential() = default;
  Sequential(Sequential&&) noexcept = default;
  Sequential& operator=(Sequential&&) noexcept = default;

  /// Appends `layer` under `name`; its parameters become `<prefix>.<name>.<param>`.
  template <class L>
  Sequential& add(std::string name, L layer) {
    static_assert(concepts::require_layer<L>());
    static_assert(std::is_same_v<typename L::value_type, T> &&
                      std::is_same_v<typename L::device_type, D>,
                  "nddr::Sequential: a child's value_type/device_type must match the Sequential's");
    check<Error>(!declared_, "nddr::Sequential::add: '", name, "' added after declare()");
    for (const auto& n : names_)
      check<Error>(n != name, "nddr::Sequential::add: duplicate child name '", name, "'");
    names_.push_back(std::move(name));
    children_.push_back(std::make_unique<Model<L>>(std::move(layer)));
    return *this;
  }

  std::size_t size() const { return children_.size(); }
  bool empty() const { return children_.empty(); }
  const std::vector<std::string>& names() const { return names_; }

  /// The child `name` as its concrete type `L` (throws if absent or of another type).
  template <class L>
  L& child(std::string_view name) {
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (names_[i] == name) {
        auto* m = dynamic_cast<Model<L>*>(children_[i].get());
        check<Error>(m != nullptr, "nddr::Sequential::child: '", name, "' has another type");
        return m->layer;
      }
    throw Error(detail::concat("nddr::Sequential::child: no child named '", name, "'"));
  }

  /// Child `i` (in `names()` order) if it is an `L`, else null: how exporters walk the chain
  /// (nddr/io/onnx.hpp). Throws if `i` is out of range.
  template <class L>
  const L* child_if(std::size_t i) const {
    check<Error>(i < children_.size(), "nddr::Sequential::child_if: child ", i, " of ",
                 children_.size());
    const auto* m = dynamic_cast<const Model<L>*>(children_[i].get());
    return m != nullptr ? &m->layer : nullptr;
  }

  /// Appends every random stream held by a child (dropout layers, nested containers), in
  /// child order, so that a checkpoint can save and restore them exactly.
  void collect_rngs(std::vector<Rng*>& out) {
    for (auto& c : children_) c->collect_rngs(out);
  }

  Shape output_shape(const Shape& in) const {
    Shape s = in;
    for (const auto& c : children_) s = c->output_shape(s);
    return s;
  }

  void declare(ParameterStore<T, D>& store, const std::string& prefix) {
    for (std::size_t i = 0; i < children_.size(); ++i)
      children_[i]->declare(store, prefix.empty() ? names_[i] : prefix + "." + names_[i]);
    declared_ = true;
  }
  void initialize(Rng& rng) {
    for (auto& c : children_) c->initialize(rng);
  }
  void set_training(bool on) {
    training_ = on;
    for (auto& c : children_) c->set_training(on);
  }
  bool training() const { return training_; }

  /// In training mode every child's output is kept for backward, an in-place child (ReLU)
  /// writing over its input where the child before it does not read its own output in backward
  /// (BatchNorm, Conv2d). In inference mode the children alternate between two buffers; a
  /// backward after such a forward first recomputes the outputs it needs (inference-mode
  /// children are deterministic, so the results are the same).
  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    check<Error>(!children_.empty(), "nddr::Sequential::forward: no layers");
    check_shape("nddr::Sequential::forward", "y", y.shape(), output_shape(x.shape()));
    plan(x.shape(), training_);
    if (!keeps_all_ && arena_ != nullptr)  // another Sequential may have grown the arena
      for (std::size_t b = 0; b < sizes_.size(); ++b) bases_[b] = arena_->buffer(b, sizes_[b]);
    run_forward(ctx, x, y, children_.size());
  }

  /// Takes the two inference-mode buffers from `arena` (null: own ones), which must outlive
  /// this Sequential's use and not be shared with a Sequential nested in this one.
  void share_inference_buffers(ActivationArena<T, D>* arena) {
    arena_ = arena;
    slot_.clear();  // plan again
  }

  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D> y,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    const std::size_t n = children_.size();
    check<Error>(n > 0 && slot_.size() == n && x.shape() == in_shape_,
                 "nddr::Sequential::backward: call forward with the same input first");
    check<Error>(keeps_all_ || !training_,
                 "nddr::Sequential::backward: the mode changed to training after forward");
    if (!keeps_all_) {
      // The children that write into y (the last one and those it runs in place on) hold what
      // their backward reads already: their input is all that needs computing again.
      plan(x.shape(), true);
      std::size_t first_out = n;
      while (first_out > 0 && slot_[first_out - 1] == kOutput) --first_out;
      run_forward(ctx, x, TensorView<T, D>{}, first_out);
    }
    allocate_gradients();
    TensorView<const T, D> dout = dy;
    for (std::size_t i = n; i-- > 0;) {
      TensorView<const T, D> in = i == 0 ? x : output(i - 1, y);
      TensorView<T, D> din = dx;
      if (i > 0) {
        // The gradient of child i - 1's output lives in the buffer that child i does not read.
        din = TensorView<T, D>(grads_[(i - 1) % 2].data(), shapes_[i - 1]);
        // children accumulate into their input gradient
        Storage<D>::zero(din.data(), static_cast<std::size_t>(din.numel()) * sizeof(T));
      }
      children_[i]->backward(ctx, in, output(i, y), dout, din);
      if (i > 0) dout = din;
    }
  }

  /// Elements of the intermediate activation buffers held now, a shared arena's excluded
  /// (diagnostics and tests).
  std::int64_t activation_elements() const {
    std::int64_t total = 0;
    for (const auto& b : acts_) total += b.numel();
    return total;
  }
  /// Elements of the activation-gradient buffers: none until the first backward.
  std::int64_t gradient_elements() const { return grads_[0].numel() + grads_[1].numel(); }

 private:
  struct Concept {
    virtual ~Concept() = default;
    virtual Shape output_shape(const Shape&) const = 0;
    virtual void declare(ParameterStore<T, D>&, const std::string&) = 0;
    virtual void initialize(Rng&) = 0;
    virtual void set_training(bool) = 0;
    virtual void collect_rngs(std::vector<Rng*>&) = 0;
    virtual void forward(Context<D>&, TensorView<const T, D>, TensorView<T, D>) = 0;
    virtual void backward(Context<D>&, TensorView<const T, D>, TensorView<const T, D>,
                          TensorView<const T, D>, TensorView<T, D>) = 0;
    virtual bool runs_in_place() const = 0;
    virtual bool backward_reads_output() const = 0;
  };
  template <class L>
  struct Model final : Concept {
    explicit Model(L l) : layer(std::move(l)) {}
    Shape output_shape(const Shape& s) const override { return layer.output_shape(s); }
    void declare(ParameterStore<T, D>& st, const std::string& p) override { layer.declare(st, p); }
    void initialize(Rng& r) override {
      // Layers write their initial values in place on the CPU; a device network is initialised
      // on a host twin and copied (Network does this), so device layers never instantiate it.
      if constexpr (std::is_same_v<D, Cpu>)
        layer.initialize(r);
      else
        throw Error("nddr::Sequential::initialize: initialise on nddr::Cpu and copy the store "
                    "to the device (nddr::Network does this)");
    }
    void set_training(bool on) override { layer.set_training(on); }
    void collect_rngs(std::vector<Rng*>& out) override {
      if constexpr (requires { layer.collect_rngs(out); })
        layer.collect_rngs(out);
      else if constexpr (requires { { layer.rng() } -> std::same_as<Rng&>; })
        out.push_back(&layer.rng());
    }
    void forward(Context<D>& c, TensorView<const T, D> x, TensorView<T, D> y) override {
      layer.forward(c, x, y);
    }
    void backward(Context<D>& c, TensorView<const T, D> x, TensorView<const T, D> y,
                  TensorView<const T, D> dy, TensorView<T, D> dx) override {
      layer.backward(c, x, y, dy, dx);
    }
    bool runs_in_place() const override { return runs_in_place_v<L>; }
    bool backward_reads_output() const override { return reads_output_in_backward(layer); }
    L layer;
  };

  static constexpr std::size_t kOutput = static_cast<std::size_t>(-1);

  // Child i's output: the caller's y or its activation buffer, seen with its shape.
  TensorView<T, D> output(std::size_t i, TensorView<T, D> y) {
    return slot_[i] == kOutput ? y : TensorView<T, D>(bases_[slot_[i]], shapes_[i]);
  }
  TensorView<const T, D> output(std::size_t i, TensorView<const T, D> y) {
    return slot_[i] == kOutput ? y : TensorView<const T, D>(bases_[slot_[i]], shapes_[i]);
  }

  // Runs children [0, count) on x, the last one of them into y when it is the last child.
  void run_forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y,
                   std::size_t count) {
    TensorView<const T, D> in = x;
    for (std::size_t i = 0; i < count; ++i) {
      TensorView<T, D> out = output(i, y);
      children_[i]->forward(ctx, in, out);
      in = out;
    }
  }

  // Assigns every child's output a buffer for input shape `in`. Consecutive children form a
  // run on one buffer when each after the first runs in place and, if everything is kept for
  // backward, the one before it does not read its output in backward. The last run writes the
  // caller's y. Kept for backward: one buffer per other run; otherwise two, alternating (the
  // shared arena's when there is one). Reallocates only when the shape or the mode changes.
  void plan(const Shape& in, bool keep_all) {
    const std::size_t n = children_.size();
    if (in == in_shape_ && keep_all == keeps_all_ && slot_.size() == n) return;
    acts_.clear();
    shapes_.clear();
    std::vector<std::size_t> run(n);
    Shape s = in;
    for (std::size_t i = 0; i < n; ++i) {
      const Shape out = children_[i]->output_shape(s);
      const bool joins = i > 0 && out == s && children_[i]->runs_in_place() &&
                         (!keep_all || !children_[i - 1]->backward_reads_output());
      run[i] = i == 0 ? 0 : run[i - 1] + (joins ? 0 : 1);
      shapes_.push_back(out);
      s = out;
    }
    const std::size_t runs = run[n - 1];  // runs before the last one
    sizes_.assign(keep_all ? runs : std::min<std::size_t>(runs, 2), 0);
    slot_.assign(n, kOutput);
    largest_ = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (i + 1 < n) largest_ = std::max(largest_, shapes_[i].numel());
      if (run[i] == runs) continue;
      slot_[i] = keep_all ? run[i] : run[i] % 2;
      sizes_[slot_[i]] = std::max(sizes_[slot_[i]], shapes_[i].numel());
    }
    bases_.assign(sizes_.size(), nullptr);
    if (keep_all || arena_ == nullptr)
      for (std::size_t b = 0; b < sizes_.size(); ++b)
        bases_[b] = acts_.emplace_back(Shape{sizes_[b]}).data();
    in_shape_ = in;
    keeps_all_ = keep_all;
  }

  // The two gradient buffers that backward alternates between (a child reads its output's
  // gradient from one and writes its input's into the other), each as large as the largest
  // intermediate output; allocated by the first backward, so inference never holds them.
  void allocate_gradients() {
    if (largest_ == 0 || grads_[0].numel() == largest_) return;
    for (auto& g : grads_) g = Tensor<T, D>(Shape{largest_});
  }

  std::vector<std::unique_ptr<Concept>> children_;
  std::vector<std::string> names_;
  std::vector<Tensor<T, D>> acts_;     // activation buffers, see plan()
  std::vector<std::int64_t> sizes_;    // elements of each buffer
  std::vector<T*> bases_;              // each buffer's memory: acts_ or the arena's
  std::vector<std::size_t> slot_;      // child i writes bases_[slot_[i]], or y for kOutput
  ActivationArena<T, D>* arena_ = nullptr;
  std::vector<Shape> shapes_;          // output shape of child i
  std::array<Tensor<T, D>, 2> grads_;  // gradient of child i's output in grads_[i % 2]
  std::int64_t largest_ = 0;           // elements of the largest intermediate output
  Shape in_shape_{};
  bool keeps_all_ = true;              // the last forward kept every output for backward
  bool training_ = true;
  bool declared_ = false;
};

}  // namespace nddr
