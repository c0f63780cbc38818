#pragma once
/// \file
/// Winograd F(m x m, 3x3) tile transforms (Lavin & Gray 2016) for m = 2 and m = 4, shared by
/// every backend.
///
/// A 3x3, stride-1, undilated convolution of an alpha x alpha input tile d (alpha = m + 2) with
/// a 3x3 kernel g gives an m x m output tile
///     Y = A^T [ (G g G^T) . (B^T d B) ] A          (. = element-wise, alpha^2 products)
/// instead of 9 m^2 products. Summed over input channels, the element-wise products become
/// alpha^2 independent GEMMs in the transformed domain: M[xi] (C_out, tiles) = U[xi] (C_out,
/// C_in) V[xi] (C_in, tiles). The weight gradient is the adjoint in g:
///     dg = G^T [ (A dY A^T) . V ] G,
/// so it needs the output-gradient transform A dY A^T and the adjoint weight transform.
///
/// F(2x2, 3x3), interpolation points 0, 1, -1, infinity (16 products per 4 outputs):
///     B^T = [1  0 -1  0]    G = [ 1    0    0 ]    A^T = [1 1  1  0]
///           [0  1  1  0]        [1/2  1/2  1/2]          [0 1 -1 -1]
///           [0 -1  1  0]        [1/2 -1/2  1/2]
///           [0  1  0 -1]        [ 0    0    1 ]
///
/// F(4x4, 3x3), points 0, 1, -1, 2, -2, infinity (36 products per 16 outputs, 2.25 per output
/// instead of 4; the larger constants cost about one decimal digit of float accuracy):
///     B^T = [4  0 -5  0 1 0]    G = [ 1/4    0     0 ]    A^T = [1 1  1 1  1 0]
///           [0 -4 -4  1 1 0]        [-1/6 -1/6  -1/6 ]          [0 1 -1 2 -2 0]
///           [0  4 -4 -1 1 0]        [-1/6  1/6  -1/6 ]          [0 1  1 4  4 0]
///           [0 -2 -1  2 1 0]        [1/24 1/12   1/6 ]          [0 1 -1 8 -8 1]
///           [0  2 -1 -2 1 0]        [1/24 -1/12  1/6 ]
///           [0  4  0 -5 0 1]        [  0    0     1  ]
///
/// Each variant gives the five one-dimensional transforms; the 2-D ones apply them along the
/// columns and then the rows (every matrix is separable), written out without multiplications
/// by 0 or 1.

#include <cstdint>

#include "nddr/core/macros.hpp"

namespace nddr::ops {

/// F(2x2, 3x3): 2x2 output tiles from 4x4 input tiles.
struct WinogradF2x3 {
  static constexpr int kTile = 2;   ///< m: output tile edge
  static constexpr int kAlpha = 4;  ///< m + 2: transformed tile edge
  static constexpr int kPoints = kAlpha * kAlpha;

  /// u = G g
  template <class T>
  NDDR_HOST_DEVICE static void weight(const T* g, T* u) {
    const T half = T(0.5);
    u[0] = g[0];
    u[1] = half * (g[0] + g[1] + g[2]);
    u[2] = half * (g[0] - g[1] + g[2]);
    u[3] = g[2];
  }
  /// dg = G^T du
  template <class T>
  NDDR_HOST_DEVICE static void weight_grad(const T* du, T* dg) {
    const T half = T(0.5);
    dg[0] = du[0] + half * (du[1] + du[2]);
    dg[1] = half * (du[1] - du[2]);
    dg[2] = half * (du[1] + du[2]) + du[3];
  }
  /// v = B^T d
  template <class T>
  NDDR_HOST_DEVICE static void input(const T* d, T* v) {
    v[0] = d[0] - d[2];
    v[1] = d[1] + d[2];
    v[2] = d[2] - d[1];
    v[3] = d[1] - d[3];
  }
  /// y = A^T m
  template <class T>
  NDDR_HOST_DEVICE static void output(const T* m, T* y) {
    y[0] = m[0] + m[1] + m[2];
    y[1] = m[1] - m[2] - m[3];
  }
  /// z = A dy
  template <class T>
  NDDR_HOST_DEVICE static void output_grad(const T* dy, T* z) {
    z[0] = dy[0];
    z[1] = dy[0] + dy[1];
    z[2] = dy[0] - dy[1];
    z[3] = -dy[1];
  }
};

/// F(4x4, 3x3): 4x4 output tiles from 6x6 input tiles.
struct WinogradF4x3 {
  static constexpr int kTile = 4;
  static constexpr int kAlpha = 6;
  static constexpr int kPoints = kAlpha * kAlpha;

  template <class T>
  NDDR_HOST_DEVICE static void weight(const T* g, T* u) {
    const T a = T(-1) / T(6) * (g[0] + g[2]), b = g[1] / T(6);
    const T c = g[0] / T(24) + g[2] / T(6), e = g[1] / T(12);
    u[0] = g[0] / T(4);
    u[1] = a - b;
    u[2] = a + b;
    u[3] = c + e;
    u[4] = c - e;
    u[5] = g[2];
  }
  template <class T>
  NDDR_HOST_DEVICE static void weight_grad(const T* du, T* dg) {
    const T s12 = du[1] + du[2], s34 = du[3] + du[4];
    dg[0] = du[0] / T(4) - s12 / T(6) + s34 / T(24);
    dg[1] = (du[2] - du[1]) / T(6) + (du[3] - du[4]) / T(12);
    dg[2] = (s34 - s12) / T(6) + du[5];
  }
  template <class T>
  NDDR_HOST_DEVICE static void input(const T* d, T* v) {
    const T t1 = d[4] - T(4) * d[2], t2 = d[3] - T(4) * d[1];
    const T t3 = d[4] - d[2], t4 = T(2) * (d[3] - d[1]);
    v[0] = T(4) * d[0] - T(5) * d[2] + d[4];
    v[1] = t1 + t2;
    v[2] = t1 - t2;
    v[3] = t3 + t4;
    v[4] = t3 - t4;
    v[5] = T(4) * d[1] - T(5) * d[3] + d[5];
  }
  template <class T>
  NDDR_HOST_DEVICE static void output(const T* m, T* y) {
    const T a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], e = m[3] - m[4];
    y[0] = m[0] + a + c;
    y[1] = b + T(2) * e;
    y[2] = a + T(4) * c;
    y[3] = b + T(8) * e + m[5];
  }
  template <class T>
  NDDR_HOST_DEVICE static void output_grad(const T* dy, T* z) {
    const T p = dy[0] + dy[2], q = dy[1] + dy[3];
    const T r = dy[0] + T(4) * dy[2], s = T(2) * dy[1] + T(8) * dy[3];
    z[0] = dy[0];
    z[1] = p + q;
    z[2] = p - q;
    z[3] = r + s;
    z[4] = r - s;
    z[5] = dy[3];
  }
};

/// out[i * out_stride] = (P in)[i] for the `In` values in[r * in_stride], where P is the
/// one-dimensional map `Map(in, out)` (`In` values to `Out`): one pass of a 2-D transform.
template <int In, int Out, auto Map, class T>
NDDR_HOST_DEVICE inline void winograd_pass(const T* in, std::int64_t in_stride, T* out,
                                           std::int64_t out_stride) {
  T iv[In], ov[Out];
  NDDR_UNROLL
  for (int r = 0; r < In; ++r) iv[r] = in[r * in_stride];
  Map(iv, ov);
  NDDR_UNROLL
  for (int i = 0; i < Out; ++i) out[i * out_stride] = ov[i];
}

/// out = P in P^T for the one-dimensional map P = `Map` (In -> Out values), applied down the
/// columns and then along the rows: `in` is In x In (element (r, s) at in[r * in_row + s *
/// in_col]), `out` Out x Out (element (i, j) at out[i * out_row + j * out_col]). Every
/// Winograd tile transform is one of these (the matrices are separable).
template <int In, int Out, auto Map, class T>
NDDR_HOST_DEVICE inline void winograd_separable(const T* in, std::int64_t in_row,
                                                std::int64_t in_col, T* out, std::int64_t out_row,
                                                std::int64_t out_col) {
  T t[Out][In];  // P in
  NDDR_UNROLL
  for (int s = 0; s < In; ++s) winograd_pass<In, Out, Map>(in + s * in_col, in_row, &t[0][s], In);
  NDDR_UNROLL
  for (int i = 0; i < Out; ++i)
    winograd_pass<In, Out, Map>(&t[i][0], std::int64_t{1}, out + i * out_row, out_col);
}

/// U = G g G^T: 3x3 kernel `g` (element (i, j) at g[i * row + j * col]) to the alpha^2
/// transformed weights, written to u[xi * u_stride].
template <class F, class T>
NDDR_HOST_DEVICE inline void winograd_weight_transform(const T* g, std::int64_t row,
                                                       std::int64_t col, T* u,
                                                       std::int64_t u_stride) {
  winograd_separable<3, F::kAlpha, &F::template weight<T>>(g, row, col, u, F::kAlpha * u_stride,
                                                            u_stride);
}

/// dg = G^T dU G, the adjoint of `winograd_weight_transform`: alpha^2 transformed weight
/// gradients du[xi * du_stride] to the 3x3 kernel gradient `dg` (element (i, j) at
/// dg[i * row + j * col]).
template <class F, class T>
NDDR_HOST_DEVICE inline void winograd_weight_grad_transform(const T* du, std::int64_t du_stride,
                                                            T* dg, std::int64_t row,
                                                            std::int64_t col) {
  winograd_separable<F::kAlpha, 3, &F::template weight_grad<T>>(du, F::kAlpha * du_stride,
                                                                 du_stride, dg, row, col);
}

/// V = B^T d B: alpha x alpha input tile `d` (element (r, s) at d[r * d_row + s * d_col]) to
/// the alpha^2 transformed inputs v[xi * v_stride].
template <class F, class T>
NDDR_HOST_DEVICE inline void winograd_input_transform(const T* d, std::int64_t d_row,
                                                      std::int64_t d_col, T* v,
                                                      std::int64_t v_stride) {
  winograd_separable<F::kAlpha, F::kAlpha, &F::template input<T>>(d, d_row, d_col, v,
                                                                   F::kAlpha * v_stride, v_stride);
}

/// One column pass of `winograd_input_transform`: t[i * t_stride] = (B^T d)[i] for the alpha
/// values d[r * d_stride] of one input column.
template <class F, class T>
NDDR_HOST_DEVICE inline void winograd_input_column(const T* d, std::int64_t d_stride, T* t,
                                                   std::int64_t t_stride) {
  winograd_pass<F::kAlpha, F::kAlpha, &F::template input<T>>(d, d_stride, t, t_stride);
}

/// The row passes of `winograd_input_transform`: V = t B for the column-transformed tile t
/// (element (i, s) at t[i * t_row + s * t_col]), written to v[xi * v_stride].
template <class F, class T>
NDDR_HOST_DEVICE inline void winograd_input_rows(const T* t, std::int64_t t_row,
                                                 std::int64_t t_col, T* v,
                                                 std::int64_t v_stride) {
  constexpr int kA = F::kAlpha;
  NDDR_UNROLL
  for (int i = 0; i < kA; ++i)
    winograd_input_column<F>(t + i * t_row, t_col, v + i * kA * v_stride, v_stride);
}

/// Y = A^T M A: alpha^2 transformed products m[xi * m_stride] to the m x m output tile `y`
/// (element (r, s) at y[r * y_row + s * y_col]).
template <class F, class T>
NDDR_HOST_DEVICE inline void winograd_output_transform(const T* m, std::int64_t m_stride, T* y,
                                                       std::int64_t y_row, std::int64_t y_col) {
  winograd_separable<F::kAlpha, F::kTile, &F::template output<T>>(m, F::kAlpha * m_stride,
                                                                  m_stride, y, y_row, y_col);
}

/// Z = A dY A^T, the adjoint of `winograd_output_transform`: m x m output-gradient tile `dy`
/// (element (r, s) at dy[r * dy_row + s * dy_col]) to the alpha^2 transformed gradients
/// z[xi * z_stride].
template <class F, class T>
NDDR_HOST_DEVICE inline void winograd_output_grad_transform(const T* dy, std::int64_t dy_row,
                                                            std::int64_t dy_col, T* z,
                                                            std::int64_t z_stride) {
  winograd_separable<F::kTile, F::kAlpha, &F::template output_grad<T>>(
      dy, dy_row, dy_col, z, F::kAlpha * z_stride, z_stride);
}

}  // namespace nddr::ops
