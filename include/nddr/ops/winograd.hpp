#pragma once
/// \file
/// Winograd F(2x2, 3x3) tile transforms (Lavin & Gray 2016), shared by every backend.
///
/// A 3x3, stride-1, undilated convolution of a 4x4 input tile d with a 3x3 kernel g gives a
/// 2x2 output tile
///     Y = A^T [ (G g G^T) . (B^T d B) ] A          (. = element-wise, 16 products)
/// instead of 36 products. Summed over input channels, the element-wise products become 16
/// independent GEMMs in the transformed domain: M[xi] (C_out, tiles) = U[xi] (C_out, C_in)
/// V[xi] (C_in, tiles), xi in [0, 16). The weight gradient is the adjoint in g:
///     dg = G^T [ (A dY A^T) . V ] G,
/// so it needs the output-gradient transform A dY A^T and the adjoint weight transform.
///
///     B^T = [1  0 -1  0]    G = [ 1    0    0 ]    A^T = [1 1  1  0]
///           [0  1  1  0]        [1/2  1/2  1/2]          [0 1 -1 -1]
///           [0 -1  1  0]        [1/2 -1/2  1/2]
///           [0  1  0 -1]        [ 0    0    1 ]
///
/// Every tile is row-major; the transforms are written out (no multiplications by 0 or 1).

#include <cstdint>

#include "nddr/core/macros.hpp"

namespace nddr::ops {

/// Output tile edge (m) and transformed tile edge (alpha = m + 2) of F(2x2, 3x3).
inline constexpr int kWinogradTile = 2;
inline constexpr int kWinogradAlpha = 4;
inline constexpr int kWinogradPoints = kWinogradAlpha * kWinogradAlpha;

/// U = G g G^T: 3x3 kernel `g` (row-major, element (i, j) at g[i * row + j * col]) to the 16
/// transformed weights, written to u[xi * u_stride].
template <class T>
NDDR_HOST_DEVICE inline void winograd_weight_transform(const T* g, std::int64_t row,
                                                       std::int64_t col, T* u,
                                                       std::int64_t u_stride) {
  const T half = T(0.5);
  T q[4][3];  // G g
  for (int j = 0; j < 3; ++j) {
    const T g0 = g[0 * row + j * col], g1 = g[1 * row + j * col], g2 = g[2 * row + j * col];
    q[0][j] = g0;
    q[1][j] = half * (g0 + g1 + g2);
    q[2][j] = half * (g0 - g1 + g2);
    q[3][j] = g2;
  }
  for (int i = 0; i < 4; ++i) {
    u[(i * 4 + 0) * u_stride] = q[i][0];
    u[(i * 4 + 1) * u_stride] = half * (q[i][0] + q[i][1] + q[i][2]);
    u[(i * 4 + 2) * u_stride] = half * (q[i][0] - q[i][1] + q[i][2]);
    u[(i * 4 + 3) * u_stride] = q[i][2];
  }
}

/// dg = G^T dU G, the adjoint of `winograd_weight_transform`: 16 transformed weight
/// gradients du[xi * du_stride] to the 3x3 kernel gradient `dg` (element (i, j) at
/// dg[i * row + j * col]).
template <class T>
NDDR_HOST_DEVICE inline void winograd_weight_grad_transform(const T* du, std::int64_t du_stride,
                                                            T* dg, std::int64_t row,
                                                            std::int64_t col) {
  const T half = T(0.5);
  T p[3][4];  // G^T dU
  for (int j = 0; j < 4; ++j) {
    const T d0 = du[(0 * 4 + j) * du_stride], d1 = du[(1 * 4 + j) * du_stride];
    const T d2 = du[(2 * 4 + j) * du_stride], d3 = du[(3 * 4 + j) * du_stride];
    p[0][j] = d0 + half * (d1 + d2);
    p[1][j] = half * (d1 - d2);
    p[2][j] = half * (d1 + d2) + d3;
  }
  for (int i = 0; i < 3; ++i) {
    dg[i * row + 0 * col] = p[i][0] + half * (p[i][1] + p[i][2]);
    dg[i * row + 1 * col] = half * (p[i][1] - p[i][2]);
    dg[i * row + 2 * col] = half * (p[i][1] + p[i][2]) + p[i][3];
  }
}

/// V = B^T d B: 4x4 input tile `d` (element (r, s) at d[r * d_row + s]) to the 16
/// transformed inputs v[xi * v_stride].
template <class T>
NDDR_HOST_DEVICE inline void winograd_input_transform(const T* d, std::int64_t d_row, T* v,
                                                      std::int64_t v_stride) {
  T t[4][4];  // B^T d
  for (int j = 0; j < 4; ++j) {
    t[0][j] = d[0 * d_row + j] - d[2 * d_row + j];
    t[1][j] = d[1 * d_row + j] + d[2 * d_row + j];
    t[2][j] = d[2 * d_row + j] - d[1 * d_row + j];
    t[3][j] = d[1 * d_row + j] - d[3 * d_row + j];
  }
  for (int i = 0; i < 4; ++i) {
    v[(i * 4 + 0) * v_stride] = t[i][0] - t[i][2];
    v[(i * 4 + 1) * v_stride] = t[i][1] + t[i][2];
    v[(i * 4 + 2) * v_stride] = t[i][2] - t[i][1];
    v[(i * 4 + 3) * v_stride] = t[i][1] - t[i][3];
  }
}

/// Y = A^T M A: 16 transformed products m[xi * m_stride] to the 2x2 output tile `y`
/// (element (r, s) at y[r * y_row + s]).
template <class T>
NDDR_HOST_DEVICE inline void winograd_output_transform(const T* m, std::int64_t m_stride, T* y,
                                                       std::int64_t y_row) {
  T s[2][4];  // A^T M
  for (int j = 0; j < 4; ++j) {
    const T m0 = m[(0 * 4 + j) * m_stride], m1 = m[(1 * 4 + j) * m_stride];
    const T m2 = m[(2 * 4 + j) * m_stride], m3 = m[(3 * 4 + j) * m_stride];
    s[0][j] = m0 + m1 + m2;
    s[1][j] = m1 - m2 - m3;
  }
  for (int i = 0; i < 2; ++i) {
    y[i * y_row + 0] = s[i][0] + s[i][1] + s[i][2];
    y[i * y_row + 1] = s[i][1] - s[i][2] - s[i][3];
  }
}

/// Z = A dY A^T, the adjoint of `winograd_output_transform`: 2x2 output-gradient tile `dy`
/// (element (r, s) at dy[r * dy_row + s]) to the 16 transformed gradients z[xi * z_stride].
template <class T>
NDDR_HOST_DEVICE inline void winograd_output_grad_transform(const T* dy, std::int64_t dy_row, T* z,
                                                            std::int64_t z_stride) {
  T r[4][2];  // A dY
  for (int j = 0; j < 2; ++j) {
    r[0][j] = dy[j];
    r[1][j] = dy[j] + dy[dy_row + j];
    r[2][j] = dy[j] - dy[dy_row + j];
    r[3][j] = -dy[dy_row + j];
  }
  for (int i = 0; i < 4; ++i) {
    z[(i * 4 + 0) * z_stride] = r[i][0];
    z[(i * 4 + 1) * z_stride] = r[i][0] + r[i][1];
    z[(i * 4 + 2) * z_stride] = r[i][0] - r[i][1];
    z[(i * 4 + 3) * z_stride] = -r[i][1];
  }
}

/// Loads the 4x4 input tile whose top-left element is (ih0, iw0) of an (h, w) plane into `d`
/// (row-major), with zeros outside the plane (the convolution's padding).
template <class T>
NDDR_HOST_DEVICE inline void winograd_load_input_tile(const T* plane, std::int64_t h,
                                                      std::int64_t w, std::int64_t ih0,
                                                      std::int64_t iw0, T* d) {
  if (ih0 >= 0 && iw0 >= 0 && ih0 + 4 <= h && iw0 + 4 <= w) {
    const T* s = plane + ih0 * w + iw0;
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) d[r * 4 + c] = s[r * w + c];
    return;
  }
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) {
      const std::int64_t ih = ih0 + r, iw = iw0 + c;
      d[r * 4 + c] = ih >= 0 && ih < h && iw >= 0 && iw < w ? plane[ih * w + iw] : T(0);
    }
}

/// Loads the 2x2 output(-gradient) tile at (oh0, ow0) of an (h, w) plane into `dy`
/// (row-major), with zeros past the bottom/right edge (outputs a tile computes but drops).
template <class T>
NDDR_HOST_DEVICE inline void winograd_load_output_tile(const T* plane, std::int64_t h,
                                                       std::int64_t w, std::int64_t oh0,
                                                       std::int64_t ow0, T* dy) {
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c) {
      const std::int64_t oh = oh0 + r, ow = ow0 + c;
      dy[r * 2 + c] = oh < h && ow < w ? plane[oh * w + ow] : T(0);
    }
}

}  // namespace nddr::ops
