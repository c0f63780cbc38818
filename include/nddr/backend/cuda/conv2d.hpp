#pragma once
/// \file
/// CUDA 2-D convolution through cuDNN's legacy convolution API, in full FP32/FP64 precision
/// by default (`CUDNN_FMA_MATH`: no TF32 tensor cores, so results match the CPU op to
/// rounding); float convolutions may opt into TF32 tensor cores or BF16 operands with FP32
/// accumulation through the context's settings (`ctx.settings()`: `conv_tf32`, `conv_bf16`;
/// core/settings.hpp).
///
/// Algorithms come from cuDNN's heuristics (`cudnnGet*Algorithm_v7`): the first full-precision
/// one whose workspace fits `kConvWorkspaceLimit`, as PyTorch's default does (some of them add
/// with atomics, so results may differ in the last bits run to run).
/// The `conv_deterministic` setting takes the first deterministic one instead (bit-identical
/// runs; PyTorch's `cudnn.deterministic`), `conv_benchmark` times the candidates
/// (`cudnnFind*AlgorithmEx`) at the first call of each shape and takes the fastest (PyTorch's
/// `cudnn.benchmark`). The choice is cached per device, element type, batch size, geometry and
/// these settings, so later calls skip the query.
///
/// TF 'SAME' padding with more padding after than before (an odd total, e.g. stride 2 on an
/// even input): cuDNN pads symmetrically only, so x is copied into a zero-padded buffer in the
/// workspace and cuDNN runs unpadded; the data gradient is computed into a padded buffer and
/// its interior added onto dx. (Padding both sides by the larger amount and cropping the
/// output is exact only for stride 1, so it is not used.) Symmetric padding goes straight to
/// cuDNN, whose data gradient accumulates into dx with beta = 1.
///
/// The bias add and the bias gradient are our own kernels (cuDNN 9 dropped
/// cudnnConvolutionBackwardBias); the bias gradient sums in double.

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/handles.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/core/bfloat16.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/backend.hpp"
#include "nddr/ops/math/conv2d.hpp"

namespace nddr::cuda::launch {

/// dst (planes, h + pt + pb, w + pl + pr) = src (planes, h, w) framed by zeros, converted to D;
/// the padded extents are (ph, pw). Defined in kernels/conv_bn.cuh for (S, D) = (float, float),
/// (double, double) and (float, bfloat16).
template <class S, class D = S>
void pad_copy(cudaStream_t stream, const S* src, D* dst, std::int64_t planes, std::int64_t h,
              std::int64_t w, std::int64_t pt, std::int64_t pl, std::int64_t ph, std::int64_t pw);

/// dst (planes, h, w) += the interior of src (planes, ph, pw) starting at row pt, column pl,
/// converted to D; (S, D) = (float, float), (double, double), (bfloat16, float).
template <class S, class D = S>
void crop_add(cudaStream_t stream, const S* src, D* dst, std::int64_t planes, std::int64_t h,
              std::int64_t w, std::int64_t pt, std::int64_t pl, std::int64_t ph, std::int64_t pw);

/// dst[i] = D(src[i]) for i < n; (S, D) = (float, bfloat16), (bfloat16, float).
template <class S, class D>
void convert(cudaStream_t stream, const S* src, D* dst, std::int64_t n);

/// dst[i] += D(src[i]) for i < n; (S, D) = (bfloat16, float).
template <class S, class D>
void convert_add(cudaStream_t stream, const S* src, D* dst, std::int64_t n);

/// dst (items, channels, plane) = D(src) + b (channels), broadcast; (S, D) = (bfloat16, float).
template <class S, class D>
void convert_bias(cudaStream_t stream, const S* src, const D* b, D* dst, std::int64_t items,
                  std::int64_t channels, std::int64_t plane);

/// y (items, channels, plane) += b (channels), broadcast.
template <class T>
void bias_add(cudaStream_t stream, const T* b, T* y, std::int64_t items, std::int64_t channels,
              std::int64_t plane);

/// out[c] = sum of x (items, channels, plane) over items and plane, accumulated in double.
template <class T>
void channel_sum(cudaStream_t stream, const T* x, T* out, std::int64_t items,
                 std::int64_t channels, std::int64_t plane);

}  // namespace nddr::cuda::launch

namespace nddr::cuda {

/// Largest cuDNN workspace an algorithm may ask for (bytes); larger ones are passed over.
inline constexpr std::size_t kConvWorkspaceLimit = std::size_t{1} << 30;

// The convolution settings (TF32, BF16, deterministic or benchmarked algorithms) belong to the
// context: `ctx.settings()`, NumericSettings in core/settings.hpp.

namespace detail {

enum class ConvDirection { kForward, kBackwardData, kBackwardFilter };

/// The arithmetic of a convolution call: full precision (FMA, no tensor cores), TF32 tensor
/// cores on float data, or bfloat16 copies of the operands on tensor cores.
enum class ConvMath { kFull, kTf32, kBf16 };

/// The arithmetic convolutions of element type T use under `settings`.
template <class T>
ConvMath conv_math(const NumericSettings& settings) {
  if constexpr (!std::is_same_v<T, float>) {
    return ConvMath::kFull;
  } else {
    if (settings.conv_bf16()) return ConvMath::kBf16;
    return settings.conv_tf32() ? ConvMath::kTf32 : ConvMath::kFull;
  }
}

/// What an algorithm choice depends on.
struct ConvKey {
  int device;
  cudnnDataType_t type;
  ConvDirection direction;
  std::int64_t batch;
  Conv2dGeometry g;
  ConvMath math = ConvMath::kFull;
  bool deterministic = false;
  bool benchmark = false;

  auto tie() const {
    return std::tie(device, type, direction, math, deterministic, benchmark, batch, g.in_c, g.in_h, g.in_w, g.out_c, g.out_h,
                    g.out_w, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.dilation_h,
                    g.dilation_w, g.pad_top, g.pad_bottom, g.pad_left, g.pad_right);
  }
  bool operator<(const ConvKey& o) const { return tie() < o.tie(); }
};

/// A cached algorithm: the enum value of the direction's algorithm type, its workspace and the
/// math type cuDNN ranked it with.
struct ConvAlgo {
  int algo = 0;
  std::size_t workspace = 0;
  cudnnMathType_t math_type = CUDNN_DEFAULT_MATH;
};

/// Process-wide cache of algorithm choices (thread-safe).
class ConvAlgoCache {
 public:
  static ConvAlgoCache& instance() {
    static ConvAlgoCache* cache = new ConvAlgoCache;
    return *cache;
  }
  /// The cached choice for `key`, or the one `choose()` returns (then cached).
  template <class Choose>
  ConvAlgo get(const ConvKey& key, Choose&& choose) {
    {
      std::lock_guard lock(mutex_);
      auto it = map_.find(key);
      if (it != map_.end()) {
        ++hits_;
        return it->second;
      }
    }
    const ConvAlgo a = choose();
    std::lock_guard lock(mutex_);
    map_.emplace(key, a);
    return a;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return map_.size();
  }
  std::size_t hits() const {
    std::lock_guard lock(mutex_);
    return hits_;
  }

 private:
  ConvAlgoCache() = default;
  mutable std::mutex mutex_;
  std::map<ConvKey, ConvAlgo> map_;
  std::size_t hits_ = 0;
};

/// Whether a candidate ran (or would run) in the requested precision within the workspace
/// limit: tensor-core math only with TF32 or BF16 (never `ALLOW_CONVERSION`, which would
/// round float to half).
template <class Perf>
bool usable_algorithm(const Perf& p, ConvMath math) {
  return p.status == CUDNN_STATUS_SUCCESS && p.memory <= kConvWorkspaceLimit &&
         (p.mathType == CUDNN_DEFAULT_MATH || p.mathType == CUDNN_FMA_MATH ||
          (math != ConvMath::kFull && p.mathType == CUDNN_TENSOR_OP_MATH));
}

/// From cuDNN's ranked candidates (heuristic order, or fastest first when timed), the first
/// usable one; with `deterministic`, the first usable deterministic one if there is one.
/// Throws DeviceError when none is usable.
template <class Perf>
ConvAlgo pick_algorithm(const Perf* perf, int count, const ConvKey& key, const char* who) {
  if (key.deterministic)
    for (int i = 0; i < count; ++i)
      if (usable_algorithm(perf[i], key.math) && perf[i].determinism == CUDNN_DETERMINISTIC)
        return {static_cast<int>(perf[i].algo), perf[i].memory, perf[i].mathType};
  for (int i = 0; i < count; ++i)
    if (usable_algorithm(perf[i], key.math))
      return {static_cast<int>(perf[i].algo), perf[i].memory, perf[i].mathType};
  throw DeviceError(nddr::detail::concat(
      who, ": cuDNN offers no ",
      key.math == ConvMath::kBf16   ? "BF16"
      : key.math == ConvMath::kTf32 ? "TF32 or full-precision"
                                    : "full-precision",
      " algorithm within ", kConvWorkspaceLimit, " bytes of workspace"));
}

/// The cached algorithm of `key`, chosen on a miss: `heuristic(perf, &count)` fills cuDNN's
/// ranked candidates; with `key.benchmark`, `timed(perf, &count, workspace_bytes)` then times
/// those that fit the largest usable heuristic candidate's workspace (fastest first).
template <class Perf, int kCount, class Heuristic, class Timed>
ConvAlgo choose_algorithm(const ConvKey& key, const char* who, Heuristic&& heuristic,
                          Timed&& timed) {
  return ConvAlgoCache::instance().get(key, [&] {
    Perf perf[kCount];
    int count = 0;
    heuristic(perf, &count);
    if (!key.benchmark) return pick_algorithm(perf, count, key, who);
    std::size_t workspace = 0;
    for (int i = 0; i < count; ++i)
      if (usable_algorithm(perf[i], key.math) && perf[i].memory > workspace)
        workspace = perf[i].memory;
    Perf measured[kCount];
    int measured_count = 0;
    timed(measured, &measured_count, workspace);
    return pick_algorithm(measured, measured_count, key, who);
  });
}

/// The cuDNN descriptors of one convolution call on data of type T (float, double, or the
/// bfloat16 copies of a BF16 call; T's math comes from `math`). With asymmetric padding, `x`
/// describes the zero-padded copy and the convolution is unpadded.
template <class T>
struct ConvDescriptors {
  TensorDescriptor x = TensorDescriptor::create();
  TensorDescriptor y = TensorDescriptor::create();
  FilterDescriptor w = FilterDescriptor::create();
  ConvolutionDescriptor conv = ConvolutionDescriptor::create();

  ConvDescriptors(std::int64_t batch, const Conv2dGeometry& g, bool padded_copy, ConvMath math) {
    const std::int64_t h = padded_copy ? g.in_h + g.pad_top + g.pad_bottom : g.in_h;
    const std::int64_t w_ = padded_copy ? g.in_w + g.pad_left + g.pad_right : g.in_w;
    x.set<T>(Shape::nchw(batch, g.in_c, h, w_));
    y.set<T>(Shape::nchw(batch, g.out_c, g.out_h, g.out_w));
    NDDR_CUDA_CHECK(cudnnSetFilter4dDescriptor(w, cudnn_data_type<T>(), CUDNN_TENSOR_NCHW,
                                               static_cast<int>(g.out_c), static_cast<int>(g.in_c),
                                               static_cast<int>(g.kernel_h),
                                               static_cast<int>(g.kernel_w)),
                    "describing convolution weights to cuDNN");
    NDDR_CUDA_CHECK(
        cudnnSetConvolution2dDescriptor(
            conv, padded_copy ? 0 : static_cast<int>(g.pad_top),
            padded_copy ? 0 : static_cast<int>(g.pad_left), static_cast<int>(g.stride_h),
            static_cast<int>(g.stride_w), static_cast<int>(g.dilation_h),
            static_cast<int>(g.dilation_w), CUDNN_CROSS_CORRELATION,
            std::is_same_v<T, double> ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT),
        "describing a convolution to cuDNN");
    NDDR_CUDA_CHECK(cudnnSetConvolutionMathType(
                        conv, math == ConvMath::kFull ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH),
                    "selecting the convolution math type");
  }
};

/// Sets the convolution descriptor to the math type cuDNN ranked the chosen algorithm with, as
/// PyTorch does: since cuDNN 7.4 a kernel is selected by algorithm *and* math type, and the
/// workspace size cuDNN reported belongs to that pair. Full-precision calls keep
/// `CUDNN_FMA_MATH` whatever the candidate says (`CUDNN_DEFAULT_MATH` would permit TF32 on
/// Ampere and later).
template <class T>
void use_algorithm_math(ConvDescriptors<T>& d, const ConvAlgo& a, ConvMath math, const char* who) {
  if (math == ConvMath::kFull) return;
  NDDR_CUDA_CHECK(cudnnSetConvolutionMathType(d.conv, a.math_type), who,
                  ": selecting the math type of the chosen cuDNN algorithm");
}

/// Whether cuDNN cannot express the padding directly (TF 'SAME' with an odd total).
inline bool conv2d_needs_padded_copy(const Conv2dGeometry& g) {
  return g.pad_top != g.pad_bottom || g.pad_left != g.pad_right;
}

/// Elements of the zero-padded copy of a (batch, C_in, H, W) input.
inline std::size_t conv2d_padded_count(std::int64_t batch, const Conv2dGeometry& g) {
  return static_cast<std::size_t>(batch * g.in_c * (g.in_h + g.pad_top + g.pad_bottom) *
                                  (g.in_w + g.pad_left + g.pad_right));
}

/// Bytes rounded up to 256 so that buffers carved out of one workspace stay aligned.
inline std::size_t conv2d_align(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

template <class T>
void conv2d_pad_input(Context<Cuda>& ctx, const T* x, T* xp, std::int64_t batch,
                      const Conv2dGeometry& g) {
  launch::pad_copy<T>(ctx.stream(), x, xp, batch * g.in_c, g.in_h, g.in_w, g.pad_top, g.pad_left,
                      g.in_h + g.pad_top + g.pad_bottom, g.in_w + g.pad_left + g.pad_right);
}

/// T is the type cuDNN sees (bfloat16 in a BF16 call).
template <class T>
ConvKey conv_key(const Context<Cuda>& ctx, ConvDirection d, std::int64_t batch,
                 const Conv2dGeometry& g, ConvMath math) {
  return ConvKey{ctx.device(), cudnn_data_type<T>(), d,   batch,
                 g,            math,                 ctx.settings().conv_deterministic(),
                 ctx.settings().conv_benchmark()};
}

// --- BF16 convolutions (NumericSettings::conv_bf16) -----------------------------------------
// Each call lays its bfloat16 copies out at the front of the context's workspace, 256-byte
// aligned, with cuDNN's own workspace behind them; the copies are made after the last
// `workspace_bytes` call of the op, since growing the workspace drops its contents.

/// Bytes of a bfloat16 copy of `count` elements, aligned.
inline std::size_t bf16_bytes(std::int64_t count) {
  return conv2d_align(static_cast<std::size_t>(count) * sizeof(bfloat16));
}

inline bfloat16* bf16_at(char* ws, std::size_t offset) {
  return reinterpret_cast<bfloat16*>(ws + offset);
}

/// The bfloat16 copy of input x (zero-padded when cuDNN cannot express the padding).
inline void conv2d_stage_input_bf16(Context<Cuda>& ctx, const float* x, bfloat16* xb,
                                    std::int64_t batch, const Conv2dGeometry& g, bool padded) {
  if (padded)
    launch::pad_copy<float, bfloat16>(ctx.stream(), x, xb, batch * g.in_c, g.in_h, g.in_w,
                                      g.pad_top, g.pad_left, g.in_h + g.pad_top + g.pad_bottom,
                                      g.in_w + g.pad_left + g.pad_right);
  else
    launch::convert<float, bfloat16>(ctx.stream(), x, xb, batch * g.in_c * g.in_h * g.in_w);
}

/// Elements of the input copy cuDNN reads: the padded size or x's.
inline std::int64_t conv2d_input_copy_count(std::int64_t batch, const Conv2dGeometry& g,
                                            bool padded) {
  return padded ? static_cast<std::int64_t>(conv2d_padded_count(batch, g))
                : batch * g.in_c * g.in_h * g.in_w;
}

/// y = conv(bf16(x), bf16(w)) widened to float, + b (one pass). Workspace: [x copy | w copy |
/// y copy | cuDNN].
inline void conv2d_forward_bf16(Context<Cuda>& ctx, TensorView<const float, Cuda> x,
                                TensorView<const float, Cuda> w, TensorView<const float, Cuda> b,
                                TensorView<float, Cuda> y, const Conv2dOptions& opt,
                                const Conv2dGeometry& g, const char* who) {
  const std::int64_t batch = x.shape().n();
  const bool padded = conv2d_needs_padded_copy(g);
  ConvDescriptors<bfloat16> d(batch, g, padded, ConvMath::kBf16);
  const std::size_t w_at = bf16_bytes(conv2d_input_copy_count(batch, g, padded));
  const std::size_t y_at = w_at + bf16_bytes(w.numel());
  const std::size_t ws_at = y_at + bf16_bytes(y.numel());
  const auto stage = [&](char* ws) {
    conv2d_stage_input_bf16(ctx, x.data(), bf16_at(ws, 0), batch, g, padded);
    launch::convert<float, bfloat16>(ctx.stream(), w.data(), bf16_at(ws, w_at), w.numel());
  };
  const ConvAlgo algo =
      choose_algorithm<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT>(
          conv_key<bfloat16>(ctx, ConvDirection::kForward, batch, g, ConvMath::kBf16), who,
          [&](cudnnConvolutionFwdAlgoPerf_t* perf, int* count) {
            NDDR_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
                                ctx.cudnn(), d.x, d.w, d.conv, d.y,
                                CUDNN_CONVOLUTION_FWD_ALGO_COUNT, count, perf),
                            who, ": choosing a cuDNN BF16 forward algorithm for input ",
                            x.shape().str());
          },
          [&](cudnnConvolutionFwdAlgoPerf_t* perf, int* count, std::size_t bytes) {
            char* ws = static_cast<char*>(ctx.workspace_bytes(ws_at + bytes));
            stage(ws);
            NDDR_CUDA_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
                                ctx.cudnn(), d.x, ws, d.w, ws + w_at, d.conv, d.y, ws + y_at,
                                CUDNN_CONVOLUTION_FWD_ALGO_COUNT, count, perf, ws + ws_at, bytes),
                            who, ": timing cuDNN BF16 forward algorithms for input ",
                            x.shape().str());
          });
  use_algorithm_math(d, algo, ConvMath::kBf16, who);
  char* ws = static_cast<char*>(ctx.workspace_bytes(ws_at + algo.workspace));
  stage(ws);
  const float one = 1.0f, zero = 0.0f;
  NDDR_CUDA_CHECK(cudnnConvolutionForward(ctx.cudnn(), &one, d.x, ws, d.w, ws + w_at, d.conv,
                                          static_cast<cudnnConvolutionFwdAlgo_t>(algo.algo),
                                          ws + ws_at, algo.workspace, &zero, d.y, ws + y_at),
                  who, ": cuDNN BF16 forward convolution of input ", x.shape().str(),
                  " and weight ", w.shape().str());
  if (opt.use_bias)
    launch::convert_bias<bfloat16, float>(ctx.stream(), bf16_at(ws, y_at), b.data(), y.data(),
                                          batch, g.out_c, g.out_h * g.out_w);
  else
    launch::convert<bfloat16, float>(ctx.stream(), bf16_at(ws, y_at), y.data(), y.numel());
}

/// The BF16 backward pass: dw = float(dconv(bf16(x), bf16(dy))) when dw is non-empty (x may be
/// empty otherwise), dx += float(conv^T(bf16(dy), bf16(w))) when dx is non-empty (w may be
/// empty otherwise); dy is rounded once for both. Workspace: [dy copy | x copy | w copy |
/// dw copy | dx copy | cuDNN], the copies a gradient does not need left out.
inline void conv2d_backward_bf16(Context<Cuda>& ctx, TensorView<const float, Cuda> x,
                                 TensorView<const float, Cuda> w, TensorView<const float, Cuda> dy,
                                 TensorView<float, Cuda> dx, TensorView<float, Cuda> dw,
                                 const Conv2dGeometry& g, const char* who) {
  const bool want_dw = !dw.empty(), want_dx = !dx.empty();
  const std::int64_t batch = dy.shape().n();
  const bool padded = conv2d_needs_padded_copy(g);
  ConvDescriptors<bfloat16> d(batch, g, padded, ConvMath::kBf16);
  const std::int64_t in_count = conv2d_input_copy_count(batch, g, padded);
  const std::int64_t w_count = g.out_c * g.in_c * g.kernel_h * g.kernel_w;
  const std::size_t x_at = bf16_bytes(dy.numel());
  const std::size_t w_at = x_at + (want_dw ? bf16_bytes(in_count) : 0);
  const std::size_t dw_at = w_at + (want_dx ? bf16_bytes(w_count) : 0);
  const std::size_t dx_at = dw_at + (want_dw ? bf16_bytes(w_count) : 0);
  const std::size_t ws_at = dx_at + (want_dx ? bf16_bytes(in_count) : 0);
  const auto stage = [&](char* ws) {
    launch::convert<float, bfloat16>(ctx.stream(), dy.data(), bf16_at(ws, 0), dy.numel());
    if (want_dw) conv2d_stage_input_bf16(ctx, x.data(), bf16_at(ws, x_at), batch, g, padded);
    if (want_dx) launch::convert<float, bfloat16>(ctx.stream(), w.data(), bf16_at(ws, w_at), w_count);
  };
  ConvAlgo filter, data;
  if (want_dw)
    filter = choose_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t,
                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT>(
        conv_key<bfloat16>(ctx, ConvDirection::kBackwardFilter, batch, g, ConvMath::kBf16), who,
        [&](cudnnConvolutionBwdFilterAlgoPerf_t* perf, int* count) {
          NDDR_CUDA_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                              ctx.cudnn(), d.x, d.y, d.conv, d.w,
                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, count, perf),
                          who, ": choosing a cuDNN BF16 backward-filter algorithm for dy ",
                          dy.shape().str());
        },
        [&](cudnnConvolutionBwdFilterAlgoPerf_t* perf, int* count, std::size_t bytes) {
          // The candidates write the dw copy, which is scratch until the conversion below.
          char* ws = static_cast<char*>(ctx.workspace_bytes(ws_at + bytes));
          stage(ws);
          NDDR_CUDA_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
                              ctx.cudnn(), d.x, ws + x_at, d.y, ws, d.conv, d.w, ws + dw_at,
                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, count, perf, ws + ws_at,
                              bytes),
                          who, ": timing cuDNN BF16 backward-filter algorithms for dy ",
                          dy.shape().str());
        });
  if (want_dx)
    data = choose_algorithm<cudnnConvolutionBwdDataAlgoPerf_t,
                            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT>(
        conv_key<bfloat16>(ctx, ConvDirection::kBackwardData, batch, g, ConvMath::kBf16), who,
        [&](cudnnConvolutionBwdDataAlgoPerf_t* perf, int* count) {
          NDDR_CUDA_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
                              ctx.cudnn(), d.w, d.y, d.conv, d.x,
                              CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, count, perf),
                          who, ": choosing a cuDNN BF16 backward-data algorithm for dx ",
                          dx.shape().str());
        },
        [&](cudnnConvolutionBwdDataAlgoPerf_t* perf, int* count, std::size_t bytes) {
          // The candidates write the dx copy, which is scratch until the add below.
          char* ws = static_cast<char*>(ctx.workspace_bytes(ws_at + bytes));
          stage(ws);
          NDDR_CUDA_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
                              ctx.cudnn(), d.w, ws + w_at, d.y, ws, d.conv, d.x, ws + dx_at,
                              CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, count, perf, ws + ws_at,
                              bytes),
                          who, ": timing cuDNN BF16 backward-data algorithms for dx ",
                          dx.shape().str());
        });
  // One workspace for both calls, taken after every choice (growing it drops its contents).
  const std::size_t cudnn_bytes = std::max(want_dw ? filter.workspace : std::size_t{0},
                                           want_dx ? data.workspace : std::size_t{0});
  char* ws = static_cast<char*>(ctx.workspace_bytes(ws_at + cudnn_bytes));
  stage(ws);
  const float one = 1.0f, zero = 0.0f;
  if (want_dw) {
    use_algorithm_math(d, filter, ConvMath::kBf16, who);
    NDDR_CUDA_CHECK(cudnnConvolutionBackwardFilter(
                        ctx.cudnn(), &one, d.x, ws + x_at, d.y, ws, d.conv,
                        static_cast<cudnnConvolutionBwdFilterAlgo_t>(filter.algo), ws + ws_at,
                        filter.workspace, &zero, d.w, ws + dw_at),
                    who, ": cuDNN BF16 backward-filter convolution of input ", x.shape().str(),
                    " and dy ", dy.shape().str());
    launch::convert<bfloat16, float>(ctx.stream(), bf16_at(ws, dw_at), dw.data(), dw.numel());
  }
  if (want_dx) {
    use_algorithm_math(d, data, ConvMath::kBf16, who);
    NDDR_CUDA_CHECK(cudnnConvolutionBackwardData(
                        ctx.cudnn(), &one, d.w, ws + w_at, d.y, ws, d.conv,
                        static_cast<cudnnConvolutionBwdDataAlgo_t>(data.algo), ws + ws_at,
                        data.workspace, &zero, d.x, ws + dx_at),
                    who, ": cuDNN BF16 backward-data convolution of dy ", dy.shape().str(),
                    " and weight ", w.shape().str());
    if (padded)
      launch::crop_add<bfloat16, float>(ctx.stream(), bf16_at(ws, dx_at), dx.data(),
                                        batch * g.in_c, g.in_h, g.in_w, g.pad_top, g.pad_left,
                                        g.in_h + g.pad_top + g.pad_bottom,
                                        g.in_w + g.pad_left + g.pad_right);
    else
      launch::convert_add<bfloat16, float>(ctx.stream(), bf16_at(ws, dx_at), dx.data(),
                                           dx.numel());
  }
}

}  // namespace detail

/// Number of algorithm choices cached so far, and how many calls reused one (for tests).
inline std::size_t conv2d_algorithm_cache_size() {
  return detail::ConvAlgoCache::instance().size();
}
inline std::size_t conv2d_algorithm_cache_hits() {
  return detail::ConvAlgoCache::instance().hits();
}

}  // namespace nddr::cuda

namespace nddr::ops::backend {

/// Convolution on the GPU through cuDNN (front door: nddr/ops/conv2d.hpp). T = float or double.
template <>
struct Conv2d<Cuda> {
  /// y = conv(x, w) + b on the GPU; shapes, options and errors as the CPU op. T = float, double.
  template <class T>
  static void conv2d_forward(Context<Cuda>& ctx, std::type_identity_t<TensorView<const T, Cuda>> x,
                             std::type_identity_t<TensorView<const T, Cuda>> w,
                             std::type_identity_t<TensorView<const T, Cuda>> b,
                             TensorView<T, Cuda> y, const Conv2dOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::conv2d_forward: CUDA supports float and double");
    constexpr const char* kWho = "nddr::ops::conv2d_forward";
    namespace cd = cuda::detail;
    const Conv2dGeometry g = conv2d_geometry(x.shape(), w.shape(), opt, kWho);
    const std::int64_t batch = x.shape().n();
    if (y.numel() == 0) return;
    if constexpr (std::is_same_v<T, float>)
      if (cd::conv_math<T>(ctx.settings()) == cd::ConvMath::kBf16)
        return cd::conv2d_forward_bf16(ctx, x, w, b, y, opt, g, kWho);
    const bool padded = cd::conv2d_needs_padded_copy(g);
    cd::ConvDescriptors<T> d(batch, g, padded, cd::conv_math<T>(ctx.settings()));
    const std::size_t pad_bytes =
        padded ? cd::conv2d_align(cd::conv2d_padded_count(batch, g) * sizeof(T)) : 0;
    const cd::ConvAlgo algo =
        cd::choose_algorithm<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT>(
            cd::conv_key<T>(ctx, cd::ConvDirection::kForward, batch, g,
                            cd::conv_math<T>(ctx.settings())),
            kWho,
            [&](cudnnConvolutionFwdAlgoPerf_t* perf, int* count) {
              NDDR_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
                                  ctx.cudnn(), d.x, d.w, d.conv, d.y,
                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, count, perf),
                              kWho, ": choosing a cuDNN forward algorithm for input ",
                              x.shape().str());
            },
            [&](cudnnConvolutionFwdAlgoPerf_t* perf, int* count, std::size_t bytes) {
              // y is assigned below anyway, so the candidates may write it.
              char* ws = static_cast<char*>(ctx.workspace_bytes(pad_bytes + bytes));
              if (padded) cd::conv2d_pad_input(ctx, x.data(), reinterpret_cast<T*>(ws), batch, g);
              NDDR_CUDA_CHECK(
                  cudnnFindConvolutionForwardAlgorithmEx(
                      ctx.cudnn(), d.x, padded ? ws : static_cast<const void*>(x.data()), d.w,
                      w.data(), d.conv, d.y, y.data(), CUDNN_CONVOLUTION_FWD_ALGO_COUNT, count,
                      perf, ws + pad_bytes, bytes),
                  kWho, ": timing cuDNN forward algorithms for input ", x.shape().str());
            });
    cd::use_algorithm_math(d, algo, cd::conv_math<T>(ctx.settings()), kWho);
    char* ws = static_cast<char*>(ctx.workspace_bytes(pad_bytes + algo.workspace));
    const T* xin = x.data();
    if (padded) {
      cd::conv2d_pad_input(ctx, x.data(), reinterpret_cast<T*>(ws), batch, g);
      xin = reinterpret_cast<const T*>(ws);
    }
    const T one = T(1), zero = T(0);
    NDDR_CUDA_CHECK(cudnnConvolutionForward(ctx.cudnn(), &one, d.x, xin, d.w, w.data(), d.conv,
                                            static_cast<cudnnConvolutionFwdAlgo_t>(algo.algo),
                                            ws + pad_bytes, algo.workspace, &zero, d.y, y.data()),
                    kWho, ": cuDNN forward convolution of input ", x.shape().str(), " and weight ",
                    w.shape().str());
    if (opt.use_bias)
      cuda::launch::bias_add<T>(ctx.stream(), b.data(), y.data(), batch, g.out_c,
                                g.out_h * g.out_w);
  }

  /// dx += conv^T(dy, w) on the GPU (skipped when dx is empty); as the CPU op.
  template <class T>
  static void conv2d_backward_data(Context<Cuda>& ctx,
                                   std::type_identity_t<TensorView<const T, Cuda>> w,
                                   std::type_identity_t<TensorView<const T, Cuda>> dy,
                                   TensorView<T, Cuda> dx, const Conv2dOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::conv2d_backward_data: CUDA supports float and double");
    if (dx.empty()) return;
    constexpr const char* kWho = "nddr::ops::conv2d_backward_data";
    namespace cd = cuda::detail;
    const Conv2dGeometry g = conv2d_geometry(dx.shape(), w.shape(), opt, kWho);
    const std::int64_t batch = dx.shape().n();
    if (dx.numel() == 0 || dy.numel() == 0) return;
    if constexpr (std::is_same_v<T, float>)
      if (cd::conv_math<T>(ctx.settings()) == cd::ConvMath::kBf16)
        return cd::conv2d_backward_bf16(ctx, {}, w, dy, dx, {}, g, kWho);
    const bool padded = cd::conv2d_needs_padded_copy(g);
    cd::ConvDescriptors<T> d(batch, g, padded, cd::conv_math<T>(ctx.settings()));
    const std::size_t pad_bytes =
        padded ? cd::conv2d_align(cd::conv2d_padded_count(batch, g) * sizeof(T)) : 0;
    const cd::ConvAlgo algo = cd::choose_algorithm<cudnnConvolutionBwdDataAlgoPerf_t,
                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT>(
        cd::conv_key<T>(ctx, cd::ConvDirection::kBackwardData, batch, g,
                        cd::conv_math<T>(ctx.settings())),
        kWho,
        [&](cudnnConvolutionBwdDataAlgoPerf_t* perf, int* count) {
          NDDR_CUDA_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
                              ctx.cudnn(), d.w, d.y, d.conv, d.x,
                              CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, count, perf),
                          kWho, ": choosing a cuDNN backward-data algorithm for dx ",
                          dx.shape().str());
        },
        [&](cudnnConvolutionBwdDataAlgoPerf_t* perf, int* count, std::size_t bytes) {
          // The candidates overwrite their output: the padded buffer is scratch anyway; dx holds
          // the sum so far, so they write a scratch block of its size instead.
          char* ws = static_cast<char*>(ctx.workspace_bytes(pad_bytes + bytes));
          const std::size_t dx_bytes = static_cast<std::size_t>(dx.numel()) * sizeof(T);
          void* scratch = padded ? nullptr : Storage<Cuda>::allocate(dx_bytes);
          const cudnnStatus_t status = cudnnFindConvolutionBackwardDataAlgorithmEx(
              ctx.cudnn(), d.w, w.data(), d.y, dy.data(), d.conv, d.x, padded ? ws : scratch,
              CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, count, perf, ws + pad_bytes, bytes);
          if (scratch) {
            ctx.synchronize();
            Storage<Cuda>::deallocate(scratch);
          }
          NDDR_CUDA_CHECK(status, kWho, ": timing cuDNN backward-data algorithms for dx ",
                          dx.shape().str());
        });
    cd::use_algorithm_math(d, algo, cd::conv_math<T>(ctx.settings()), kWho);
    char* ws = static_cast<char*>(ctx.workspace_bytes(pad_bytes + algo.workspace));
    T* out = padded ? reinterpret_cast<T*>(ws) : dx.data();
    // Straight into dx: cuDNN accumulates with beta = 1. Via the padded buffer: assign there,
    // then add its interior onto dx.
    const T one = T(1), beta = padded ? T(0) : T(1);
    NDDR_CUDA_CHECK(
        cudnnConvolutionBackwardData(ctx.cudnn(), &one, d.w, w.data(), d.y, dy.data(), d.conv,
                                     static_cast<cudnnConvolutionBwdDataAlgo_t>(algo.algo),
                                     ws + pad_bytes, algo.workspace, &beta, d.x, out),
        kWho, ": cuDNN backward-data convolution of dy ", dy.shape().str(), " and weight ",
        w.shape().str());
    if (padded)
      cuda::launch::crop_add<T>(ctx.stream(), out, dx.data(), batch * g.in_c, g.in_h, g.in_w,
                                g.pad_top, g.pad_left, g.in_h + g.pad_top + g.pad_bottom,
                                g.in_w + g.pad_left + g.pad_right);
  }

  /// dw = sum_n dy_n * col(x_n)^T and db = sum of dy over (n, h, w), both assigned (each skipped
  /// when empty; db must be empty unless `opt.use_bias`); as the CPU op.
  template <class T>
  static void conv2d_backward_weights(Context<Cuda>& ctx,
                                      std::type_identity_t<TensorView<const T, Cuda>> x,
                                      std::type_identity_t<TensorView<const T, Cuda>> dy,
                                      TensorView<T, Cuda> dw,
                                      std::type_identity_t<TensorView<T, Cuda>> db,
                                      const Conv2dOptions& opt) {
    static_assert(cuda::kKernelType<T>,
                  "nddr::ops::conv2d_backward_weights: CUDA supports float and double");
    constexpr const char* kWho = "nddr::ops::conv2d_backward_weights";
    namespace cd = cuda::detail;
    if (!db.empty()) {
      cuda::launch::channel_sum<T>(ctx.stream(), dy.data(), db.data(), dy.shape().n(),
                                   dy.shape().c(), dy.shape().h() * dy.shape().w());
    }
    if (dw.empty()) return;
    const Conv2dGeometry g = conv2d_geometry(x.shape(), dw.shape(), opt, kWho);
    const std::int64_t batch = x.shape().n();
    if (batch == 0 || dy.numel() == 0) {
      NDDR_CUDA_CHECK(
          cudaMemsetAsync(dw.data(), 0, static_cast<std::size_t>(dw.numel()) * sizeof(T),
                          ctx.stream()),
          kWho, ": zeroing dw ", dw.shape().str());
      return;
    }
    if constexpr (std::is_same_v<T, float>)
      if (cd::conv_math<T>(ctx.settings()) == cd::ConvMath::kBf16)
        return cd::conv2d_backward_bf16(ctx, x, {}, dy, {}, dw, g, kWho);
    const bool padded = cd::conv2d_needs_padded_copy(g);
    cd::ConvDescriptors<T> d(batch, g, padded, cd::conv_math<T>(ctx.settings()));
    const std::size_t pad_bytes =
        padded ? cd::conv2d_align(cd::conv2d_padded_count(batch, g) * sizeof(T)) : 0;
    const cd::ConvAlgo algo = cd::choose_algorithm<cudnnConvolutionBwdFilterAlgoPerf_t,
                                                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT>(
        cd::conv_key<T>(ctx, cd::ConvDirection::kBackwardFilter, batch, g,
                        cd::conv_math<T>(ctx.settings())),
        kWho,
        [&](cudnnConvolutionBwdFilterAlgoPerf_t* perf, int* count) {
          NDDR_CUDA_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                              ctx.cudnn(), d.x, d.y, d.conv, d.w,
                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, count, perf),
                          kWho, ": choosing a cuDNN backward-filter algorithm for input ",
                          x.shape().str());
        },
        [&](cudnnConvolutionBwdFilterAlgoPerf_t* perf, int* count, std::size_t bytes) {
          // dw is assigned below anyway, so the candidates may write it.
          char* ws = static_cast<char*>(ctx.workspace_bytes(pad_bytes + bytes));
          if (padded) cd::conv2d_pad_input(ctx, x.data(), reinterpret_cast<T*>(ws), batch, g);
          NDDR_CUDA_CHECK(
              cudnnFindConvolutionBackwardFilterAlgorithmEx(
                  ctx.cudnn(), d.x, padded ? ws : static_cast<const void*>(x.data()), d.y,
                  dy.data(), d.conv, d.w, dw.data(), CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, count,
                  perf, ws + pad_bytes, bytes),
              kWho, ": timing cuDNN backward-filter algorithms for input ", x.shape().str());
        });
    cd::use_algorithm_math(d, algo, cd::conv_math<T>(ctx.settings()), kWho);
    char* ws = static_cast<char*>(ctx.workspace_bytes(pad_bytes + algo.workspace));
    const T* xin = x.data();
    if (padded) {
      cd::conv2d_pad_input(ctx, x.data(), reinterpret_cast<T*>(ws), batch, g);
      xin = reinterpret_cast<const T*>(ws);
    }
    const T one = T(1), zero = T(0);
    NDDR_CUDA_CHECK(
        cudnnConvolutionBackwardFilter(ctx.cudnn(), &one, d.x, xin, d.y, dy.data(), d.conv,
                                       static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo.algo),
                                       ws + pad_bytes, algo.workspace, &zero, d.w, dw.data()),
        kWho, ": cuDNN backward-filter convolution of input ", x.shape().str(), " and dy ",
        dy.shape().str());
  }

  /// Full backward pass on the GPU: dx accumulated (skipped when empty), dw and db assigned.
  template <class T>
  static void conv2d_backward(Context<Cuda>& ctx, std::type_identity_t<TensorView<const T, Cuda>> x,
                              std::type_identity_t<TensorView<const T, Cuda>> w,
                              std::type_identity_t<TensorView<const T, Cuda>> dy,
                              TensorView<T, Cuda> dx, std::type_identity_t<TensorView<T, Cuda>> dw,
                              std::type_identity_t<TensorView<T, Cuda>> db,
                              const Conv2dOptions& opt) {
    if constexpr (std::is_same_v<T, float>) {
      namespace cd = cuda::detail;
      // BF16 with both gradients: one pass that rounds dy once.
      if (cd::conv_math<T>(ctx.settings()) == cd::ConvMath::kBf16 && !dx.empty() && !dw.empty() &&
          dx.shape() == x.shape() && dw.shape() == w.shape() && x.numel() > 0 && dy.numel() > 0) {
        constexpr const char* kWho = "nddr::ops::conv2d_backward_weights";
        conv2d_backward_weights<T>(ctx, x, dy, {}, db, opt);  // db only
        const Conv2dGeometry g = conv2d_geometry(x.shape(), dw.shape(), opt, kWho);
        return cd::conv2d_backward_bf16(ctx, x, w, dy, dx, dw, g, "nddr::ops::conv2d_backward");
      }
    }
    conv2d_backward_weights<T>(ctx, x, dy, dw, db, opt);
    conv2d_backward_data<T>(ctx, w, dy, dx, opt);
  }
};

}  // namespace nddr::ops::backend
