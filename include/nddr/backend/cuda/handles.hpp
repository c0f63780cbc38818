#pragma once
/// \file
/// Move-only RAII owners of CUDA streams, cuDNN and cuBLAS handles and cuDNN descriptors.
/// Creation failures throw `DeviceError`; destruction never throws (a failure there means the
/// runtime is already shutting down, and nothing useful can be done about it).

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <type_traits>
#include <utility>

#include "nddr/backend/cuda/cublas_api.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/core/bfloat16.hpp"
#include "nddr/core/shape.hpp"

namespace nddr::cuda {

/// Owns one opaque library handle `H` (a pointer type) released by `Traits::destroy`.
template <class H, class Traits>
class UniqueHandle {
  static_assert(std::is_pointer_v<H>, "nddr::cuda::UniqueHandle: H must be an opaque pointer");

 public:
  UniqueHandle() = default;
  /// Takes ownership of `h`.
  explicit UniqueHandle(H h) : h_(h) {}
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  UniqueHandle(UniqueHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  UniqueHandle& operator=(UniqueHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  ~UniqueHandle() { reset(); }

  H get() const { return h_; }
  operator H() const { return h_; }
  explicit operator bool() const { return h_ != nullptr; }

  /// Releases the owned handle, if any.
  void reset() noexcept {
    if (h_ != nullptr) Traits::destroy(std::exchange(h_, nullptr));
  }

 private:
  H h_ = nullptr;
};

namespace detail {

struct StreamTraits {
  static void destroy(cudaStream_t s) noexcept { static_cast<void>(cudaStreamDestroy(s)); }
};
struct CudnnTraits {
  static void destroy(cudnnHandle_t h) noexcept { static_cast<void>(cudnnDestroy(h)); }
};
struct CublasTraits {
  // A handle exists, so cuBLAS is loaded; cublas_load() never throws, cublas_api() might.
  static void destroy(cublasHandle_t h) noexcept {
    const CublasLoad& l = cublas_load();
    if (l.error.empty()) static_cast<void>(l.api.cublasDestroy_v2(h));
  }
};
struct TensorDescriptorTraits {
  static void destroy(cudnnTensorDescriptor_t d) noexcept {
    static_cast<void>(cudnnDestroyTensorDescriptor(d));
  }
};
struct FilterDescriptorTraits {
  static void destroy(cudnnFilterDescriptor_t d) noexcept {
    static_cast<void>(cudnnDestroyFilterDescriptor(d));
  }
};
struct ConvolutionDescriptorTraits {
  static void destroy(cudnnConvolutionDescriptor_t d) noexcept {
    static_cast<void>(cudnnDestroyConvolutionDescriptor(d));
  }
};

}  // namespace detail

/// The cuDNN data type of `T` (float, double, or bfloat16 for the BF16 convolutions' copies).
template <class T>
constexpr cudnnDataType_t cudnn_data_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> ||
                    std::is_same_v<T, bfloat16>,
                "nddr::cuda::cudnn_data_type: the CUDA backend supports float and double "
                "(and bfloat16 inside the BF16 convolutions)");
  if constexpr (std::is_same_v<T, bfloat16>)
    return CUDNN_DATA_BFLOAT16;
  else
    return std::is_same_v<T, float> ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE;
}

/// A CUDA stream. Blocking (it synchronises with the legacy default stream, on which
/// `Storage<Cuda>` zeroes and copies), so tensors may be shared with other work freely.
class Stream : public UniqueHandle<cudaStream_t, detail::StreamTraits> {
 public:
  using UniqueHandle::UniqueHandle;
  /// Creates a new blocking stream on the current device.
  static Stream create() {
    cudaStream_t s = nullptr;
    NDDR_CUDA_CHECK(cudaStreamCreate(&s), "creating a CUDA stream");
    return Stream(s);
  }
};

/// A cuDNN handle whose work is queued on a given stream.
class CudnnHandle : public UniqueHandle<cudnnHandle_t, detail::CudnnTraits> {
 public:
  using UniqueHandle::UniqueHandle;
  static CudnnHandle create(cudaStream_t stream) {
    cudnnHandle_t h = nullptr;
    NDDR_CUDA_CHECK(cudnnCreate(&h), "creating a cuDNN handle");
    CudnnHandle owned(h);
    NDDR_CUDA_CHECK(cudnnSetStream(h, stream), "binding the cuDNN handle to its stream");
    return owned;
  }
};

/// A cuBLAS handle whose work is queued on a given stream (host pointer mode). `create` loads
/// cuBLAS on first use (cublas_api.hpp) and throws `DeviceError` when it cannot.
class CublasHandle : public UniqueHandle<cublasHandle_t, detail::CublasTraits> {
 public:
  using UniqueHandle::UniqueHandle;
  static CublasHandle create(cudaStream_t stream) {
    const CublasApi& api = cublas_api();
    cublasHandle_t h = nullptr;
    NDDR_CUDA_CHECK(api.cublasCreate_v2(&h), "creating a cuBLAS handle");
    CublasHandle owned(h);
    NDDR_CUDA_CHECK(api.cublasSetStream_v2(h, stream),
                    "binding the cuBLAS handle to its stream");
    return owned;
  }
};

/// A cuDNN tensor descriptor; `set` describes a contiguous NCHW tensor.
class TensorDescriptor
    : public UniqueHandle<cudnnTensorDescriptor_t, detail::TensorDescriptorTraits> {
 public:
  using UniqueHandle::UniqueHandle;
  static TensorDescriptor create() {
    cudnnTensorDescriptor_t d = nullptr;
    NDDR_CUDA_CHECK(cudnnCreateTensorDescriptor(&d), "creating a cuDNN tensor descriptor");
    return TensorDescriptor(d);
  }
  /// A descriptor of a contiguous `T` tensor of shape `s`, rank 1 to 4; missing trailing
  /// extents are 1, so a (N, C) tensor is seen as (N, C, 1, 1).
  template <class T>
  static TensorDescriptor nchw(const Shape& s) {
    TensorDescriptor d = create();
    d.set<T>(s);
    return d;
  }
  template <class T>
  void set(const Shape& s) {
    check<ShapeError>(s.rank() >= 1,
                      "nddr::cuda::TensorDescriptor: cannot describe a rank-0 tensor");
    int dims[Shape::kMaxRank] = {1, 1, 1, 1};
    for (int i = 0; i < s.rank(); ++i) dims[i] = checked_extent(s, i);
    NDDR_CUDA_CHECK(cudnnSetTensor4dDescriptor(get(), CUDNN_TENSOR_NCHW, cudnn_data_type<T>(),
                                               dims[0], dims[1], dims[2], dims[3]),
                    "describing a tensor of shape ", s.str(), " to cuDNN");
  }

 private:
  static int checked_extent(const Shape& s, int i) {
    check<ShapeError>(s[i] <= std::int64_t{1} << 30, "nddr::cuda::TensorDescriptor: extent ", s[i],
                      " of ", s, " is too large for cuDNN");
    return static_cast<int>(s[i]);
  }
};

/// A cuDNN filter descriptor (convolution weights); configured by the convolution op.
class FilterDescriptor
    : public UniqueHandle<cudnnFilterDescriptor_t, detail::FilterDescriptorTraits> {
 public:
  using UniqueHandle::UniqueHandle;
  static FilterDescriptor create() {
    cudnnFilterDescriptor_t d = nullptr;
    NDDR_CUDA_CHECK(cudnnCreateFilterDescriptor(&d), "creating a cuDNN filter descriptor");
    return FilterDescriptor(d);
  }
};

/// A cuDNN convolution descriptor; configured by the convolution op.
class ConvolutionDescriptor
    : public UniqueHandle<cudnnConvolutionDescriptor_t, detail::ConvolutionDescriptorTraits> {
 public:
  using UniqueHandle::UniqueHandle;
  static ConvolutionDescriptor create() {
    cudnnConvolutionDescriptor_t d = nullptr;
    NDDR_CUDA_CHECK(cudnnCreateConvolutionDescriptor(&d),
                    "creating a cuDNN convolution descriptor");
    return ConvolutionDescriptor(d);
  }
};

}  // namespace nddr::cuda
