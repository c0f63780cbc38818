#pragma once
/// \file
/// Fully connected (linear) map y = x W^T + b on inputs flattened to (N, F), PyTorch layout:
/// W is (out, F), b is (out). Shape rules and options shared by every backend.

#include <cstdint>
#include <string>
#include <utility>

#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"

namespace nddr {

/// Options of the `Linear` layer.
struct LinearOptions {
  /// Adds the bias b (default true).
  LinearOptions& bias(bool on) {
    bias_ = on;
    return *this;
  }
  bool bias() const { return bias_; }

  /// ParameterStore group of the weight (default "default").
  LinearOptions& weight_group(std::string g) {
    weight_group_ = std::move(g);
    return *this;
  }
  const std::string& weight_group() const { return weight_group_; }

  /// ParameterStore group of the bias (default "default").
  LinearOptions& bias_group(std::string g) {
    bias_group_ = std::move(g);
    return *this;
  }
  const std::string& bias_group() const { return bias_group_; }

 private:
  bool bias_ = true;
  std::string weight_group_ = "default";
  std::string bias_group_ = "default";
};

namespace ops {

/// Features per batch item of a linear input: F = C * H * W for (N, C, H, W), F for (N, F).
/// Throws ShapeError naming `who` unless `in` has rank 2 or 4.
inline std::int64_t linear_features(const char* who, const Shape& in) {
  check<ShapeError>(in.rank() == 2 || in.rank() == 4, who, ": input has shape ", in,
                    ", expected rank 2 (N, F) or rank 4 (N, C, H, W)");
  return in.item_size();
}

/// Output shape of a linear map with `out` outputs: (N, out, 1, 1) for a rank-4 input,
/// (N, out) for a rank-2 input.
inline Shape linear_output_shape(const char* who, const Shape& in, std::int64_t out) {
  linear_features(who, in);
  return in.rank() == 4 ? Shape::nchw(in.n(), out, 1, 1) : Shape{in[0], out};
}

}  // namespace ops
}  // namespace nddr
