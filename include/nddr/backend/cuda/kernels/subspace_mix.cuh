#pragma once
/// \file
/// Subspace-mixing kernels of the cross-stitch and sluice layers and their launchers (nvcc
/// only; instantiated in kernels.cu). Element offsets come from nddr::detail::SubspaceLayout, as in
/// the CPU loops, and every output element sums its terms in the CPU's order (q = 0, 1, ... for y,
/// p = 0, 1, ... for dx, starting from the old dx). dA is reduced in double in two passes of
/// fixed shape, so it does not depend on scheduling.

#include <cuda_runtime.h>

#include <cstdint>

#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/backend/cuda/subspace_mix.hpp"
#include "nddr/ops/math/subspace_mix.hpp"

namespace nddr::cuda::kernels {

/// Threads per block of the first dA pass (a power of two: tree reduction).
inline constexpr int kSubspaceReduceBlock = 256;

/// Which subspace and element one flat index i < K * N * item of the task tensors is.
struct SubspaceElement {
  std::int64_t task;  ///< k
  std::int64_t p;     ///< k * S + s
  std::int64_t n;
  std::int64_t r;  ///< index inside the subspace block
};

__device__ inline SubspaceElement subspace_element(const nddr::detail::SubspaceLayout& l,
                                                   std::int64_t i) {
  const std::int64_t per_task = l.batch * l.item;
  const std::int64_t k = i / per_task, e = i % per_task;
  const std::int64_t w = e % l.item;
  return {k, k * l.subspaces + w / l.size, e / l.item, w % l.size};
}

template <class T>
__global__ void subspace_mix_forward(nddr::detail::SubspaceLayout l, SubspaceTasks<const T> xs,
                                     const T* __restrict__ a, SubspaceTasks<T> ys,
                                     std::int64_t total) {
  const std::int64_t P = l.count;
  for (std::int64_t i = first_index(); i < total; i += grid_stride()) {
    const SubspaceElement e = subspace_element(l, i);
    T acc = T(0);
    for (std::int64_t q = 0; q < P; ++q)
      acc += a[e.p * P + q] * xs.task[l.task(q)][l.offset(q, e.n) + e.r];
    ys.task[e.task][l.offset(e.p, e.n) + e.r] = acc;
  }
}

template <class T>
__global__ void subspace_mix_backward_data(nddr::detail::SubspaceLayout l,
                                           SubspaceTasks<const T> dys, const T* __restrict__ a,
                                           SubspaceTasks<T> dxs, std::int64_t total) {
  const std::int64_t P = l.count;
  for (std::int64_t i = first_index(); i < total; i += grid_stride()) {
    const SubspaceElement e = subspace_element(l, i);
    T* dx = dxs.task[e.task];
    if (dx == nullptr) continue;
    const std::int64_t q = e.p;
    T acc = dx[l.offset(q, e.n) + e.r];
    for (std::int64_t p = 0; p < P; ++p)
      acc += a[p * P + q] * dys.task[l.task(p)][l.offset(p, e.n) + e.r];
    dx[l.offset(q, e.n) + e.r] = acc;
  }
}

/// First dA pass: block b = pq * chunks + c sums dy_p * x_q over its contiguous share c of
/// the N * size products of entry pq = p * P + q into partial[b].
template <class T>
__global__ void subspace_mix_alpha_partial(nddr::detail::SubspaceLayout l,
                                           SubspaceTasks<const T> xs, SubspaceTasks<const T> dys,
                                           double* partial, std::int64_t chunks) {
  __shared__ double shared[kSubspaceReduceBlock];
  const std::int64_t b = blockIdx.x;
  const std::int64_t pq = b / chunks, c = b % chunks;
  const std::int64_t p = pq / l.count, q = pq % l.count;
  const std::int64_t products = l.batch * l.size;
  const std::int64_t share = (products + chunks - 1) / chunks;
  const std::int64_t begin = c * share;
  const std::int64_t end = begin + share < products ? begin + share : products;
  const T* dy = dys.task[l.task(p)];
  const T* x = xs.task[l.task(q)];
  double s = 0.0;
  for (std::int64_t j = begin + threadIdx.x; j < end; j += kSubspaceReduceBlock) {
    const std::int64_t n = j / l.size, r = j % l.size;
    s += static_cast<double>(dy[l.offset(p, n) + r]) * static_cast<double>(x[l.offset(q, n) + r]);
  }
  shared[threadIdx.x] = s;
  __syncthreads();
  for (int half = kSubspaceReduceBlock / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[b] = shared[0];
}

/// Second dA pass: da[pq] = the chunks partial sums of entry pq, added in order.
template <class T>
__global__ void subspace_mix_alpha_finish(const double* __restrict__ partial, T* __restrict__ da,
                                          std::int64_t pairs, std::int64_t chunks) {
  for (std::int64_t pq = first_index(); pq < pairs; pq += grid_stride()) {
    double s = 0.0;
    for (std::int64_t c = 0; c < chunks; ++c) s += partial[pq * chunks + c];
    da[pq] = static_cast<T>(s);
  }
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class T>
void subspace_mix_forward(cudaStream_t stream, const nddr::detail::SubspaceLayout& l,
                          SubspaceTasks<const T> xs, const T* a, SubspaceTasks<T> ys) {
  const std::int64_t total = l.count / l.subspaces * l.batch * l.item;
  if (total == 0) return;
  NDDR_LAUNCH(kernels::grid_for(total), kernels::kBlock, 0, stream,
              kernels::subspace_mix_forward<T>)
  (l, xs, a, ys, total);
  check_launch("subspace_mix_forward");
}

template <class T>
void subspace_mix_alpha_grad(cudaStream_t stream, const nddr::detail::SubspaceLayout& l,
                             SubspaceTasks<const T> xs, SubspaceTasks<const T> dys, T* da,
                             double* partial, std::int64_t chunks) {
  const std::int64_t pairs = l.count * l.count;
  if (pairs == 0) return;
  NDDR_LAUNCH(static_cast<unsigned>(pairs * chunks), kernels::kSubspaceReduceBlock, 0, stream,
              kernels::subspace_mix_alpha_partial<T>)
  (l, xs, dys, partial, chunks);
  check_launch("subspace_mix_alpha_partial");
  NDDR_LAUNCH(kernels::grid_for(pairs), kernels::kBlock, 0, stream,
              kernels::subspace_mix_alpha_finish<T>)
  (partial, da, pairs, chunks);
  check_launch("subspace_mix_alpha_finish");
}

template <class T>
void subspace_mix_backward_data(cudaStream_t stream, const nddr::detail::SubspaceLayout& l,
                                SubspaceTasks<const T> dys, const T* a, SubspaceTasks<T> dxs) {
  const std::int64_t tasks = l.count / l.subspaces;
  bool any = false;
  for (std::int64_t k = 0; k < tasks; ++k) any = any || dxs.task[k] != nullptr;
  const std::int64_t total = tasks * l.batch * l.item;
  if (!any || total == 0) return;
  NDDR_LAUNCH(kernels::grid_for(total), kernels::kBlock, 0, stream,
              kernels::subspace_mix_backward_data<T>)
  (l, dys, a, dxs, total);
  check_launch("subspace_mix_backward_data");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiations of the subspace-mixing launchers for `T` (used by kernels.cu).
#define NDDR_CUDA_INSTANTIATE_SUBSPACE_MIX(T)                                                \
  template void nddr::cuda::launch::subspace_mix_forward<T>(                                 \
      cudaStream_t, const nddr::detail::SubspaceLayout&, nddr::cuda::SubspaceTasks<const T>, \
      const T*, nddr::cuda::SubspaceTasks<T>);                                               \
  template void nddr::cuda::launch::subspace_mix_alpha_grad<T>(                              \
      cudaStream_t, const nddr::detail::SubspaceLayout&, nddr::cuda::SubspaceTasks<const T>, \
      nddr::cuda::SubspaceTasks<const T>, T*, double*, std::int64_t);                        \
  template void nddr::cuda::launch::subspace_mix_backward_data<T>(                           \
      cudaStream_t, const nddr::detail::SubspaceLayout&, nddr::cuda::SubspaceTasks<const T>, \
      const T*, nddr::cuda::SubspaceTasks<T>);
