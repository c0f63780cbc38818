#pragma once
/// \file
/// CUDA inverted dropout (kernels/dropout.cuh). The mask comes from ops::dropout_keep, a pure
/// function of (seed, counter), so the GPU keeps exactly the elements the CPU op keeps.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/dropout.hpp"

namespace nddr::cuda::launch {

/// out[i] = (accumulate ? out[i] : 0) + dropout_element(in[i], keep(seed, c + i)) for i < n,
/// c = first_counter (+ *replay * n with a replay index, see Context<Cuda>::replay_index);
/// p = 0 keeps everything unscaled.
template <class T>
void dropout(cudaStream_t stream, const T* in, T* out, std::int64_t n, double p,
             std::uint64_t seed, std::uint64_t first_counter, bool accumulate,
             const std::uint64_t* replay = nullptr);

}  // namespace nddr::cuda::launch

namespace nddr::ops::backend {

/// Inverted dropout on the GPU (front door: nddr/ops/dropout.hpp). T = float or double.
template <>
struct Dropout<Cuda> {
  template <class T>
  static void dropout_forward(Context<Cuda>& ctx, TensorView<const T, Cuda> x,
                              TensorView<T, Cuda> y, double p, std::uint64_t seed,
                              std::uint64_t first_counter) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::dropout_forward: CUDA supports float and double");
    cuda::launch::dropout<T>(ctx.stream(), x.data(), y.data(), x.numel(), p, seed, first_counter,
                             false, ctx.replay_index());
  }

  template <class T>
  static void dropout_backward(Context<Cuda>& ctx, TensorView<const T, Cuda> dy,
                               TensorView<T, Cuda> dx, double p, std::uint64_t seed,
                               std::uint64_t first_counter) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::dropout_backward: CUDA supports float and double");
    cuda::launch::dropout<T>(ctx.stream(), dy.data(), dx.data(), dy.numel(), p, seed, first_counter,
                             true, ctx.replay_index());
  }
};

}  // namespace nddr::ops::backend
