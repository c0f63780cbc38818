#pragma once
/// \file
/// Device tags. The device is always an explicit template argument; no macro changes a type.

#include <concepts>
#include <type_traits>

namespace nddr {

/// The host CPU (Eigen backend, OpenMP threads).
struct Cpu {
  static constexpr const char* kName = "cpu";
};

/// An NVIDIA GPU (cuDNN/cuBLAS backend); usable after `#include <nddr/cuda.hpp>`.
struct Cuda {
  static constexpr const char* kName = "cuda";
};

/// Customisation point: a backend specialises this to `true` when its header is included.
template <class D>
inline constexpr bool kDeviceAvailable = std::is_same_v<D, Cpu>;

}  // namespace nddr
