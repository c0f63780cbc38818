#pragma once
/// \file
/// Kernels of the CUDA convolution, batch norm and linear ops (nvcc only; instantiated in
/// kernels.cu): zero-padding copies for TF 'SAME', per-channel bias add and sums, and the batch
/// norm statistics and element passes running the bodies of nddr/ops/math/batch_norm.hpp. The
/// host headers backend/cuda/{conv2d,batch_norm,linear}.hpp declare the launchers; they are not
/// included here, which keeps the cuDNN and cuBLAS host code out of kernels.cu.

#include <cuda_runtime.h>

#include <cstdint>

#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/bfloat16.hpp"
#include "nddr/ops/math/batch_norm.hpp"

namespace nddr::cuda::kernels {

/// Threads per block of the per-channel reductions.
inline constexpr int kReduceBlock = 256;

/// Sums of a and b over the block (warp shuffles, then one warp over the warp sums): the
/// results are valid in thread 0. The order is fixed by the block size, so sums repeat
/// bit for bit. `shared` holds 64 doubles; the block ends synchronised.
__device__ inline void block_sum2(double& a, double& b, double* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, o);
    b += __shfl_down_sync(0xffffffffu, b, o);
  }
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) {
    shared[warp] = a;
    shared[32 + warp] = b;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = static_cast<int>((blockDim.x + 31) / 32);
    a = lane < warps ? shared[lane] : 0.0;
    b = lane < warps ? shared[32 + lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) {
      a += __shfl_down_sync(0xffffffffu, a, o);
      b += __shfl_down_sync(0xffffffffu, b, o);
    }
  }
  __syncthreads();
}

/// The split per-channel reductions' first pass: for each channel c of this block's y range,
/// this block's share (block gridDim.x of `splits`, offsets from ops::batch_norm_strided_visit)
/// of the two sums that add(c, offset, s1, s2) accumulates, written in double to
/// partial[2 (c splits + block)] and partial[... + 1].
template <class Add>
__device__ inline void channel_partial_sums(double* __restrict__ partial, std::int64_t items,
                                            std::int64_t channels, std::int64_t plane, Add add) {
  __shared__ double shared[64];
  const std::int64_t splits = gridDim.x;
  for (std::int64_t c = blockIdx.y; c < channels; c += gridDim.y) {
    double s1 = 0.0, s2 = 0.0;
    ops::batch_norm_strided_visit(items, plane, channels * plane,
                                  static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                                  splits * blockDim.x,
                                  [&](std::int64_t i) { add(c, c * plane + i, s1, s2); });
    block_sum2(s1, s2, shared);
    if (threadIdx.x == 0) {
      partial[2 * (c * splits + blockIdx.x)] = s1;
      partial[2 * (c * splits + blockIdx.x) + 1] = s2;
    }
  }
}

/// The second pass: channel c's two sums, its blocks' partial sums added in block order.
__device__ inline void channel_total_sums(const double* __restrict__ partial, std::int64_t c,
                                          std::int64_t splits, double& s1, double& s2) {
  s1 = 0.0;
  s2 = 0.0;
  for (std::int64_t b = 0; b < splits; ++b) {
    s1 += partial[2 * (c * splits + b)];
    s2 += partial[2 * (c * splits + b) + 1];
  }
}

/// dst (N, C, H + pt + pb, W + pl + pr) = src (N, C, H, W) surrounded by zeros, converted to D.
template <class S, class D>
__global__ void pad_copy(const S* __restrict__ src, D* __restrict__ dst, std::int64_t planes,
                         std::int64_t h, std::int64_t w, std::int64_t pt, std::int64_t pl,
                         std::int64_t ph, std::int64_t pw) {
  const std::int64_t n = planes * ph * pw;
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t x = i % pw - pl;
    const std::int64_t y = i / pw % ph - pt;
    const std::int64_t p = i / (pw * ph);
    dst[i] = (y >= 0 && y < h && x >= 0 && x < w) ? static_cast<D>(src[(p * h + y) * w + x])
                                                  : static_cast<D>(0.0f);
  }
}

/// dst (N, C, H, W) += the interior of src (N, C, H + pt + pb, W + pl + pr), converted to D.
template <class S, class D>
__global__ void crop_add(const S* __restrict__ src, D* __restrict__ dst, std::int64_t planes,
                         std::int64_t h, std::int64_t w, std::int64_t pt, std::int64_t pl,
                         std::int64_t ph, std::int64_t pw) {
  const std::int64_t n = planes * h * w;
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t x = i % w;
    const std::int64_t y = i / w % h;
    const std::int64_t p = i / (w * h);
    dst[i] += static_cast<D>(src[(p * ph + y + pt) * pw + x + pl]);
  }
}

/// dst[i] = D(src[i]) (the BF16 convolutions' copies: float <-> nddr::bfloat16).
template <class S, class D>
__global__ void convert(const S* __restrict__ src, D* __restrict__ dst, std::int64_t n) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) dst[i] = static_cast<D>(src[i]);
}

/// dst[i] += D(src[i]).
template <class S, class D>
__global__ void convert_add(const S* __restrict__ src, D* __restrict__ dst, std::int64_t n) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) dst[i] += static_cast<D>(src[i]);
}

/// dst[i] = D(src[i]) + b[channel of i] (the BF16 forward's widening and bias add in one pass).
template <class S, class D>
__global__ void convert_bias(const S* __restrict__ src, const D* __restrict__ b,
                             D* __restrict__ dst, std::int64_t n, std::int64_t channels,
                             std::int64_t plane) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride())
    dst[i] = static_cast<D>(src[i]) + b[i / plane % channels];
}

/// y[(n, c, i)] += b[c] over `n` elements of planes `plane`, `channels` channels.
template <class T>
__global__ void bias_add(const T* __restrict__ b, T* __restrict__ y, std::int64_t n,
                         std::int64_t channels, std::int64_t plane) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) y[i] += b[i / plane % channels];
}

/// out[c] = sum over (n, i) of x[(n, c, i)]; one block per channel, summed in double.
template <class T>
__global__ void channel_sum(const T* __restrict__ x, T* __restrict__ out, std::int64_t items,
                            std::int64_t channels, std::int64_t plane) {
  __shared__ double shared[64];
  const std::int64_t c = blockIdx.x;
  const T* xc = x + c * plane;
  double sum = 0.0, unused = 0.0;
  ops::batch_norm_strided_visit(items, plane, channels * plane, threadIdx.x, blockDim.x,
                                [&](std::int64_t i) { sum += static_cast<double>(xc[i]); });
  block_sum2(sum, unused, shared);
  if (threadIdx.x == 0) out[c] = static_cast<T>(sum);
}

/// First pass of the training statistics, split over gridDim.x blocks per channel
/// (blockIdx.y strides over channels): each block writes the sums of (x - shift) and
/// (x - shift)^2 over its share, in double, to partial[2 (c splits + block)]; shift is the
/// channel's first element.
template <class T>
__global__ void batch_norm_partial_moments(const T* __restrict__ x, double* __restrict__ partial,
                                           std::int64_t items, std::int64_t channels,
                                           std::int64_t plane) {
  channel_partial_sums(partial, items, channels, plane,
                       [x, plane](std::int64_t c, std::int64_t i, double& s1, double& s2) {
                         const double d =
                             static_cast<double>(x[i]) - static_cast<double>(x[c * plane]);
                         s1 += d;
                         s2 += d * d;
                       });
}

/// Second pass, one thread per channel: adds the channel's partial sums in block order, then
/// saves mean / inv_std, writes the element scale gamma * inv_std (gamma = 1 when null) and
/// updates the running statistics.
template <class T>
__global__ void batch_norm_finish_moments(const T* __restrict__ x,
                                          const double* __restrict__ partial, std::int64_t splits,
                                          const T* __restrict__ gamma, T* rm, T* rv, T* save_mean,
                                          T* save_inv_std, T* scale, std::int64_t items,
                                          std::int64_t channels, std::int64_t plane, double eps,
                                          double momentum, bool unbiased) {
  for (std::int64_t c = first_index(); c < channels; c += grid_stride()) {
    double s1, s2;
    channel_total_sums(partial, c, splits, s1, s2);
    const ops::BatchNormMoments m = ops::batch_norm_moments_from_shifted_sums(
        static_cast<double>(items * plane), static_cast<double>(x[c * plane]), s1, s2);
    const double inv_std = ops::batch_norm_inv_std(m.var, eps);
    save_mean[c] = static_cast<T>(m.mean);
    save_inv_std[c] = static_cast<T>(inv_std);
    scale[c] = static_cast<T>(gamma ? static_cast<double>(gamma[c]) * inv_std : inv_std);
    ops::batch_norm_update_running(rm[c], rv[c], m, items * plane, momentum, unbiased);
  }
}

/// scale[c] = gamma[c] / sqrt(running_var[c] + eps) (gamma = 1 when null).
template <class T>
__global__ void batch_norm_inference_scale(const T* __restrict__ gamma, const T* __restrict__ rv,
                                           T* __restrict__ scale, std::int64_t channels,
                                           double eps) {
  for (std::int64_t c = first_index(); c < channels; c += grid_stride()) {
    const double inv_std = ops::batch_norm_inv_std(static_cast<double>(rv[c]), eps);
    scale[c] = static_cast<T>(gamma ? static_cast<double>(gamma[c]) * inv_std : inv_std);
  }
}

/// Calls f(plane index q, channel, offset of the element) for every element of `planes`
/// planes of `plane` elements: blockIdx.y strides over planes (one division per plane, none
/// per element), blockIdx.x and the threads over the plane.
template <class F>
__device__ inline void for_each_plane_element(std::int64_t planes, std::int64_t channels,
                                              std::int64_t plane, F f) {
  for (std::int64_t q = blockIdx.y; q < planes; q += gridDim.y) {
    const std::int64_t c = q % channels;
    const std::int64_t base = q * plane;
    for (std::int64_t p = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
         p < plane; p += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
      f(c, base + p);
  }
}

/// y = (x - mean[c]) * scale[c] + shift[c] (shift = 0 when null), then max(y, 0) with `relu`;
/// flat, for small planes.
template <class T>
__global__ void batch_norm_apply(const T* __restrict__ x, const T* __restrict__ mean,
                                 const T* __restrict__ scale, const T* __restrict__ shift,
                                 T* __restrict__ y, std::int64_t n, std::int64_t channels,
                                 std::int64_t plane, bool relu) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t c = i / plane % channels;
    y[i] = ops::batch_norm_element(x[i], mean[c], scale[c], shift ? shift[c] : T(0), relu);
  }
}

/// As batch_norm_apply, over a 2-D grid of (plane chunks, planes).
template <class T>
__global__ void batch_norm_apply_planes(const T* __restrict__ x, const T* __restrict__ mean,
                                        const T* __restrict__ scale, const T* __restrict__ shift,
                                        T* __restrict__ y, std::int64_t planes,
                                        std::int64_t channels, std::int64_t plane, bool relu) {
  for_each_plane_element(planes, channels, plane, [&](std::int64_t c, std::int64_t i) {
    y[i] = ops::batch_norm_element(x[i], mean[c], scale[c], shift ? shift[c] : T(0), relu);
  });
}

/// First pass of the backward reductions, split like batch_norm_partial_moments: sums of dy
/// and dy * (x - mean) (mean = stat0[c]) per block into partial; a non-null y (forward's output,
/// fused ReLU) masks dy.
template <class T>
__global__ void batch_norm_partial_grad(const T* __restrict__ x, const T* __restrict__ y,
                                        const T* __restrict__ dy, const T* __restrict__ stat0,
                                        double* __restrict__ partial, std::int64_t items,
                                        std::int64_t channels, std::int64_t plane) {
  channel_partial_sums(partial, items, channels, plane,
                       [x, y, dy, stat0](std::int64_t c, std::int64_t i, double& s1, double& s2) {
                         const double g = static_cast<double>(ops::batch_norm_grad_in(y, dy, i));
                         s1 += g;
                         s2 += g * (static_cast<double>(x[i]) - static_cast<double>(stat0[c]));
                       });
}

/// Second pass of the backward reductions, one thread per channel. Writes dgamma / dbeta
/// (when non-null) and the element constants consts = (mean, k, a, b) as 4 arrays of
/// `channels`. Statistics: with `training`, stat0 = saved mean and stat1 = saved inv_std;
/// otherwise stat0 = running mean and stat1 = running variance.
template <class T>
__global__ void batch_norm_finish_grad(const double* __restrict__ partial, std::int64_t splits,
                                       const T* __restrict__ gamma, const T* __restrict__ stat0,
                                       const T* __restrict__ stat1, T* dgamma, T* dbeta, T* consts,
                                       std::int64_t items, std::int64_t channels,
                                       std::int64_t plane, double eps, bool training) {
  for (std::int64_t c = first_index(); c < channels; c += grid_stride()) {
    ops::BatchNormGradSums s;
    channel_total_sums(partial, c, splits, s.sum_dy, s.sum_dy_xmu);
    const double mean = static_cast<double>(stat0[c]);
    const double inv_std = training ? static_cast<double>(stat1[c])
                                    : ops::batch_norm_inv_std(static_cast<double>(stat1[c]), eps);
    if (dgamma) dgamma[c] = static_cast<T>(s.sum_dy_xmu * inv_std);
    if (dbeta) dbeta[c] = static_cast<T>(s.sum_dy);
    const double count = static_cast<double>(items * plane);
    const double g = gamma ? static_cast<double>(gamma[c]) : 1.0;
    consts[c] = static_cast<T>(mean);
    consts[channels + c] = static_cast<T>(g * inv_std);
    const ops::BatchNormGradTerms t =
        training ? ops::batch_norm_grad_terms(s, inv_std, count) : ops::BatchNormGradTerms{};
    consts[2 * channels + c] = static_cast<T>(t.a);
    consts[3 * channels + c] = static_cast<T>(t.b);
  }
}

/// dx += k * (dy - a - (x - mean) * b) with the per-channel constants of batch_norm_finish_grad
/// (dy masked by a non-null y, the fused ReLU's output); flat, for small planes.
template <class T>
__global__ void batch_norm_backward_apply(const T* __restrict__ x, const T* __restrict__ y,
                                          const T* __restrict__ dy, const T* __restrict__ consts,
                                          T* __restrict__ dx, std::int64_t n, std::int64_t channels,
                                          std::int64_t plane) {
  for (std::int64_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t c = i / plane % channels;
    ops::batch_norm_backward_element(x[i], ops::batch_norm_grad_in(y, dy, i), consts[c],
                                     consts[channels + c], consts[2 * channels + c],
                                     consts[3 * channels + c], dx[i]);
  }
}

/// As batch_norm_backward_apply, over a 2-D grid of (plane chunks, planes).
template <class T>
__global__ void batch_norm_backward_apply_planes(const T* __restrict__ x, const T* __restrict__ y,
                                                 const T* __restrict__ dy,
                                                 const T* __restrict__ consts, T* __restrict__ dx,
                                                 std::int64_t planes, std::int64_t channels,
                                                 std::int64_t plane) {
  for_each_plane_element(planes, channels, plane, [&](std::int64_t c, std::int64_t i) {
    ops::batch_norm_backward_element(x[i], ops::batch_norm_grad_in(y, dy, i), consts[c],
                                     consts[channels + c], consts[2 * channels + c],
                                     consts[3 * channels + c], dx[i]);
  });
}

// --- Synchronized (cross-replica) batch norm: the reductions leave raw per-channel sums in
// device memory for the host to all-reduce; the finishing kernels read the global sums back.

/// First pass of the synchronized forward statistics, split like batch_norm_partial_moments:
/// per-block sums of x - center[c] and (x - center[c])^2 (center = 0 when null), in double.
template <class T>
__global__ void batch_norm_partial_centered(const T* __restrict__ x,
                                            const double* __restrict__ center,
                                            double* __restrict__ partial, std::int64_t items,
                                            std::int64_t channels, std::int64_t plane) {
  channel_partial_sums(partial, items, channels, plane,
                       [x, center](std::int64_t c, std::int64_t i, double& s1, double& s2) {
                         const double d = static_cast<double>(x[i]) - (center ? center[c] : 0.0);
                         s1 += d;
                         s2 += d * d;
                       });
}

/// totals[2c] and totals[2c + 1]: channel c's two sums, its blocks' partial sums added in block
/// order; one thread per channel.
__global__ void channel_totals(const double* __restrict__ partial, std::int64_t splits,
                               std::int64_t channels, double* __restrict__ totals) {
  for (std::int64_t c = first_index(); c < channels; c += grid_stride()) {
    double s1, s2;
    channel_total_sums(partial, c, splits, s1, s2);
    totals[2 * c] = s1;
    totals[2 * c + 1] = s2;
  }
}

/// The synchronized forward's per-channel finish from the global batch's moments
/// (moments[c] = mean, moments[channels + c] = biased variance, `count` values per channel):
/// saves mean / inv_std, writes the element scale gamma * inv_std (gamma = 1 when null) and
/// moves the running statistics towards the global ones.
template <class T>
__global__ void batch_norm_finish_global_moments(const double* __restrict__ moments,
                                                 std::int64_t count, const T* __restrict__ gamma,
                                                 T* rm, T* rv, T* save_mean, T* save_inv_std,
                                                 T* scale, std::int64_t channels, double eps,
                                                 double momentum, bool unbiased) {
  for (std::int64_t c = first_index(); c < channels; c += grid_stride()) {
    const ops::BatchNormMoments m{moments[c], moments[channels + c]};
    const double inv_std = ops::batch_norm_inv_std(m.var, eps);
    save_mean[c] = static_cast<T>(m.mean);
    save_inv_std[c] = static_cast<T>(inv_std);
    scale[c] = static_cast<T>(gamma ? static_cast<double>(gamma[c]) * inv_std : inv_std);
    ops::batch_norm_update_running(rm[c], rv[c], m, count, momentum, unbiased);
  }
}

/// The synchronized backward's per-channel finish: dgamma / dbeta (when non-null) from this
/// replica's sums (local[2c] = sum(dy), local[2c + 1] = sum(dy (x - mean))), the element
/// constants (mean, k, a, b) of batch_norm_backward_apply from the global ones (`global`, same
/// layout, over `count` values per channel).
template <class T>
__global__ void batch_norm_finish_global_grad(const double* __restrict__ local,
                                              const double* __restrict__ global, double count,
                                              const T* __restrict__ gamma,
                                              const T* __restrict__ save_mean,
                                              const T* __restrict__ save_inv_std, T* dgamma,
                                              T* dbeta, T* consts, std::int64_t channels) {
  for (std::int64_t c = first_index(); c < channels; c += grid_stride()) {
    const double inv_std = static_cast<double>(save_inv_std[c]);
    if (dgamma) dgamma[c] = static_cast<T>(local[2 * c + 1] * inv_std);
    if (dbeta) dbeta[c] = static_cast<T>(local[2 * c]);
    const double g = gamma ? static_cast<double>(gamma[c]) : 1.0;
    consts[c] = save_mean[c];
    consts[channels + c] = static_cast<T>(g * inv_std);
    const ops::BatchNormGradTerms t = ops::batch_norm_grad_terms(
        ops::BatchNormGradSums{global[2 * c], global[2 * c + 1]}, inv_std, count);
    consts[2 * channels + c] = static_cast<T>(t.a);
    consts[3 * channels + c] = static_cast<T>(t.b);
  }
}

/// Grid of the plane-wise element kernels: about 4 elements per thread along a plane, planes
/// on the y axis (capped; the kernels stride over the rest). Small planes go flat instead.
inline constexpr std::int64_t kPlaneKernelMinPlane = 256;
inline dim3 plane_grid(std::int64_t planes, std::int64_t plane) {
  const std::int64_t gx = std::min<std::int64_t>((plane + 4 * kBlock - 1) / (4 * kBlock), 65535);
  const std::int64_t gy = std::min<std::int64_t>(planes, 65535);
  return dim3(static_cast<unsigned>(std::max<std::int64_t>(gx, 1)),
              static_cast<unsigned>(std::max<std::int64_t>(gy, 1)));
}

/// Grid of the split reductions: splits blocks per channel, channels on the y axis (capped).
inline dim3 reduce_grid(std::int64_t splits, std::int64_t channels) {
  return dim3(static_cast<unsigned>(splits),
              static_cast<unsigned>(std::min<std::int64_t>(channels, 65535)));
}

}  // namespace nddr::cuda::kernels

namespace nddr::cuda::launch {

template <class S, class D>
void pad_copy(cudaStream_t stream, const S* src, D* dst, std::int64_t planes, std::int64_t h,
              std::int64_t w, std::int64_t pt, std::int64_t pl, std::int64_t ph, std::int64_t pw) {
  const std::int64_t n = planes * ph * pw;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::pad_copy<S, D>)
  (src, dst, planes, h, w, pt, pl, ph, pw);
  check_launch("pad_copy");
}

template <class S, class D>
void crop_add(cudaStream_t stream, const S* src, D* dst, std::int64_t planes, std::int64_t h,
              std::int64_t w, std::int64_t pt, std::int64_t pl, std::int64_t ph, std::int64_t pw) {
  const std::int64_t n = planes * h * w;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::crop_add<S, D>)
  (src, dst, planes, h, w, pt, pl, ph, pw);
  check_launch("crop_add");
}

template <class S, class D>
void convert(cudaStream_t stream, const S* src, D* dst, std::int64_t n) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::convert<S, D>)
  (src, dst, n);
  check_launch("convert");
}

template <class S, class D>
void convert_add(cudaStream_t stream, const S* src, D* dst, std::int64_t n) {
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::convert_add<S, D>)
  (src, dst, n);
  check_launch("convert_add");
}

template <class S, class D>
void convert_bias(cudaStream_t stream, const S* src, const D* b, D* dst, std::int64_t items,
                  std::int64_t channels, std::int64_t plane) {
  const std::int64_t n = items * channels * plane;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::convert_bias<S, D>)
  (src, b, dst, n, channels, plane);
  check_launch("convert_bias");
}

template <class T>
void bias_add(cudaStream_t stream, const T* b, T* y, std::int64_t items, std::int64_t channels,
              std::int64_t plane) {
  const std::int64_t n = items * channels * plane;
  if (n == 0) return;
  NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::bias_add<T>)
  (b, y, n, channels, plane);
  check_launch("bias_add");
}

template <class T>
void channel_sum(cudaStream_t stream, const T* x, T* out, std::int64_t items, std::int64_t channels,
                 std::int64_t plane) {
  if (channels == 0) return;
  NDDR_LAUNCH(static_cast<unsigned>(channels), kernels::kReduceBlock, 0, stream,
              kernels::channel_sum<T>)
  (x, out, items, channels, plane);
  check_launch("channel_sum");
}

template <class T>
void batch_norm_stats(cudaStream_t stream, const T* x, const T* gamma, T* rm, T* rv, T* save_mean,
                      T* save_inv_std, T* scale, double* partial, std::int64_t splits,
                      std::int64_t items, std::int64_t channels, std::int64_t plane, double eps,
                      double momentum, bool unbiased) {
  if (channels == 0) return;
  NDDR_LAUNCH(kernels::reduce_grid(splits, channels), kernels::kReduceBlock, 0, stream,
              kernels::batch_norm_partial_moments<T>)
  (x, partial, items, channels, plane);
  check_launch("batch_norm_partial_moments");
  NDDR_LAUNCH(kernels::grid_for(channels), kernels::kBlock, 0, stream,
              kernels::batch_norm_finish_moments<T>)
  (x, partial, splits, gamma, rm, rv, save_mean, save_inv_std, scale, items, channels, plane, eps,
   momentum, unbiased);
  check_launch("batch_norm_finish_moments");
}

template <class T>
void batch_norm_inference_scale(cudaStream_t stream, const T* gamma, const T* rv, T* scale,
                                std::int64_t channels, double eps) {
  if (channels == 0) return;
  NDDR_LAUNCH(kernels::grid_for(channels), kernels::kBlock, 0, stream,
              kernels::batch_norm_inference_scale<T>)
  (gamma, rv, scale, channels, eps);
  check_launch("batch_norm_inference_scale");
}

template <class T>
void batch_norm_apply(cudaStream_t stream, const T* x, const T* mean, const T* scale,
                      const T* shift, T* y, std::int64_t items, std::int64_t channels,
                      std::int64_t plane, bool relu) {
  const std::int64_t n = items * channels * plane;
  if (n == 0) return;
  if (plane >= kernels::kPlaneKernelMinPlane)
    NDDR_LAUNCH(kernels::plane_grid(items * channels, plane), kernels::kBlock, 0, stream,
                kernels::batch_norm_apply_planes<T>)
    (x, mean, scale, shift, y, items * channels, channels, plane, relu);
  else
    NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream, kernels::batch_norm_apply<T>)
    (x, mean, scale, shift, y, n, channels, plane, relu);
  check_launch("batch_norm_apply");
}

template <class T>
void batch_norm_grad_stats(cudaStream_t stream, const T* x, const T* y, const T* dy, const T* gamma,
                           const T* stat0, const T* stat1, T* dgamma, T* dbeta, T* consts,
                           double* partial, std::int64_t splits, std::int64_t items,
                           std::int64_t channels, std::int64_t plane, double eps, bool training) {
  if (channels == 0) return;
  NDDR_LAUNCH(kernels::reduce_grid(splits, channels), kernels::kReduceBlock, 0, stream,
              kernels::batch_norm_partial_grad<T>)
  (x, y, dy, stat0, partial, items, channels, plane);
  check_launch("batch_norm_partial_grad");
  NDDR_LAUNCH(kernels::grid_for(channels), kernels::kBlock, 0, stream,
              kernels::batch_norm_finish_grad<T>)
  (partial, splits, gamma, stat0, stat1, dgamma, dbeta, consts, items, channels, plane, eps,
   training);
  check_launch("batch_norm_finish_grad");
}

template <class T>
void batch_norm_backward_apply(cudaStream_t stream, const T* x, const T* y, const T* dy,
                               const T* consts, T* dx, std::int64_t items, std::int64_t channels,
                               std::int64_t plane) {
  const std::int64_t n = items * channels * plane;
  if (n == 0) return;
  if (plane >= kernels::kPlaneKernelMinPlane)
    NDDR_LAUNCH(kernels::plane_grid(items * channels, plane), kernels::kBlock, 0, stream,
                kernels::batch_norm_backward_apply_planes<T>)
    (x, y, dy, consts, dx, items * channels, channels, plane);
  else
    NDDR_LAUNCH(kernels::grid_for(n), kernels::kBlock, 0, stream,
                kernels::batch_norm_backward_apply<T>)
    (x, y, dy, consts, dx, n, channels, plane);
  check_launch("batch_norm_backward_apply");
}

template <class T>
void batch_norm_centered_sums(cudaStream_t stream, const T* x, const double* center,
                              double* partial, std::int64_t splits, double* totals,
                              std::int64_t items, std::int64_t channels, std::int64_t plane) {
  if (channels == 0) return;
  NDDR_LAUNCH(kernels::reduce_grid(splits, channels), kernels::kReduceBlock, 0, stream,
              kernels::batch_norm_partial_centered<T>)
  (x, center, partial, items, channels, plane);
  check_launch("batch_norm_partial_centered");
  NDDR_LAUNCH(kernels::grid_for(channels), kernels::kBlock, 0, stream, kernels::channel_totals)
  (partial, splits, channels, totals);
  check_launch("channel_totals");
}

template <class T>
void batch_norm_grad_sums(cudaStream_t stream, const T* x, const T* y, const T* dy, const T* mean,
                          double* partial, std::int64_t splits, double* totals, std::int64_t items,
                          std::int64_t channels, std::int64_t plane) {
  if (channels == 0) return;
  NDDR_LAUNCH(kernels::reduce_grid(splits, channels), kernels::kReduceBlock, 0, stream,
              kernels::batch_norm_partial_grad<T>)
  (x, y, dy, mean, partial, items, channels, plane);
  check_launch("batch_norm_partial_grad");
  NDDR_LAUNCH(kernels::grid_for(channels), kernels::kBlock, 0, stream, kernels::channel_totals)
  (partial, splits, channels, totals);
  check_launch("channel_totals");
}

template <class T>
void batch_norm_stats_global(cudaStream_t stream, const double* moments, std::int64_t count,
                             const T* gamma, T* rm, T* rv, T* save_mean, T* save_inv_std, T* scale,
                             std::int64_t channels, double eps, double momentum, bool unbiased) {
  if (channels == 0) return;
  NDDR_LAUNCH(kernels::grid_for(channels), kernels::kBlock, 0, stream,
              kernels::batch_norm_finish_global_moments<T>)
  (moments, count, gamma, rm, rv, save_mean, save_inv_std, scale, channels, eps, momentum,
   unbiased);
  check_launch("batch_norm_finish_global_moments");
}

template <class T>
void batch_norm_grad_consts_global(cudaStream_t stream, const double* local, const double* global,
                                   double count, const T* gamma, const T* save_mean,
                                   const T* save_inv_std, T* dgamma, T* dbeta, T* consts,
                                   std::int64_t channels) {
  if (channels == 0) return;
  NDDR_LAUNCH(kernels::grid_for(channels), kernels::kBlock, 0, stream,
              kernels::batch_norm_finish_global_grad<T>)
  (local, global, count, gamma, save_mean, save_inv_std, dgamma, dbeta, consts, channels);
  check_launch("batch_norm_finish_global_grad");
}

}  // namespace nddr::cuda::launch

/// Explicit instantiations of the conv / batch norm / linear launchers for `T` (kernels.cu).
#define NDDR_CUDA_INSTANTIATE_CONV_BN(T)                                                         \
  template void nddr::cuda::launch::pad_copy<T, T>(cudaStream_t, const T*, T*, std::int64_t,     \
                                                   std::int64_t, std::int64_t, std::int64_t,     \
                                                   std::int64_t, std::int64_t, std::int64_t);    \
  template void nddr::cuda::launch::crop_add<T, T>(cudaStream_t, const T*, T*, std::int64_t,     \
                                                   std::int64_t, std::int64_t, std::int64_t,     \
                                                   std::int64_t, std::int64_t, std::int64_t);    \
  template void nddr::cuda::launch::bias_add<T>(cudaStream_t, const T*, T*, std::int64_t,        \
                                                std::int64_t, std::int64_t);                     \
  template void nddr::cuda::launch::channel_sum<T>(cudaStream_t, const T*, T*, std::int64_t,     \
                                                   std::int64_t, std::int64_t);                  \
  template void nddr::cuda::launch::batch_norm_stats<T>(                                         \
      cudaStream_t, const T*, const T*, T*, T*, T*, T*, T*, double*, std::int64_t, std::int64_t, \
      std::int64_t, std::int64_t, double, double, bool);                                         \
  template void nddr::cuda::launch::batch_norm_inference_scale<T>(                               \
      cudaStream_t, const T*, const T*, T*, std::int64_t, double);                               \
  template void nddr::cuda::launch::batch_norm_apply<T>(cudaStream_t, const T*, const T*,        \
                                                        const T*, const T*, T*, std::int64_t,    \
                                                        std::int64_t, std::int64_t, bool);       \
  template void nddr::cuda::launch::batch_norm_grad_stats<T>(                                    \
      cudaStream_t, const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*,      \
      double*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, double, bool);            \
  template void nddr::cuda::launch::batch_norm_backward_apply<T>(                                \
      cudaStream_t, const T*, const T*, const T*, const T*, T*, std::int64_t, std::int64_t,      \
      std::int64_t);                                                                             \
  template void nddr::cuda::launch::batch_norm_centered_sums<T>(                                 \
      cudaStream_t, const T*, const double*, double*, std::int64_t, double*, std::int64_t,       \
      std::int64_t, std::int64_t);                                                               \
  template void nddr::cuda::launch::batch_norm_grad_sums<T>(                                     \
      cudaStream_t, const T*, const T*, const T*, const T*, double*, std::int64_t, double*,      \
      std::int64_t, std::int64_t, std::int64_t);                                                 \
  template void nddr::cuda::launch::batch_norm_stats_global<T>(                                  \
      cudaStream_t, const double*, std::int64_t, const T*, T*, T*, T*, T*, T*, std::int64_t,     \
      double, double, bool);                                                                     \
  template void nddr::cuda::launch::batch_norm_grad_consts_global<T>(                            \
      cudaStream_t, const double*, const double*, double, const T*, const T*, const T*, T*, T*,  \
      T*, std::int64_t);

/// The BF16 convolutions' conversions (float <-> nddr::bfloat16), instantiated once (kernels.cu).
#define NDDR_CUDA_INSTANTIATE_CONV_BF16                                                            \
  template void nddr::cuda::launch::pad_copy<float, nddr::bfloat16>(                               \
      cudaStream_t, const float*, nddr::bfloat16*, std::int64_t, std::int64_t, std::int64_t,       \
      std::int64_t, std::int64_t, std::int64_t, std::int64_t);                                     \
  template void nddr::cuda::launch::crop_add<nddr::bfloat16, float>(                               \
      cudaStream_t, const nddr::bfloat16*, float*, std::int64_t, std::int64_t, std::int64_t,       \
      std::int64_t, std::int64_t, std::int64_t, std::int64_t);                                     \
  template void nddr::cuda::launch::convert<float, nddr::bfloat16>(cudaStream_t, const float*,     \
                                                                   nddr::bfloat16*, std::int64_t); \
  template void nddr::cuda::launch::convert<nddr::bfloat16, float>(                                \
      cudaStream_t, const nddr::bfloat16*, float*, std::int64_t);                                  \
  template void nddr::cuda::launch::convert_add<nddr::bfloat16, float>(                            \
      cudaStream_t, const nddr::bfloat16*, float*, std::int64_t);                                  \
  template void nddr::cuda::launch::convert_bias<nddr::bfloat16, float>(                           \
      cudaStream_t, const nddr::bfloat16*, const float*, float*, std::int64_t, std::int64_t,       \
      std::int64_t);
