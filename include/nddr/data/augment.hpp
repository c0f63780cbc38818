#pragma once
/// \file
/// NYUv2 training augmentation of the authors' code (paper-spec.md §5.3) and the label
/// down-sampling to the logit size. Per sample, in order: random scale s ~ U[scale_min,
/// scale_max) to (int(H*s), int(W*s)) (image TF-legacy bilinear, labels TF-legacy nearest);
/// random mirror with p = 0.5; padding at the bottom/right up to the crop size (image 0 = the
/// mean colour, seg 255, normal zero vector = invalid); a random crop x crop window. Every
/// sample draws exactly four numbers from its Rng (scale, mirror, crop row, crop column), also
/// when a step is switched off, so switching one step off does not move the others' draws.
///
/// Needs the `nddr::image_io` CMake target (libpng, data/nyuv2.hpp); umbrella <nddr/image_io.hpp>.

#include <algorithm>
#include <cstdint>

#include "nddr/ops/resize.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/data/nyuv2.hpp"

namespace nddr::data {

/// Options of `augment`: `AugmentOptions{}.crop(321).scale(0.5, 1.5).mirror(true)`.
struct AugmentOptions {
  bool random_scale = true;
  double scale_min = 0.5;
  double scale_max = 1.5;
  bool random_mirror = true;
  /// Mirroring negates the normals' x-component (kCentered: -x; kRawPaper: 255 - v, the same
  /// flip in the stored encoding). Off by default: the paper's code does not correct them.
  bool mirror_normal_x = false;
  /// Must match the dataset's encoding (only used by mirror_normal_x).
  NormalEncoding normal_encoding = NormalEncoding::kRawPaper;
  /// Output side; images smaller than it are padded first.
  std::int64_t crop_size = 321;

  AugmentOptions& scale(double lo, double hi) {
    random_scale = true;
    scale_min = lo;
    scale_max = hi;
    return *this;
  }
  AugmentOptions& no_scale() {
    random_scale = false;
    return *this;
  }
  AugmentOptions& mirror(bool on) {
    random_mirror = on;
    return *this;
  }
  /// Correct normals under mirroring (see `mirror_normal_x`).
  AugmentOptions& flip_normals(bool on, NormalEncoding encoding) {
    mirror_normal_x = on;
    normal_encoding = encoding;
    return *this;
  }
  AugmentOptions& crop(std::int64_t side) {
    crop_size = side;
    return *this;
  }
};

namespace detail {

/// Resizes a (C, H, W) or (H, W) tensor to (.., h, w) with `mode` on one thread.
template <class T>
Tensor<T> resize_planes(const Tensor<T>& x, std::int64_t h, std::int64_t w, ResizeMode mode) {
  const Shape s = x.shape();
  const std::int64_t c = s.rank() == 3 ? s[0] : 1;
  const std::int64_t in_h = s[s.rank() - 2], in_w = s[s.rank() - 1];
  Tensor<T> y(s.rank() == 3 ? Shape{c, h, w} : Shape{h, w});
  Context<Cpu> ctx(1);  // loader workers already run in parallel
  ops::resize_forward<T>(ctx, x.view().reshaped(Shape::nchw(1, c, in_h, in_w)),
                         y.view().reshaped(Shape::nchw(1, c, h, w)),
                         ResizeOptions{}.size(h, w).mode(mode));
  return y;
}

/// Reverses the width axis of every (H, W) plane in place.
template <class T>
void mirror_planes(Tensor<T>& x) {
  const Shape s = x.shape();
  const std::int64_t w = s[s.rank() - 1];
  for (std::int64_t r = 0; r < x.numel() / w; ++r)
    std::reverse(x.data() + r * w, x.data() + (r + 1) * w);
}

/// The crop x crop window at (oy, ox) of x padded at the bottom/right with `pad`.
template <class T>
Tensor<T> pad_crop(const Tensor<T>& x, std::int64_t crop, std::int64_t oy, std::int64_t ox, T pad) {
  const Shape s = x.shape();
  const std::int64_t c = s.rank() == 3 ? s[0] : 1;
  const std::int64_t h = s[s.rank() - 2], w = s[s.rank() - 1];
  Tensor<T> y(s.rank() == 3 ? Shape{c, crop, crop} : Shape{crop, crop}, pad);
  for (std::int64_t k = 0; k < c; ++k)
    for (std::int64_t r = 0; r < crop && oy + r < h; ++r)
      for (std::int64_t q = 0; q < crop && ox + q < w; ++q)
        y[(k * crop + r) * crop + q] = x[(k * h + oy + r) * w + ox + q];
  return y;
}

}  // namespace detail

/// One augmented training sample (crop_size x crop_size), deterministic given `rng`'s state.
inline NyuSample augment(const NyuSample& in, Rng& rng, const AugmentOptions& opt) {
  const char* op = "nddr::data::augment";
  check<OptionError>(opt.crop_size >= 1, op, ": crop_size must be >= 1, got ", opt.crop_size);
  check<OptionError>(0.0 < opt.scale_min && opt.scale_min <= opt.scale_max, op,
                     ": need 0 < scale_min <= scale_max, got [", opt.scale_min, ", ", opt.scale_max,
                     ")");
  const Shape s = in.image.shape();
  check<ShapeError>(
      s.rank() == 3 && s[0] == 3 && in.seg.shape() == Shape{s[1], s[2]} && in.normal.shape() == s,
      op, ": expected image (3, H, W), seg (H, W), normal (3, H, W), got ", s, ", ",
      in.seg.shape(), ", ", in.normal.shape());
  const double u_scale = rng.uniform();
  const double u_mirror = rng.uniform();
  const std::uint64_t bits_y = rng.next_bits();
  const std::uint64_t bits_x = rng.next_bits();

  NyuSample x;
  if (opt.random_scale) {
    // float arithmetic and truncation, as TF's to_int32(to_float(h) * scale)
    const auto f = static_cast<float>(opt.scale_min + (opt.scale_max - opt.scale_min) * u_scale);
    const std::int64_t h =
        std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<float>(s[1]) * f));
    const std::int64_t w =
        std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<float>(s[2]) * f));
    x.image = detail::resize_planes(in.image, h, w, ResizeMode::kBilinearTfLegacy);
    x.seg = detail::resize_planes(in.seg, h, w, ResizeMode::kNearestTfLegacy);
    x.normal = detail::resize_planes(in.normal, h, w, ResizeMode::kNearestTfLegacy);
  } else {
    x = in;
  }
  if (opt.random_mirror && u_mirror < 0.5) {
    detail::mirror_planes(x.image);
    detail::mirror_planes(x.seg);
    detail::mirror_planes(x.normal);
    if (opt.mirror_normal_x) {
      const std::int64_t plane = x.seg.numel();
      float* nx = x.normal.data();
      const float* ny = nx + plane;
      const float* nz = nx + 2 * plane;
      for (std::int64_t p = 0; p < plane; ++p) {
        if (opt.normal_encoding == NormalEncoding::kCentered)
          nx[p] = -nx[p];
        else if (nx[p] != 0.0f || ny[p] != 0.0f || nz[p] != 0.0f)  // keep invalid = zero
          nx[p] = 255.0f - nx[p];
      }
    }
  }
  const std::int64_t h = x.seg.shape()[0], w = x.seg.shape()[1], c = opt.crop_size;
  const auto oy =
      static_cast<std::int64_t>(bits_y % static_cast<std::uint64_t>(std::max(c, h) - c + 1));
  const auto ox =
      static_cast<std::int64_t>(bits_x % static_cast<std::uint64_t>(std::max(c, w) - c + 1));
  return {detail::pad_crop(x.image, c, oy, ox, 0.0f),
          detail::pad_crop(x.seg, c, oy, ox, kIgnoreLabel),
          detail::pad_crop(x.normal, c, oy, ox, 0.0f)};
}

/// Seg labels (H, W) or (N, H, W) down-sampled to (.., h, w) with TF-legacy nearest, as the
/// network does to compare them with its logits.
inline Tensor<std::int32_t> downsample_labels(TensorView<const std::int32_t> seg, std::int64_t h,
                                              std::int64_t w) {
  const Shape s = seg.shape();
  check<ShapeError>(s.rank() == 2 || s.rank() == 3, "nddr::data::downsample_labels: seg must be ",
                    "(H, W) or (N, H, W), got ", s);
  const std::int64_t n = s.rank() == 3 ? s[0] : 1;
  Tensor<std::int32_t> y(s.rank() == 3 ? Shape{n, h, w} : Shape{h, w});
  Context<Cpu> ctx(1);
  ops::resize_forward<std::int32_t>(
      ctx, seg.reshaped(Shape::nchw(n, 1, s[s.rank() - 2], s[s.rank() - 1])),
      y.view().reshaped(Shape::nchw(n, 1, h, w)),
      ResizeOptions{}.size(h, w).mode(ResizeMode::kNearestTfLegacy));
  return y;
}

/// Normal labels (3, H, W) or (N, 3, H, W) down-sampled to (.., h, w) with TF-legacy nearest
/// (invalid pixels stay the zero vector).
inline Tensor<float> downsample_normals(TensorView<const float> normal, std::int64_t h,
                                        std::int64_t w) {
  const Shape s = normal.shape();
  check<ShapeError>(
      (s.rank() == 3 && s[0] == 3) || (s.rank() == 4 && s[1] == 3),
      "nddr::data::downsample_normals: normal must be (3, H, W) or (N, 3, H, W), got ", s);
  const std::int64_t n = s.rank() == 4 ? s[0] : 1;
  Tensor<float> y(s.rank() == 4 ? Shape::nchw(n, 3, h, w) : Shape{3, h, w});
  Context<Cpu> ctx(1);
  ops::resize_forward<float>(ctx,
                             normal.reshaped(Shape::nchw(n, 3, s[s.rank() - 2], s[s.rank() - 1])),
                             y.view().reshaped(Shape::nchw(n, 3, h, w)),
                             ResizeOptions{}.size(h, w).mode(ResizeMode::kNearestTfLegacy));
  return y;
}

}  // namespace nddr::data
