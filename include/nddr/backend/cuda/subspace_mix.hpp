#pragma once
/// \file
/// CUDA subspace mixing of the cross-stitch and sluice layers (kernels/subspace_mix.cuh):
/// `detail::subspace_mix_forward/backward` on `Context<Cuda>`, with the contract of the CPU
/// loops in nddr/fusion/cross_stitch.hpp. The layers call them unqualified; the
/// `SubspaceLayout` argument makes argument-dependent lookup find these overloads whatever the
/// include order.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/subspace_mix.hpp"

namespace nddr::cuda {

/// Most tasks the CUDA subspace mixing takes (the task pointers travel in a kernel argument).
inline constexpr std::size_t kSubspaceMixMaxTasks = 8;

/// Base pointers of the K task tensors, passed to the kernels by value; null = skipped task.
template <class T>
struct SubspaceTasks {
  T* task[kSubspaceMixMaxTasks];
};

/// Blocks per (p, q) entry of the first pass of the dA reduction: about 2048 products per block,
/// at most ~1024 blocks in all. It depends only on the sizes, so the sums are deterministic.
inline std::int64_t subspace_grad_chunks(const nddr::detail::SubspaceLayout& l) {
  const std::int64_t products = l.batch * l.size;
  const std::int64_t pairs = l.count * l.count;
  const std::int64_t cap = std::max<std::int64_t>(1, 1024 / std::max<std::int64_t>(pairs, 1));
  return std::clamp<std::int64_t>((products + 2047) / 2048, 1, cap);
}

}  // namespace nddr::cuda

namespace nddr::cuda::launch {

/// y_p = sum_q a[p][q] x_q (assigned) for every subspace p of `l`, queued on `stream`.
template <class T>
void subspace_mix_forward(cudaStream_t stream, const nddr::detail::SubspaceLayout& l,
                          SubspaceTasks<const T> xs, const T* a, SubspaceTasks<T> ys);

/// da[p][q] = <dy_p, x_q> (assigned), summed in double: `chunks` partial sums per entry (in
/// `partial`, P * P * chunks doubles of device scratch) added in a fixed order.
template <class T>
void subspace_mix_alpha_grad(cudaStream_t stream, const nddr::detail::SubspaceLayout& l,
                             SubspaceTasks<const T> xs, SubspaceTasks<const T> dys, T* da,
                             double* partial, std::int64_t chunks);

/// dx_q += sum_p a[p][q] dy_p for every task whose dx pointer is not null.
template <class T>
void subspace_mix_backward_data(cudaStream_t stream, const nddr::detail::SubspaceLayout& l,
                                SubspaceTasks<const T> dys, const T* a, SubspaceTasks<T> dxs);

}  // namespace nddr::cuda::launch

namespace nddr::detail {

/// The task pointers of `views` (null for an empty view); throws unless there are K of them
/// and K <= cuda::kSubspaceMixMaxTasks.
template <class T, class V>
cuda::SubspaceTasks<T> subspace_task_pointers(const char* who, const char* what,
                                              const SubspaceLayout& l, std::span<const V> views) {
  const auto tasks = static_cast<std::size_t>(l.count / l.subspaces);
  check<DeviceError>(tasks <= cuda::kSubspaceMixMaxTasks, who,
                     ": the CUDA subspace mixing takes "
                     "at most ",
                     cuda::kSubspaceMixMaxTasks, " tasks, got ", tasks);
  check<ShapeError>(views.size() == tasks, who, ": expected ", tasks, " ", what, " views, got ",
                    views.size());
  cuda::SubspaceTasks<T> p{};
  for (std::size_t k = 0; k < tasks; ++k) p.task[k] = views[k].empty() ? nullptr : views[k].data();
  return p;
}

}  // namespace nddr::detail

namespace nddr::ops::backend {

/// Subspace mixing on the GPU (front door: nddr/ops/subspace_mix.hpp). T = float or double.
template <>
struct SubspaceMix<Cuda> {
  /// y_p = sum_q A[p][q] x_q over the P subspace tensors, on the GPU; A is (P, P), row-major, in
  /// device memory. Assigned; ys must not alias xs.
  template <class T>
  static void subspace_mix_forward(Context<Cuda>& ctx, const nddr::detail::SubspaceLayout& l,
                                   std::span<const TensorView<const T, Cuda>> xs, const T* a,
                                   std::span<const TensorView<T, Cuda>> ys) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::subspace_mix_forward: CUDA supports float and double");
    constexpr const char* kWho = "nddr::ops::subspace_mix_forward";
    const auto x = nddr::detail::subspace_task_pointers<const T>(kWho, "x", l, xs);
    const auto y = nddr::detail::subspace_task_pointers<T>(kWho, "y", l, ys);
    cuda::launch::subspace_mix_forward<T>(ctx.stream(), l, x, a, y);
  }

  /// dA[p][q] = <dy_p, x_q> (assigned, summed in double in a fixed order), dx_q += sum_p A[p][q]
  /// dy_p for every non-empty dx, on the GPU. `a` and `da` are (P, P) in device memory.
  template <class T>
  static void subspace_mix_backward(Context<Cuda>& ctx, const nddr::detail::SubspaceLayout& l,
                                    std::span<const TensorView<const T, Cuda>> xs,
                                    std::span<const TensorView<const T, Cuda>> dys, const T* a,
                                    T* da, std::span<const TensorView<T, Cuda>> dxs) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::subspace_mix_backward: CUDA supports float and double");
    constexpr const char* kWho = "nddr::ops::subspace_mix_backward";
    const auto x = nddr::detail::subspace_task_pointers<const T>(kWho, "x", l, xs);
    const auto dy = nddr::detail::subspace_task_pointers<const T>(kWho, "dy", l, dys);
    const auto dx = nddr::detail::subspace_task_pointers<T>(kWho, "dx", l, dxs);
    const std::int64_t chunks = cuda::subspace_grad_chunks(l);
    double* partial = ctx.workspace<double>(static_cast<std::size_t>(l.count * l.count * chunks));
    cuda::launch::subspace_mix_alpha_grad<T>(ctx.stream(), l, x, dy, da, partial, chunks);
    cuda::launch::subspace_mix_backward_data<T>(ctx.stream(), l, dy, a, dx);
  }
};

}  // namespace nddr::ops::backend
