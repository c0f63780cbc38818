#pragma once
/// \file
/// `NumericSettings`: how one `Context<D>` computes where more than one way is allowed (BF16 or
/// TF32 convolutions, TF32 GEMMs, cuDNN's algorithm choice, the CPU convolution algorithm).
/// Each context owns its settings (`ctx.settings()`, `ctx.set_settings(...)`); two contexts in
/// one process compute each under its own, and every cache or captured CUDA Graph that depends
/// on them keys on them. `ScopedSettings` changes them for a scope (tests, benchmarks).
///
/// Example:
///   nddr::Context<nddr::Cuda> ctx;
///   ctx.set_settings(nddr::NumericSettings{}.conv_tf32(true).matmul_tf32(true));
///   {
///     nddr::ScopedSettings bf16(ctx, nddr::NumericSettings(ctx.settings()).conv_bf16(true));
///     ...                                                       // BF16 in this scope
///   }                                                           // TF32 again

#include <string>

namespace nddr {

namespace cpu {
/// Convolution algorithm of the CPU backend. kAuto picks per shape and direction
/// (`ops::conv2d_select_algorithm`); the others force one wherever it applies (Winograd:
/// 3x3, stride 1; tap-skipping: any kernel) and fall back to im2col elsewhere. kWinograd is
/// F(2x2, 3x3), kWinogradF4 is F(4x4, 3x3).
enum class ConvAlgo { kAuto, kIm2col, kWinograd, kTapSkip, kWinogradF4 };
}  // namespace cpu

/// The numeric settings of a context; all off (full FP32, heuristic algorithms) by default.
class NumericSettings {
 public:
  /// BF16 mixed precision for float convolutions on every device: each call rounds its operands
  /// to bfloat16 (x and w forward, dy and w for the data gradient, x and dy for the weight
  /// gradient), multiplies them with FP32 accumulation, and rounds the product to bfloat16
  /// before widening it into the float output (assigned to y and dw, added onto dx; the bias is
  /// added and its gradient summed in float). On a GPU that is cuDNN on tensor cores
  /// (`CUDNN_DATA_BFLOAT16` copies in the workspace); on the CPU the same numerics are emulated
  /// with rounded copies around the FP32 op, slower than FP32, for checking BF16 training
  /// anywhere. Activations between layers, batch norm, losses, parameters and the SGD step stay
  /// FP32. Overrides `conv_tf32`; double convolutions ignore it.
  bool conv_bf16() const { return conv_bf16_; }
  NumericSettings& conv_bf16(bool on) {
    conv_bf16_ = on;
    return *this;
  }
  /// GPU: float convolutions may use TF32 tensor cores (10-bit mantissa products, FP32
  /// accumulation), PyTorch's default for cuDNN convolutions. Off: full FP32
  /// (`CUDNN_FMA_MATH`), matching the CPU op to rounding. Double is unaffected.
  bool conv_tf32() const { return conv_tf32_; }
  NumericSettings& conv_tf32(bool on) {
    conv_tf32_ = on;
    return *this;
  }
  /// GPU: float GEMMs (the `Linear` ops) may use TF32 tensor cores
  /// (`CUBLAS_TF32_TENSOR_OP_MATH`), like PyTorch's `torch.backends.cuda.matmul.allow_tf32`.
  bool matmul_tf32() const { return matmul_tf32_; }
  NumericSettings& matmul_tf32(bool on) {
    matmul_tf32_ = on;
    return *this;
  }
  /// GPU: cuDNN's deterministic convolution algorithms only, so two runs of a step give the same
  /// bits (PyTorch's `torch.backends.cudnn.deterministic`); when a shape has no deterministic
  /// algorithm within the workspace limit, the fastest other one runs.
  bool conv_deterministic() const { return conv_deterministic_; }
  NumericSettings& conv_deterministic(bool on) {
    conv_deterministic_ = on;
    return *this;
  }
  /// GPU: choose each shape's algorithms by timing cuDNN's candidates at its first call
  /// (`cudnnFind*AlgorithmEx`, PyTorch's `torch.backends.cudnn.benchmark`) instead of cuDNN's
  /// heuristic choice; later calls reuse the choice.
  bool conv_benchmark() const { return conv_benchmark_; }
  NumericSettings& conv_benchmark(bool on) {
    conv_benchmark_ = on;
    return *this;
  }
  /// CPU: force a convolution algorithm (tests and benchmarks); kAuto (default) picks per shape.
  cpu::ConvAlgo cpu_conv_algorithm() const { return cpu_conv_algorithm_; }
  NumericSettings& cpu_conv_algorithm(cpu::ConvAlgo algo) {
    cpu_conv_algorithm_ = algo;
    return *this;
  }

  bool operator==(const NumericSettings&) const = default;

  /// "fp32", or the settings that are on: "bf16 conv, deterministic conv".
  std::string str() const {
    std::string s;
    const auto add = [&](bool on, const char* what) {
      if (on) s += (s.empty() ? "" : ", ") + std::string(what);
    };
    add(conv_bf16_, "bf16 conv");
    add(conv_tf32_ && !conv_bf16_, "tf32 conv");
    add(matmul_tf32_, "tf32 matmul");
    add(conv_deterministic_, "deterministic conv");
    add(conv_benchmark_, "benchmarked conv");
    add(cpu_conv_algorithm_ != cpu::ConvAlgo::kAuto, "forced cpu conv algorithm");
    return s.empty() ? "fp32" : s;
  }

 private:
  bool conv_bf16_ = false;
  bool conv_tf32_ = false;
  bool matmul_tf32_ = false;
  bool conv_deterministic_ = false;
  bool conv_benchmark_ = false;
  cpu::ConvAlgo cpu_conv_algorithm_ = cpu::ConvAlgo::kAuto;
};

/// Gives a context `settings` until the end of the scope, then its previous ones back.
/// `Ctx` is any `Context<D>`.
template <class Ctx>
class ScopedSettings {
 public:
  ScopedSettings(Ctx& ctx, const NumericSettings& settings) : ctx_(ctx), saved_(ctx.settings()) {
    ctx_.set_settings(settings);
  }
  ~ScopedSettings() { ctx_.set_settings(saved_); }
  ScopedSettings(const ScopedSettings&) = delete;
  ScopedSettings& operator=(const ScopedSettings&) = delete;

 private:
  Ctx& ctx_;
  NumericSettings saved_;
};

}  // namespace nddr
