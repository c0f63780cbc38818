#pragma once
/// \file
/// Channel concatenation of K (N, C_k, H, W) tensors into one (N, sum C_k, H, W) tensor, and
/// its inverse, the channel split. The index map and the shape checks are shared by every
/// backend.

#include <cstdint>
#include <span>
#include <string>

#include "nddr/core/error.hpp"
#include "nddr/core/macros.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr::ops {

/// Flat index into the joined (N, C, H, W) tensor of element `i` of part k, where part k has
/// `part_item` = C_k * H * W elements per batch item and starts at flat offset
/// `part_offset` = (C_0 + ... + C_{k-1}) * H * W inside each item of `item` = C * H * W.
NDDR_HOST_DEVICE constexpr std::int64_t concat_index(std::int64_t i, std::int64_t part_item,
                                                     std::int64_t part_offset, std::int64_t item) {
  return (i / part_item) * item + part_offset + i % part_item;
}

namespace detail {

/// Checks that the parts (N, C_k, H, W) join into `whole` (N, sum C_k, H, W). `part_name` is
/// "input", "dx", "y" or "dy" for the messages. Every part must carry its shape, also an empty
/// (skipped) one, because the shapes define where each part sits along the channels.
template <class V>
void check_channel_parts(const char* who, const char* part_name, std::span<const V> parts,
                         const char* whole_name, const Shape& whole) {
  check_rank4(who, whole_name, whole);
  check<ShapeError>(!parts.empty(), who, ": needs at least one ", part_name);
  std::int64_t channels = 0;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const Shape& s = parts[k].shape();
    check<ShapeError>(
        s.rank() == 4 && s.n() == whole.n() && s.h() == whole.h() && s.w() == whole.w(), who, ": ",
        part_name, " ", k, " has shape ", s, " but ", whole_name, " has shape ", whole,
        "; every part must be rank 4 with the same N, H and W (an empty ", part_name,
        " must still carry its shape)");
    channels += s.c();
  }
  if (channels != whole.c()) {
    std::string list;
    for (std::size_t k = 0; k < parts.size(); ++k) list += (k ? ", " : "") + parts[k].shape().str();
    throw ShapeError(nddr::detail::concat(who, ": the ", part_name, " channels sum to ", channels,
                                          " (shapes ", list, ") but ", whole_name, " has shape ",
                                          whole.str()));
  }
}

}  // namespace detail
}  // namespace nddr::ops
