#pragma once
/// \file
/// Copies between host and device tensors, queued on the context's stream. Whenever the
/// destination is host memory the call waits for the copy, so the result can be read at once.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <type_traits>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

namespace cuda::detail {

template <class D>
constexpr bool kCopyDevice = std::is_same_v<D, Cpu> || std::is_same_v<D, Cuda>;

template <class From, class To>
constexpr cudaMemcpyKind memcpy_kind() {
  if constexpr (std::is_same_v<From, Cpu>)
    return std::is_same_v<To, Cpu> ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice;
  else
    return std::is_same_v<To, Cpu> ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
}

template <class From, class To>
constexpr const char* direction() {
  if constexpr (std::is_same_v<From, Cpu>)
    return std::is_same_v<To, Cpu> ? "host to host" : "host to device";
  else
    return std::is_same_v<To, Cpu> ? "device to host" : "device to device";
}

}  // namespace cuda::detail

/// dst = src, for any pair of host (`Cpu`) and device (`Cuda`) tensors of the same shape.
/// Waits for the copy when `dst` is on the host.
template <class T, class DSrc, class DDst>
void copy(Context<Cuda>& ctx, TensorView<const T, DSrc> src, TensorView<T, DDst> dst) {
  static_assert(cuda::detail::kCopyDevice<DSrc> && cuda::detail::kCopyDevice<DDst>,
                "nddr::copy: tensors must live on nddr::Cpu or nddr::Cuda");
  check_shape("nddr::copy", "dst", dst.shape(), src.shape());
  const std::size_t bytes = static_cast<std::size_t>(src.numel()) * sizeof(T);
  if (bytes == 0) return;
  NDDR_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes,
                                  cuda::detail::memcpy_kind<DSrc, DDst>(), ctx.stream()),
                  "copying a tensor of shape ", src.shape().str(), " ",
                  cuda::detail::direction<DSrc, DDst>());
  if constexpr (std::is_same_v<DDst, Cpu>) ctx.synchronize();
}

/// dst = src for owning tensors (see the view overload).
template <class T, class DSrc, class DDst>
void copy(Context<Cuda>& ctx, const Tensor<T, DSrc>& src, Tensor<T, DDst>& dst) {
  copy<T, DSrc, DDst>(ctx, src.cview(), dst.view());
}

/// A device copy of the host tensor `src`.
template <class T>
Tensor<T, Cuda> to_device(Context<Cuda>& ctx, TensorView<const T, Cpu> src) {
  Tensor<T, Cuda> out(src.shape());
  copy<T, Cpu, Cuda>(ctx, src, out.view());
  return out;
}
template <class T>
Tensor<T, Cuda> to_device(Context<Cuda>& ctx, const Tensor<T, Cpu>& src) {
  return to_device<T>(ctx, src.cview());
}

/// A host copy of the device tensor `src`; waits for it.
template <class T>
Tensor<T, Cpu> to_host(Context<Cuda>& ctx, TensorView<const T, Cuda> src) {
  Tensor<T, Cpu> out(src.shape());
  copy<T, Cuda, Cpu>(ctx, src, out.view());
  return out;
}
template <class T>
Tensor<T, Cpu> to_host(Context<Cuda>& ctx, const Tensor<T, Cuda>& src) {
  return to_host<T>(ctx, src.cview());
}

}  // namespace nddr
