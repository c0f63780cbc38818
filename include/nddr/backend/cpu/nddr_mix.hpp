#pragma once
/// \file
/// CPU concat-free NDDR mix (front door: nddr/ops/nddr_mix.hpp): per batch item, the K (C, C)
/// blocks of each kernel multiply the task planes as serial Eigen products on column ranges,
/// one range per thread, in cache-sized blocks of columns.

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"

namespace nddr::detail {

/// Runs `body(begin, end)` on disjoint ranges covering [0, n), one per thread, each range a
/// serial Eigen product (so the context's thread count is honoured); boundaries are multiples
/// of 16 to keep the GEMM micro-kernel on full panels.
template <class F>
void nddr_split(const Context<Cpu>& ctx, std::int64_t n, F&& body) {
  constexpr std::int64_t kMin = 32;
  const std::int64_t chunks =
      std::max<std::int64_t>(1, std::min<std::int64_t>(ctx.threads(), n / kMin));
  auto bound = [=](std::int64_t t) { return t == chunks ? n : n * t / chunks / 16 * 16; };
  parallel_for(ctx, chunks, [&](std::int64_t t) {
#if defined(_OPENMP)
    // Eigen parallelises a product itself outside a team of > 1 threads; capping this task's
    // thread ICV (task-local) keeps a one-chunk region serial.
    omp_set_num_threads(1);
#endif
    const std::int64_t begin = bound(t);
    const std::int64_t end = bound(t + 1);
    if (end > begin) body(begin, end);
  });
}

template <class T>
using NddrMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Columns of one cache block of the forward/data-gradient GEMMs: the K task planes' rows of
/// a block take about 512 KB (half a Zen 4 L2), so the K products that read them hit cache;
/// at least 512 columns, so each product is large enough to amortise packing its kernel block.
template <class T>
std::int64_t nddr_block_columns(std::size_t tasks, std::int64_t channels) {
  const std::int64_t rows = static_cast<std::int64_t>(tasks) * channels;
  return std::max<std::int64_t>(
      512, (std::int64_t{1} << 19) / (rows * std::int64_t{sizeof(T)}) / 16 * 16);
}

}  // namespace nddr::detail

namespace nddr::ops::backend {

template <>
struct NddrMix<Cpu> {
  template <class T>
  static void nddr_mix_forward(Context<Cpu>& ctx, std::span<const TensorView<const T, Cpu>> xs,
                               std::span<const TensorView<const T, Cpu>> ws,
                               std::span<const TensorView<const T, Cpu>> bs,
                               std::span<const TensorView<T, Cpu>> zs) {
    using Map = Eigen::Map<nddr::detail::NddrMatrix<T>>;
    using ConstMap = Eigen::Map<const nddr::detail::NddrMatrix<T>>;
    const std::size_t tasks = xs.size();
    const Shape& s = xs[0].shape();
    const std::int64_t C = s.c(), P = s.h() * s.w(), KC = static_cast<std::int64_t>(tasks) * C;
    const std::int64_t block = nddr::detail::nddr_block_columns<T>(tasks, C);
    for (std::int64_t n = 0; n < s.n(); ++n) {
      nddr::detail::nddr_split(ctx, P, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t p0 = begin; p0 < end; p0 += block) {
          const std::int64_t cols = std::min(block, end - p0);
          for (std::size_t k = 0; k < tasks; ++k) {
            const ConstMap wk(ws[k].data(), C, KC);                              // (C, K C)
            auto zb = Map(zs[k].data() + n * C * P, C, P).middleCols(p0, cols);  // (C, cols)
            for (std::size_t j = 0; j < tasks; ++j) {
              const auto xb = ConstMap(xs[j].data() + n * C * P, C, P).middleCols(p0, cols);
              const auto wj = wk.middleCols(static_cast<std::int64_t>(j) * C, C);  // (C, C)
              if (j == 0)
                zb.noalias() = wj * xb;
              else
                zb.noalias() += wj * xb;
            }
            if (!bs[k].empty())
              zb.colwise() +=
                  Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>(bs[k].data(), C);
          }
        }
      });
    }
  }

  template <class T>
  static void nddr_mix_backward(Context<Cpu>& ctx, std::span<const TensorView<const T, Cpu>> xs,
                                TensorView<const T, Cpu> wv, TensorView<const T, Cpu> gv,
                                TensorView<T, Cpu> dwv, TensorView<T, Cpu> dbv,
                                std::span<const TensorView<T, Cpu>> dxs) {
    using Map = Eigen::Map<nddr::detail::NddrMatrix<T>>;
    using ConstMap = Eigen::Map<const nddr::detail::NddrMatrix<T>>;
    const std::size_t tasks = xs.size();
    const Shape& s = xs[0].shape();
    const std::int64_t C = s.c(), P = s.h() * s.w(), KC = static_cast<std::int64_t>(tasks) * C;
    const std::int64_t block = nddr::detail::nddr_block_columns<T>(tasks, C);
    const T* g = gv.data();     // (N, C, H, W)
    Map dw(dwv.data(), C, KC);  // (C, K C)
    nddr::detail::nddr_split(ctx, KC, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t n = 0; n < s.n(); ++n) {
        const ConstMap gn(g + n * C * P, C, P);  // (C, P)
        // The stacked input rows [begin, end) may span several tasks' planes.
        for (std::int64_t r = begin; r < end;) {
          const std::int64_t j = r / C, c0 = r - j * C, rows = std::min(end - r, C - c0);
          const ConstMap xn(xs[static_cast<std::size_t>(j)].data() + n * C * P, C, P);
          auto dwb = dw.middleCols(r, rows);
          if (n == 0)
            dwb.noalias() = gn * xn.middleRows(c0, rows).transpose();
          else
            dwb.noalias() += gn * xn.middleRows(c0, rows).transpose();
          r += rows;
        }
      }
      if (s.n() == 0) dw.middleCols(begin, end - begin).setZero();
    });
    if (!dbv.empty()) {
      T* db = dbv.data();
      const std::int64_t N = s.n();
      nddr::detail::parallel_for(ctx, C, [=](std::int64_t c) {
        T sum = T(0);
        for (std::int64_t n = 0; n < N; ++n)
          for (std::int64_t i = 0; i < P; ++i) sum += g[(n * C + c) * P + i];
        db[c] = sum;
      });
    }
    const ConstMap w(wv.data(), C, KC);  // (C, K C)
    for (std::int64_t n = 0; n < s.n(); ++n) {
      nddr::detail::nddr_split(ctx, P, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t p0 = begin; p0 < end; p0 += block) {
          const std::int64_t cols = std::min(block, end - p0);
          const auto gb = ConstMap(g + n * C * P, C, P).middleCols(p0, cols);  // (C, cols)
          for (std::size_t j = 0; j < tasks; ++j) {
            if (dxs[j].empty()) continue;
            auto dxb = Map(dxs[j].data() + n * C * P, C, P).middleCols(p0, cols);
            dxb.noalias() += w.middleCols(static_cast<std::int64_t>(j) * C, C).transpose() * gb;
          }
        }
      });
    }
  }
};

}  // namespace nddr::ops::backend
