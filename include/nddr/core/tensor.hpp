#pragma once
/// \file
/// `Tensor<T, D>` (owning) and `TensorView<T, D>` (non-owning), contiguous, NCHW.

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/storage.hpp"

namespace nddr {

/// A non-owning view of a contiguous tensor on device `D`. `T` may be const.
/// Views are cheap to copy; the viewed memory must outlive them.
template <class T, class D = Cpu>
class TensorView {
 public:
  using value_type = std::remove_const_t<T>;
  using element_type = T;
  using device_type = D;

  constexpr TensorView() = default;
  constexpr TensorView(T* data, Shape shape) : data_(data), shape_(shape) {}

  /// A mutable view converts to a const one.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  constexpr TensorView(TensorView<U, D> other) : data_(other.data()), shape_(other.shape()) {}

  constexpr T* data() const { return data_; }
  constexpr const Shape& shape() const { return shape_; }
  constexpr std::int64_t numel() const { return shape_.numel(); }
  constexpr bool empty() const { return data_ == nullptr; }

  /// Element `i` of the flat buffer (CPU only).
  T& operator[](std::int64_t i) const
    requires std::is_same_v<D, Cpu>
  {
    return data_[i];
  }

  /// Element (n, c, h, w) of a rank-4 view (CPU only).
  T& operator()(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) const
    requires std::is_same_v<D, Cpu>
  {
    return data_[((n * shape_[1] + c) * shape_[2] + h) * shape_[3] + w];
  }

  /// The same memory seen with another shape of equal element count.
  TensorView reshaped(Shape s) const {
    check<ShapeError>(s.numel() == numel(), "nddr::TensorView::reshaped: cannot view ",
                      shape_, " as ", s);
    return TensorView(data_, s);
  }

  /// Batch items [begin, end) of a tensor whose first extent is the batch.
  TensorView batch_slice(std::int64_t begin, std::int64_t end) const {
    check<ShapeError>(shape_.rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
                      "nddr::TensorView::batch_slice: [", begin, ", ", end, ") outside ",
                      shape_);
    Shape s = shape_;
    s[0] = end - begin;
    return TensorView(data_ + begin * shape_.item_size(), s);
  }

 private:
  T* data_ = nullptr;
  Shape shape_{};
};

/// An owning, zero-initialised, contiguous tensor on device `D` (64-byte aligned on the CPU).
template <class T, class D = Cpu>
class Tensor {
  static_assert(std::is_floating_point_v<T> || std::is_integral_v<T>,
                "nddr::Tensor: element type must be arithmetic (float, double, integers)");

 public:
  using value_type = T;
  using device_type = D;

  Tensor() = default;
  explicit Tensor(Shape shape) : shape_(shape) {
    const std::size_t n = static_cast<std::size_t>(shape.numel()) * sizeof(T);
    data_ = static_cast<T*>(Storage<D>::allocate(n));
    Storage<D>::zero(data_, bytes());
  }
  /// Filled with `value` (CPU only).
  Tensor(Shape shape, T value)
    requires std::is_same_v<D, Cpu>
      : Tensor(shape) {
    for (std::int64_t i = 0; i < numel(); ++i) data_[i] = value;
  }

  Tensor(const Tensor& o) : Tensor(o.shape_) { Storage<D>::copy(data_, o.data_, bytes()); }
  Tensor(Tensor&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), shape_(std::exchange(o.shape_, Shape{})) {}
  Tensor& operator=(const Tensor& o) {
    if (this != &o) *this = Tensor(o);
    return *this;
  }
  Tensor& operator=(Tensor&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(shape_, o.shape_);
    return *this;
  }
  ~Tensor() { Storage<D>::deallocate(data_); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  const Shape& shape() const { return shape_; }
  /// Element count; 0 for a default-constructed (empty) tensor.
  std::int64_t numel() const { return data_ == nullptr ? 0 : shape_.numel(); }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * sizeof(T); }
  bool empty() const { return data_ == nullptr; }

  TensorView<T, D> view() { return {data_, shape_}; }
  TensorView<const T, D> view() const { return {data_, shape_}; }
  TensorView<const T, D> cview() const { return {data_, shape_}; }
  operator TensorView<T, D>() { return view(); }
  operator TensorView<const T, D>() const { return cview(); }

  T& operator[](std::int64_t i)
    requires std::is_same_v<D, Cpu>
  {
    return data_[i];
  }
  const T& operator[](std::int64_t i) const
    requires std::is_same_v<D, Cpu>
  {
    return data_[i];
  }
  T& operator()(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w)
    requires std::is_same_v<D, Cpu>
  {
    return view()(n, c, h, w);
  }
  const T& operator()(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) const
    requires std::is_same_v<D, Cpu>
  {
    return cview()(n, c, h, w);
  }

  /// Sets every element to zero.
  void zero() { Storage<D>::zero(data_, bytes()); }

  /// Changes the shape in place; the element count must stay the same.
  void reshape(Shape s) {
    check<ShapeError>(s.numel() == numel(), "nddr::Tensor::reshape: cannot reshape ",
                      shape_, " to ", s);
    shape_ = s;
  }

  /// Reallocates (zeroed) only when the shape changes.
  void resize(Shape s) {
    if (s == shape_) return;
    *this = Tensor(s);
  }

 private:
  T* data_ = nullptr;
  Shape shape_{};
};

}  // namespace nddr
