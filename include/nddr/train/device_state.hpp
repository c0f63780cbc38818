#pragma once
/// \file
/// `detail::TrainerDevice<D, T>`: what `Trainer<E, D, T>` needs from a device backend beyond the ops
/// and the network. The CPU needs nothing; the CUDA backend specialises it in
/// nddr/backend/cuda/training.hpp (included by <nddr/cuda.hpp>), so a trainer on the GPU only
/// compiles where that header was included.

#include <cstddef>
#include <cstdint>

#include "nddr/core/device.hpp"

namespace nddr::detail {

/// One contiguous run of parameters in a network's flat gradient buffer, for a weighting
/// method: shared (owner -1) or task `owner`'s head.
struct GradientRange {
  std::size_t offset;
  std::int64_t size;
  int owner;
};

template <class D, class T>
class TrainerDevice {
 public:
  /// Whether `Trainer<E, D>` can run on D (the specialisation was seen).
  static constexpr bool available = false;
};

}  // namespace nddr::detail
