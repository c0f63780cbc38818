#pragma once
/// \file
/// Arg-max over channels, the front door: out (N, H, W) = the channel index of the largest
/// value of every pixel of x (N, C, H, W), the first on ties (`ops::argmax_pixel`, in
/// nddr/ops/math/argmax.hpp). Validates once, then runs `backend::Argmax<D>`.

#include <cstdint>
#include <limits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/argmax.hpp"

namespace nddr::ops {

namespace detail {

/// Checks x (N, C, H, W) with 1 <= C <= INT32_MAX and out (N, H, W).
inline void check_argmax(const char* who, const Shape& x, const Shape& out) {
  check_rank4(who, "x", x);
  check<ShapeError>(x.c() >= 1 && x.c() <= std::numeric_limits<std::int32_t>::max(), who,
                    ": x has shape ", x, ", expected at least one channel");
  check_shape(who, "out", out, Shape{x.n(), x.h(), x.w()});
}

}  // namespace detail

/// out (N, H, W) = argmax over the channels of x (N, C, H, W), the first channel on ties.
template <class T, class D>
void argmax_channels(Context<D>& ctx, ViewOn<const T, D> x, ViewOn<std::int32_t, D> out) {
  detail::check_argmax("nddr::ops::argmax_channels", x.shape(), out.shape());
  backend::Argmax<D>::argmax_channels(ctx, x, out);
}

}  // namespace nddr::ops

#include "nddr/backend/cpu/argmax.hpp"
