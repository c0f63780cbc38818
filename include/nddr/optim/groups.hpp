#pragma once
/// \file
/// What every optimiser derives from a `ParameterStore`'s groups (detail): the per-group
/// learning rate (scheduled lr x lr_mult) and decay (weight_decay x weight_decay_mult), and the
/// split of the flat buffers into chunks that the CPU threads share.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"

namespace nddr::detail {

/// One group's rates for one step, rounded to T.
template <class T>
struct GroupRates {
  T lr;
  T wd;
};

/// The rates of every group of `store` at scheduled rate `lr`; OptionError naming `who` for a
/// bad lr or negative multipliers (the group is named).
template <class T, class D>
std::vector<GroupRates<T>> group_rates(const char* who, const ParameterStore<T, D>& store,
                                       double lr, double weight_decay) {
  check<OptionError>(lr >= 0.0 && std::isfinite(lr), who,
                     ": lr must be a finite value >= 0, got ", lr);
  std::vector<GroupRates<T>> out;
  for (const ParamGroup& g : store.groups()) {
    check<OptionError>(g.lr_mult >= 0.0 && g.weight_decay_mult >= 0.0, who, ": group '", g.name,
                       "' has negative multipliers (lr_mult ", g.lr_mult, ", weight_decay_mult ",
                       g.weight_decay_mult, ")");
    out.push_back({static_cast<T>(lr * g.lr_mult), static_cast<T>(weight_decay * g.weight_decay_mult)});
  }
  return out;
}

/// A range of one entry's elements of the flat buffers; large entries are split so that the
/// threads share the work (the result does not depend on the split).
struct ParamChunk {
  std::size_t entry;
  std::size_t begin;  ///< absolute element index into the flat buffers
  std::size_t end;
};

inline std::vector<ParamChunk> param_chunks(const std::vector<ParamEntry>& entries,
                                            std::size_t chunk_elems = std::size_t{1} << 16) {
  std::vector<ParamChunk> chunks;
  for (std::size_t k = 0; k < entries.size(); ++k) {
    const std::size_t begin = entries[k].offset;
    const std::size_t end = begin + static_cast<std::size_t>(entries[k].shape.numel());
    for (std::size_t b = begin; b < end; b += chunk_elems)
      chunks.push_back(ParamChunk{k, b, std::min(end, b + chunk_elems)});
  }
  return chunks;
}

}  // namespace nddr::detail
