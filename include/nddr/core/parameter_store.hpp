#pragma once
/// \file
/// `ParameterStore<T, D>`: one flat buffer for every trainable parameter, one for their
/// gradients, one for non-trainable buffers (BatchNorm running statistics), with named entries
/// and parameter groups that carry learning-rate and weight-decay multipliers.
///
/// Life cycle: layers `declare` their parameters (names, shapes, group), the owner calls
/// `allocate()` once, then layers read `value(id)` / `grad(id)` views, which stay valid for the
/// life of the store. The gradient buffer is allocated (zeroed) by the first call that asks for
/// a gradient (`grad`, `grads`), normally the first backward, so a store used for inference only
/// never holds it.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

/// Optimisation hyper-parameters shared by a set of parameters.
struct ParamGroup {
  std::string name;
  double lr_mult = 1.0;            ///< multiplies the scheduled learning rate
  double weight_decay_mult = 1.0;  ///< multiplies the optimiser's weight decay (0 = no decay)
};

/// Handle of a declared parameter or buffer.
struct ParamId {
  std::size_t index = static_cast<std::size_t>(-1);
  bool valid() const { return index != static_cast<std::size_t>(-1); }
};

/// One named entry of the flat buffer.
struct ParamEntry {
  std::string name;
  Shape shape;
  std::size_t offset = 0;  ///< in elements, into values/grads (or buffers)
  std::size_t group = 0;   ///< index into groups(); unused for buffers
};

template <class T, class D = Cpu>
class ParameterStore {
 public:
  /// Entries start on 64-byte boundaries.
  static constexpr std::size_t kAlignElems = 64 / sizeof(T) > 0 ? 64 / sizeof(T) : 1;

  ParameterStore() { groups_.push_back(ParamGroup{"default", 1.0, 1.0}); }

  ParameterStore(const ParameterStore&) = delete;
  ParameterStore& operator=(const ParameterStore&) = delete;
  ParameterStore(ParameterStore&&) noexcept = default;
  ParameterStore& operator=(ParameterStore&&) noexcept = default;

  /// Adds a group, or updates the multipliers of an existing one with the same name.
  std::size_t add_group(const ParamGroup& g) {
    if (auto i = find_group(g.name)) {
      groups_[*i] = g;
      return *i;
    }
    groups_.push_back(g);
    return groups_.size() - 1;
  }
  std::optional<std::size_t> find_group(std::string_view name) const {
    for (std::size_t i = 0; i < groups_.size(); ++i)
      if (groups_[i].name == name) return i;
    return std::nullopt;
  }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  /// While alive, parameters declared without an explicit group go to `group`, so a fusion
  /// layer can put every parameter of its sub-layers (convs, BatchNorm) into "nddr" without
  /// those layers knowing about groups. Scopes nest.
  class GroupScope {
   public:
    GroupScope(ParameterStore& store, std::string group) : store_(store) {
      store_.scopes_.push_back(std::move(group));
    }
    ~GroupScope() { store_.scopes_.pop_back(); }
    GroupScope(const GroupScope&) = delete;
    GroupScope& operator=(const GroupScope&) = delete;

   private:
    ParameterStore& store_;
  };

  /// Declares a trainable parameter in group `group` (created with multipliers 1 if new). An
  /// empty `group` means the innermost active `GroupScope`, else "default".
  ParamId declare(std::string name, Shape shape, std::string_view group = {}) {
    check_declarable(name);
    if (group.empty()) group = scopes_.empty() ? std::string_view("default") : scopes_.back();
    std::size_t g = find_group(group).value_or(groups_.size());
    if (g == groups_.size()) groups_.push_back(ParamGroup{std::string(group), 1.0, 1.0});
    params_.push_back(ParamEntry{name, shape, param_size_, g});
    param_size_ += round_up(static_cast<std::size_t>(shape.numel()));
    index_.emplace(std::move(name), Slot{false, params_.size() - 1});
    return ParamId{params_.size() - 1};
  }

  /// Moves a declared parameter to `group` (created with multipliers 1 if new). Lets an owner
  /// regroup a sub-network's parameters by name (e.g. every "fc8.bias" into its x20 group).
  void move_to_group(ParamId id, std::string_view group) {
    check<Error>(id.index < params_.size(), "nddr::ParameterStore::move_to_group: invalid id");
    std::size_t g = find_group(group).value_or(groups_.size());
    if (g == groups_.size()) groups_.push_back(ParamGroup{std::string(group), 1.0, 1.0});
    params_[id.index].group = g;
  }

  /// Declares a non-trainable buffer (e.g. BatchNorm running mean).
  ParamId declare_buffer(std::string name, Shape shape) {
    check_declarable(name);
    buffers_.push_back(ParamEntry{name, shape, buffer_size_, 0});
    buffer_size_ += round_up(static_cast<std::size_t>(shape.numel()));
    index_.emplace(std::move(name), Slot{true, buffers_.size() - 1});
    return ParamId{buffers_.size() - 1};
  }

  /// Allocates the value and buffer arrays (zeroed); the gradients follow on first use.
  /// Declaring afterwards is an error.
  void allocate() {
    check<Error>(!allocated_, "nddr::ParameterStore::allocate: already allocated");
    values_ = Tensor<T, D>(Shape{static_cast<std::int64_t>(param_size_)});
    buffer_values_ = Tensor<T, D>(Shape{static_cast<std::int64_t>(buffer_size_)});
    allocated_ = true;
  }
  bool allocated() const { return allocated_; }
  /// Whether the gradient buffer exists yet (it does after the first `grad`/`grads` call).
  bool gradients_allocated() const { return grads_allocated_; }

  TensorView<T, D> value(ParamId id) { return view_of(values_, param(id)); }
  TensorView<const T, D> value(ParamId id) const { return view_of(values_, param(id)); }
  TensorView<T, D> grad(ParamId id) {
    const ParamEntry& e = param(id);
    return view_of(gradients(), e);
  }
  TensorView<const T, D> grad(ParamId id) const {
    const ParamEntry& e = param(id);
    return view_of(gradients(), e);
  }
  TensorView<T, D> buffer(ParamId id) { return view_of(buffer_values_, buffer_entry(id)); }
  TensorView<const T, D> buffer(ParamId id) const {
    return view_of(buffer_values_, buffer_entry(id));
  }

  const std::vector<ParamEntry>& parameters() const { return params_; }
  const std::vector<ParamEntry>& buffers() const { return buffers_; }

  /// Looks up a parameter by name.
  std::optional<ParamId> find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    if (it == index_.end() || it->second.is_buffer) return std::nullopt;
    return ParamId{it->second.index};
  }
  /// Looks up a buffer by name.
  std::optional<ParamId> find_buffer(std::string_view name) const {
    auto it = index_.find(std::string(name));
    if (it == index_.end() || !it->second.is_buffer) return std::nullopt;
    return ParamId{it->second.index};
  }

  /// The whole flat buffers (padding between entries included, always zero).
  TensorView<T, D> values() { return values_.view(); }
  TensorView<T, D> grads() { return gradients().view(); }
  TensorView<T, D> buffer_values() { return buffer_values_.view(); }
  TensorView<const T, D> buffer_values() const { return buffer_values_.view(); }
  TensorView<const T, D> values() const { return values_.view(); }
  TensorView<const T, D> grads() const { return gradients().cview(); }

  /// Number of trainable scalars (padding excluded).
  std::int64_t parameter_count() const {
    std::int64_t n = 0;
    for (const auto& e : params_) n += e.shape.numel();
    return n;
  }
  /// Number of buffer scalars (padding excluded).
  std::int64_t buffer_count() const {
    std::int64_t n = 0;
    for (const auto& e : buffers_) n += e.shape.numel();
    return n;
  }

  /// Zeroes the gradients (nothing to do before they exist: they start at zero).
  void zero_grad() { grads_.zero(); }

 private:
  struct Slot {
    bool is_buffer;
    std::size_t index;
  };

  static std::size_t round_up(std::size_t n) { return (n + kAlignElems - 1) / kAlignElems * kAlignElems; }

  void check_declarable(const std::string& name) const {
    check<Error>(!allocated_, "nddr::ParameterStore::declare: '", name,
                 "' declared after allocate()");
    check<Error>(!name.empty(), "nddr::ParameterStore::declare: empty parameter name");
    check<Error>(!index_.contains(name), "nddr::ParameterStore::declare: duplicate name '",
                 name, "'");
  }
  // The gradient buffer, allocated zeroed on first use after allocate() (empty before).
  // Logically the gradients exist as zeros from allocate() on, so const accessors create it too.
  Tensor<T, D>& gradients() const {
    if (allocated_ && !grads_allocated_) {
      grads_ = Tensor<T, D>(Shape{static_cast<std::int64_t>(param_size_)});
      grads_allocated_ = true;
    }
    return grads_;
  }
  const ParamEntry& param(ParamId id) const {
    check<Error>(allocated_ && id.index < params_.size(),
                 "nddr::ParameterStore: invalid parameter id or store not allocated");
    return params_[id.index];
  }
  const ParamEntry& buffer_entry(ParamId id) const {
    check<Error>(allocated_ && id.index < buffers_.size(),
                 "nddr::ParameterStore: invalid buffer id or store not allocated");
    return buffers_[id.index];
  }
  template <class Tn>
  static auto view_of(Tn& flat, const ParamEntry& e) {
    using Elem = std::remove_pointer_t<decltype(flat.data())>;
    return TensorView<Elem, D>(flat.data() + e.offset, e.shape);
  }

  std::vector<ParamGroup> groups_;
  std::vector<std::string> scopes_;
  std::vector<ParamEntry> params_;
  std::vector<ParamEntry> buffers_;
  std::unordered_map<std::string, Slot> index_;
  std::size_t param_size_ = 0;
  std::size_t buffer_size_ = 0;
  bool allocated_ = false;
  mutable bool grads_allocated_ = false;
  Tensor<T, D> values_;
  mutable Tensor<T, D> grads_;
  Tensor<T, D> buffer_values_;
};

}  // namespace nddr
