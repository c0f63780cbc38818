#pragma once
/// \file
/// Loading the NDDR-CNN authors' TensorFlow checkpoints (TF-slim names, read by
/// `TfCheckpoint`) into a `ParameterStore` under nddr's names: kernels transposed from TF's HWIO
/// (kh, kw, C_in, C_out) to nddr's OIHW (C_out, C_in, kh, kw), BatchNorm gamma / beta /
/// moving_mean / moving_variance to `bn.weight` / `bn.bias` / `bn.running_mean` /
/// `bn.running_var`; Momentum slots and conv biases skipped, as the authors' code does. The
/// name tables are in docs/weights.md "TensorFlow checkpoints".
///
/// Like every load in <nddr/io/weights.hpp>, the whole plan (names, dtypes, shapes, every value
/// finite, every tensor's checksum) is checked before the store is written: a failed load leaves
/// the store untouched.
///
/// Example:
///   // NDDR-CNN initialised as in the paper: each column from its single-task checkpoint.
///   using nddr::io::TfScheme;
///   nddr::io::load_tf_checkpoint("st_seg/model.ckpt-20000", store, TfScheme::kSingleTask,
///                                nddr::io::TfImportOptions{}.with_columns({"task0"}));
///   nddr::io::load_tf_checkpoint("st_normal/model.ckpt-20000", store, TfScheme::kSingleTask,
///                                nddr::io::TfImportOptions{}.with_columns({"task1"}));
///   // A whole NDDR-CNN checkpoint of the authors' code.
///   nddr::io::load_tf_checkpoint("nddr/model.ckpt-20000", store, TfScheme::kNddr);

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nddr/core/device.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/io/tf_checkpoint.hpp"
#include "nddr/io/weights.hpp"

namespace nddr::io {

/// The authors' naming schemes (formats-spec §2; `nets/*.py` of ethanygao/NDDR-CNN).
enum class TfScheme {
  /// `vgg_16/convS/convS_I/...`, `vgg_16/fc6|fc7|fc8_voc12/...` (vgg_16_deeplab_st) into
  /// column `columns[0]`. `vgg_16/shortcuts/...` is skipped (the authors' NDDR loader cannot
  /// place it either).
  kSingleTask,
  /// Trunk `vgg_16/convS/...` into `shared_prefix`, heads `vgg_16_K_6/...` into
  /// `columns[K-1]` (vgg_16_deeplab_mt).
  kMultiTaskBaseline,
  /// Columns `vgg_16_K_S/convS/...` and heads `vgg_16_K_6/...` into `columns[K-1]`, NDDR layers
  /// `nddr_S/nddr_S_nK/...` into `fusion.stageS.task{K-1}`, `nddr_shortcut_K/...` into
  /// `shortcut.task{K-1}` (vgg_16_deeplab_nddr and its shortcut variant).
  kNddr,
};

/// Options of `load_tf_checkpoint`.
struct TfImportOptions {
  /// Throw when a store entry the scheme should fill is missing from the checkpoint, or the
  /// checkpoint has a variable the scheme does not know (else only report them).
  bool strict = true;
  /// Column prefixes: the authors' task K (1-based) goes to `columns[K-1]`.
  std::vector<std::string> columns = {"task0", "task1"};
  /// Prefix of the shared trunk for `TfScheme::kMultiTaskBaseline`.
  std::string shared_prefix = "shared";
  /// Variables whose TF name contains one of these substrings are skipped, and their store
  /// targets are not `missing`: the authors' exclusion lists, e.g. {"fc8"} to initialise from
  /// the VOC DeepLab model (21 classes) or from a single-task checkpoint of another task.
  std::vector<std::string> exclude;

  TfImportOptions& with_strict(bool s) {
    strict = s;
    return *this;
  }
  TfImportOptions& with_columns(std::vector<std::string> c) {
    columns = std::move(c);
    return *this;
  }
  TfImportOptions& with_shared_prefix(std::string p) {
    shared_prefix = std::move(p);
    return *this;
  }
  TfImportOptions& with_exclude(std::vector<std::string> e) {
    exclude = std::move(e);
    return *this;
  }
};

/// Where a TF variable goes.
struct TfNameMapping {
  enum class Kind {
    kMapped,   ///< into store entry `name`
    kSkipped,  ///< deliberately not loaded (Momentum slot, conv bias, single-task shortcut)
    kUnknown,  ///< not a name of the scheme
  };
  Kind kind = Kind::kUnknown;
  std::string name;
};

namespace detail {

inline std::vector<std::string_view> tf_split_path(std::string_view s) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const std::size_t slash = s.find('/', start);
    parts.push_back(s.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) return parts;
    start = slash + 1;
  }
}

// A positive decimal number without sign or leading zeros, or nullopt.
inline std::optional<int> tf_number(std::string_view s) {
  int v = 0;
  if (s.empty() || s.size() > 4 || s[0] == '0') return std::nullopt;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// "vgg_16_K_S" -> (K, S).
inline std::optional<std::pair<int, int>> tf_column_scope(std::string_view s) {
  constexpr std::string_view kHead = "vgg_16_";
  if (!s.starts_with(kHead)) return std::nullopt;
  s.remove_prefix(kHead.size());
  const std::size_t sep = s.find('_');
  if (sep == std::string_view::npos) return std::nullopt;
  const auto k = tf_number(s.substr(0, sep));
  const auto st = tf_number(s.substr(sep + 1));
  if (!k || !st) return std::nullopt;
  return std::pair{*k, *st};
}

inline TfNameMapping tf_mapped(std::string name) {
  return {TfNameMapping::Kind::kMapped, std::move(name)};
}
inline TfNameMapping tf_skipped() { return {TfNameMapping::Kind::kSkipped, {}}; }
inline TfNameMapping tf_unknown() { return {}; }

// The variable under a layer scope: "weights", "biases" (kept only with `bias`), or
// "BatchNorm/<stat>"; `conv` names the kernel ("" for a Conv2d layer, ".conv" in fusion layers).
inline TfNameMapping tf_layer_leaf(const std::string& base,
                                   const std::vector<std::string_view>& rest, bool bias,
                                   std::string_view conv = "") {
  if (rest.size() == 1 && rest[0] == "weights")
    return tf_mapped(base + std::string(conv) + ".weight");
  if (rest.size() == 1 && rest[0] == "biases")
    return bias ? tf_mapped(base + ".bias") : tf_skipped();
  if (rest.size() != 2 || rest[0] != "BatchNorm") return tf_unknown();
  constexpr std::pair<std::string_view, std::string_view> kBn[] = {
      {"gamma", ".bn.weight"},
      {"beta", ".bn.bias"},
      {"moving_mean", ".bn.running_mean"},
      {"moving_variance", ".bn.running_var"}};
  for (const auto& [tf, ours] : kBn)
    if (rest[1] == tf) return tf_mapped(base + std::string(ours));
  return tf_unknown();
}

// `scope/convS/convS_I/...` (stage s) or `scope/fc6|fc7|fc8_voc12/...` under the layer parts
// `p` (scope removed): conv layers into `trunk`, fc layers into `head`.
inline TfNameMapping tf_vgg_layer(const std::vector<std::string_view>& p, std::optional<int> stage,
                                  const std::string* trunk, const std::string* head) {
  if (p.empty()) return tf_unknown();
  if (p[0] == "fc6" || p[0] == "fc7" || p[0] == "fc8_voc12") {
    if (head == nullptr) return tf_unknown();
    const bool fc8 = p[0] == "fc8_voc12";
    const std::string base = *head + ".head." + (fc8 ? "fc8" : std::string(p[0]));
    return tf_layer_leaf(base, {p.begin() + 1, p.end()}, fc8);
  }
  if (trunk == nullptr || p.size() < 3 || !p[0].starts_with("conv")) return tf_unknown();
  const auto s = tf_number(p[0].substr(4));
  if (!s || *s > 5 || (stage && *s != *stage)) return tf_unknown();
  const std::string stem = nddr::detail::concat("conv", *s, "_");
  if (!p[1].starts_with(stem) || !tf_number(p[1].substr(stem.size()))) return tf_unknown();
  const std::string base = nddr::detail::concat(*trunk, ".stage", *s, ".", p[1]);
  return tf_layer_leaf(base, {p.begin() + 2, p.end()}, false);
}

}  // namespace detail

/// The nddr name of TF variable `tf_name` under `scheme` (tables in docs/weights.md).
inline TfNameMapping map_tf_name(std::string_view tf_name, TfScheme scheme,
                                 const TfImportOptions& opt = {}) {
  std::vector<std::string_view> p = detail::tf_split_path(tf_name);
  if (p.back() == "Momentum") return detail::tf_skipped();
  const std::vector<std::string_view> layer(p.begin() + 1, p.end());
  auto column = [&](int k) -> const std::string* {
    return k >= 1 && static_cast<std::size_t>(k) <= opt.columns.size()
               ? &opt.columns[static_cast<std::size_t>(k - 1)]
               : nullptr;
  };
  if (p[0] == "vgg_16") {
    if (scheme == TfScheme::kNddr || opt.columns.empty()) return detail::tf_unknown();
    if (layer.size() >= 1 && layer[0] == "shortcuts") return detail::tf_skipped();
    const bool single = scheme == TfScheme::kSingleTask;
    return detail::tf_vgg_layer(layer, std::nullopt, single ? column(1) : &opt.shared_prefix,
                                single ? column(1) : nullptr);
  }
  if (scheme == TfScheme::kSingleTask) return detail::tf_unknown();
  if (const auto ks = detail::tf_column_scope(p[0])) {
    const auto [k, s] = *ks;
    const std::string* col = column(k);
    if (col == nullptr || s > 6 || (scheme == TfScheme::kMultiTaskBaseline && s != 6))
      return detail::tf_unknown();
    if (s == 6) return detail::tf_vgg_layer(layer, std::nullopt, nullptr, col);
    return detail::tf_vgg_layer(layer, s, col, nullptr);
  }
  if (scheme != TfScheme::kNddr) return detail::tf_unknown();
  constexpr std::string_view kNddrScope = "nddr_", kShortcut = "nddr_shortcut_";
  if (p[0].starts_with(kShortcut)) {
    const auto k = detail::tf_number(p[0].substr(kShortcut.size()));
    if (!k || column(*k) == nullptr) return detail::tf_unknown();
    return detail::tf_layer_leaf(nddr::detail::concat("shortcut.task", *k - 1), layer, false,
                                 ".conv");
  }
  if (p[0].starts_with(kNddrScope) && layer.size() >= 2) {
    const auto s = detail::tf_number(p[0].substr(kNddrScope.size()));
    if (!s || *s > 5) return detail::tf_unknown();
    const std::string stem = nddr::detail::concat(p[0], "_n");
    if (!layer[0].starts_with(stem)) return detail::tf_unknown();
    const auto k = detail::tf_number(layer[0].substr(stem.size()));
    if (!k || column(*k) == nullptr) return detail::tf_unknown();
    return detail::tf_layer_leaf(nddr::detail::concat("fusion.stage", *s, ".task", *k - 1),
                                 {layer.begin() + 1, layer.end()}, false, ".conv");
  }
  return detail::tf_unknown();
}

/// Which of the authors' layouts `ckpt` holds, from its variable names: `kNddr` with NDDR layers
/// (`nddr_S/...`, `nddr_shortcut_K/...`) or per-task columns (`vgg_16_K_S/...`, S < 6);
/// `kMultiTaskBaseline` with a `vgg_16/` trunk and per-task heads (`vgg_16_K_6/...`);
/// `kSingleTask` with `vgg_16/` names only (a single-task checkpoint or the VOC DeepLab init);
/// nullopt for anything else. Momentum slots do not count.
inline std::optional<TfScheme> detect_tf_scheme(const TfCheckpoint& ckpt) {
  bool nddr = false, columns = false, heads = false, trunk = false;
  for (const std::string& name : ckpt.names()) {
    const std::vector<std::string_view> p = detail::tf_split_path(name);
    if (p.back() == "Momentum") continue;
    if (p[0].starts_with("nddr_")) nddr = true;
    if (p[0] == "vgg_16") trunk = true;
    if (const auto ks = detail::tf_column_scope(p[0])) (ks->second == 6 ? heads : columns) = true;
  }
  if (nddr || columns) return TfScheme::kNddr;
  if (heads && trunk) return TfScheme::kMultiTaskBaseline;
  if (trunk && !heads) return TfScheme::kSingleTask;
  return std::nullopt;
}

/// "single-task", "multi-task baseline" or "NDDR-CNN": how messages name a scheme.
inline const char* tf_scheme_name(TfScheme scheme) {
  switch (scheme) {
    case TfScheme::kSingleTask: return "single-task";
    case TfScheme::kMultiTaskBaseline: return "multi-task baseline";
    case TfScheme::kNddr: return "NDDR-CNN";
  }
  return "?";
}

namespace detail {

// Store prefixes a scheme fills: entries under them that the checkpoint lacks are `missing`.
inline std::vector<std::string> tf_scheme_prefixes(TfScheme scheme, const TfImportOptions& opt) {
  std::vector<std::string> out;
  if (scheme == TfScheme::kSingleTask) {
    if (!opt.columns.empty()) out.push_back(opt.columns[0] + ".");
    return out;
  }
  for (const std::string& c : opt.columns)
    out.push_back(scheme == TfScheme::kMultiTaskBaseline ? c + ".head." : c + ".");
  if (scheme == TfScheme::kMultiTaskBaseline) out.push_back(opt.shared_prefix + ".");
  if (scheme == TfScheme::kNddr) {
    out.push_back("fusion.");
    out.push_back("shortcut.");
  }
  return out;
}

// TF's HWIO extents as OIHW; other ranks unchanged.
inline std::vector<std::int64_t> oihw_extents(const std::vector<std::int64_t>& s) {
  if (s.size() != 4) return s;
  return {s[3], s[2], s[0], s[1]};
}

// HWIO values (kh, kw, ci, co) -> OIHW (co, ci, kh, kw).
template <class T>
std::vector<T> hwio_to_oihw(const std::vector<T>& v, const std::vector<std::int64_t>& s) {
  const std::int64_t kh = s[0], kw = s[1], ci = s[2], co = s[3];
  std::vector<T> out(v.size());
  for (std::int64_t y = 0; y < kh; ++y)
    for (std::int64_t x = 0; x < kw; ++x)
      for (std::int64_t i = 0; i < ci; ++i)
        for (std::int64_t o = 0; o < co; ++o)
          out[static_cast<std::size_t>(((o * ci + i) * kh + y) * kw + x)] =
              v[static_cast<std::size_t>(((y * kw + x) * ci + i) * co + o)];
  return out;
}

}  // namespace detail

/// Loads the TensorFlow checkpoint with prefix `prefix` (see `TfCheckpoint::open`) into `store`
/// by `scheme`, converting from any floating dtype and transposing rank-4 kernels from HWIO to
/// OIHW. Every mapped variable must exist in the store with the transposed shape and a
/// floating dtype (one IoError lists all mismatches); strict mode also throws for store entries
/// under the scheme's prefixes that the checkpoint lacks (`missing`) and variables the scheme
/// does not know (`unexpected`), listing them. Always refused: a checkpoint of which nothing
/// loads, a NaN or infinite value, a corrupt tensor (CRC mismatch). Momentum slots, conv
/// biases and variables matching `opt.exclude` go to `skipped`. Nothing is written unless
/// everything passes.
template <class T>
LoadReport load_tf_checkpoint(const std::string& prefix, ParameterStore<T, Cpu>& store,
                              TfScheme scheme, const TfImportOptions& opt = {}) {
  constexpr const char* kWho = "load_tf_checkpoint";
  detail::check_allocated(kWho, prefix, store);
  const TfCheckpoint ckpt = TfCheckpoint::open(prefix);
  LoadReport r;
  std::vector<detail::WeightCopy> copies;
  std::vector<std::string> problems;
  std::vector<std::string> excluded;  // store names deliberately left alone
  for (const std::string& key : ckpt.names()) {
    const TfNameMapping m = map_tf_name(key, scheme, opt);
    const bool exclude = std::any_of(opt.exclude.begin(), opt.exclude.end(), [&](const auto& e) {
      return key.find(e) != std::string::npos;
    });
    if (exclude && m.kind == TfNameMapping::Kind::kMapped) excluded.push_back(m.name);
    if (exclude || m.kind == TfNameMapping::Kind::kSkipped) {
      r.skipped.push_back(key);
      continue;
    }
    const std::optional<detail::StoreSlot> slot =
        m.kind == TfNameMapping::Kind::kMapped ? detail::find_slot(store, m.name) : std::nullopt;
    if (!slot) {
      r.unexpected.push_back(key);
      continue;
    }
    const TfTensorInfo& info = ckpt.info(key);
    const std::vector<std::int64_t> extents = detail::oihw_extents(info.shape);
    const Shape& want = detail::slot_shape(store, *slot);
    if (!info.dtype || !detail::is_floating(*info.dtype))
      problems.push_back(nddr::detail::concat("'", excerpt(key), "' has dtype ", info.dtype_name(),
                                              ", expected a floating dtype for '", m.name, "'"));
    else if (!detail::same_extents(extents, want))
      problems.push_back(nddr::detail::concat(
          "'", excerpt(key), "' has shape ", detail::shape_str(info.shape),
          info.shape.size() == 4 ? " (HWIO; OIHW " + detail::shape_str(extents) + ")" : "",
          ", expected ", want.str(), " for '", m.name, "'"));
    r.loaded.push_back(m.name);
    copies.push_back(detail::WeightCopy{key, m.name, *slot});
  }
  const std::vector<std::string> prefixes = detail::tf_scheme_prefixes(scheme, opt);
  for (const std::string& name : detail::store_names(store)) {
    const bool filled = std::find(r.loaded.begin(), r.loaded.end(), name) != r.loaded.end() ||
                        std::find(excluded.begin(), excluded.end(), name) != excluded.end();
    const bool ours = std::any_of(prefixes.begin(), prefixes.end(),
                                  [&](const std::string& p) { return name.starts_with(p); });
    if (ours && !filled) r.missing.push_back(name);
  }
  detail::enforce_strict(kWho, prefix, r, opt.strict);
  if (!problems.empty()) {
    std::string msg;
    for (std::size_t i = 0; i < problems.size() && i < 16; ++i)
      msg += (i ? "; " : "") + problems[i];
    if (problems.size() > 16)
      msg += nddr::detail::concat("; ... and ", problems.size() - 16, " more");
    detail::weights_fail(kWho, prefix, msg);
  }
  if (r.loaded.empty() && !detail::store_names(store).empty())
    detail::weights_fail(kWho, prefix, "no variable of the checkpoint fits the parameter store (",
                         r.unexpected.size(), " unexpected, ", r.skipped.size(),
                         " skipped): it is not a checkpoint for this network and scheme; the "
                         "checkpoint has ",
                         ckpt.names().size(), ": ", detail::quoted_list(ckpt.names(), 8));
  std::vector<std::vector<T>> values;
  for (const detail::WeightCopy& c : copies) {
    const TfTensorInfo& info = ckpt.info(c.file_key);
    std::vector<T> v = ckpt.values<T>(c.file_key);
    if (info.shape.size() == 4) v = detail::hwio_to_oihw(v, info.shape);
    const auto bad = std::find_if(v.begin(), v.end(), [](T x) { return !std::isfinite(x); });
    if (bad != v.end())
      detail::weights_fail(kWho, prefix, "variable '", excerpt(c.file_key), "' element ",
                           bad - v.begin(), " is ", *bad,
                           ": non-finite values are refused (a corrupt file or a diverged run)");
    values.push_back(std::move(v));
  }
  for (std::size_t i = 0; i < copies.size(); ++i) {
    const detail::WeightCopy& c = copies[i];
    TensorView<T, Cpu> dst = c.slot.is_buffer ? store.buffer(c.slot.id) : store.value(c.slot.id);
    std::copy(values[i].begin(), values[i].end(), dst.data());
  }
  return r;
}

}  // namespace nddr::io
