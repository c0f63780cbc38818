#pragma once
/// \file
/// Saving and loading a `ParameterStore` as a safetensors file, and importing pretrained VGG-16
/// kernels (torchvision `vgg16`, DeepLab-LargeFOV) and ImageNet ResNets (torchvision `resnet101`)
/// into one or more network columns by fixed name mappings (tables in docs/weights.md).
///
/// Every load validates the whole plan first (names, dtypes, every shape, every value finite,
/// enough of the file fitting the store) and only then writes into the store, so a failed load
/// leaves the store untouched. Errors throw `nddr::IoError`
/// naming the function, the file, the tensor and what was expected.
///
/// Example:
///   nddr::io::save_parameters("ckpt.safetensors", store, {{"step", "20000"}});
///   auto report = nddr::io::load_parameters("ckpt.safetensors", store);
///   nddr::io::import_deeplab_largefov("voc12.safetensors", store, {"task0", "task1"});

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/io/safetensors.hpp"

namespace nddr::io {

/// What a load or import did. Store names in `loaded` and `missing`, file keys in `unexpected`
/// and `skipped`.
struct LoadReport {
  std::vector<std::string> loaded;      ///< store entries written, in load order
  std::vector<std::string> missing;     ///< store entries the file should have provided
  std::vector<std::string> unexpected;  ///< file keys with no place in the store
  std::vector<std::string> skipped;     ///< file keys deliberately not loaded

  /// Nothing missing and nothing unexpected.
  bool complete() const { return missing.empty() && unexpected.empty(); }
};

/// Maps a file key to a store name; nullopt skips the key.
using RenameFn = std::function<std::optional<std::string>(std::string_view file_key)>;

/// Options of `load_parameters`.
struct LoadOptions {
  /// Throw when anything is missing or unexpected (else only report it).
  bool strict = true;
  /// File key -> store name; empty = identity.
  RenameFn rename;

  LoadOptions& with_strict(bool s) {
    strict = s;
    return *this;
  }
  LoadOptions& with_rename(RenameFn f) {
    rename = std::move(f);
    return *this;
  }
};

/// A rename that maps keys starting with `from` to `to` + the rest of the key and skips every
/// other key, e.g. replace_prefix("task0.", "task1.") loads one column into another.
inline RenameFn replace_prefix(std::string from, std::string to) {
  return [from = std::move(from),
          to = std::move(to)](std::string_view key) -> std::optional<std::string> {
    if (!key.starts_with(from)) return std::nullopt;
    return to + std::string(key.substr(from.size()));
  };
}

/// Options of the pretrained-weight imports.
struct ImportOptions {
  /// Throw when a mapped key is missing from the file or the file has keys the mapping does
  /// not know (else only report them).
  bool strict = true;
  /// Load the file's conv biases into `<column>.stageS.convS_I.bias` (and fc6/fc7 biases into
  /// the heads); every such bias must then be declared in the store. By default they are
  /// dropped, as in the authors' code, whose convolutions have BatchNorm and no bias.
  bool keep_biases = false;
  /// Prefixes of the heads (`<prefix>.head.fc6...`); empty = the column prefixes. A split
  /// multi-task network imports its trunk with column prefix "shared" and its heads with
  /// head prefixes {"task0", "task1"}.
  std::vector<std::string> head_prefixes;

  ImportOptions& with_strict(bool s) {
    strict = s;
    return *this;
  }
  ImportOptions& with_keep_biases(bool k) {
    keep_biases = k;
    return *this;
  }
  ImportOptions& with_head_prefixes(std::vector<std::string> p) {
    head_prefixes = std::move(p);
    return *this;
  }
};

namespace detail {

template <class... Args>
[[noreturn]] void weights_fail(const char* who, const std::string& path, Args&&... args) {
  throw IoError(
      nddr::detail::concat("nddr::io::", who, ": '", path, "': ", std::forward<Args>(args)...));
}

/// "'a', 'b', ... and N more": at most `shown` names, each cut short (io::excerpt), so a file
/// with a million unknown keys still makes a readable message.
inline std::string quoted_list(const std::vector<std::string>& names, std::size_t shown = 16) {
  std::string s;
  for (std::size_t i = 0; i < names.size() && i < shown; ++i)
    s += (i ? ", '" : "'") + excerpt(names[i]) + "'";
  if (names.size() > shown) s += nddr::detail::concat(", ... and ", names.size() - shown, " more");
  return s;
}

/// A store entry: parameter or buffer.
struct StoreSlot {
  bool is_buffer = false;
  ParamId id;
};

template <class T>
std::optional<StoreSlot> find_slot(const ParameterStore<T, Cpu>& store, std::string_view name) {
  if (auto id = store.find(name)) return StoreSlot{false, *id};
  if (auto id = store.find_buffer(name)) return StoreSlot{true, *id};
  return std::nullopt;
}

template <class T>
const Shape& slot_shape(const ParameterStore<T, Cpu>& store, const StoreSlot& s) {
  return s.is_buffer ? store.buffers()[s.id.index].shape : store.parameters()[s.id.index].shape;
}

inline bool same_extents(const std::vector<std::int64_t>& file_shape, const Shape& s) {
  if (file_shape.size() != static_cast<std::size_t>(s.rank())) return false;
  for (int i = 0; i < s.rank(); ++i)
    if (file_shape[static_cast<std::size_t>(i)] != s[i]) return false;
  return true;
}

/// One tensor to copy from the file into the store.
struct WeightCopy {
  std::string file_key;
  std::string store_name;
  StoreSlot slot;
};

template <class T>
void check_allocated(const char* who, const std::string& path,
                     const ParameterStore<T, Cpu>& store) {
  if (!store.allocated())
    weights_fail(who, path, "the parameter store is not allocated (call allocate() first)");
}

/// Throws listing every missing and unexpected key when `strict` and the report is incomplete.
inline void enforce_strict(const char* who, const std::string& path, const LoadReport& r,
                           bool strict) {
  if (!strict || r.complete()) return;
  std::string msg = nddr::detail::concat(r.missing.size(), " missing and ", r.unexpected.size(),
                                         " unexpected keys (strict mode)");
  if (!r.missing.empty())
    msg += "; missing (store entries the file does not provide): " + quoted_list(r.missing);
  if (!r.unexpected.empty())
    msg += "; unexpected (file keys with no place in the store): " + quoted_list(r.unexpected);
  weights_fail(who, path, msg);
}

/// The names a store declares, parameters then buffers.
template <class T>
std::vector<std::string> store_names(const ParameterStore<T, Cpu>& store) {
  std::vector<std::string> names;
  for (const auto* entries : {&store.parameters(), &store.buffers()})
    for (const ParamEntry& e : *entries) names.push_back(e.name);
  return names;
}

/// The rule against loading the wrong file: a load into a store that declares anything fails
/// when it loads nothing, or when it loads fewer tensors than the file has keys with no place
/// in the store (`unexpected`) *and* fewer than the store has entries left out (`missing`): the
/// file and the store then share only a small part, which is what a file for another network
/// looks like. A subset of a larger file (few missing) and a file for part of a larger store
/// (few unexpected, e.g. one column renamed into another) pass. The IoError lists what the
/// store expects and what the file has.
template <class T>
void enforce_plausible(const char* who, const SafetensorsFile& f,
                       const ParameterStore<T, Cpu>& store, const LoadReport& r) {
  const std::vector<std::string> expected = store_names(store);
  if (expected.empty()) return;
  const std::size_t n = r.loaded.size();
  if (n > 0 && (n >= r.unexpected.size() || n >= r.missing.size())) return;
  weights_fail(who, f.path(),
               n == 0 ? "no tensor of the file fits the parameter store"
                      : "the file and the parameter store share only a few tensors",
               " (", n, " loaded, ", r.unexpected.size(), " unexpected, ", r.missing.size(),
               " missing, ", r.skipped.size(), " skipped): it is not a file for this network; ",
               "the store expects ", expected.size(), " tensors: ", quoted_list(expected, 8),
               "; the file has ", f.names().size(), ": ", quoted_list(f.names(), 8));
}

/// Checks every dtype and shape; one IoError lists all problems.
template <class T>
void check_copies(const char* who, const SafetensorsFile& f, const ParameterStore<T, Cpu>& store,
                  const std::vector<WeightCopy>& copies) {
  std::vector<std::string> problems;
  for (const WeightCopy& c : copies) {
    const Dtype d = f.dtype(c.file_key);
    if (!is_floating(d)) {
      problems.push_back(nddr::detail::concat("tensor '", c.file_key, "' has dtype ", dtype_name(d),
                                              ", expected a floating dtype (F64, ",
                                              "F32, F16 or BF16) for '", c.store_name, "'"));
      continue;
    }
    const Shape& expected = slot_shape(store, c.slot);
    if (!same_extents(f.shape(c.file_key), expected))
      problems.push_back(nddr::detail::concat(
          "tensor '", c.file_key, "' has shape ", shape_str(f.shape(c.file_key)),
          " in the file, expected ", expected.str(), " for '", c.store_name, "'"));
  }
  if (!problems.empty()) {
    std::string msg;
    for (std::size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
    weights_fail(who, f.path(), msg);
  }
}

/// Converts every value, refusing NaN and infinite ones (also those the conversion to T makes)
/// naming the tensor and the element, then copies: nothing is written unless all are finite.
template <class T>
void write_copies(const char* who, const SafetensorsFile& f, ParameterStore<T, Cpu>& store,
                  const std::vector<WeightCopy>& copies) {
  std::vector<std::vector<T>> values;
  for (const WeightCopy& c : copies) {
    values.push_back(f.values<T>(c.file_key));
    const std::vector<T>& v = values.back();
    const auto bad = std::find_if(v.begin(), v.end(), [](T x) { return !std::isfinite(x); });
    if (bad != v.end())
      weights_fail(who, f.path(), "tensor '", excerpt(c.file_key), "' element ", bad - v.begin(),
                   " is ", *bad, std::isnan(*bad) ? "" : " in the store's type",
                   ": non-finite values are refused (a corrupt file or a diverged run)");
  }
  for (std::size_t i = 0; i < copies.size(); ++i) {
    const WeightCopy& c = copies[i];
    TensorView<T, Cpu> dst = c.slot.is_buffer ? store.buffer(c.slot.id) : store.value(c.slot.id);
    std::copy(values[i].begin(), values[i].end(), dst.data());
  }
}

/// How a mapping rule picks its targets among those the store declares.
enum class RuleUse {
  kRequired,     ///< every target must be declared (else IoError with the rule's hint)
  kIfDeclared,   ///< targets the store declares; the others are ignored
  kIfSameShape,  ///< declared targets whose shape equals the file's (fc8 with equal classes)
};

/// File key -> store names (one per column); no targets = the key is skipped.
struct MappingRule {
  std::string file_key;
  std::vector<std::string> targets;
  RuleUse use = RuleUse::kRequired;
  const char* hint = "";
};

template <class T>
LoadReport import_by_rules(const char* who, const std::string& path, ParameterStore<T, Cpu>& store,
                           const std::vector<MappingRule>& rules, bool strict) {
  check_allocated(who, path, store);
  const SafetensorsFile f = SafetensorsFile::read(path);
  LoadReport r;
  std::vector<WeightCopy> copies;
  for (const MappingRule& rule : rules) {
    const bool in_file = f.contains(rule.file_key);
    std::vector<WeightCopy> wanted;
    for (const std::string& t : rule.targets) {
      const std::optional<StoreSlot> slot = find_slot(store, t);
      if (!slot) {
        if (rule.use == RuleUse::kRequired)
          weights_fail(who, path, "the store has no entry '", t, "' for file key '", rule.file_key,
                       "'", rule.hint);
        continue;
      }
      if (rule.use == RuleUse::kIfSameShape &&
          !(in_file && same_extents(f.shape(rule.file_key), slot_shape(store, *slot))))
        continue;
      wanted.push_back(WeightCopy{rule.file_key, t, *slot});
    }
    if (wanted.empty()) {
      if (in_file) r.skipped.push_back(rule.file_key);
    } else if (!in_file) {
      for (const WeightCopy& w : wanted) r.missing.push_back(w.store_name);
    } else {
      for (WeightCopy& w : wanted) {
        r.loaded.push_back(w.store_name);
        copies.push_back(std::move(w));
      }
    }
  }
  for (const std::string& key : f.names()) {
    bool known = false;
    for (const MappingRule& rule : rules) known = known || rule.file_key == key;
    if (!known) r.unexpected.push_back(key);
  }
  enforce_strict(who, path, r, strict);
  check_copies(who, f, store, copies);
  enforce_plausible(who, f, store, r);
  write_copies(who, f, store, copies);
  return r;
}

inline std::vector<std::string> with_each(const std::vector<std::string>& prefixes,
                                          const std::string& suffix) {
  std::vector<std::string> out;
  for (const std::string& p : prefixes) out.push_back(p + "." + suffix);
  return out;
}

inline const std::vector<std::string>& heads_or_columns(const std::vector<std::string>& columns,
                                                        const ImportOptions& opt) {
  return opt.head_prefixes.empty() ? columns : opt.head_prefixes;
}

/// Convolutions per VGG-16 stage (conv1_1..conv5_3).
inline constexpr std::array<int, 5> kVgg16StageConvs = {2, 2, 3, 3, 3};

/// "stage{s}.conv{s}_{i}" for the k-th (0-based) of the 13 convolutions.
inline std::string vgg16_conv_name(int k) {
  int s = 0;
  while (k >= kVgg16StageConvs[static_cast<std::size_t>(s)])
    k -= kVgg16StageConvs[static_cast<std::size_t>(s++)];
  return nddr::detail::concat("stage", s + 1, ".conv", s + 1, "_", k + 1);
}

/// "conv{s}_{i}" (DeepLab key stem) for the k-th convolution.
inline std::string deeplab_conv_key(int k) {
  const std::string n = vgg16_conv_name(k);
  return n.substr(n.find('.') + 1);
}

/// Targets `<prefix>.head.<layer>.<what>` of the heads that declare `<layer>.weight`.
template <class T>
std::vector<std::string> declared_head_targets(const ParameterStore<T, Cpu>& store,
                                               const std::vector<std::string>& heads,
                                               const std::string& layer, const std::string& what) {
  std::vector<std::string> out;
  for (const std::string& h : heads)
    if (find_slot(store, h + ".head." + layer + ".weight"))
      out.push_back(h + ".head." + layer + "." + what);
  return out;
}

/// The rules of `import_torchvision_resnet` for a store whose columns (`column_prefixes`) are
/// DeepLab-v2 ResNets (nddr/backbones/resnet101.hpp): every torchvision key the network has a
/// place for, at the unit counts the first column declares (`res{s}.unit{i}` present), and the
/// keys that are always skipped (`fc.*`, `*.num_batches_tracked`). A file with more units than
/// the store (ResNet-152 into ResNet-101) has keys no rule knows: unexpected.
template <class T>
std::vector<MappingRule> torchvision_resnet_rules(const ParameterStore<T, Cpu>& store,
                                                  const std::vector<std::string>& column_prefixes) {
  static constexpr const char* kColumn = " (check the column prefixes: a ResNet column has "
                                         "'<prefix>.stage1.conv1.weight')";
  static constexpr std::array<const char*, 4> kBn = {"weight", "bias", "running_mean",
                                                     "running_var"};
  std::vector<MappingRule> rules;
  // A torchvision conv (+ its BatchNorm) -> the nddr conv `conv` (+ `conv.bn`) in every column.
  const auto conv_bn = [&](const std::string& conv_key, const std::string& bn_key,
                           const std::string& conv) {
    rules.push_back({conv_key + ".weight", with_each(column_prefixes, conv + ".weight"),
                     RuleUse::kRequired, kColumn});
    for (const char* w : kBn)
      rules.push_back({bn_key + "." + w, with_each(column_prefixes, conv + ".bn." + w),
                       RuleUse::kRequired, kColumn});
    rules.push_back({bn_key + ".num_batches_tracked", {}, RuleUse::kRequired, ""});
  };
  conv_bn("conv1", "bn1", "stage1.conv1");
  const std::string first = column_prefixes.empty() ? std::string() : column_prefixes.front();
  for (int s = 2; s <= 5; ++s) {
    const std::string stage = nddr::detail::concat("stage", s, ".res", s, ".unit");
    const std::string layer = nddr::detail::concat("layer", s - 1, ".");
    for (int u = 1; u == 1 || find_slot(store, nddr::detail::concat(first, ".", stage, u,
                                                                    ".conv1.weight"));
         ++u) {
      const std::string unit = nddr::detail::concat(stage, u);
      const std::string block = nddr::detail::concat(layer, u - 1, ".");
      for (int j = 1; j <= 3; ++j)
        conv_bn(nddr::detail::concat(block, "conv", j), nddr::detail::concat(block, "bn", j),
                nddr::detail::concat(unit, ".conv", j));
      if (u == 1) conv_bn(block + "downsample.0", block + "downsample.1", unit + ".proj");
    }
  }
  rules.push_back({"fc.weight", {}, RuleUse::kRequired, ""});
  rules.push_back({"fc.bias", {}, RuleUse::kRequired, ""});
  return rules;
}

inline constexpr const char* kColumnHint = " (check the column prefixes)";
inline constexpr const char* kBiasHint =
    " (ImportOptions::keep_biases needs a bias on every imported convolution)";

}  // namespace detail

/// Writes every parameter and buffer of `store` (BatchNorm running statistics included) under
/// its name, with the dtype of `T`, atomically (see write_safetensors).
template <class T>
void save_parameters(const std::string& path, const ParameterStore<T, Cpu>& store,
                     const std::map<std::string, std::string>& metadata = {}) {
  detail::check_allocated("save_parameters", path, store);
  std::vector<SafetensorsEntry> entries;
  for (std::size_t i = 0; i < store.parameters().size(); ++i)
    entries.push_back(entry<T>(store.parameters()[i].name, store.value(ParamId{i})));
  for (std::size_t i = 0; i < store.buffers().size(); ++i)
    entries.push_back(entry<T>(store.buffers()[i].name, store.buffer(ParamId{i})));
  write_safetensors(path, entries, metadata);
}

/// Loads the tensors of `path` into the parameters and buffers of `store` by name (after
/// `opt.rename`), converting from any floating dtype. Every shape must match (IoError naming the
/// file, the tensor and both shapes). Strict mode throws listing the missing store entries and
/// unexpected file keys; otherwise they are only reported. Always refused, strict or not: two
/// file keys renamed to the same store name, a NaN or infinite value, and a file that is not
/// for this network: one that loads no tensor, or fewer than both the unexpected file keys and
/// the missing store entries (detail::enforce_plausible; the IoError lists what the store
/// expects and what the file has).
template <class T>
LoadReport load_parameters(const std::string& path, ParameterStore<T, Cpu>& store,
                           const LoadOptions& opt = {}) {
  constexpr const char* kWho = "load_parameters";
  detail::check_allocated(kWho, path, store);
  const SafetensorsFile f = SafetensorsFile::read(path);
  LoadReport r;
  std::vector<detail::WeightCopy> copies;
  std::map<std::string, std::string, std::less<>> source_of;  // store name -> file key
  for (const std::string& key : f.names()) {
    const std::optional<std::string> name = opt.rename ? opt.rename(key) : key;
    if (!name) {
      r.skipped.push_back(key);
      continue;
    }
    const std::optional<detail::StoreSlot> slot = detail::find_slot(store, *name);
    if (!slot) {
      r.unexpected.push_back(key);
      continue;
    }
    const auto [it, fresh] = source_of.emplace(*name, key);
    if (!fresh)
      detail::weights_fail(kWho, path, "file keys '", it->second, "' and '", key, "' both map to '",
                           *name, "'");
    r.loaded.push_back(*name);
    copies.push_back(detail::WeightCopy{key, *name, *slot});
  }
  for (const auto* entries : {&store.parameters(), &store.buffers()})
    for (const ParamEntry& e : *entries)
      if (!source_of.contains(e.name)) r.missing.push_back(e.name);
  detail::enforce_strict(kWho, path, r, opt.strict);
  detail::check_copies(kWho, f, store, copies);
  detail::enforce_plausible(kWho, f, store, r);
  detail::write_copies(kWho, f, store, copies);
  return r;
}

/// Imports a torchvision `vgg16` state_dict (safetensors) into every column of `store`:
/// `features.N.weight` -> `<column>.stageS.convS_I.weight` for the 13 convolutions
/// (N = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28). `features.N.bias` is skipped unless
/// `keep_biases`. `classifier.0/3/6` go to `<head>.head.fc6/fc7/fc8` (weight and, where
/// declared, bias) only for heads whose `fc6.weight` is a rank-2 (Linear) kernel; fc8 only where
/// its shape equals the file's (same class count). Everything not loaded is listed in the
/// report; conv kernels the store lacks throw.
template <class T>
LoadReport import_torchvision_vgg16(const std::string& path, ParameterStore<T, Cpu>& store,
                                    const std::vector<std::string>& column_prefixes,
                                    const ImportOptions& opt = {}) {
  using detail::MappingRule;
  using detail::RuleUse;
  static constexpr std::array<int, 13> kFeatureIndex = {0,  2,  5,  7,  10, 12, 14,
                                                        17, 19, 21, 24, 26, 28};
  std::vector<MappingRule> rules;
  for (int k = 0; k < 13; ++k) {
    const std::string key =
        "features." + std::to_string(kFeatureIndex[static_cast<std::size_t>(k)]);
    const std::string conv = detail::vgg16_conv_name(k);
    rules.push_back({key + ".weight", detail::with_each(column_prefixes, conv + ".weight"),
                     RuleUse::kRequired, detail::kColumnHint});
    rules.push_back({key + ".bias",
                     opt.keep_biases ? detail::with_each(column_prefixes, conv + ".bias")
                                     : std::vector<std::string>{},
                     RuleUse::kRequired, detail::kBiasHint});
  }
  const auto& heads = detail::heads_or_columns(column_prefixes, opt);
  std::vector<std::string> classifier_heads;
  for (const std::string& h : heads) {
    const auto w = detail::find_slot(store, h + ".head.fc6.weight");
    if (w && detail::slot_shape(store, *w).rank() == 2) classifier_heads.push_back(h);
  }
  const std::array<std::pair<int, const char*>, 3> fcs = {{{0, "fc6"}, {3, "fc7"}, {6, "fc8"}}};
  for (const auto& [index, layer] : fcs) {
    const std::string key = "classifier." + std::to_string(index);
    const std::string fc = std::string("head.") + layer;
    const bool fc8 = index == 6;
    rules.push_back({key + ".weight", detail::with_each(classifier_heads, fc + ".weight"),
                     fc8 ? RuleUse::kIfSameShape : RuleUse::kRequired,
                     " (a Linear fc6 head needs fc7 and fc8)"});
    rules.push_back({key + ".bias", detail::with_each(classifier_heads, fc + ".bias"),
                     fc8 ? RuleUse::kIfSameShape : RuleUse::kIfDeclared, ""});
  }
  return detail::import_by_rules("import_torchvision_vgg16", path, store, rules, opt.strict);
}

/// Imports DeepLab-LargeFOV (VOC12) kernels into every column of `store`:
/// `convS_I.weight` -> `<column>.stageS.convS_I.weight`, `fc6.weight` (1024, 512, 3, 3) and
/// `fc7.weight` (1024, 1024, 1, 1) -> `<head>.head.fc6/fc7.weight` for heads that declare them.
/// `fc8.*` is always skipped (the class count differs); biases are skipped unless
/// `keep_biases`. Everything not loaded is listed in the report; conv kernels the store lacks
/// throw.
template <class T>
LoadReport import_deeplab_largefov(const std::string& path, ParameterStore<T, Cpu>& store,
                                   const std::vector<std::string>& column_prefixes,
                                   const ImportOptions& opt = {}) {
  using detail::MappingRule;
  using detail::RuleUse;
  std::vector<MappingRule> rules;
  for (int k = 0; k < 13; ++k) {
    const std::string key = detail::deeplab_conv_key(k);
    const std::string conv = detail::vgg16_conv_name(k);
    rules.push_back({key + ".weight", detail::with_each(column_prefixes, conv + ".weight"),
                     RuleUse::kRequired, detail::kColumnHint});
    rules.push_back({key + ".bias",
                     opt.keep_biases ? detail::with_each(column_prefixes, conv + ".bias")
                                     : std::vector<std::string>{},
                     RuleUse::kRequired, detail::kBiasHint});
  }
  const auto& heads = detail::heads_or_columns(column_prefixes, opt);
  for (const std::string layer : {"fc6", "fc7"}) {
    rules.push_back({layer + ".weight",
                     detail::declared_head_targets(store, heads, layer, "weight"),
                     RuleUse::kIfDeclared, ""});
    rules.push_back({layer + ".bias",
                     opt.keep_biases ? detail::declared_head_targets(store, heads, layer, "bias")
                                     : std::vector<std::string>{},
                     RuleUse::kRequired, detail::kBiasHint});
  }
  rules.push_back({"fc8.weight", {}, RuleUse::kRequired, ""});
  rules.push_back({"fc8.bias", {}, RuleUse::kRequired, ""});
  return detail::import_by_rules("import_deeplab_largefov", path, store, rules, opt.strict);
}

/// Imports a torchvision `resnet101` state_dict (safetensors; torchvision's `resnet50` /
/// `resnet152` too, into a network with their unit counts) into every DeepLab-v2 ResNet column
/// of `store` (`nddr::ResNet101`, `BasicResNet`): `conv1` / `bn1` -> `<column>.stage1.conv1` /
/// `.conv1.bn`; `layer{L}.{i}.conv{j}` / `.bn{j}` -> `<column>.stage{L+1}.res{L+1}.unit{i+1}.
/// conv{j}` / `.conv{j}.bn`; `layer{L}.0.downsample.0` / `.1` -> `...unit1.proj` / `.proj.bn`.
/// BatchNorm weight, bias, running_mean and running_var are all loaded; `num_batches_tracked`
/// and the ImageNet classifier `fc.*` are skipped (the ASPP head stays as initialised). Strict
/// mode (`opt.strict`) throws listing every missing and unexpected key; every shape is checked
/// against the store. `opt.keep_biases` and `opt.head_prefixes` do not apply (no conv has a
/// bias; nothing loads into a head). docs/weights.md: the two differences from torchvision's
/// network (stride in the first 1x1 conv, BatchNorm eps 1e-3) and what they mean.
template <class T>
LoadReport import_torchvision_resnet(const std::string& path, ParameterStore<T, Cpu>& store,
                                     const std::vector<std::string>& column_prefixes,
                                     const ImportOptions& opt = {}) {
  constexpr const char* kWho = "import_torchvision_resnet";
  detail::check_allocated(kWho, path, store);
  if (column_prefixes.empty())
    detail::weights_fail(kWho, path, "no column prefixes given (e.g. {\"task0\", \"task1\"})");
  return detail::import_by_rules(kWho, path, store,
                                 detail::torchvision_resnet_rules(store, column_prefixes),
                                 opt.strict);
}

}  // namespace nddr::io
