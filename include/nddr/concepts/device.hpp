#pragma once
/// \file
/// Concept `Device`: a tag type naming where tensors live and ops run.
///
/// Minimal complete definition: an empty type `D` with `static constexpr const char* kName`.
/// Models: `nddr::Cpu`, `nddr::Cuda`.
/// Requires nothing at run time; a device is only usable once its backend header is included
/// (`nddr::kDeviceAvailable<D>` is then true).
///
/// \code
/// static_assert(nddr::concepts::Device<nddr::Cpu>);
/// \endcode

#include <concepts>
#include <type_traits>

#include "nddr/core/device.hpp"

namespace nddr::concepts {

template <class D>
concept Device = std::is_empty_v<D> && requires {
  { D::kName } -> std::convertible_to<const char*>;
};

}  // namespace nddr::concepts
