#pragma once
/// \file
/// Training checkpoints in safetensors: every parameter (`param/<name>`), every buffer
/// (`buffer/<name>`, BatchNorm running statistics), the optimiser's state tensors by name
/// (optim/state.hpp: SGD's velocity `optim/state`; Adam's `optim/exp_avg`, `optim/exp_avg_sq`,
/// `optim/max_exp_avg_sq`), and in the metadata the step, every random stream (`rng/<i>` =
/// "seed counter"), the optimiser's name (`optimizer`) and counters (`optim/step` = t).
/// Files written before the metadata 'optimizer' existed (SGD) load as they are.
///
/// What a user can rely on (docs/weights.md, "Checkpoints"):
///   - writes are atomic (io::write_file_atomic: temporary file, fsync, rename, directory
///     fsync): a checkpoint file is complete or absent, whenever the process dies;
///   - loads validate first and write after: the whole file (every tensor's presence, dtype,
///     shape and finiteness, no unknown tensors, the step, the random streams and their count)
///     is checked before one byte of the store changes, so a failed load leaves the network,
///     the optimiser and the trainer exactly as they were;
///   - `CheckpointDir` reads, lists and prunes only files named exactly `ckpt-<step>.safetensors`
///     (as `path_for` writes them), orders them by step, never deletes the newest `keep` nor the
///     file just written, and removes the temporaries of writers that were killed mid-write.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <filesystem>
#include <map>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <type_traits>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/storage.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/safetensors.hpp"
#include "nddr/optim/state.hpp"

namespace nddr {

/// Everything a checkpoint holds besides the tensors of the parameter store.
struct CheckpointState {
  std::int64_t step = 0;
  std::vector<Rng::State> rngs;
  std::map<std::string, std::string> extra;  ///< free-form metadata (experiment name, ...)
};

namespace detail {

/// A host copy of a device's flat buffer (the buffer itself on the CPU).
template <class T, class D>
class HostFlat {
 public:
  explicit HostFlat(TensorView<const T, D> v) : view_(nullptr, Shape{0}) {
    if constexpr (std::is_same_v<D, Cpu>) {
      view_ = v;
    } else {
      copy_ = Tensor<T, Cpu>(v.shape());
      if (v.numel() > 0)
        Storage<D>::download(copy_.data(), v.data(), static_cast<std::size_t>(v.numel()) * sizeof(T));
      view_ = copy_.cview();
    }
  }
  const T* data() const { return view_.data(); }
  TensorView<const T, Cpu> view() const { return view_; }

 private:
  Tensor<T, Cpu> copy_;
  TensorView<const T, Cpu> view_;
};

}  // namespace detail

/// Writes `store` (parameters and buffers), the optimiser's state `optim` and `state` to `path`
/// atomically. A device store is copied to the host first, so a checkpoint is the same file
/// whichever device wrote it and loads on any other.
template <class T, class D>
void save_checkpoint(const std::string& path, const ParameterStore<T, D>& store,
                     const OptimizerState<T, D>& optim, const CheckpointState& state) {
  const detail::HostFlat<T, D> values(store.values()), buffers(store.buffer_values());
  std::vector<detail::HostFlat<T, D>> optim_tensors;
  for (const auto& [name, view] : optim.tensors)
    optim_tensors.emplace_back(TensorView<const T, D>(view.data(), view.shape()));
  std::vector<io::SafetensorsEntry> entries;
  for (const ParamEntry& e : store.parameters())
    entries.push_back(io::entry<T>("param/" + e.name,
                                   TensorView<const T, Cpu>(values.data() + e.offset, e.shape)));
  for (const ParamEntry& e : store.buffers())
    entries.push_back(io::entry<T>("buffer/" + e.name,
                                   TensorView<const T, Cpu>(buffers.data() + e.offset, e.shape)));
  for (std::size_t i = 0; i < optim.tensors.size(); ++i)
    entries.push_back(io::entry<T>(optim.tensors[i].first, optim_tensors[i].view()));
  std::map<std::string, std::string> meta = state.extra;
  if (!optim.optimizer.empty()) meta["optimizer"] = optim.optimizer;
  for (const auto& [name, view] : optim.counters) {
    const detail::HostFlat<std::int64_t, D> counter(
        TensorView<const std::int64_t, D>(view.data(), view.shape()));
    meta[name] = std::to_string(counter.data()[0]);
  }
  meta["format"] = "nddr-checkpoint-1";
  meta["step"] = std::to_string(state.step);
  meta["rng_count"] = std::to_string(state.rngs.size());
  for (std::size_t i = 0; i < state.rngs.size(); ++i)
    meta["rng/" + std::to_string(i)] =
        std::to_string(state.rngs[i].seed) + " " + std::to_string(state.rngs[i].counter);
  io::write_safetensors(path, entries, meta);
}

namespace detail {

/// The state of an optimiser that is one anonymous flat buffer (the SGD velocity; empty: none)
/// under its checkpoint name `optim/state`.
template <class T, class D>
OptimizerState<T, D> single_buffer_state(TensorView<T, D> buffer) {
  OptimizerState<T, D> s;
  if (!buffer.empty()) s.tensors.emplace_back("optim/state", buffer);
  return s;
}

}  // namespace detail

/// `save_checkpoint` with the optimiser state as one flat buffer `optim/state` (empty: none).
template <class T, class D>
void save_checkpoint(const std::string& path, const ParameterStore<T, D>& store,
                     std::type_identity_t<TensorView<const T, D>> optimizer_state,
                     const CheckpointState& state) {
  save_checkpoint<T, D>(path, store,
                        detail::single_buffer_state(TensorView<T, D>(
                            const_cast<T*>(optimizer_state.data()), optimizer_state.shape())),
                        state);
}

namespace detail {

/// A non-negative decimal integer without sign, spaces, exponent or junk, at most `max`.
inline std::optional<std::uint64_t> parse_decimal(std::string_view text,
                                                  std::uint64_t max = ~std::uint64_t{0}) {
  if (text.empty() || text.size() > 20 || text.find_first_not_of("0123456789") != std::string_view::npos)
    return std::nullopt;
  std::uint64_t v = 0;
  for (char c : text) {
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (v > (max - digit) / 10) return std::nullopt;
    v = v * 10 + digit;
  }
  return v;
}

inline std::string clip(std::string_view text, std::size_t n = 60) {
  if (text.size() <= n) return std::string(text);
  return std::string(text.substr(0, n)) + "...";
}

inline bool same_shape(const Shape& want, const std::vector<std::int64_t>& have) {
  if (static_cast<std::size_t>(want.rank()) != have.size()) return false;
  for (std::size_t i = 0; i < have.size(); ++i)
    if (want[static_cast<int>(i)] != have[i]) return false;
  return true;
}

/// A host-writable image of a flat buffer: the buffer itself on the CPU; on a device a host
/// copy (zero: the padding between entries stays zero) that `commit` uploads.
template <class T, class D>
class HostStaging {
 public:
  explicit HostStaging(TensorView<T, D> dst) : dst_(dst) {
    if constexpr (!std::is_same_v<D, Cpu>) copy_.assign(static_cast<std::size_t>(dst.numel()), T(0));
  }
  T* data() {
    if constexpr (std::is_same_v<D, Cpu>) return dst_.data();
    else return copy_.data();
  }
  void commit() {
    if constexpr (!std::is_same_v<D, Cpu>)
      if (!copy_.empty()) Storage<D>::upload(dst_.data(), copy_.data(), copy_.size() * sizeof(T));
  }

 private:
  TensorView<T, D> dst_;
  std::vector<T> copy_;
};

}  // namespace detail

/// A checkpoint file read and validated against a store by `read_checkpoint`, ready for
/// `restore_checkpoint`.
struct CheckpointFile {
  std::string path;
  io::SafetensorsFile file;
  CheckpointState state;
  std::map<std::string, std::int64_t> counters;  ///< the optimiser's counters (`optim/step`)
};

/// Reads `path` and validates all of it against `store` (parameters and buffers: every one
/// present, of the store's dtype and exact shape, finite; no tensor the store lacks), the
/// optimiser's `layout` (its tensors: same; its counters: decimal integers in [0, 2^63); a file
/// naming another optimiser is refused) and `rng_streams` (the number of random streams the
/// caller will restore), and parses the metadata strictly (`step`: a decimal integer in
/// [0, 2^63); `rng/<i>`: two decimal unsigned 64-bit integers "seed counter"). Throws IoError
/// naming the file and the field; reads but never writes the store.
template <class T, class D>
CheckpointFile read_checkpoint(const std::string& path, const ParameterStore<T, D>& store,
                               const OptimizerLayout& layout, std::size_t rng_streams) {
  CheckpointFile c{path, io::SafetensorsFile::read(path), {}, {}};
  const io::SafetensorsFile& f = c.file;
  const auto& meta = f.metadata();
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = meta.find(key);
    check<IoError>(it != meta.end(), path, ": checkpoint metadata lacks '", key, "'");
    return it->second;
  };
  check<IoError>(get("format") == "nddr-checkpoint-1", path, ": metadata 'format' is '",
                 detail::clip(get("format")), "', expected 'nddr-checkpoint-1'");
  if (const auto it = meta.find("optimizer"); it != meta.end() && !layout.optimizer.empty())
    check<IoError>(it->second == layout.optimizer, path, ": checkpoint holds the state of optimiser '",
                   detail::clip(it->second), "', this run uses '", layout.optimizer,
                   "' (resume with the same --optimizer, or start a new run from its weights)");

  // Tensors: the expected set, exactly.
  // In the store's order, so the first mismatch reported is the first layer that differs.
  std::vector<std::pair<std::string, Shape>> expected;
  for (const auto& e : store.parameters()) expected.emplace_back("param/" + e.name, e.shape);
  for (const auto& e : store.buffers()) expected.emplace_back("buffer/" + e.name, e.shape);
  for (const auto& [name, shape] : layout.tensors) expected.emplace_back(name, shape);
  std::set<std::string_view> known;
  for (const auto& [key, shape] : expected) known.insert(key);
  for (const std::string& name : f.names())
    check<IoError>(known.count(name) != 0, path, ": tensor '", detail::clip(name),
                   "' is not part of this network or optimiser (a checkpoint of another network?)");
  constexpr io::Dtype kDtype = io::dtype_of<T>();
  for (const auto& [key, shape] : expected) {
    check<IoError>(f.contains(key), path, ": checkpoint lacks tensor '", key, "'");
    check<IoError>(f.dtype(key) == kDtype, path, ": tensor '", key, "' is ",
                   io::dtype_name(f.dtype(key)), ", expected ", io::dtype_name(kDtype),
                   " (the network's element type)");
    check<IoError>(detail::same_shape(shape, f.shape(key)), path, ": tensor '", key,
                   "' has shape ", io::detail::shape_str(f.shape(key)), ", expected ", shape);
    const std::vector<T> values = f.values<T>(key);
    const auto bad = std::find_if(values.begin(), values.end(), [](T v) { return !std::isfinite(v); });
    check<IoError>(bad == values.end(), path, ": tensor '", key, "' holds a non-finite value (",
                   bad == values.end() ? T(0) : *bad, " at element ", bad - values.begin(),
                   "); a checkpoint of a diverged run cannot be resumed");
  }

  // Metadata.
  const auto step = detail::parse_decimal(get("step"), std::numeric_limits<std::int64_t>::max());
  check<IoError>(step.has_value(), path, ": checkpoint metadata 'step' = '",
                 detail::clip(get("step")), "', expected a decimal integer in [0, 2^63)");
  c.state.step = static_cast<std::int64_t>(*step);
  const auto count = detail::parse_decimal(get("rng_count"), 1u << 20);
  check<IoError>(count.has_value(), path, ": checkpoint metadata 'rng_count' = '",
                 detail::clip(get("rng_count")), "', expected a decimal integer");
  check<IoError>(*count == rng_streams, path, ": checkpoint has ", *count,
                 " random streams, the network has ", rng_streams);
  for (std::uint64_t i = 0; i < *count; ++i) {
    const std::string key = "rng/" + std::to_string(i);
    const std::string& text = get(key);
    const std::size_t space = text.find(' ');
    const auto seed = detail::parse_decimal(std::string_view(text).substr(0, space));
    const auto counter = space == std::string::npos
                             ? std::nullopt
                             : detail::parse_decimal(std::string_view(text).substr(space + 1));
    check<IoError>(seed && counter, path, ": checkpoint metadata '", key, "' = '",
                   detail::clip(text), "', expected 'seed counter' (two decimal unsigned integers)");
    c.state.rngs.push_back(Rng::State{*seed, *counter});
  }
  for (const auto& [k, v] : meta) {
    if (k.rfind("rng/", 0) == 0) {
      const auto i = detail::parse_decimal(std::string_view(k).substr(4));
      check<IoError>(i && *i < *count && k == "rng/" + std::to_string(*i), path,
                     ": checkpoint metadata has '", detail::clip(k), "' but rng_count is ", *count);
      continue;
    }
    if (k != "format" && k != "step" && k != "rng_count" && k != "optimizer" &&
        !k.starts_with("optim/"))
      c.state.extra[k] = v;
  }
  for (const std::string& name : layout.counters) {
    const auto v = detail::parse_decimal(get(name), std::numeric_limits<std::int64_t>::max());
    check<IoError>(v.has_value(), path, ": checkpoint metadata '", name, "' = '",
                   detail::clip(get(name)), "', expected a decimal integer in [0, 2^63)");
    c.counters[name] = static_cast<std::int64_t>(*v);
  }
  return c;
}

/// `read_checkpoint` for an optimiser state that is one flat buffer `optim/state` (empty: none).
template <class T, class D>
CheckpointFile read_checkpoint(const std::string& path, const ParameterStore<T, D>& store,
                               std::type_identity_t<TensorView<const T, D>> optimizer_state,
                               std::size_t rng_streams) {
  OptimizerLayout layout;
  if (!optimizer_state.empty()) layout.tensors.emplace_back("optim/state", optimizer_state.shape());
  return read_checkpoint<T, D>(path, store, layout, rng_streams);
}

/// Writes a checkpoint validated by `read_checkpoint` (against this same `store` and the
/// layout of `optim`) into them.
template <class T, class D>
void restore_checkpoint(const CheckpointFile& c, ParameterStore<T, D>& store,
                        const OptimizerState<T, D>& optim) {
  // Straight into the store on the CPU; through one host copy per flat buffer on a device.
  detail::HostStaging<T, D> values(store.values()), buffers(store.buffer_values());
  auto copy = [&](const std::string& key, T* dst) {
    const std::vector<T> v = c.file.values<T>(key);
    std::copy(v.begin(), v.end(), dst);
  };
  for (const ParamEntry& e : store.parameters()) copy("param/" + e.name, values.data() + e.offset);
  for (const ParamEntry& e : store.buffers()) copy("buffer/" + e.name, buffers.data() + e.offset);
  values.commit();
  buffers.commit();
  for (const auto& [name, view] : optim.tensors) {
    detail::HostStaging<T, D> staged(view);
    copy(name, staged.data());
    staged.commit();
  }
  for (const auto& [name, view] : optim.counters) {
    detail::HostStaging<std::int64_t, D> staged(view);
    staged.data()[0] = c.counters.at(name);
    staged.commit();
  }
}

/// `restore_checkpoint` for an optimiser state that is one flat buffer `optim/state`.
template <class T, class D>
void restore_checkpoint(const CheckpointFile& c, ParameterStore<T, D>& store,
                        std::type_identity_t<TensorView<T, D>> optimizer_state) {
  restore_checkpoint<T, D>(c, store, detail::single_buffer_state(optimizer_state));
}

/// `read_checkpoint` then `restore_checkpoint`: restores `store` and `optimizer_state` and
/// returns the step and random streams saved by `save_checkpoint`. Nothing is modified unless
/// the whole file checks out. Loads into a store on any device, whichever device wrote the file.
template <class T, class D>
CheckpointState load_checkpoint(const std::string& path, ParameterStore<T, D>& store,
                                std::type_identity_t<TensorView<T, D>> optimizer_state,
                                std::size_t rng_streams) {
  const ParameterStore<T, D>& cstore = store;
  const CheckpointFile c = read_checkpoint<T, D>(
      path, cstore, TensorView<const T, D>(optimizer_state.data(), optimizer_state.shape()),
      rng_streams);
  restore_checkpoint<T, D>(c, store, optimizer_state);
  return c.state;
}

/// A directory of checkpoints `ckpt-<step>.safetensors` (the step zero-padded to 10 digits),
/// keeping the newest `keep` files. Only names of exactly that form are listed, read or
/// deleted: anything else in the directory (a backup, a renamed copy, an editor's file) is left
/// alone.
class CheckpointDir {
 public:
  CheckpointDir(std::filesystem::path dir, std::size_t keep) : dir_(std::move(dir)), keep_(keep) {
    check<OptionError>(keep_ >= 1, "nddr::CheckpointDir: keep must be >= 1");
  }

  /// The file name of step `step`'s checkpoint.
  static std::string name_for(std::int64_t step) {
    check<ValueError>(step >= 0, "nddr::CheckpointDir: step ", step, " is negative");
    char name[64];
    std::snprintf(name, sizeof name, "ckpt-%010lld.safetensors", static_cast<long long>(step));
    return name;
  }
  std::filesystem::path path_for(std::int64_t step) const { return dir_ / name_for(step); }

  /// The step of a file name written by `path_for`, nullopt for any other name.
  static std::optional<std::int64_t> step_of(const std::string& name) {
    constexpr std::string_view kPrefix = "ckpt-", kSuffix = ".safetensors";
    if (name.size() <= kPrefix.size() + kSuffix.size() || !name.starts_with(kPrefix) ||
        !name.ends_with(kSuffix))
      return std::nullopt;
    const auto step = detail::parse_decimal(
        std::string_view(name).substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size()),
        std::numeric_limits<std::int64_t>::max());
    if (!step || name_for(static_cast<std::int64_t>(*step)) != name) return std::nullopt;
    return static_cast<std::int64_t>(*step);
  }

  /// Checkpoints present (regular files named by `path_for`), oldest (smallest step) first.
  std::vector<std::filesystem::path> list() const {
    std::vector<std::pair<std::int64_t, std::filesystem::path>> found;
    std::error_code ec;
    if (!std::filesystem::is_directory(dir_, ec)) return {};
    std::filesystem::directory_iterator it(dir_, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      const auto step = step_of(it->path().filename().string());
      std::error_code type_ec;
      if (step && it->is_regular_file(type_ec)) found.emplace_back(*step, it->path());
    }
    check<IoError>(!ec, "nddr::CheckpointDir: cannot list '", dir_.string(), "': ", ec.message());
    std::sort(found.begin(), found.end());
    std::vector<std::filesystem::path> out;
    for (auto& [step, path] : found) out.push_back(std::move(path));
    return out;
  }
  std::optional<std::filesystem::path> latest() const {
    auto l = list();
    if (l.empty()) return std::nullopt;
    return l.back();
  }
  /// Deletes all but the newest `keep` checkpoints, never `protect` (the one just written);
  /// returns the paths deleted.
  std::vector<std::filesystem::path> prune(const std::filesystem::path& protect = {}) const {
    auto l = list();
    std::vector<std::filesystem::path> removed;
    for (std::size_t i = 0; i + keep_ < l.size(); ++i) {
      if (!protect.empty() && l[i] == protect) continue;
      std::error_code ec;
      if (std::filesystem::remove(l[i], ec)) removed.push_back(l[i]);
    }
    return removed;
  }
  /// Deletes the temporary files of checkpoint writers that died mid-write
  /// (`ckpt-<step>.safetensors.tmp.<host>.<pid>.<k>` whose process is gone); returns them.
  std::vector<std::filesystem::path> remove_stale_temporaries() const {
    return io::remove_stale_temporaries(
        dir_, [](const std::string& target) { return step_of(target).has_value(); });
  }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::size_t keep_;
};

}  // namespace nddr
