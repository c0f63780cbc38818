#pragma once
/// \file
/// CPU Winograd F(m x m, 3x3) convolution (m = 2 or 4, `ops::WinogradF2x3` / `ops::WinogradF4x3`)
/// for 3x3, stride-1 kernels, any padding and dilation
/// (a dilation d runs d x d interleaved undilated convolutions, one per output phase):
/// forward, data gradient (a Winograd convolution of dy with the flipped, transposed kernel)
/// and weight gradient (batched GEMMs of transformed output-gradient and input tiles).
///
/// Output tiles (m x m) are numbered t = (((n * d_h + ph) * d_w + pw) * tiles_h + th) * tiles_w + tw
/// and walked in blocks of `nb` tiles, each in three phases that all threads share:
///   transform the block's input tiles    V[xi] (C_in, nb)      threads split the channels
///   alpha^2 GEMMs                        M[xi] (C_out, nb) = U[xi] (C_out, C_in) V[xi]
///                                                              threads split the points xi
///   inverse-transform into the output    y (m x m per tile)    threads split the channels
/// Splitting channels and points rather than tiles keeps every GEMM as wide as the block even
/// on the 21x21 maps of VGG's conv4/conv5 (72 tiles of 4x4 in a batch of 2: one block), and
/// needs one V and M and, for the weight gradient, one dU (alpha^2, C_out, C_in) accumulator
/// instead of one per thread (no reduction). U = G w G^T is transformed once per call. All
/// buffers live in `ctx.workspace<T>()`.

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>

#include "nddr/core/context.hpp"
#include "nddr/ops/math/conv2d.hpp"
#include "nddr/ops/math/winograd.hpp"

namespace nddr {
namespace detail {

/// Sizes of one Winograd convolution pass: `in` planes read through alpha x alpha tiles at
/// offset (-pad_top, -pad_left), `out` planes written in m x m tiles (m = F::kTile). A
/// dilation d splits the output into d x d phases (outputs oh = ph + d * oh'), each an
/// undilated convolution of the input rows and columns of the same phase; tiles tile every
/// phase.
template <class F>
struct WinogradPass {
  std::int64_t batch = 0;
  std::int64_t in_c = 0, in_h = 0, in_w = 0;
  std::int64_t out_c = 0, out_h = 0, out_w = 0;
  std::int64_t pad_top = 0, pad_left = 0;
  std::int64_t dil_h = 1, dil_w = 1;

  /// Tiles per phase along each axis (the largest phase: the first).
  std::int64_t tiles_h() const { return ((out_h + dil_h - 1) / dil_h + kTile - 1) / kTile; }
  std::int64_t tiles_w() const { return ((out_w + dil_w - 1) / dil_w + kTile - 1) / kTile; }
  std::int64_t tiles() const { return batch * dil_h * dil_w * tiles_h() * tiles_w(); }

  static constexpr std::int64_t kTile = F::kTile;
};

/// A run of `count` consecutive tiles along one tile row, starting at tile `t`: item `n`,
/// first output (oh0, ow0); tile q covers outputs (oh0 + dil_h r, ow0 + dil_w (m q + s)).
struct WinogradRun {
  std::int64_t n, oh0, ow0, count, t;
};

template <class T>
using WinogradMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Rounds an element count up to 64 bytes so every carved buffer starts aligned.
template <class T>
constexpr std::int64_t winograd_aligned(std::int64_t count) {
  constexpr std::int64_t kStep = 64 / static_cast<std::int64_t>(sizeof(T));
  return (count + kStep - 1) / kStep * kStep;
}

/// Tiles per block: V and M of a block (alpha^2 (C_in + C_out) nb values) about kBytes, so they
/// stay in the shared cache between the phases, but at least kMin tiles so each GEMM amortises
/// packing its U[xi] operand. Never more than the pass has.
template <class F, class T>
std::int64_t winograd_block_tiles(const WinogradPass<F>& p) {
  constexpr std::int64_t kBytes = std::int64_t{3} << 20;
  constexpr std::int64_t kMin = 96;
  const std::int64_t per_tile =
      F::kPoints * (p.in_c + p.out_c) * static_cast<std::int64_t>(sizeof(T));
  const std::int64_t nb = std::max<std::int64_t>(kMin, kBytes / per_tile / 16 * 16);
  return std::max<std::int64_t>(1, std::min(nb, p.tiles()));
}

/// Tiles per run: consecutive tiles of one tile row, handled together so that the per-tile
/// transforms vectorise across tiles (`omp simd`) from small row buffers on the stack.
inline constexpr std::int64_t kWinogradRun = 64;

/// Calls `body(run)` for the runs of consecutive tiles (same batch item, phase and tile row,
/// at most kWinogradRun) covering tiles [t0, t0 + nb).
template <class F, class Body>
void winograd_for_runs(const WinogradPass<F>& p, std::int64_t t0, std::int64_t nb, Body&& body) {
  constexpr std::int64_t kTile = F::kTile;
  const std::int64_t th_count = p.tiles_h(), tw_count = p.tiles_w();
  for (std::int64_t t = t0; t < t0 + nb;) {
    const std::int64_t tw = t % tw_count, row = t / tw_count;
    const std::int64_t th = row % th_count, phase = row / th_count;  // (n, ph, pw)
    const std::int64_t pw = phase % p.dil_w, ph = (phase / p.dil_w) % p.dil_h;
    const std::int64_t count = std::min({tw_count - tw, t0 + nb - t, kWinogradRun});
    body(WinogradRun{phase / (p.dil_w * p.dil_h), ph + p.dil_h * kTile * th,
                     pw + p.dil_w * kTile * tw, count, t});
    t += count;
  }
}

/// dst[q] = element (r, c0 + step q) of an (h, w) plane for q in [0, width), zeros outside.
template <class T>
void winograd_load_row(const T* plane, std::int64_t h, std::int64_t w, std::int64_t r,
                       std::int64_t c0, std::int64_t step, std::int64_t width, T* dst) {
  if (r < 0 || r >= h) {
    std::fill(dst, dst + width, T(0));
    return;
  }
  // In-plane q: c0 + step q in [0, w).
  const std::int64_t lo = std::clamp<std::int64_t>(c0 >= 0 ? 0 : (-c0 + step - 1) / step, 0, width);
  const std::int64_t hi =
      std::clamp<std::int64_t>(w - c0 <= 0 ? 0 : (w - c0 + step - 1) / step, lo, width);
  std::fill(dst, dst + lo, T(0));
  const T* src = plane + r * w + c0;
  if (step == 1)
    std::copy(src + lo, src + hi, dst + lo);
  else
    for (std::int64_t q = lo; q < hi; ++q) dst[q] = src[q * step];
  std::fill(dst + hi, dst + width, T(0));
}

/// tiles[s][q] = row[kTile q + s] for s < S and q < count: a loaded row spread into the S
/// columns of its consecutive tiles, so that the per-tile transforms, vectorised across tiles,
/// read contiguous vectors instead of strided gathers.
template <std::int64_t kTile, std::int64_t S, class T>
void winograd_spread_row(const T* row, std::int64_t count, T (*tiles)[kWinogradRun]) {
  for (std::int64_t s = 0; s < S; ++s)
    for (std::int64_t q = 0; q < count; ++q) tiles[s][q] = row[kTile * q + s];
}

/// V[xi][c][t - t0] for tiles [t0, t0 + nb) and channels c in [c0, c1) of the input `x`
/// (batch, in_c, in_h, in_w).
template <class F, class T>
void winograd_transform_inputs(const T* x, const WinogradPass<F>& p, std::int64_t t0,
                               std::int64_t nb, std::int64_t c0, std::int64_t c1, T* v) {
  constexpr std::int64_t kTile = F::kTile, kAlpha = F::kAlpha;
  constexpr std::int64_t kRowLength = kTile * kWinogradRun + 2;
  const std::int64_t stride = p.in_c * nb;  // between the alpha^2 matrices
  const std::int64_t plane = p.in_h * p.in_w;
  alignas(64) T rows[kAlpha][kRowLength];              // the run's alpha input rows
  alignas(64) T cols[kAlpha][kRowLength];              // B^T down every column of them
  alignas(64) T tiles[kAlpha][kAlpha][kWinogradRun];  // cols spread: (i, s, tile)
  winograd_for_runs(p, t0, nb, [&](const WinogradRun& run) {
    const std::int64_t ih0 = run.oh0 - p.pad_top, iw0 = run.ow0 - p.pad_left;
    const std::int64_t width = kTile * run.count + 2;
    for (std::int64_t c = c0; c < c1; ++c) {
      const T* src = x + (run.n * p.in_c + c) * plane;
      for (std::int64_t r = 0; r < kAlpha; ++r)
        winograd_load_row(src, p.in_h, p.in_w, ih0 + p.dil_h * r, iw0, p.dil_w, width, rows[r]);
      // V = (B^T d) B: the column pass once per input column of the run (neighbouring tiles
      // share alpha - m of them), then the row pass per tile.
      const T* rp = &rows[0][0];
      T* cp = &cols[0][0];
#pragma omp simd
      for (std::int64_t col = 0; col < width; ++col)
        ops::winograd_input_column<F>(rp + col, kRowLength, cp + col, kRowLength);
      for (std::int64_t i = 0; i < kAlpha; ++i)
        winograd_spread_row<kTile, kAlpha>(cols[i], run.count, tiles[i]);
      T* vc = v + c * nb + (run.t - t0);
      const T* tp = &tiles[0][0][0];
#pragma omp simd
      for (std::int64_t q = 0; q < run.count; ++q)
        ops::winograd_input_rows<F>(tp + q, kAlpha * kWinogradRun, kWinogradRun, vc + q, stride);
    }
  });
}

/// Inverse-transforms M[xi][k][t - t0] (tiles [t0, t0 + nb), channels k in [k0, k1)) into out
/// (batch, out_c, out_h, out_w): assigned plus `bias` (null: none), or added when `accumulate`.
template <class F, class T>
void winograd_store_outputs(const T* m, const WinogradPass<F>& p, std::int64_t t0,
                            std::int64_t nb, std::int64_t k0, std::int64_t k1, const T* bias,
                            bool accumulate, T* out) {
  constexpr std::int64_t kTile = F::kTile;
  const std::int64_t stride = p.out_c * nb;
  alignas(64) T tiles[kTile][kTile][kWinogradRun];  // (r, s, tile)
  winograd_for_runs(p, t0, nb, [&](const WinogradRun& run) {
    // Output rows / columns of the run inside the plane (a phase may end a tile early).
    const std::int64_t height =
        std::clamp<std::int64_t>((p.out_h - run.oh0 + p.dil_h - 1) / p.dil_h, 0, kTile);
    const std::int64_t width =
        std::clamp<std::int64_t>((p.out_w - run.ow0 + p.dil_w - 1) / p.dil_w, 0, kTile * run.count);
    const std::int64_t step = p.dil_w;
    for (std::int64_t k = k0; k < k1; ++k) {
      const T* mk = m + k * nb + (run.t - t0);
#pragma omp simd
      for (std::int64_t q = 0; q < run.count; ++q)
        ops::winograd_output_transform<F>(mk + q, stride, &tiles[0][0][q], kTile * kWinogradRun,
                                          kWinogradRun);
      const T b = bias ? bias[k] : T(0);
      for (std::int64_t r = 0; r < height; ++r) {
        T* dst =
            out + ((run.n * p.out_c + k) * p.out_h + run.oh0 + p.dil_h * r) * p.out_w + run.ow0;
        // Output column kTile q + s of the run is tile q's column s.
        for (std::int64_t s = 0; s < std::min(kTile, width); ++s) {
          const std::int64_t count = (width - s + kTile - 1) / kTile;
          T* d = dst + s * step;
          const T* t = tiles[r][s];
          if (accumulate)
            for (std::int64_t q = 0; q < count; ++q) d[q * kTile * step] += t[q];
          else
            for (std::int64_t q = 0; q < count; ++q) d[q * kTile * step] = t[q] + b;
        }
      }
    }
  });
}

/// Z[xi][k][t - t0] = A dY A^T of the output-gradient tiles [t0, t0 + nb), channels k in
/// [k0, k1), of dy (batch, out_c, out_h, out_w).
template <class F, class T>
void winograd_transform_output_grads(const T* dy, const WinogradPass<F>& p, std::int64_t t0,
                                     std::int64_t nb, std::int64_t k0, std::int64_t k1, T* z) {
  constexpr std::int64_t kTile = F::kTile;
  const std::int64_t stride = p.out_c * nb;
  const std::int64_t plane = p.out_h * p.out_w;
  alignas(64) T row[kTile * kWinogradRun];
  alignas(64) T tiles[kTile][kTile][kWinogradRun];  // (r, s, tile)
  winograd_for_runs(p, t0, nb, [&](const WinogradRun& run) {
    for (std::int64_t k = k0; k < k1; ++k) {
      const T* src = dy + (run.n * p.out_c + k) * plane;
      for (std::int64_t r = 0; r < kTile; ++r) {
        winograd_load_row(src, p.out_h, p.out_w, run.oh0 + p.dil_h * r, run.ow0, p.dil_w,
                          kTile * run.count, row);
        winograd_spread_row<kTile, kTile>(row, run.count, tiles[r]);
      }
      T* zk = z + k * nb + (run.t - t0);
#pragma omp simd
      for (std::int64_t q = 0; q < run.count; ++q)
        ops::winograd_output_grad_transform<F>(&tiles[0][0][q], kTile * kWinogradRun,
                                               kWinogradRun, zk + q, stride);
    }
  });
}

/// U[xi][o][i] = G g G^T of each kernel, with g = w[o][i] (w is (out, in, 3, 3)) or, with
/// `flip_transpose`, g = w[i][o] rotated by 180 degrees (the data gradient's kernel).
template <class F, class T>
void winograd_transform_weights(const Context<Cpu>& ctx, const T* w, std::int64_t out,
                                std::int64_t in, bool flip_transpose, T* u) {
  const std::int64_t stride = out * in;
  // One row of U per task, vectorised across input channels (contiguous stores) through
  // kernels regrouped tap-major, 256 at a time (a stride-9 gather does not vectorise; the
  // flipped kernels of a row are a whole row apart in w).
  parallel_for(ctx, out, [&](std::int64_t o) {
    T* dst = u + o * in;
    constexpr std::int64_t kChunk = 256;
    alignas(64) T taps[9][kChunk];
    for (std::int64_t i0 = 0; i0 < in; i0 += kChunk) {
      const std::int64_t count = std::min(kChunk, in - i0);
      if (flip_transpose) {
        for (std::int64_t i = 0; i < count; ++i) {
          const T* src = w + ((i0 + i) * out + o) * 9;
          for (int e = 0; e < 9; ++e) taps[e][i] = src[8 - e];
        }
      } else {
        const T* src = w + (o * in + i0) * 9;
        for (std::int64_t i = 0; i < count; ++i)
          for (int e = 0; e < 9; ++e) taps[e][i] = src[i * 9 + e];
      }
#pragma omp simd
      for (std::int64_t i = 0; i < count; ++i)
        ops::winograd_weight_transform<F>(&taps[0][i], 3 * kChunk, kChunk, dst + i0 + i, stride);
    }
  });
}

/// out (batch, out_c, out_h, out_w) = [out +] conv(in, U) [+ bias], U from
/// `winograd_transform_weights`; `accumulate` adds instead of assigning. `scratch` holds
/// alpha^2 (in_c + out_c) nb values.
template <class F, class T>
void winograd_convolve(Context<Cpu>& ctx, const T* in, const WinogradPass<F>& p, const T* u,
                       const T* bias, bool accumulate, T* out, T* scratch, std::int64_t nb) {
  using Map = Eigen::Map<WinogradMatrix<T>>;
  using ConstMap = Eigen::Map<const WinogradMatrix<T>>;
  const std::int64_t tiles = p.tiles();
  T* v = scratch;                       // (alpha^2, C_in, nb)
  T* m = v + F::kPoints * p.in_c * nb;  // (alpha^2, C_out, nb)
  for (std::int64_t t0 = 0; t0 < tiles; t0 += nb) {
    const std::int64_t cols = std::min(nb, tiles - t0);
    parallel_ranges(ctx, p.in_c, [&](std::int64_t c0, std::int64_t c1) {
      winograd_transform_inputs(in, p, t0, cols, c0, c1, v);
    });
    parallel_ranges(ctx, F::kPoints, [&](std::int64_t x0, std::int64_t x1) {
      for (std::int64_t xi = x0; xi < x1; ++xi)
        Map(m + xi * p.out_c * cols, p.out_c, cols).noalias() =
            ConstMap(u + xi * p.out_c * p.in_c, p.out_c, p.in_c) *
            ConstMap(v + xi * p.in_c * cols, p.in_c, cols);
    });
    parallel_ranges(ctx, p.out_c, [&](std::int64_t k0, std::int64_t k1) {
      winograd_store_outputs(m, p, t0, cols, k0, k1, bias, accumulate, out);
    });
  }
}

/// The pass of a forward convolution (and of its weight gradient) with geometry `g`.
template <class F>
WinogradPass<F> winograd_forward_pass(const Conv2dGeometry& g, std::int64_t batch) {
  return {batch,   g.in_c,  g.in_h,     g.in_w,     g.out_c,      g.out_h,
          g.out_w, g.pad_top, g.pad_left, g.dilation_h, g.dilation_w};
}

/// Element-wise products of the transformed domain for one batch item of geometry `g` through
/// variant F (tiles of every phase times alpha^2): what the variant's GEMMs cost, up to the
/// channel counts both share.
template <class F>
std::int64_t winograd_products(const Conv2dGeometry& g) {
  return winograd_forward_pass<F>(g, 1).tiles() * F::kPoints;
}

/// A forward convolution `in` -> `out` through the pass `p` with the kernel `w` ((p.out_c,
/// p.in_c, 3, 3), or with `flip_transpose` (p.in_c, p.out_c, 3, 3) used rotated and swapped).
template <class F, class T>
void winograd_run(Context<Cpu>& ctx, const WinogradPass<F>& p, const T* in, const T* w,
                  bool flip_transpose, const T* bias, bool accumulate, T* out) {
  if (p.tiles() == 0) return;
  const std::int64_t nb = winograd_block_tiles<F, T>(p);
  const std::int64_t u_size = winograd_aligned<T>(F::kPoints * p.out_c * p.in_c);
  const std::int64_t block = F::kPoints * (p.in_c + p.out_c) * nb;
  T* u = ctx.workspace<T>(static_cast<std::size_t>(u_size + block));
  winograd_transform_weights<F>(ctx, w, p.out_c, p.in_c, flip_transpose, u);
  winograd_convolve(ctx, in, p, u, bias, accumulate, out, u + u_size, nb);
}

}  // namespace detail

namespace ops {

/// Whether the Winograd paths can compute this convolution: a 3x3 kernel and stride 1 (any
/// dilation, through its phases; any padding, TF 'SAME' included).
inline bool conv2d_winograd_applicable(const Conv2dGeometry& g) {
  return g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 1 && g.stride_w == 1;
}

/// y (batch, C_out, OH, OW) = conv(x, w) [+ bias]; x (batch, C_in, H, W), w (C_out, C_in, 3,
/// 3), `bias` null or C_out values, through Winograd variant F (`WinogradF2x3` or
/// `WinogradF4x3`). Requires `conv2d_winograd_applicable(g)`.
template <class F, class T>
void conv2d_winograd_forward(Context<Cpu>& ctx, const T* x, const T* w, const T* bias, T* y,
                             const Conv2dGeometry& g, std::int64_t batch) {
  nddr::detail::winograd_run(ctx, nddr::detail::winograd_forward_pass<F>(g, batch), x, w, false,
                             bias, false, y);
}

/// dx (batch, C_in, H, W) += the data gradient of dy (batch, C_out, OH, OW) through w
/// (C_out, C_in, 3, 3): a Winograd convolution of dy, offset by 2 dilation - pad, with the kernel
/// rotated by 180 degrees and its channel axes swapped. Requires `conv2d_winograd_applicable(g)`.
template <class F, class T>
void conv2d_winograd_backward_data(Context<Cpu>& ctx, const T* w, const T* dy, T* dx,
                                   const Conv2dGeometry& g, std::int64_t batch) {
  // The flipped kernel spans 2 d + 1 inputs, so its offset is 2 d - pad.
  const nddr::detail::WinogradPass<F> p{batch,
                                        g.out_c,
                                        g.out_h,
                                        g.out_w,
                                        g.in_c,
                                        g.in_h,
                                        g.in_w,
                                        2 * g.dilation_h - g.pad_top,
                                        2 * g.dilation_w - g.pad_left,
                                        g.dilation_h,
                                        g.dilation_w};
  nddr::detail::winograd_run(ctx, p, dy, w, true, static_cast<const T*>(nullptr), true, dx);
}

/// dw (C_out, C_in, 3, 3) = sum over the batch of the weight gradient, assigned; x (batch,
/// C_in, H, W), dy (batch, C_out, OH, OW). Requires `conv2d_winograd_applicable(g)`.
template <class F, class T>
void conv2d_winograd_backward_weights(Context<Cpu>& ctx, const T* x, const T* dy, T* dw,
                                      const Conv2dGeometry& g, std::int64_t batch) {
  using nddr::detail::WinogradMatrix;
  constexpr int kPoints = F::kPoints;
  const auto p = nddr::detail::winograd_forward_pass<F>(g, batch);
  const std::int64_t tiles = p.tiles();
  const std::int64_t weights = g.out_c * g.in_c;
  if (tiles == 0) {
    std::fill(dw, dw + weights * 9, T(0));
    return;
  }
  using Map = Eigen::Map<WinogradMatrix<T>>;
  using ConstMap = Eigen::Map<const WinogradMatrix<T>>;
  const std::int64_t nb = nddr::detail::winograd_block_tiles<F, T>(p);
  const std::int64_t du_size = nddr::detail::winograd_aligned<T>(kPoints * weights);
  T* du = ctx.workspace<T>(static_cast<std::size_t>(du_size + kPoints * (g.in_c + g.out_c) * nb));
  T* v = du + du_size;               // (alpha^2, C_in, nb); du: (alpha^2, C_out, C_in)
  T* z = v + kPoints * g.in_c * nb;  // (alpha^2, C_out, nb)
  for (std::int64_t t0 = 0; t0 < tiles; t0 += nb) {
    const std::int64_t cols = std::min(nb, tiles - t0);
    // Input and output-gradient channels in one split: [0, in_c) inputs, then outputs.
    nddr::detail::parallel_ranges(ctx, g.in_c + g.out_c, [&](std::int64_t b, std::int64_t e) {
      if (b < g.in_c)
        nddr::detail::winograd_transform_inputs(x, p, t0, cols, b, std::min(e, g.in_c), v);
      if (e > g.in_c)
        nddr::detail::winograd_transform_output_grads(dy, p, t0, cols,
                                                      std::max(b, g.in_c) - g.in_c, e - g.in_c, z);
    });
    nddr::detail::parallel_ranges(ctx, kPoints, [&](std::int64_t x0, std::int64_t x1) {
      for (std::int64_t xi = x0; xi < x1; ++xi) {
        const ConstMap zm(z + xi * g.out_c * cols, g.out_c, cols);
        const ConstMap vm(v + xi * g.in_c * cols, g.in_c, cols);
        Map dum(du + xi * weights, g.out_c, g.in_c);
        if (t0 == 0)
          dum.noalias() = zm * vm.transpose();
        else
          dum.noalias() += zm * vm.transpose();
      }
    });
  }
  // dw[k][c] = G^T dU[:, k, c] G, one row k per task, vectorised across c through a tap-major
  // buffer.
  nddr::detail::parallel_for(ctx, g.out_c, [&](std::int64_t k) {
    const T* du_k = du + k * g.in_c;
    constexpr std::int64_t kChunk = 256;
    alignas(64) T taps[9][kChunk];
    for (std::int64_t c0 = 0; c0 < g.in_c; c0 += kChunk) {
      const std::int64_t count = std::min(kChunk, g.in_c - c0);
#pragma omp simd
      for (std::int64_t c = 0; c < count; ++c)
        winograd_weight_grad_transform<F>(du_k + c0 + c, weights, &taps[0][c], 3 * kChunk, kChunk);
      T* dst = dw + (k * g.in_c + c0) * 9;
      for (std::int64_t c = 0; c < count; ++c)
        for (int e = 0; e < 9; ++e) dst[c * 9 + e] = taps[e][c];
    }
  });
}

}  // namespace ops
}  // namespace nddr
