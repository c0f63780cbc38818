#pragma once
/// \file
/// `Shape`: the extents of a tensor of rank 0 to 4, NCHW order for images.

#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>

#include "nddr/core/error.hpp"
#include "nddr/core/macros.hpp"

namespace nddr {

/// Extents of a tensor of rank 0 to 4. Image tensors are (N, C, H, W).
class Shape {
 public:
  static constexpr int kMaxRank = 4;

  constexpr Shape() = default;
  constexpr Shape(std::initializer_list<std::int64_t> dims) {
    if (dims.size() > kMaxRank) throw ShapeError("nddr::Shape: rank above 4");
    for (std::int64_t d : dims) {
      if (d < 0) throw ShapeError("nddr::Shape: negative extent");
      dims_[static_cast<std::size_t>(rank_++)] = d;
    }
  }

  /// (N, C, H, W).
  static constexpr Shape nchw(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
    return Shape{n, c, h, w};
  }

  NDDR_HOST_DEVICE constexpr int rank() const { return rank_; }
  NDDR_HOST_DEVICE constexpr std::int64_t operator[](int i) const {
    return dims_[static_cast<std::size_t>(i)];
  }
  constexpr std::int64_t& operator[](int i) { return dims_[static_cast<std::size_t>(i)]; }

  /// Number of elements (1 for rank 0).
  NDDR_HOST_DEVICE constexpr std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
    return n;
  }

  // Named extents of a rank-4 (N, C, H, W) shape.
  NDDR_HOST_DEVICE constexpr std::int64_t n() const { return dims_[0]; }
  NDDR_HOST_DEVICE constexpr std::int64_t c() const { return dims_[1]; }
  NDDR_HOST_DEVICE constexpr std::int64_t h() const { return dims_[2]; }
  NDDR_HOST_DEVICE constexpr std::int64_t w() const { return dims_[3]; }

  /// Elements per batch item (C * H * W for an image tensor).
  constexpr std::int64_t item_size() const { return rank_ == 0 ? 1 : numel() / dims_[0]; }

  constexpr bool operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (dims_[static_cast<std::size_t>(i)] != o.dims_[static_cast<std::size_t>(i)]) return false;
    return true;
  }

  /// "(2, 3, 5, 5)".
  std::string str() const {
    std::string s = "(";
    for (int i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(dims_[static_cast<std::size_t>(i)]);
    }
    return s + ")";
  }

 private:
  std::array<std::int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

/// Writes `s.str()`: lets `check(...)` take a Shape, formatted only when the check fails.
inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

/// Throws ShapeError naming `who` and both shapes unless `actual == expected`.
inline void check_shape(const char* who, const char* what, const Shape& actual,
                        const Shape& expected) {
  if (!(actual == expected))
    throw ShapeError(detail::concat(who, ": ", what, " has shape ", actual.str(), ", expected ",
                                    expected.str()));
}

/// Throws ShapeError unless `s` has rank 4 (N, C, H, W).
inline void check_rank4(const char* who, const char* what, const Shape& s) {
  if (s.rank() != 4)
    throw ShapeError(detail::concat(who, ": ", what, " has shape ", s.str(),
                                    ", expected rank 4 (N, C, H, W)"));
}

}  // namespace nddr
