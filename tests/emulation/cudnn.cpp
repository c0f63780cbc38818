/// \file
/// The CUDA emulator's cuDNN: the legacy (v7-style) convolution API that nddr's CUDA backend
/// calls (include/nddr/backend/cuda/handles.hpp, conv2d.hpp, error.hpp), defined against the
/// real <cudnn.h> so that nddr's CUDA tests link here instead of libcudnn and run on the CPU.
///
/// What is emulated:
///  - Handles and descriptors are plain structs (the opaque types the header declares) kept in a
///    registry of live objects, so a destroyed or never-created one is reported, not used.
///  - Tensors and filters are 4-d, fully packed NCHW; data types CUDNN_DATA_FLOAT, _DOUBLE and
///    _BFLOAT16, with the configurations cuDNN supports (float data / float compute, double /
///    double, bfloat16 data / float compute). Convolutions are 2-d, group count 1, in either
///    mode (CUDNN_CONVOLUTION flips the filter).
///  - The arithmetic is naive and exact: every product is accumulated in double and each output
///    is rounded once, `alpha * conv + beta * prior` (the prior output is not read when
///    beta == 0, as in cuDNN). Every algorithm computes the same result. On float data, a
///    convolution descriptor whose math type permits tensor cores (anything but
///    CUDNN_FMA_MATH: since Ampere CUDNN_DEFAULT_MATH lets cuDNN use TF32) multiplies operands
///    rounded to TF32 (nddr_emu::round_tf32), so a full-precision call that forgot
///    CUDNN_FMA_MATH shows the TF32 error, as on an H100.
///  - Validation follows cuDNN: inconsistent descriptors, null or non-device pointers, an unknown
///    algorithm, or a workspace smaller than the algorithm's reported requirement give
///    CUDNN_STATUS_BAD_PARAM (unsupported configurations CUDNN_STATUS_NOT_SUPPORTED), with an
///    explanation for cudnnGetLastErrorString. An algorithm's workspace is overwritten with
///    0xFF bytes (NaNs) before it runs, so a caller that keeps data there sees it clobbered.
///  - Work is queued with nddr_emu::enqueue on the handle's stream: validated when the call is
///    made, computed when the stream runs it (now, or at each launch of a captured graph), with
///    the scalars and descriptor contents captured by value.
///
/// The algorithms each direction reports (the same entries from cudnnGet*_v7 and
/// cudnnFind*Ex; memory in bytes):
///
///   direction        algorithm              math                     memory  determinism
///   forward          IMPLICIT_GEMM          DEFAULT (double: FMA)         0  deterministic
///                    IMPLICIT_PRECOMP_GEMM  TENSOR_OP (double: FMA)    4096  deterministic
///                    GEMM                   FMA                        8192  deterministic
///   backward data    ALGO_1                 DEFAULT (double: FMA)         0  deterministic
///                    WINOGRAD_NONFUSED      TENSOR_OP (double: FMA)    4096  deterministic
///                    ALGO_0                 FMA                        8192  non-deterministic
///   backward filter  ALGO_1                 DEFAULT (double: FMA)         0  deterministic
///                    WINOGRAD_NONFUSED      TENSOR_OP (double: FMA)    4096  deterministic
///                    ALGO_0                 FMA                        8192  non-deterministic
///
/// The heuristics (Get*_v7) rank them in that order, except that the tensor-core entry comes
/// first when the convolution descriptor's math type allows tensor cores (anything but
/// CUDNN_FMA_MATH) on float or bfloat16 data, as on Ampere and later. The timed variants
/// (Find*Ex) rank by made-up times that put the third entry first, then the second, then the
/// first; entries whose memory exceeds the workspace given are not run and come last with
/// CUDNN_STATUS_NOT_SUPPORTED. Find*Ex fails with CUDNN_STATUS_NOT_SUPPORTED while the stream
/// is being captured (it would time kernels and synchronize) and invalidates the capture.

#include <cudnn.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "nddr/core/bfloat16.hpp"
#include "runtime.hpp"

// --- The opaque types of <cudnn.h> ------------------------------------------------------------

/// A cuDNN handle: the stream its work is queued on.
struct cudnnContext {
  cudaStream_t stream = nullptr;
};

/// A 4-d tensor descriptor (fully packed NCHW once set).
struct cudnnTensorStruct {
  bool set = false;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
};

/// A 4-d filter descriptor: k output channels, c input channels, h x w taps (NCHW once set).
struct cudnnFilterStruct {
  bool set = false;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int k = 0, c = 0, h = 0, w = 0;
};

/// A 2-d convolution descriptor. A new one has the default math type and group count 1, as in
/// cuDNN; the geometry must be set before use.
struct cudnnConvolutionStruct {
  bool set = false;
  int pad_h = 0, pad_w = 0;
  int stride_h = 1, stride_w = 1;
  int dilation_h = 1, dilation_w = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnDataType_t compute_type = CUDNN_DATA_FLOAT;
  cudnnMathType_t math_type = CUDNN_DEFAULT_MATH;
  int group_count = 1;
};

namespace {

// --- Errors and the registry of live objects ----------------------------------------------------

/// The explanation of this thread's last failure (cudnnGetLastErrorString), empty when none.
thread_local std::string t_last_error;

/// Records why `fn` fails with `status` and returns `status`.
cudnnStatus_t fail(cudnnStatus_t status, const char* fn, const std::string& why) {
  t_last_error = std::string(fn) + ": " + why;
  return status;
}

/// Like `fail`, and also prints the explanation to stderr: for pointer errors, which usually
/// mean a host buffer (or a freed one) reached a device call and deserve to be seen at once.
cudnnStatus_t fail_loudly(cudnnStatus_t status, const char* fn, const std::string& why) {
  std::fprintf(stderr, "[nddr CUDA emulator] cuDNN %s: %s\n", fn, why.c_str());
  return fail(status, fn, why);
}

/// Handles and descriptors created and not yet destroyed. Never freed, so that a handle
/// destroyed during static destruction still finds it.
std::unordered_set<const void*>& live_objects() {
  static auto* live = new std::unordered_set<const void*>;
  return *live;
}

bool is_live(const void* p) { return p != nullptr && live_objects().count(p) != 0; }

using Lock = std::lock_guard<std::recursive_mutex>;

/// Creates a `T` for a cudnnCreate* call.
template <class T>
cudnnStatus_t create_object(T** out, const char* fn) {
  if (out == nullptr) return fail(CUDNN_STATUS_BAD_PARAM, fn, "the output pointer is null");
  T* object = new T;
  live_objects().insert(object);
  *out = object;
  return CUDNN_STATUS_SUCCESS;
}

/// Destroys a `T` for a cudnnDestroy* call.
template <class T>
cudnnStatus_t destroy_object(T* object, const char* fn) {
  if (!is_live(object))
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                object == nullptr ? "the object is null"
                                  : "the object was never created or was "
                                    "already destroyed");
  live_objects().erase(object);
  delete object;
  return CUDNN_STATUS_SUCCESS;
}

using nddr_emu::hex;

// --- Data types ---------------------------------------------------------------------------------

const char* type_name(cudnnDataType_t t) {
  switch (t) {
    case CUDNN_DATA_FLOAT:
      return "CUDNN_DATA_FLOAT";
    case CUDNN_DATA_DOUBLE:
      return "CUDNN_DATA_DOUBLE";
    case CUDNN_DATA_HALF:
      return "CUDNN_DATA_HALF";
    case CUDNN_DATA_BFLOAT16:
      return "CUDNN_DATA_BFLOAT16";
    default:
      return "an unsupported cudnnDataType_t";
  }
}

/// Whether the emulator stores tensors of type `t` (float, double, bfloat16).
bool is_storage_type(cudnnDataType_t t) {
  return t == CUDNN_DATA_FLOAT || t == CUDNN_DATA_DOUBLE || t == CUDNN_DATA_BFLOAT16;
}

std::size_t element_size(cudnnDataType_t t) {
  return t == CUDNN_DATA_DOUBLE ? 8 : t == CUDNN_DATA_FLOAT ? 4 : 2;
}

/// Element i of a buffer of type t, widened to double.
double load_one(const void* p, cudnnDataType_t t, std::int64_t i) {
  switch (t) {
    case CUDNN_DATA_DOUBLE:
      return static_cast<const double*>(p)[i];
    case CUDNN_DATA_FLOAT:
      return static_cast<const float*>(p)[i];
    default:
      return nddr::float_from_bfloat16_bits(static_cast<const std::uint16_t*>(p)[i]);
  }
}

/// Writes `v` into element i, rounded to the buffer's type (bfloat16: through float, to nearest
/// even, as a GPU kernel accumulating in float would round its result).
void store_one(void* p, cudnnDataType_t t, std::int64_t i, double v) {
  switch (t) {
    case CUDNN_DATA_DOUBLE:
      static_cast<double*>(p)[i] = v;
      break;
    case CUDNN_DATA_FLOAT:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      break;
    default:
      static_cast<std::uint16_t*>(p)[i] = nddr::bfloat16_bits(static_cast<float>(v));
      break;
  }
}

/// A whole buffer of `count` elements, widened to double.
std::vector<double> load(const void* p, cudnnDataType_t t, std::int64_t count) {
  std::vector<double> out(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) out[static_cast<std::size_t>(i)] = load_one(p, t, i);
  return out;
}

/// out = alpha * acc + beta * out, element by element; out is not read when beta == 0 (it may
/// hold garbage or NaNs), and acc is ignored when alpha == 0.
void blend(void* out, cudnnDataType_t t, const std::vector<double>& acc, double alpha,
           double beta) {
  const auto count = static_cast<std::int64_t>(acc.size());
  for (std::int64_t i = 0; i < count; ++i) {
    double v = alpha == 0.0 ? 0.0 : alpha * acc[static_cast<std::size_t>(i)];
    if (beta != 0.0) v += beta * load_one(out, t, i);
    store_one(out, t, i, v);
  }
}

/// The scaling factor a cuDNN call reads from `p`: a double for double data, else a float.
double scalar(const void* p, cudnnDataType_t data_type) {
  return data_type == CUDNN_DATA_DOUBLE ? *static_cast<const double*>(p)
                                        : static_cast<double>(*static_cast<const float*>(p));
}

// --- Buffers --------------------------------------------------------------------------------

/// A device buffer a call reads or writes.
struct Buffer {
  const char* name;
  const void* p;
  std::size_t bytes;
};

/// Checks that `b` is non-null and lies inside one live emulated device allocation.
cudnnStatus_t check_buffer(const char* fn, const Buffer& b) {
  if (b.p == nullptr)
    return fail_loudly(CUDNN_STATUS_BAD_PARAM, fn, std::string(b.name) + " is a null pointer");
  if (!nddr_emu::is_device_range(b.p, b.bytes))
    return fail_loudly(CUDNN_STATUS_BAD_PARAM, fn,
                       std::string(b.name) + " (" + hex(b.p) + ", " + std::to_string(b.bytes) +
                           " bytes) does not lie inside one live cudaMalloc allocation (a host "
                           "pointer, a freed buffer, or a buffer too small for its descriptor)");
  return CUDNN_STATUS_SUCCESS;
}

bool overlap(const Buffer& a, const Buffer& b) {
  return nddr_emu::ranges_overlap(a.p, a.bytes, b.p, b.bytes);
}

/// Fails when `out` overlaps one of `others` (cuDNN's convolutions are not in-place).
cudnnStatus_t check_disjoint(const char* fn, const Buffer& out,
                             std::initializer_list<Buffer> others) {
  for (const Buffer& o : others)
    if (overlap(out, o))
      return fail_loudly(CUDNN_STATUS_BAD_PARAM, fn,
                         std::string(out.name) + " (" + hex(out.p) + ", " +
                             std::to_string(out.bytes) + " bytes) overlaps " + o.name + " (" +
                             hex(o.p) + ", " + std::to_string(o.bytes) + " bytes)");
  return CUDNN_STATUS_SUCCESS;
}

// --- Convolution problems -----------------------------------------------------------------------

enum class Direction { kForward, kBackwardData, kBackwardFilter };

/// A validated convolution: input x (n, c, h, w), filter (k, c, r, s), output y (n, k, p, q).
struct Problem {
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  std::int64_t n = 0, c = 0, h = 0, w = 0;
  std::int64_t k = 0, r = 0, s = 0;
  std::int64_t p = 0, q = 0;
  std::int64_t pad_h = 0, pad_w = 0, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  bool flip = false;                          // CUDNN_CONVOLUTION
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;  // of the convolution descriptor

  std::int64_t x_count() const { return n * c * h * w; }
  std::int64_t w_count() const { return k * c * r * s; }
  std::int64_t y_count() const { return n * k * p * q; }
  std::size_t bytes(std::int64_t count) const {
    return static_cast<std::size_t>(count) * element_size(type);
  }
};

std::string dims(std::int64_t a, std::int64_t b, std::int64_t c, std::int64_t d) {
  std::string s = "(";  // appended, not `"(" + ...`: GCC 12 warns falsely (-Wrestrict) on that
  for (const std::int64_t v : {a, b, c, d}) {
    if (s.size() > 1) s += ", ";
    s += std::to_string(v);
  }
  return s + ")";
}

/// One output extent of a convolution: (in + 2 pad - dil (k - 1) - 1) / stride + 1, or a value
/// below 1 when the dilated filter does not fit the padded input.
std::int64_t output_extent(std::int64_t in, std::int64_t pad, std::int64_t dil, std::int64_t k,
                           std::int64_t stride) {
  const std::int64_t span = in + 2 * pad - dil * (k - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

/// Validates the descriptors of a convolution call as cuDNN does and describes the problem.
cudnnStatus_t describe_problem(const char* fn, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                               cudnnConvolutionDescriptor_t conv, cudnnTensorDescriptor_t y,
                               const char* x_name, const char* y_name, Problem* out) {
  const auto bad = [&](const std::string& why) { return fail(CUDNN_STATUS_BAD_PARAM, fn, why); };
  if (!is_live(x) || !x->set) return bad(std::string("the ") + x_name + " descriptor is not set");
  if (!is_live(y) || !y->set) return bad(std::string("the ") + y_name + " descriptor is not set");
  if (!is_live(w) || !w->set) return bad("the filter descriptor is not set");
  if (!is_live(conv) || !conv->set) return bad("the convolution descriptor is not set");
  if (x->type != w->type || x->type != y->type)
    return bad(std::string("data types differ: ") + x_name + " " + type_name(x->type) +
               ", filter " + type_name(w->type) + ", " + y_name + " " + type_name(y->type));
  // The configurations cuDNN runs: FLOAT_CONFIG, DOUBLE_CONFIG, PSEUDO_BFLOAT16_CONFIG.
  const cudnnDataType_t want_compute =
      x->type == CUDNN_DATA_DOUBLE ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  if (conv->compute_type != want_compute)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn,
                std::string(type_name(x->type)) + " data with compute type " +
                    type_name(conv->compute_type) + " is not a supported configuration (" +
                    type_name(want_compute) + " compute is)");
  if (conv->group_count != 1)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "the emulator supports group count 1 only");
  if (x->c != w->c)
    return bad(std::string(x_name) + " has " + std::to_string(x->c) + " channels but the filter " +
               dims(w->k, w->c, w->h, w->w) + " expects " + std::to_string(w->c));
  Problem pb;
  pb.type = x->type;
  pb.n = x->n, pb.c = x->c, pb.h = x->h, pb.w = x->w;
  pb.k = w->k, pb.r = w->h, pb.s = w->w;
  pb.pad_h = conv->pad_h, pb.pad_w = conv->pad_w;
  pb.stride_h = conv->stride_h, pb.stride_w = conv->stride_w;
  pb.dil_h = conv->dilation_h, pb.dil_w = conv->dilation_w;
  pb.flip = conv->mode == CUDNN_CONVOLUTION;
  pb.math = conv->math_type;
  pb.p = output_extent(pb.h, pb.pad_h, pb.dil_h, pb.r, pb.stride_h);
  pb.q = output_extent(pb.w, pb.pad_w, pb.dil_w, pb.s, pb.stride_w);
  if (pb.p < 1 || pb.q < 1)
    return bad("the dilated filter " + dims(w->k, w->c, w->h, w->w) + " does not fit " + x_name +
               " " + dims(x->n, x->c, x->h, x->w) + " padded by (" + std::to_string(pb.pad_h) +
               ", " + std::to_string(pb.pad_w) + ")");
  if (y->n != x->n || y->c != w->k || y->h != pb.p || y->w != pb.q)
    return bad(std::string(y_name) + " is " + dims(y->n, y->c, y->h, y->w) + " but " + x_name +
               " " + dims(x->n, x->c, x->h, x->w) + ", filter " + dims(w->k, w->c, w->h, w->w) +
               ", padding (" + std::to_string(pb.pad_h) + ", " + std::to_string(pb.pad_w) +
               "), stride (" + std::to_string(pb.stride_h) + ", " + std::to_string(pb.stride_w) +
               ") and dilation (" + std::to_string(pb.dil_h) + ", " + std::to_string(pb.dil_w) +
               ") give " + dims(pb.n, pb.k, pb.p, pb.q));
  *out = pb;
  return CUDNN_STATUS_SUCCESS;
}

/// The output indices o in [*lo, *hi) whose input index o * stride + offset lies in [0, in).
void valid_range(std::int64_t offset, std::int64_t stride, std::int64_t in, std::int64_t out,
                 std::int64_t* lo, std::int64_t* hi) {
  *lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  *hi = offset > in - 1 ? 0 : std::min(out, (in - 1 - offset) / stride + 1);
  if (*hi < *lo) *hi = *lo;
}

/// The double-precision sums of one direction. x, w, y are widened copies; the direction's
/// output (y, x or w respectively) holds zeros on entry and the sums on return.
template <Direction D>
void accumulate(const Problem& pb, std::vector<double>& x, std::vector<double>& w,
                std::vector<double>& y) {
  for (std::int64_t n = 0; n < pb.n; ++n)
    for (std::int64_t k = 0; k < pb.k; ++k)
      for (std::int64_t c = 0; c < pb.c; ++c)
        for (std::int64_t r = 0; r < pb.r; ++r) {
          const std::int64_t off_h = r * pb.dil_h - pb.pad_h;
          std::int64_t p0, p1;
          valid_range(off_h, pb.stride_h, pb.h, pb.p, &p0, &p1);
          for (std::int64_t s = 0; s < pb.s; ++s) {
            const std::int64_t off_w = s * pb.dil_w - pb.pad_w;
            std::int64_t q0, q1;
            valid_range(off_w, pb.stride_w, pb.w, pb.q, &q0, &q1);
            // Tap (r, s) of the cross-correlation is filter element (r, s), or (R-1-r, S-1-s)
            // for a true convolution.
            const std::int64_t wr = pb.flip ? pb.r - 1 - r : r, ws = pb.flip ? pb.s - 1 - s : s;
            double& wv = w[static_cast<std::size_t>(((k * pb.c + c) * pb.r + wr) * pb.s + ws)];
            double filter_sum = 0.0;
            for (std::int64_t p = p0; p < p1; ++p) {
              const std::int64_t ih = p * pb.stride_h + off_h;
              double* xrow = x.data() + ((n * pb.c + c) * pb.h + ih) * pb.w;
              double* yrow = y.data() + ((n * pb.k + k) * pb.p + p) * pb.q;
              for (std::int64_t q = q0; q < q1; ++q) {
                const std::int64_t iw = q * pb.stride_w + off_w;
                if constexpr (D == Direction::kForward)
                  yrow[q] += xrow[iw] * wv;
                else if constexpr (D == Direction::kBackwardData)
                  xrow[iw] += yrow[q] * wv;
                else
                  filter_sum += xrow[iw] * yrow[q];
              }
            }
            if constexpr (D == Direction::kBackwardFilter) wv += filter_sum;
          }
        }
}

/// One convolution call as queued: the problem, the buffers and the scalars, by value.
struct ConvWork {
  Direction direction;
  Problem pb;
  const void* x;  // input, or the output dx
  const void* w;  // filter, or the output dw
  const void* y;  // output, or the input dy
  void* out;      // the direction's output: y, x or w
  double alpha, beta;
  void* workspace;
  std::size_t scribble;  // workspace bytes the algorithm "uses" (overwritten)
  const char* fn;
};

/// Runs a queued convolution. The buffers are checked again, since a captured graph may be
/// launched after one was freed (a kernel fault on a GPU).
void run(const ConvWork& wk) {
  const Problem& pb = wk.pb;
  const Buffer bufs[] = {{"x", wk.x, pb.bytes(pb.x_count())},
                         {"w", wk.w, pb.bytes(pb.w_count())},
                         {"y", wk.y, pb.bytes(pb.y_count())},
                         {"the workspace", wk.workspace, wk.scribble}};
  for (const Buffer& b : bufs)
    if (b.bytes > 0 && !nddr_emu::is_device_range(b.p, b.bytes)) {
      nddr_emu::report_error(cudaErrorIllegalAddress,
                             std::string("cuDNN ") + wk.fn + " ran with " + b.name + " (" +
                                 hex(b.p) + ") no longer in a live device allocation");
      return;
    }
  if (wk.scribble > 0) std::memset(wk.workspace, 0xff, wk.scribble);
  const bool fwd = wk.direction == Direction::kForward;
  const bool bwd_data = wk.direction == Direction::kBackwardData;
  const bool bwd_filter = wk.direction == Direction::kBackwardFilter;
  // The inputs widened to double, the output's sums starting at zero.
  std::vector<double> x = bwd_data ? std::vector<double>(static_cast<std::size_t>(pb.x_count()))
                                   : load(wk.x, pb.type, pb.x_count());
  std::vector<double> w = bwd_filter ? std::vector<double>(static_cast<std::size_t>(pb.w_count()))
                                     : load(wk.w, pb.type, pb.w_count());
  std::vector<double> y = fwd ? std::vector<double>(static_cast<std::size_t>(pb.y_count()))
                              : load(wk.y, pb.type, pb.y_count());
  if (pb.type == CUDNN_DATA_FLOAT && pb.math != CUDNN_FMA_MATH) {
    // TF32 tensor cores: the two operands of every product rounded to TF32.
    const auto round = [](std::vector<double>& v) {
      for (double& e : v) e = nddr_emu::round_tf32(static_cast<float>(e));
    };
    if (!fwd) round(y);
    if (!bwd_data) round(x);
    if (!bwd_filter) round(w);
  }
  if (wk.alpha != 0.0) {
    if (fwd)
      accumulate<Direction::kForward>(pb, x, w, y);
    else if (bwd_data)
      accumulate<Direction::kBackwardData>(pb, x, w, y);
    else
      accumulate<Direction::kBackwardFilter>(pb, x, w, y);
  }
  blend(wk.out, pb.type, fwd ? y : bwd_data ? x : w, wk.alpha, wk.beta);
}

// --- Algorithms ---------------------------------------------------------------------------------

/// One algorithm the emulator offers for a direction.
struct Candidate {
  int algo;
  cudnnMathType_t math;
  std::size_t memory;
  cudnnDeterminism_t determinism;
  float time_ms;  // what Find*Ex reports as measured
};

/// The candidates of `d` on data of type `t`, in the heuristics' base order (the header
/// comment's table). Tensor-core math only for float and bfloat16 data.
std::vector<Candidate> candidates(Direction d, cudnnDataType_t t) {
  const bool tensor_cores = t != CUDNN_DATA_DOUBLE;
  const cudnnMathType_t plain = tensor_cores ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  const cudnnMathType_t fast = tensor_cores ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  constexpr auto det = CUDNN_DETERMINISTIC, nondet = CUDNN_NON_DETERMINISTIC;
  switch (d) {
    case Direction::kForward:
      return {{CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, plain, 0, det, 0.10f},
              {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, fast, 4096, det, 0.08f},
              {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_FMA_MATH, 8192, det, 0.05f}};
    case Direction::kBackwardData:
      return {{CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, plain, 0, det, 0.10f},
              {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED, fast, 4096, det, 0.08f},
              {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_FMA_MATH, 8192, nondet, 0.05f}};
    case Direction::kBackwardFilter:
      break;
  }
  return {{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, plain, 0, det, 0.10f},
          {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED, fast, 4096, det, 0.08f},
          {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_FMA_MATH, 8192, nondet, 0.05f}};
}

int algo_count(Direction d) {
  switch (d) {
    case Direction::kForward:
      return CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
    case Direction::kBackwardData:
      return CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
    case Direction::kBackwardFilter:
      break;
  }
  return CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
}

/// One ranked entry of an algorithm list.
struct Ranked {
  Candidate c;
  cudnnStatus_t status;
  float time;
};

/// The heuristics' ranking: the base order, with the tensor-core entry first when the
/// descriptor's math type allows tensor cores on float or bfloat16 data.
std::vector<Ranked> heuristic_ranking(Direction d, const Problem& pb) {
  std::vector<Candidate> list = candidates(d, pb.type);
  if (pb.type != CUDNN_DATA_DOUBLE && pb.math != CUDNN_FMA_MATH) std::swap(list[0], list[1]);
  std::vector<Ranked> out;
  for (std::size_t i = 0; i < list.size(); ++i)
    out.push_back({list[i], CUDNN_STATUS_SUCCESS, 0.1f * static_cast<float>(i + 1)});
  return out;
}

/// The timed ranking: fastest first, then the candidates that need more than `workspace` bytes
/// (not run: CUDNN_STATUS_NOT_SUPPORTED, time -1).
std::vector<Ranked> timed_ranking(Direction d, const Problem& pb, std::size_t workspace) {
  std::vector<Ranked> out;
  for (const Candidate& c : candidates(d, pb.type)) {
    const bool fits = c.memory <= workspace;
    out.push_back(
        {c, fits ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED, fits ? c.time_ms : -1.0f});
  }
  std::stable_sort(out.begin(), out.end(), [](const Ranked& a, const Ranked& b) {
    const bool a_ok = a.status == CUDNN_STATUS_SUCCESS, b_ok = b.status == CUDNN_STATUS_SUCCESS;
    if (a_ok != b_ok) return a_ok;
    return a_ok && a.time < b.time;
  });
  return out;
}

/// Copies the first min(requested, available) entries of `ranked` into `perf`.
template <class Perf>
void report(const std::vector<Ranked>& ranked, int requested, int* returned, Perf* perf) {
  const int count = std::min(requested, static_cast<int>(ranked.size()));
  for (int i = 0; i < count; ++i) {
    const Ranked& e = ranked[static_cast<std::size_t>(i)];
    Perf p{};
    p.algo = static_cast<decltype(p.algo)>(e.c.algo);
    p.status = e.status;
    p.time = e.time;
    p.memory = e.c.memory;
    p.determinism = e.c.determinism;
    p.mathType = e.c.math;
    perf[i] = p;
  }
  *returned = count;
}

const char* direction_name(Direction d) {
  switch (d) {
    case Direction::kForward:
      return "forward";
    case Direction::kBackwardData:
      return "backward-data";
    case Direction::kBackwardFilter:
      break;
  }
  return "backward-filter";
}

/// The workspace bytes `algo` needs, or an error for an algorithm the emulator does not offer
/// (BAD_PARAM when it is not a value of the enum at all).
cudnnStatus_t algorithm_memory(const char* fn, Direction d, const Problem& pb, int algo,
                               std::size_t* memory) {
  if (algo < 0 || algo >= algo_count(d))
    return fail(
        CUDNN_STATUS_BAD_PARAM, fn,
        "algorithm " + std::to_string(algo) + " is not a " + direction_name(d) + " algorithm");
  for (const Candidate& c : candidates(d, pb.type))
    if (c.algo == algo) {
      *memory = c.memory;
      return CUDNN_STATUS_SUCCESS;
    }
  return fail(CUDNN_STATUS_NOT_SUPPORTED, fn,
              "the emulator does not implement " + std::string(direction_name(d)) + " algorithm " +
                  std::to_string(algo) + " for " + type_name(pb.type) +
                  " (use one that the algorithm queries return)");
}

/// The descriptors and buffers of one call in a direction-neutral form: x, w, y are the
/// convolution's input, filter and output whatever the direction computes.
struct ConvArgs {
  cudnnHandle_t handle;
  cudnnTensorDescriptor_t x_desc;
  cudnnFilterDescriptor_t w_desc;
  cudnnConvolutionDescriptor_t conv;
  cudnnTensorDescriptor_t y_desc;
  const void* x;
  const void* w;
  const void* y;
  const char* x_name;  // "x" or "dx"
  const char* y_name;  // "y" or "dy"
};

cudnnStatus_t check_handle(const char* fn, cudnnHandle_t handle) {
  if (!is_live(handle))
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                handle == nullptr ? "the handle is null" : "the handle is not a live cuDNN handle");
  return CUDNN_STATUS_SUCCESS;
}

/// cudnnGet*Algorithm_v7: the heuristic ranking (usable while capturing).
template <class Perf>
cudnnStatus_t get_algorithms(const char* fn, Direction d, const ConvArgs& a, int requested,
                             int* returned, Perf* perf) {
  Lock lock(nddr_emu::device_mutex());
  if (cudnnStatus_t s = check_handle(fn, a.handle); s != CUDNN_STATUS_SUCCESS) return s;
  if (requested < 1 || returned == nullptr || perf == nullptr)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "requestedAlgoCount must be positive and the output pointers non-null");
  Problem pb;
  if (cudnnStatus_t s =
          describe_problem(fn, a.x_desc, a.w_desc, a.conv, a.y_desc, a.x_name, a.y_name, &pb);
      s != CUDNN_STATUS_SUCCESS)
    return s;
  report(heuristic_ranking(d, pb), requested, returned, perf);
  return CUDNN_STATUS_SUCCESS;
}

/// The buffers of a call in direction `d`: the two inputs and the output (last).
std::vector<Buffer> buffers(Direction d, const Problem& pb, const ConvArgs& a, void* out) {
  const Buffer x{a.x_name, d == Direction::kBackwardData ? out : a.x, pb.bytes(pb.x_count())};
  const Buffer w{d == Direction::kBackwardFilter ? "dw" : "w",
                 d == Direction::kBackwardFilter ? out : a.w, pb.bytes(pb.w_count())};
  const Buffer y{a.y_name, d == Direction::kForward ? out : a.y, pb.bytes(pb.y_count())};
  switch (d) {
    case Direction::kForward:
      return {x, w, y};
    case Direction::kBackwardData:
      return {w, y, x};
    case Direction::kBackwardFilter:
      break;
  }
  return {x, y, w};
}

/// Checks the buffers and workspace of a call and queues the convolution.
cudnnStatus_t queue_convolution(const char* fn, Direction d, const Problem& pb, const ConvArgs& a,
                                void* out, double alpha, double beta, void* workspace,
                                std::size_t workspace_bytes, std::size_t scribble) {
  const std::vector<Buffer> bufs = buffers(d, pb, a, out);
  for (const Buffer& b : bufs)
    if (cudnnStatus_t s = check_buffer(fn, b); s != CUDNN_STATUS_SUCCESS) return s;
  const Buffer ws{"the workspace", workspace, workspace_bytes};
  if (workspace_bytes > 0)
    if (cudnnStatus_t s = check_buffer(fn, ws); s != CUDNN_STATUS_SUCCESS) return s;
  if (cudnnStatus_t s = check_disjoint(fn, bufs[2], {bufs[0], bufs[1], ws});
      s != CUDNN_STATUS_SUCCESS)
    return s;
  if (cudnnStatus_t s = check_disjoint(fn, ws, {bufs[0], bufs[1]}); s != CUDNN_STATUS_SUCCESS)
    return s;
  ConvWork work;
  work.direction = d;
  work.pb = pb;
  work.x = d == Direction::kBackwardData ? out : a.x;
  work.w = d == Direction::kBackwardFilter ? out : a.w;
  work.y = d == Direction::kForward ? out : a.y;
  work.out = out;
  work.alpha = alpha;
  work.beta = beta;
  work.workspace = workspace;
  work.scribble = scribble;
  work.fn = fn;
  const cudaError_t e = nddr_emu::enqueue(a.handle->stream, [work] { run(work); });
  if (e != cudaSuccess)
    return fail(
        CUDNN_STATUS_EXECUTION_FAILED, fn,
        std::string("queueing the work on the handle's stream failed: ") + cudaGetErrorName(e));
  return CUDNN_STATUS_SUCCESS;
}

/// cudnnConvolution{Forward,BackwardData,BackwardFilter}.
cudnnStatus_t convolve(const char* fn, Direction d, const ConvArgs& a, int algo,
                       const void* alpha_p, const void* beta_p, void* out, void* workspace,
                       std::size_t workspace_bytes) {
  Lock lock(nddr_emu::device_mutex());
  if (cudnnStatus_t s = check_handle(fn, a.handle); s != CUDNN_STATUS_SUCCESS) return s;
  Problem pb;
  if (cudnnStatus_t s =
          describe_problem(fn, a.x_desc, a.w_desc, a.conv, a.y_desc, a.x_name, a.y_name, &pb);
      s != CUDNN_STATUS_SUCCESS)
    return s;
  if (alpha_p == nullptr || beta_p == nullptr)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "alpha or beta is a null pointer");
  std::size_t memory = 0;
  if (cudnnStatus_t s = algorithm_memory(fn, d, pb, algo, &memory); s != CUDNN_STATUS_SUCCESS)
    return s;
  if (workspace_bytes < memory)
    return fail_loudly(CUDNN_STATUS_BAD_PARAM, fn,
                       "the workspace of " + std::to_string(workspace_bytes) +
                           " bytes is smaller "
                           "than the " +
                           std::to_string(memory) + " bytes " + direction_name(d) + " algorithm " +
                           std::to_string(algo) + " needs");
  return queue_convolution(fn, d, pb, a, out, scalar(alpha_p, pb.type), scalar(beta_p, pb.type),
                           workspace, workspace_bytes, memory);
}

/// cudnnFind*AlgorithmEx: runs the convolution once into the given output (every algorithm
/// gives the same result) and returns the timed ranking.
template <class Perf>
cudnnStatus_t find_algorithms(const char* fn, Direction d, const ConvArgs& a, void* out,
                              int requested, int* returned, Perf* perf, void* workspace,
                              std::size_t workspace_bytes) {
  Lock lock(nddr_emu::device_mutex());
  if (cudnnStatus_t s = check_handle(fn, a.handle); s != CUDNN_STATUS_SUCCESS) return s;
  if (nddr_emu::is_capturing(a.handle->stream)) {
    nddr_emu::invalidate_capture(a.handle->stream);
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn,
                "timing algorithms is not possible while the stream is being captured into a "
                "CUDA graph (the capture is invalidated)");
  }
  if (requested < 1 || returned == nullptr || perf == nullptr)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "requestedAlgoCount must be positive and the output pointers non-null");
  Problem pb;
  if (cudnnStatus_t s =
          describe_problem(fn, a.x_desc, a.w_desc, a.conv, a.y_desc, a.x_name, a.y_name, &pb);
      s != CUDNN_STATUS_SUCCESS)
    return s;
  // The whole workspace given may be used by some candidate.
  if (cudnnStatus_t s = queue_convolution(fn, d, pb, a, out, 1.0, 0.0, workspace, workspace_bytes,
                                          workspace_bytes);
      s != CUDNN_STATUS_SUCCESS)
    return s;
  report(timed_ranking(d, pb, workspace_bytes), requested, returned, perf);
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

// --- The API ----------------------------------------------------------------------------------

extern "C" {

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

const char* cudnnGetErrorString(cudnnStatus_t status) {
  switch (static_cast<int>(status)) {
    case CUDNN_STATUS_SUCCESS:
      return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED:
      return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH:
      return "CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH";
    case CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH:
      return "CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH";
    case CUDNN_STATUS_DEPRECATED:
      return "CUDNN_STATUS_DEPRECATED";
    case CUDNN_STATUS_LICENSE_ERROR:
      return "CUDNN_STATUS_LICENSE_ERROR";
    case CUDNN_STATUS_RUNTIME_IN_PROGRESS:
      return "CUDNN_STATUS_RUNTIME_IN_PROGRESS";
    case CUDNN_STATUS_RUNTIME_FP_OVERFLOW:
      return "CUDNN_STATUS_RUNTIME_FP_OVERFLOW";
    case CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED:
      return "CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED";
    case CUDNN_STATUS_BAD_PARAM:
      return "CUDNN_STATUS_BAD_PARAM";
    case 2001:
      return "CUDNN_STATUS_INVALID_VALUE";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER:
      return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER:
      return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
    case CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED:
      return "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED";
    case CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND:
      return "CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND";
    case CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT:
      return "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT";
    case CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH:
      return "CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH";
    case CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH:
      return "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH";
    case CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES:
      return "CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES";
    case CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE:
      return "CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE";
    case CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH:
      return "CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH";
    case CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE:
      return "CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE";
    case CUDNN_STATUS_NOT_SUPPORTED:
      return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN:
      return "CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN";
    case CUDNN_STATUS_NOT_SUPPORTED_SHAPE:
      return "CUDNN_STATUS_NOT_SUPPORTED_SHAPE";
    case CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE:
      return "CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE";
    case CUDNN_STATUS_NOT_SUPPORTED_LAYOUT:
      return "CUDNN_STATUS_NOT_SUPPORTED_LAYOUT";
    case CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER:
      return "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER";
    case CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART:
      return "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART";
    case CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH:
      return "CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH";
    case CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING:
      return "CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING";
    case CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE:
      return "CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE";
    case CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT:
      return "CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT";
    case CUDNN_STATUS_NOT_SUPPORTED_PADDING:
      return "CUDNN_STATUS_NOT_SUPPORTED_PADDING";
    case CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM:
      return "CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API:
      return "CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API";
    case CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE:
      return "CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE";
    case CUDNN_STATUS_INTERNAL_ERROR:
      return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED:
      return "CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED";
    case CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE:
      return "CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE";
    case CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED:
      return "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED";
    case CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED:
      return "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED";
    case CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM:
      return "CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM";
    case CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED:
      return "CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED";
    case CUDNN_STATUS_EXECUTION_FAILED:
      return "CUDNN_STATUS_EXECUTION_FAILED";
    case CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER:
      return "CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER";
    case CUDNN_STATUS_EXECUTION_FAILED_CUBLAS:
      return "CUDNN_STATUS_EXECUTION_FAILED_CUBLAS";
    case CUDNN_STATUS_EXECUTION_FAILED_CUDART:
      return "CUDNN_STATUS_EXECUTION_FAILED_CUDART";
    case CUDNN_STATUS_EXECUTION_FAILED_CURAND:
      return "CUDNN_STATUS_EXECUTION_FAILED_CURAND";
    default:
      return "CUDNN_STATUS_UNKNOWN (not a cudnnStatus_t value)";
  }
}

/// Copies this thread's last failure explanation (possibly empty) into `message`, truncated to
/// `max_size - 1` characters, and clears it, as cuDNN does.
void cudnnGetLastErrorString(char* message, size_t max_size) {
  if (message == nullptr || max_size == 0) return;
  const std::size_t n = std::min(max_size - 1, t_last_error.size());
  std::memcpy(message, t_last_error.data(), n);
  message[n] = '\0';
  t_last_error.clear();
}

// Handles.

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  Lock lock(nddr_emu::device_mutex());
  return create_object(handle, "cudnnCreate");
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  Lock lock(nddr_emu::device_mutex());
  return destroy_object(handle, "cudnnDestroy");
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
  Lock lock(nddr_emu::device_mutex());
  if (cudnnStatus_t s = check_handle("cudnnSetStream", handle); s != CUDNN_STATUS_SUCCESS) return s;
  handle->stream = streamId;
  return CUDNN_STATUS_SUCCESS;
}

/// Not in the brief's list: tests/cuda/cuda_test.cpp reads the handle's stream back.
cudnnStatus_t cudnnGetStream(cudnnHandle_t handle, cudaStream_t* streamId) {
  Lock lock(nddr_emu::device_mutex());
  if (cudnnStatus_t s = check_handle("cudnnGetStream", handle); s != CUDNN_STATUS_SUCCESS) return s;
  if (streamId == nullptr)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetStream", "streamId is a null pointer");
  *streamId = handle->stream;
  return CUDNN_STATUS_SUCCESS;
}

// Tensor descriptors.

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* tensorDesc) {
  Lock lock(nddr_emu::device_mutex());
  return create_object(tensorDesc, "cudnnCreateTensorDescriptor");
}

cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t tensorDesc) {
  Lock lock(nddr_emu::device_mutex());
  return destroy_object(tensorDesc, "cudnnDestroyTensorDescriptor");
}

}  // extern "C"

namespace {

/// The checks cudnnSetTensor4dDescriptor and cudnnSetFilter4dDescriptor share.
cudnnStatus_t check_4d(const char* fn, cudnnTensorFormat_t format, cudnnDataType_t type, int n,
                       int c, int h, int w) {
  if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "every dimension must be positive, got " + dims(n, c, h, w));
  if (format != CUDNN_TENSOR_NCHW)
    return fail(format == CUDNN_TENSOR_NHWC || format == CUDNN_TENSOR_NCHW_VECT_C
                    ? CUDNN_STATUS_NOT_SUPPORTED
                    : CUDNN_STATUS_BAD_PARAM,
                fn, "the emulator supports the CUDNN_TENSOR_NCHW format only");
  if (!is_storage_type(type))
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn,
                std::string("the emulator supports float, double and bfloat16 data, not ") +
                    type_name(type) + " (" + std::to_string(static_cast<int>(type)) + ")");
  if (std::int64_t{n} * c * h * w > std::int64_t{0x7fffffff})
    return fail(CUDNN_STATUS_NOT_SUPPORTED, fn,
                "the tensor " + dims(n, c, h, w) + " has more than 2^31 - 1 elements");
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t tensorDesc,
                                         cudnnTensorFormat_t format, cudnnDataType_t dataType,
                                         int n, int c, int h, int w) {
  constexpr const char* fn = "cudnnSetTensor4dDescriptor";
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(tensorDesc))
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "the descriptor is not a live tensor descriptor");
  if (cudnnStatus_t s = check_4d(fn, format, dataType, n, c, h, w); s != CUDNN_STATUS_SUCCESS)
    return s;
  *tensorDesc = {true, format, dataType, n, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

/// Not in the brief's list: tests/cuda/cuda_test.cpp reads a descriptor back. Strides are the
/// packed NCHW ones.
cudnnStatus_t cudnnGetTensor4dDescriptor(const cudnnTensorDescriptor_t tensorDesc,
                                         cudnnDataType_t* dataType, int* n, int* c, int* h, int* w,
                                         int* nStride, int* cStride, int* hStride, int* wStride) {
  constexpr const char* fn = "cudnnGetTensor4dDescriptor";
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(tensorDesc) || !tensorDesc->set)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "the descriptor is not set");
  if (!dataType || !n || !c || !h || !w || !nStride || !cStride || !hStride || !wStride)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "an output pointer is null");
  const cudnnTensorStruct& d = *tensorDesc;
  *dataType = d.type;
  *n = d.n, *c = d.c, *h = d.h, *w = d.w;
  *wStride = 1, *hStride = d.w, *cStride = d.h * d.w, *nStride = d.c * d.h * d.w;
  return CUDNN_STATUS_SUCCESS;
}

/// Not in the brief's list: tests/cuda/cuda_test.cpp adds a broadcast bias with it.
/// C = alpha * A + beta * C, each dimension of A equal to C's or 1 (broadcast); same data type.
cudnnStatus_t cudnnAddTensor(cudnnHandle_t handle, const void* alpha,
                             const cudnnTensorDescriptor_t aDesc, const void* A, const void* beta,
                             const cudnnTensorDescriptor_t cDesc, void* C) {
  constexpr const char* fn = "cudnnAddTensor";
  Lock lock(nddr_emu::device_mutex());
  if (cudnnStatus_t s = check_handle(fn, handle); s != CUDNN_STATUS_SUCCESS) return s;
  if (!is_live(aDesc) || !aDesc->set || !is_live(cDesc) || !cDesc->set)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "a tensor descriptor is not set");
  const cudnnTensorStruct a = *aDesc, c = *cDesc;
  if (a.type != c.type)
    return fail(
        CUDNN_STATUS_BAD_PARAM, fn,
        std::string("data types differ: A ") + type_name(a.type) + ", C " + type_name(c.type));
  const int ad[4] = {a.n, a.c, a.h, a.w}, cd[4] = {c.n, c.c, c.h, c.w};
  for (int i = 0; i < 4; ++i)
    if (ad[i] != cd[i] && ad[i] != 1)
      return fail(
          CUDNN_STATUS_BAD_PARAM, fn,
          "A " + dims(a.n, a.c, a.h, a.w) + " does not broadcast to C " + dims(c.n, c.c, c.h, c.w));
  if (alpha == nullptr || beta == nullptr)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "alpha or beta is a null pointer");
  const std::int64_t a_count = std::int64_t{a.n} * a.c * a.h * a.w;
  const std::int64_t c_count = std::int64_t{c.n} * c.c * c.h * c.w;
  const Buffer ab{"A", A, static_cast<std::size_t>(a_count) * element_size(a.type)};
  const Buffer cb{"C", C, static_cast<std::size_t>(c_count) * element_size(c.type)};
  for (const Buffer& b : {ab, cb})
    if (cudnnStatus_t s = check_buffer(fn, b); s != CUDNN_STATUS_SUCCESS) return s;
  if (cudnnStatus_t s = check_disjoint(fn, cb, {ab}); s != CUDNN_STATUS_SUCCESS) return s;
  const double al = scalar(alpha, a.type), be = scalar(beta, a.type);
  const cudaError_t e = nddr_emu::enqueue(handle->stream, [a, c, A, C, al, be] {
    const std::int64_t cd4[4] = {c.n, c.c, c.h, c.w};
    std::vector<double> acc(static_cast<std::size_t>(cd4[0] * cd4[1] * cd4[2] * cd4[3]));
    std::size_t i = 0;
    for (std::int64_t n = 0; n < c.n; ++n)
      for (std::int64_t ch = 0; ch < c.c; ++ch)
        for (std::int64_t h = 0; h < c.h; ++h)
          for (std::int64_t w = 0; w < c.w; ++w, ++i) {
            const std::int64_t an = a.n == 1 ? 0 : n, ac = a.c == 1 ? 0 : ch;
            const std::int64_t ah = a.h == 1 ? 0 : h, aw = a.w == 1 ? 0 : w;
            acc[i] = load_one(A, a.type, ((an * a.c + ac) * a.h + ah) * a.w + aw);
          }
    blend(C, c.type, acc, al, be);
  });
  if (e != cudaSuccess)
    return fail(CUDNN_STATUS_EXECUTION_FAILED, fn,
                std::string("queueing the work failed: ") + cudaGetErrorName(e));
  return CUDNN_STATUS_SUCCESS;
}

// Filter descriptors.

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* filterDesc) {
  Lock lock(nddr_emu::device_mutex());
  return create_object(filterDesc, "cudnnCreateFilterDescriptor");
}

cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t filterDesc) {
  Lock lock(nddr_emu::device_mutex());
  return destroy_object(filterDesc, "cudnnDestroyFilterDescriptor");
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t filterDesc,
                                         cudnnDataType_t dataType, cudnnTensorFormat_t format,
                                         int k, int c, int h, int w) {
  constexpr const char* fn = "cudnnSetFilter4dDescriptor";
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(filterDesc))
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "the descriptor is not a live filter descriptor");
  if (cudnnStatus_t s = check_4d(fn, format, dataType, k, c, h, w); s != CUDNN_STATUS_SUCCESS)
    return s;
  *filterDesc = {true, format, dataType, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

// Convolution descriptors.

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* convDesc) {
  Lock lock(nddr_emu::device_mutex());
  return create_object(convDesc, "cudnnCreateConvolutionDescriptor");
}

cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t convDesc) {
  Lock lock(nddr_emu::device_mutex());
  return destroy_object(convDesc, "cudnnDestroyConvolutionDescriptor");
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t convDesc, int pad_h,
                                              int pad_w, int u, int v, int dilation_h,
                                              int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t computeType) {
  constexpr const char* fn = "cudnnSetConvolution2dDescriptor";
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(convDesc))
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "the descriptor is not a live convolution descriptor");
  if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "padding must be >= 0 and strides and dilations > 0, got padding (" +
                    std::to_string(pad_h) + ", " + std::to_string(pad_w) + "), stride (" +
                    std::to_string(u) + ", " + std::to_string(v) + "), dilation (" +
                    std::to_string(dilation_h) + ", " + std::to_string(dilation_w) + ")");
  if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION)
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "mode is not a cudnnConvolutionMode_t value");
  if (computeType != CUDNN_DATA_FLOAT && computeType != CUDNN_DATA_DOUBLE &&
      computeType != CUDNN_DATA_HALF && computeType != CUDNN_DATA_BFLOAT16)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "compute type " + std::to_string(static_cast<int>(computeType)) +
                    " is not a floating-point cudnnDataType_t");
  cudnnConvolutionStruct& d = *convDesc;
  d.set = true;
  d.pad_h = pad_h, d.pad_w = pad_w, d.stride_h = u, d.stride_w = v;
  d.dilation_h = dilation_h, d.dilation_w = dilation_w;
  d.mode = mode;
  d.compute_type = computeType;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc,
                                          cudnnMathType_t mathType) {
  constexpr const char* fn = "cudnnSetConvolutionMathType";
  Lock lock(nddr_emu::device_mutex());
  if (!is_live(convDesc))
    return fail(CUDNN_STATUS_BAD_PARAM, fn, "the descriptor is not a live convolution descriptor");
  if (mathType != CUDNN_DEFAULT_MATH && mathType != CUDNN_TENSOR_OP_MATH &&
      mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && mathType != CUDNN_FMA_MATH)
    return fail(CUDNN_STATUS_BAD_PARAM, fn,
                "math type " + std::to_string(static_cast<int>(mathType)) +
                    " is not a cudnnMathType_t value");
  convDesc->math_type = mathType;
  return CUDNN_STATUS_SUCCESS;
}

// Algorithm queries.

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
    const cudnnFilterDescriptor_t filterDesc, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t destDesc, const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionFwdAlgoPerf_t* perfResults) {
  const ConvArgs a{handle,  srcDesc, filterDesc, convDesc, destDesc,
                   nullptr, nullptr, nullptr,    "x",      "y"};
  return get_algorithms("cudnnGetConvolutionForwardAlgorithm_v7", Direction::kForward, a,
                        requestedAlgoCount, returnedAlgoCount, perfResults);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc,
    const cudnnTensorDescriptor_t diffDesc, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t gradDesc, const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionBwdDataAlgoPerf_t* perfResults) {
  const ConvArgs a{handle,  gradDesc, filterDesc, convDesc, diffDesc,
                   nullptr, nullptr,  nullptr,    "dx",     "dy"};
  return get_algorithms("cudnnGetConvolutionBackwardDataAlgorithm_v7", Direction::kBackwardData, a,
                        requestedAlgoCount, returnedAlgoCount, perfResults);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
    const cudnnTensorDescriptor_t diffDesc, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnFilterDescriptor_t gradDesc, const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionBwdFilterAlgoPerf_t* perfResults) {
  const ConvArgs a{handle,  srcDesc, gradDesc, convDesc, diffDesc,
                   nullptr, nullptr, nullptr,  "x",      "dy"};
  return get_algorithms("cudnnGetConvolutionBackwardFilterAlgorithm_v7", Direction::kBackwardFilter,
                        a, requestedAlgoCount, returnedAlgoCount, perfResults);
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t yDesc, void* y, const int requestedAlgoCount,
    int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults, void* workSpace,
    size_t workSpaceSizeInBytes) {
  const ConvArgs a{handle, xDesc, wDesc, convDesc, yDesc, x, w, nullptr, "x", "y"};
  return find_algorithms("cudnnFindConvolutionForwardAlgorithmEx", Direction::kForward, a, y,
                         requestedAlgoCount, returnedAlgoCount, perfResults, workSpace,
                         workSpaceSizeInBytes);
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const void* w,
    const cudnnTensorDescriptor_t dyDesc, const void* dy,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc, void* dx,
    const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionBwdDataAlgoPerf_t* perfResults, void* workSpace, size_t workSpaceSizeInBytes) {
  const ConvArgs a{handle, dxDesc, wDesc, convDesc, dyDesc, nullptr, w, dy, "dx", "dy"};
  return find_algorithms("cudnnFindConvolutionBackwardDataAlgorithmEx", Direction::kBackwardData, a,
                         dx, requestedAlgoCount, returnedAlgoCount, perfResults, workSpace,
                         workSpaceSizeInBytes);
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnTensorDescriptor_t dyDesc, const void* y,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc, void* dw,
    const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionBwdFilterAlgoPerf_t* perfResults, void* workSpace,
    size_t workSpaceSizeInBytes) {
  const ConvArgs a{handle, xDesc, dwDesc, convDesc, dyDesc, x, nullptr, y, "x", "dy"};
  return find_algorithms("cudnnFindConvolutionBackwardFilterAlgorithmEx",
                         Direction::kBackwardFilter, a, dw, requestedAlgoCount, returnedAlgoCount,
                         perfResults, workSpace, workSpaceSizeInBytes);
}

// Convolutions.

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha,
                                      const cudnnTensorDescriptor_t xDesc, const void* x,
                                      const cudnnFilterDescriptor_t wDesc, const void* w,
                                      const cudnnConvolutionDescriptor_t convDesc,
                                      cudnnConvolutionFwdAlgo_t algo, void* workSpace,
                                      size_t workSpaceSizeInBytes, const void* beta,
                                      const cudnnTensorDescriptor_t yDesc, void* y) {
  const ConvArgs a{handle, xDesc, wDesc, convDesc, yDesc, x, w, nullptr, "x", "y"};
  return convolve("cudnnConvolutionForward", Direction::kForward, a, algo, alpha, beta, y,
                  workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha,
                                           const cudnnFilterDescriptor_t wDesc, const void* w,
                                           const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                           const cudnnConvolutionDescriptor_t convDesc,
                                           cudnnConvolutionBwdDataAlgo_t algo, void* workSpace,
                                           size_t workSpaceSizeInBytes, const void* beta,
                                           const cudnnTensorDescriptor_t dxDesc, void* dx) {
  const ConvArgs a{handle, dxDesc, wDesc, convDesc, dyDesc, nullptr, w, dy, "dx", "dy"};
  return convolve("cudnnConvolutionBackwardData", Direction::kBackwardData, a, algo, alpha, beta,
                  dx, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha,
                                             const cudnnTensorDescriptor_t xDesc, const void* x,
                                             const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                             const cudnnConvolutionDescriptor_t convDesc,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void* workSpace,
                                             size_t workSpaceSizeInBytes, const void* beta,
                                             const cudnnFilterDescriptor_t dwDesc, void* dw) {
  const ConvArgs a{handle, xDesc, dwDesc, convDesc, dyDesc, x, nullptr, dy, "x", "dy"};
  return convolve("cudnnConvolutionBackwardFilter", Direction::kBackwardFilter, a, algo, alpha,
                  beta, dw, workSpace, workSpaceSizeInBytes);
}

}  // extern "C"
