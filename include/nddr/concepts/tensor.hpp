#pragma once
/// \file
/// Concept `Tensor`: a contiguous array with a `Shape`, an element type and a device.
///
/// Minimal complete definition: `value_type`, `device_type` (a `Device`), `shape()` returning
/// `const Shape&` (or `Shape`), `data()` returning a pointer to the first element, `numel()`.
/// Ensures: `data()` points to `numel() == shape().numel()` contiguous elements in NCHW order
/// on `device_type`.
/// Models: `nddr::Tensor<T, D>`, `nddr::TensorView<T, D>`.
///
/// \code
/// static_assert(nddr::concepts::Tensor<nddr::Tensor<float, nddr::Cpu>>);
/// \endcode

#include <concepts>
#include <cstdint>
#include <type_traits>

#include "nddr/concepts/device.hpp"
#include "nddr/core/shape.hpp"

namespace nddr::concepts {

template <class X>
concept Tensor = requires(X& x) {
  typename X::value_type;
  typename X::device_type;
  requires Device<typename X::device_type>;
  { x.shape() } -> std::convertible_to<Shape>;
  { x.data() };
  requires std::is_pointer_v<decltype(x.data())>;
  { x.numel() } -> std::convertible_to<std::int64_t>;
};

}  // namespace nddr::concepts
