#pragma once
/// \file
/// CPU resize (front door: nddr/ops/resize.hpp): bilinear in three conventions, TF legacy nearest.
/// The per-axis taps are computed once per call; loops run in parallel over the N * C planes.

#include <cstdint>
#include <type_traits>
#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/resize.hpp"

namespace nddr {
namespace detail {

/// Coordinate arithmetic type: T for floating tensors, float (as TF) for integer label maps.
template <class T>
using ResizeScalar = std::conditional_t<std::is_floating_point_v<T>, T, float>;

template <class S>
std::vector<ops::ResizeTap<S>> resize_taps(ResizeMode mode, std::int64_t in, std::int64_t out) {
  std::vector<ops::ResizeTap<S>> taps(static_cast<std::size_t>(out));
  for (std::int64_t d = 0; d < out; ++d)
    taps[static_cast<std::size_t>(d)] = ops::resize_tap<S>(mode, d, in, out);
  return taps;
}

}  // namespace detail

namespace ops::backend {

template <>
struct Resize<Cpu> {
  template <class T>
  static void resize_forward(Context<Cpu>& ctx, TensorView<const T, Cpu> x, TensorView<T, Cpu> y,
                             const ResizeOptions& opt) {
    using S = nddr::detail::ResizeScalar<T>;
    const bool nearest = opt.resize_mode == ResizeMode::kNearestTfLegacy;
    const std::int64_t in_h = x.shape().h(), in_w = x.shape().w();
    const std::int64_t out_h = opt.out_h, out_w = opt.out_w;
    const auto th = nddr::detail::resize_taps<S>(opt.resize_mode, in_h, out_h);
    const auto tw = nddr::detail::resize_taps<S>(opt.resize_mode, in_w, out_w);
    const ResizeTap<S>* thp = th.data();
    const ResizeTap<S>* twp = tw.data();
    const T* xp = x.data();
    T* yp = y.data();
    nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
      const T* plane = xp + p * in_h * in_w;
      T* out = yp + p * out_h * out_w;
      for (std::int64_t oh = 0; oh < out_h; ++oh)
        for (std::int64_t ow = 0; ow < out_w; ++ow) {
          if constexpr (std::is_floating_point_v<T>) {
            if (!nearest) {
              out[oh * out_w + ow] = resize_bilinear_element(plane, in_w, thp[oh], twp[ow]);
              continue;
            }
          }
          out[oh * out_w + ow] = plane[thp[oh].i0 * in_w + twp[ow].i0];
        }
    });
  }

  template <class T>
  static void resize_backward(Context<Cpu>& ctx, TensorView<const T, Cpu> x,
                              TensorView<const T, Cpu> dy, TensorView<T, Cpu> dx,
                              const ResizeOptions& opt) {
    const std::int64_t in_h = x.shape().h(), in_w = x.shape().w();
    const std::int64_t out_h = opt.out_h, out_w = opt.out_w;
    const auto th = nddr::detail::resize_taps<T>(opt.resize_mode, in_h, out_h);
    const auto tw = nddr::detail::resize_taps<T>(opt.resize_mode, in_w, out_w);
    const ResizeTap<T>* thp = th.data();
    const ResizeTap<T>* twp = tw.data();
    const bool nearest = opt.resize_mode == ResizeMode::kNearestTfLegacy;
    const T* dyp = dy.data();
    T* dxp = dx.data();
    nddr::detail::parallel_for(ctx, x.shape().n() * x.shape().c(), [=](std::int64_t p) {
      const T* grad = dyp + p * out_h * out_w;
      T* plane = dxp + p * in_h * in_w;
      for (std::int64_t oh = 0; oh < out_h; ++oh)
        for (std::int64_t ow = 0; ow < out_w; ++ow) {
          const T g = grad[oh * out_w + ow];
          if (nearest)
            plane[thp[oh].i0 * in_w + twp[ow].i0] += g;
          else
            resize_bilinear_backward_element(g, in_w, thp[oh], twp[ow], plane);
        }
    });
  }
};

}  // namespace ops::backend
}  // namespace nddr
