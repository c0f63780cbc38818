#pragma once
/// \file
/// Training checkpoints in safetensors: every parameter (`param/<name>`), every buffer
/// (`buffer/<name>`, BatchNorm running statistics), the optimiser state (`optim/state`), and in
/// the metadata the step and every random stream (`rng/<i>` = "seed counter"). Written
/// atomically (temp file, fsync, rename); `CheckpointDir` keeps the last N.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/storage.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/io/safetensors.hpp"

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

/// Writes `store` (parameters and buffers), `optimizer_state` and `state` to `path` atomically.
/// A device store is copied to the host first, so a checkpoint is the same file whichever
/// device wrote it and loads on any other.
template <class T, class D>
void save_checkpoint(const std::string& path, const ParameterStore<T, D>& store,
                     std::type_identity_t<TensorView<const T, D>> optimizer_state,
                     const CheckpointState& state) {
  const detail::HostFlat<T, D> values(store.values()), buffers(store.buffer_values()),
      optim(optimizer_state);
  std::vector<io::SafetensorsEntry> entries;
  for (const ParamEntry& e : store.parameters())
    entries.push_back(io::entry<T>("param/" + e.name,
                                   TensorView<const T, Cpu>(values.data() + e.offset, e.shape)));
  for (const ParamEntry& e : store.buffers())
    entries.push_back(io::entry<T>("buffer/" + e.name,
                                   TensorView<const T, Cpu>(buffers.data() + e.offset, e.shape)));
  if (!optimizer_state.empty()) entries.push_back(io::entry<T>("optim/state", optim.view()));
  std::map<std::string, std::string> meta = state.extra;
  meta["format"] = "nddr-checkpoint-1";
  meta["step"] = std::to_string(state.step);
  meta["rng_count"] = std::to_string(state.rngs.size());
  for (std::size_t i = 0; i < state.rngs.size(); ++i)
    meta["rng/" + std::to_string(i)] =
        std::to_string(state.rngs[i].seed) + " " + std::to_string(state.rngs[i].counter);
  io::write_safetensors(path, entries, meta);
}

namespace detail {

inline std::uint64_t parse_u64(const std::string& path, const std::string& field,
                               const std::string& text) {
  std::istringstream is(text);
  std::uint64_t v = 0;
  is >> v;
  check<IoError>(!is.fail(), path, ": checkpoint metadata '", field, "' = '", text,
                 "' is not an unsigned integer");
  return v;
}

/// Copies tensor `key` into `dst` (host memory); its presence and size were validated before
/// any copy.
template <class T>
void copy_into(const io::SafetensorsFile& f, const std::string& key, T* dst) {
  const auto values = f.values<T>(key);
  std::copy(values.begin(), values.end(), dst);
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

/// Restores `store`, `optimizer_state` and returns the step and random streams saved by
/// `save_checkpoint`. Every tensor must be present with the expected size (IoError naming the
/// file and the tensor otherwise); nothing is modified unless the whole file checks out. Loads
/// into a store on any device, whichever device wrote the file.
template <class T, class D>
CheckpointState load_checkpoint(const std::string& path, ParameterStore<T, D>& store,
                                std::type_identity_t<TensorView<T, D>> optimizer_state) {
  const auto f = io::SafetensorsFile::read(path);
  const auto& meta = f.metadata();
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = meta.find(key);
    check<IoError>(it != meta.end(), path, ": checkpoint metadata lacks '", key, "'");
    return it->second;
  };
  check<IoError>(get("format") == "nddr-checkpoint-1", path, ": metadata 'format' is '",
                 get("format"), "', expected 'nddr-checkpoint-1'");
  // Validate everything first, then copy.
  auto expect = [&](const std::string& key, std::int64_t numel) {
    check<IoError>(f.contains(key), path, ": checkpoint lacks tensor '", key, "'");
    std::int64_t n = 1;
    for (auto d : f.shape(key)) n *= d;
    check<IoError>(n == numel, path, ": tensor '", key, "' has ", n, " elements, expected ",
                   numel);
  };
  for (const auto& e : store.parameters()) expect("param/" + e.name, e.shape.numel());
  for (const auto& e : store.buffers()) expect("buffer/" + e.name, e.shape.numel());
  if (!optimizer_state.empty()) expect("optim/state", optimizer_state.numel());
  CheckpointState st;
  st.step = static_cast<std::int64_t>(detail::parse_u64(path, "step", get("step")));
  const auto count = detail::parse_u64(path, "rng_count", get("rng_count"));
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::string key = "rng/" + std::to_string(i);
    std::istringstream is(get(key));
    Rng::State s;
    is >> s.seed >> s.counter;
    check<IoError>(!is.fail(), path, ": checkpoint metadata '", key, "' = '", get(key),
                   "' is not 'seed counter'");
    st.rngs.push_back(s);
  }
  for (const auto& [k, v] : meta)
    if (k != "format" && k != "step" && k != "rng_count" && k.rfind("rng/", 0) != 0)
      st.extra[k] = v;
  // Straight into the store on the CPU; through one host copy per flat buffer on a device.
  detail::HostStaging<T, D> values(store.values()), buffers(store.buffer_values()),
      optim(optimizer_state);
  for (const ParamEntry& e : store.parameters())
    detail::copy_into<T>(f, "param/" + e.name, values.data() + e.offset);
  for (const ParamEntry& e : store.buffers())
    detail::copy_into<T>(f, "buffer/" + e.name, buffers.data() + e.offset);
  if (!optimizer_state.empty()) detail::copy_into<T>(f, "optim/state", optim.data());
  values.commit();
  buffers.commit();
  optim.commit();
  return st;
}

/// A directory of checkpoints `ckpt-<step>.safetensors`, keeping the newest `keep` files.
class CheckpointDir {
 public:
  CheckpointDir(std::filesystem::path dir, std::size_t keep) : dir_(std::move(dir)), keep_(keep) {
    check<OptionError>(keep_ >= 1, "nddr::CheckpointDir: keep must be >= 1");
  }

  std::filesystem::path path_for(std::int64_t step) const {
    char name[64];
    std::snprintf(name, sizeof name, "ckpt-%010lld.safetensors", static_cast<long long>(step));
    return dir_ / name;
  }

  /// Checkpoints present, oldest first.
  std::vector<std::filesystem::path> list() const {
    std::vector<std::filesystem::path> out;
    std::error_code ec;
    if (!std::filesystem::is_directory(dir_, ec)) return out;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("ckpt-", 0) == 0 && n.size() > 17 &&
          n.compare(n.size() - 12, 12, ".safetensors") == 0)
        out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  std::optional<std::filesystem::path> latest() const {
    auto l = list();
    if (l.empty()) return std::nullopt;
    return l.back();
  }
  /// Deletes all but the newest `keep` checkpoints.
  void prune() const {
    auto l = list();
    for (std::size_t i = 0; i + keep_ < l.size(); ++i) std::filesystem::remove(l[i]);
  }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::size_t keep_;
};

}  // namespace nddr
