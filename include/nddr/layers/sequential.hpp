#pragma once
/// \file
/// `Sequential<T, D>`: a chain of named layers that is itself a `Layer`.
///
/// Children are type-erased (one virtual call per layer per pass), so a network of any depth is
/// one instantiation per (T, D) instead of a nested template; the intermediate activations and
/// their gradients are owned here and reallocated only when the input shape changes.

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

namespace nddr {

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

  void forward(Context<D>& ctx, TensorView<const T, D> x, TensorView<T, D> y) {
    check<Error>(!children_.empty(), "nddr::Sequential::forward: no layers");
    check_shape("nddr::Sequential::forward", "y", y.shape(), output_shape(x.shape()));
    prepare(x.shape());
    TensorView<const T, D> in = x;
    for (std::size_t i = 0; i < children_.size(); ++i) {
      TensorView<T, D> out = i + 1 == children_.size() ? y : acts_[i].view();
      children_[i]->forward(ctx, in, out);
      in = out;
    }
  }

  void backward(Context<D>& ctx, TensorView<const T, D> x, TensorView<const T, D> y,
                TensorView<const T, D> dy, TensorView<T, D> dx) {
    const std::size_t n = children_.size();
    check<Error>(n > 0 && acts_.size() + 1 == n && x.shape() == in_shape_,
                 "nddr::Sequential::backward: call forward with the same input first");
    TensorView<const T, D> dout = dy;
    for (std::size_t i = n; i-- > 0;) {
      TensorView<const T, D> in = i == 0 ? x : acts_[i - 1].cview();
      TensorView<const T, D> out = i + 1 == n ? y : acts_[i].cview();
      TensorView<T, D> din = dx;
      if (i > 0) {
        // The gradient of acts_[i - 1] lives in the buffer that child i does not read.
        din = TensorView<T, D>(grads_[(i - 1) % 2].data(), acts_[i - 1].shape());
        // children accumulate into their input gradient
        Storage<D>::zero(din.data(), static_cast<std::size_t>(din.numel()) * sizeof(T));
      }
      children_[i]->backward(ctx, in, out, dout, din);
      if (i > 0) dout = din;
    }
  }

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
    L layer;
  };

  // Sizes the intermediate activations for input shape `in`, and the two gradient buffers that
  // the backward pass alternates between (a child reads its output's gradient from one and
  // writes its input's into the other), each as large as the largest activation.
  void prepare(const Shape& in) {
    if (in == in_shape_ && acts_.size() + 1 == children_.size()) return;
    acts_.clear();
    Shape s = in;
    std::int64_t largest = 0;
    for (std::size_t i = 0; i + 1 < children_.size(); ++i) {
      s = children_[i]->output_shape(s);
      acts_.emplace_back(s);
      largest = std::max(largest, s.numel());
    }
    for (auto& g : grads_) g = Tensor<T, D>(Shape{largest});
    in_shape_ = in;
  }

  std::vector<std::unique_ptr<Concept>> children_;
  std::vector<std::string> names_;
  std::vector<Tensor<T, D>> acts_;   // output of child i, i < size - 1
  std::array<Tensor<T, D>, 2> grads_;  // gradient of acts_[i] in grads_[i % 2]
  Shape in_shape_{};
  bool training_ = true;
  bool declared_ = false;
};

}  // namespace nddr
