#pragma once
/// \file
/// CPU max, average and global average pooling (front door: nddr/ops/pool.hpp; plain loops: a
/// window is a few cells, so there is no GEMM to hand to Eigen). Loops run in parallel over the N *
/// C planes, so backward scatters never race. The forwards handle a whole output row at a time over
/// the columns whose window lies inside the input (vectorising loops without bounds checks: max
/// reduces the window rows, then the columns; average sums cell by cell in the per-pixel
/// body's order) and use the per-pixel bodies only for the clipped edge columns.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/pool.hpp"

namespace nddr {
namespace detail {

/// Calls `body(std::integral_constant<int, S>{})` with S the column stride when it is 1 or 2
/// (the pools of the networks), else 0 for a stride read at run time, so that the sweeps over
/// an output row get a compile-time stride to vectorise with.
template <class F>
void pool2d_with_stride(std::int64_t stride_w, F&& body) {
  if (stride_w == 1)
    body(std::integral_constant<int, 1>{});
  else if (stride_w == 2)
    body(std::integral_constant<int, 2>{});
  else
    body(std::integral_constant<int, 0>{});
}

/// Output row `oh` of max pooling one plane into `out` (and `arg` when kArg). For the interior
/// columns (window inside the input) the window rows are reduced first, column by column over
/// contiguous input, into each column's maximum and its plane index; then the kernel_w
/// columns of each window, with `max_pool_takes_any_order` so that ties and NaNs resolve as in
/// `max_pool_element`'s row-major scan, which does the few clipped edge columns. Both stages
/// vectorise. The column maxima live on the stack, a chunk of at most kSpan input columns at
/// a time.
template <int kStride, bool kArg, class T, class I>
void max_pool2d_row(const T* plane, const Pool2dGeometry& g, const ops::PoolInterior& interior,
                    std::int64_t oh, T* out, I* arg) {
  constexpr std::int64_t kSpan = 256;
  auto edge = [&](std::int64_t ow) {
    std::int64_t idx = 0;
    out[ow] = ops::max_pool_element(plane, g, oh, ow, idx);
    if constexpr (kArg) arg[ow] = static_cast<I>(idx);
  };
  const std::int64_t sw = kStride > 0 ? kStride : g.stride_w;
  // Output columns per chunk; none for a kernel wider than a chunk (all done as edges).
  const std::int64_t per = g.kernel_w <= kSpan ? (kSpan - g.kernel_w) / sw + 1 : 0;
  const std::int64_t lo = per > 0 ? interior.lo : g.out_w;
  for (std::int64_t ow = 0; ow < lo; ++ow) edge(ow);
  for (std::int64_t ow = std::max(lo, interior.hi); ow < g.out_w; ++ow) edge(ow);
  const ops::PoolWindow rows = ops::pool_window(g, oh, 0);
  T col_max[kSpan];
  I col_arg[kSpan];
  I scratch_arg[kSpan];  // the running indices when the caller wants none
  for (std::int64_t j0 = lo; j0 < interior.hi; j0 += per) {
    const std::int64_t m = std::min(per, interior.hi - j0);  // outputs of this chunk
    const std::int64_t span = (m - 1) * sw + g.kernel_w;     // input columns they read
    const std::int64_t c0 = j0 * sw - g.pad_left;
    {
      const T* src = plane + rows.h0 * g.in_w + c0;
      const I base = static_cast<I>(rows.h0 * g.in_w + c0);
      for (std::int64_t c = 0; c < span; ++c) {
        col_max[c] = src[c];
        col_arg[c] = base + static_cast<I>(c);
      }
    }
    // Later rows replace a column's maximum only when strictly better: the first one stays.
    for (std::int64_t h = rows.h0 + 1; h < rows.h1; ++h) {
      const T* src = plane + h * g.in_w + c0;
      const I base = static_cast<I>(h * g.in_w + c0);
      for (std::int64_t c = 0; c < span; ++c) {
        const T v = src[c];
        const T best = col_max[c];
        const bool take = ops::max_pool_takes(v, best);
        col_max[c] = take ? v : best;
        col_arg[c] = take ? base + static_cast<I>(c) : col_arg[c];
      }
    }
    T* o = out + j0;
    I* a = kArg ? arg + j0 : scratch_arg;
    for (std::int64_t j = 0; j < m; ++j) {
      o[j] = col_max[j * sw];
      a[j] = col_arg[j * sw];
    }
    for (std::int64_t dw = 1; dw < g.kernel_w; ++dw)
      for (std::int64_t j = 0; j < m; ++j) {
        const T v = col_max[j * sw + dw];
        const I i = col_arg[j * sw + dw];
        const T best = o[j];
        const I best_i = a[j];
        const bool take = ops::max_pool_takes_any_order(v, i, best, best_i);
        o[j] = take ? v : best;
        a[j] = take ? i : best_i;
      }
  }
}

/// Output row `oh` of average pooling one plane: interior columns summed one window cell at a
/// time over the row, in the row-major order of `avg_pool_element` (so the sums are the same to
/// the bit), which does the clipped edge columns.
template <int kStride, class T>
void avg_pool2d_row(const T* plane, const Pool2dGeometry& g, const ops::PoolInterior& interior,
                    std::int64_t oh, bool include_pad, T* out) {
  for (std::int64_t ow = 0; ow < interior.lo; ++ow)
    out[ow] = ops::avg_pool_element(plane, g, oh, ow, include_pad);
  for (std::int64_t ow = interior.hi; ow < g.out_w; ++ow)
    out[ow] = ops::avg_pool_element(plane, g, oh, ow, include_pad);
  const std::int64_t n = interior.hi - interior.lo;
  if (n == 0) return;
  const std::int64_t sw = kStride > 0 ? kStride : g.stride_w;
  const ops::PoolWindow rows = ops::pool_window(g, oh, 0);
  const std::int64_t c0 = interior.lo * sw - g.pad_left;
  T* o = out + interior.lo;
  for (std::int64_t j = 0; j < n; ++j) o[j] = T(0);
  for (std::int64_t h = rows.h0; h < rows.h1; ++h)
    for (std::int64_t dw = 0; dw < g.kernel_w; ++dw) {
      const T* src = plane + h * g.in_w + c0 + dw;
      for (std::int64_t j = 0; j < n; ++j) o[j] += src[j * sw];
    }
  // Every interior column of the row has the same divisor.
  const T divisor = static_cast<T>(ops::avg_pool_divisor(g, oh, interior.lo, include_pad));
  for (std::int64_t j = 0; j < n; ++j) o[j] = o[j] / divisor;
}

template <class I, class T>
void max_pool2d_forward_impl(Context<Cpu>& ctx, const Pool2dGeometry& g, TensorView<const T, Cpu> x,
                             TensorView<T, Cpu> y, I* argmax) {
  const ops::PoolInterior interior = ops::pool_interior_columns(g);
  const std::int64_t in_plane = g.in_h * g.in_w;
  const std::int64_t out_plane = g.out_h * g.out_w;
  const T* xp = x.data();
  T* yp = y.data();
  pool2d_with_stride(g.stride_w, [&](auto stride) {
    constexpr int kStride = decltype(stride)::value;
    nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
      const T* plane = xp + p * in_plane;
      for (std::int64_t oh = 0; oh < g.out_h; ++oh) {
        T* out = yp + p * out_plane + oh * g.out_w;
        if (argmax)
          max_pool2d_row<kStride, true>(plane, g, interior, oh, out,
                                        argmax + p * out_plane + oh * g.out_w);
        else
          max_pool2d_row<kStride, false, T, I>(plane, g, interior, oh, out, nullptr);
      }
    });
  });
}

}  // namespace detail

namespace ops::backend {

/// `g` is the geometry the front door computed while validating.
template <>
struct Pool<Cpu> {
  /// `argmax` (nullable, shape of y) receives the plane index of each window's first maximum.
  template <class T, class I>
  static void max_pool2d_forward(Context<Cpu>& ctx, const Pool2dGeometry& g,
                                 TensorView<const T, Cpu> x, TensorView<T, Cpu> y, I* argmax) {
    nddr::detail::max_pool2d_forward_impl(ctx, g, x, y, argmax);
  }

  template <class T, class I>
  static void max_pool2d_backward(Context<Cpu>& ctx, TensorView<const I, Cpu> argmax,
                                  TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx,
                                  ArgmaxCheck check_argmax) {
    const char* op = "nddr::ops::max_pool2d_backward";
    const std::int64_t in_plane = dx.shape().h() * dx.shape().w();
    const std::int64_t out_plane = dy.shape().h() * dy.shape().w();
    const I* ap = argmax.data();
    const T* dyp = dy.data();
    T* dxp = dx.data();
    if (check_argmax == ArgmaxCheck::kValidate)
      for (std::int64_t i = 0; i < argmax.numel(); ++i)
        check<ValueError>(ap[i] >= 0 && ap[i] < in_plane, op, ": argmax ", ap[i], " at ", i,
                          " is outside a plane of ", in_plane, " cells");
    nddr::detail::parallel_for(ctx, dy.shape().n() * dy.shape().c(), [=](std::int64_t p) {
      T* plane = dxp + p * in_plane;
      for (std::int64_t o = 0; o < out_plane; ++o)
        plane[ap[p * out_plane + o]] += dyp[p * out_plane + o];
    });
  }

  template <class T>
  static void max_pool2d_backward(Context<Cpu>& ctx, const Pool2dGeometry& g,
                                  TensorView<const T, Cpu> x, TensorView<const T, Cpu> dy,
                                  TensorView<T, Cpu> dx) {
    const std::int64_t in_plane = g.in_h * g.in_w;
    const std::int64_t out_plane = g.out_h * g.out_w;
    const T* xp = x.data();
    const T* dyp = dy.data();
    T* dxp = dx.data();
    nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
      const T* plane = xp + p * in_plane;
      for (std::int64_t oh = 0; oh < g.out_h; ++oh)
        for (std::int64_t ow = 0; ow < g.out_w; ++ow) {
          std::int64_t idx = 0;
          max_pool_element(plane, g, oh, ow, idx);
          dxp[p * in_plane + idx] += dyp[p * out_plane + oh * g.out_w + ow];
        }
    });
  }

  template <class T>
  static void avg_pool2d_forward(Context<Cpu>& ctx, const Pool2dGeometry& g,
                                 TensorView<const T, Cpu> x, TensorView<T, Cpu> y,
                                 const Pool2dOptions& opt) {
    const bool include_pad = opt.include_pad;
    const PoolInterior interior = pool_interior_columns(g);
    const std::int64_t in_plane = g.in_h * g.in_w;
    const std::int64_t out_plane = g.out_h * g.out_w;
    const T* xp = x.data();
    T* yp = y.data();
    nddr::detail::pool2d_with_stride(g.stride_w, [&](auto stride) {
      constexpr int kStride = decltype(stride)::value;
      nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
        const T* plane = xp + p * in_plane;
        for (std::int64_t oh = 0; oh < g.out_h; ++oh)
          nddr::detail::avg_pool2d_row<kStride>(plane, g, interior, oh, include_pad,
                                                yp + p * out_plane + oh * g.out_w);
      });
    });
  }

  template <class T>
  static void avg_pool2d_backward(Context<Cpu>& ctx, const Pool2dGeometry& g,
                                  TensorView<const T, Cpu> x, TensorView<const T, Cpu> dy,
                                  TensorView<T, Cpu> dx, const Pool2dOptions& opt) {
    const bool include_pad = opt.include_pad;
    const std::int64_t in_plane = g.in_h * g.in_w;
    const std::int64_t out_plane = g.out_h * g.out_w;
    const T* dyp = dy.data();
    T* dxp = dx.data();
    nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
      const T* grad = dyp + p * out_plane;
      for (std::int64_t oh = 0; oh < g.out_h; ++oh)
        for (std::int64_t ow = 0; ow < g.out_w; ++ow)
          avg_pool_backward_element(grad[oh * g.out_w + ow], g, oh, ow, include_pad,
                                    dxp + p * in_plane);
    });
  }

  template <class T>
  static void global_avg_pool_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                                      TensorView<T, Cpu> y) {
    const std::int64_t cells = x.shape().h() * x.shape().w();
    const T* xp = x.data();
    T* yp = y.data();
    nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
      const T* plane = xp + p * cells;
      T sum = T(0);
      for (std::int64_t i = 0; i < cells; ++i) sum += plane[i];
      yp[p] = sum / static_cast<T>(cells);
    });
  }

  template <class T>
  static void global_avg_pool_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                                       TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx) {
    const std::int64_t cells = x.shape().h() * x.shape().w();
    const T* dyp = dy.data();
    T* dxp = dx.data();
    nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
      const T share = dyp[p] / static_cast<T>(cells);
      T* plane = dxp + p * cells;
      for (std::int64_t i = 0; i < cells; ++i) plane[i] += share;
    });
  }
};

}  // namespace ops::backend
}  // namespace nddr
