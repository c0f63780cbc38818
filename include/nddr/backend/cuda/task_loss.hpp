#pragma once
/// \file
/// `LossSink<T, Cuda>`: a task's loss terms on the GPU without a host round trip. Each term's
/// reduction goes into a slot of `cuda::DeviceLosses` and its gradient kernel divides by the
/// count it finds there, queued right behind; the host keeps what it needs to finish the value
/// after the step (the term's scale and, for cross-entropy, where its labels are, to report an
/// out-of-range label). Nothing waits for the device, so the step can be captured as a CUDA
/// Graph. The front door is nddr/ops/task_loss.hpp.

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/backend/cuda/loss.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/ops/math/loss.hpp"
#include "nddr/ops/task_loss.hpp"

namespace nddr::cuda {

/// One term of a task's loss as the host finishes it: value = scale * sum / count of its slot.
struct LossTerm {
  double scale = 1.0;                    ///< task weight times the term's own scale
  const std::int32_t* labels = nullptr;  ///< cross-entropy: its device labels, else null
  const void* target = nullptr;          ///< the task target's data when the term was queued
  std::int32_t ignore = 0;               ///< cross-entropy: the ignore label
  Shape logits{};                        ///< cross-entropy: the (N, K, H, W) logits
};

}  // namespace nddr::cuda

namespace nddr {

/// The GPU sink of one task: terms go to `slots` consecutive reductions starting at `scratch`
/// (each `stride` LossStats apart) and are recorded in `terms` (cleared here).
template <class T>
class LossSink<T, Cuda> {
 public:
  LossSink(Context<Cuda>& ctx, double weight, const char* task, cuda::LossStats* scratch,
           std::size_t slots, std::size_t stride, const void* target,
           std::vector<cuda::LossTerm>& terms)
      : ctx_(ctx), weight_(weight), task_(task), scratch_(scratch), slots_(slots),
        stride_(stride), target_(target), terms_(terms) {
    terms_.clear();
  }

  Context<Cuda>& context() { return ctx_; }
  double weight() const { return weight_; }

  void cross_entropy(TensorView<const T, Cuda> logits, TensorView<const std::int32_t, Cuda> labels,
                     TensorView<T, Cuda> dlogits, SoftmaxCrossEntropyOptions opt) {
    constexpr const char* kWho = "nddr::ops::cross_entropy_loss";
    const Shape s = ops::detail::check_cross_entropy_shapes(kWho, logits.shape(), labels.shape());
    opt.scale(weight_ * opt.scale());
    ops::detail::check_loss_scale(kWho, opt.scale());
    const std::int64_t plane = s.h() * s.w(), pixels = s.n() * plane;
    queue(kWho, dlogits.shape(), logits.shape(),
          {opt.scale(), labels.data(), target_, opt.ignore_label(), s},
          [&](cuda::LossStats* slot) {
            cuda::launch::cross_entropy_stats<T>(ctx_.stream(), logits.data(), labels.data(),
                                                 pixels, s.c(), plane, opt.ignore_label(), true,
                                                 slot);
          },
          [&](const cuda::LossStats* total, T scale) {
            cuda::launch::cross_entropy_backward<T>(ctx_.stream(), logits.data(), labels.data(),
                                                    dlogits.data(), pixels, s.c(), plane,
                                                    opt.ignore_label(), scale, total);
          });
  }

  void normal(TensorView<const T, Cuda> p, TensorView<const T, Cuda> g, TensorView<T, Cuda> dp,
              NormalLossOptions opt) {
    constexpr const char* kWho = "nddr::ops::normal_loss";
    opt.scale(weight_ * opt.scale());
    ops::detail::check_normal_loss_args(kWho, p.shape(), g.shape(), opt);
    const Shape& s = p.shape();
    const std::int64_t plane = s.h() * s.w();
    const T eps = static_cast<T>(opt.eps());
    queue(kWho, dp.shape(), s, {opt.scale(), nullptr, target_, 0, Shape{}},
          [&](cuda::LossStats* slot) {
            cuda::launch::normal_loss_stats<T>(ctx_.stream(), p.data(), g.data(), s.n() * plane,
                                               plane, opt.form(), eps, true, slot);
          },
          [&](const cuda::LossStats* total, T scale) {
            cuda::launch::normal_loss_backward<T>(ctx_.stream(), p.data(), g.data(), dp.data(),
                                                  s.n() * plane, plane, opt.form(), eps, scale,
                                                  total);
          });
  }

  void dense(TensorView<const T, Cuda> p, TensorView<const T, Cuda> g, TensorView<T, Cuda> dp,
             DenseLossOptions opt) {
    constexpr const char* kWho = "nddr::ops::dense_loss";
    opt.scale(weight_ * opt.scale());
    ops::detail::check_dense_loss_args(kWho, p.shape(), g.shape(), opt);
    queue(kWho, dp.shape(), p.shape(), {opt.scale(), nullptr, target_, 0, Shape{}},
          [&](cuda::LossStats* slot) {
            cuda::launch::dense_loss_stats<T>(ctx_.stream(), p.data(), g.data(), p.numel(),
                                              opt.form(), opt.subset(), opt.zero_invalid(), true,
                                              slot);
          },
          [&](const cuda::LossStats* total, T scale) {
            cuda::launch::dense_loss_backward<T>(ctx_.stream(), p.data(), g.data(), dp.data(),
                                                 p.numel(), opt.form(), opt.subset(),
                                                 opt.zero_invalid(), scale, total);
          });
  }

 private:
  static_assert(cuda::kKernelType<T>, "nddr::LossSink<T, Cuda>: CUDA supports float and double");

  /// Queues one term: `stats(slot)` reduces into the next free slot, then
  /// `backward(total, scale)` adds the gradient, dividing by the count it finds at `total`.
  /// On the GPU the gradient always comes with the value (the trainer passes `dprediction`).
  template <class Stats, class Backward>
  void queue(const char* who, const Shape& d, const Shape& p, cuda::LossTerm term, Stats&& stats,
             Backward&& backward) {
    check_shape(who, "dprediction (required on the GPU)", d, p);
    check<Error>(terms_.size() < slots_, who, ": task ", task_, " adds more than ", slots_,
                 " loss terms, the most a task may have on the GPU");
    cuda::LossStats* slot = scratch_ + terms_.size() * stride_;
    stats(slot);
    backward(slot + cuda::launch::kLossBlocks, static_cast<T>(term.scale));
    terms_.push_back(std::move(term));
  }

  Context<Cuda>& ctx_;
  double weight_;
  const char* task_;
  cuda::LossStats* scratch_;
  std::size_t slots_, stride_;
  const void* target_;
  std::vector<cuda::LossTerm>& terms_;
};

}  // namespace nddr
