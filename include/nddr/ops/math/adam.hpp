#pragma once
/// \file
/// Adam and AdamW per element, as `torch.optim.Adam` / `torch.optim.AdamW` compute them
/// (docs/optim.md, weighting-spec section 13). Element bodies shared by every backend: the CPU
/// optimisers (optim/adam.hpp) and the fused CUDA kernel (backend/cuda/kernels/adam.cuh).
///
/// With the step count t already incremented (t = 1 on the first step):
///   Adam:  g' = g + wd * theta                     (L2 folded into the gradient)
///   AdamW: theta *= 1 - lr * wd;  g' = g           (decoupled, with the current group lr)
///   m += (1 - beta1) * (g' - m)                    (torch's lerp)
///   v  = beta2 * v + (1 - beta2) * g'^2
///   vmax = max(vmax, v) when amsgrad, and vmax replaces v below
///   theta -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),  bc_i = 1 - beta_i^t.

#include <cmath>
#include <cstdint>

#include "nddr/core/macros.hpp"

namespace nddr::ops {

/// The step-dependent factors of one Adam step: bc1 = 1 - beta1^t and sqrt(bc2) =
/// sqrt(1 - beta2^t), in double. On a GPU the kernel computes them from a device step counter
/// (so a captured CUDA Graph sees the current t), with the same formula as the CPU.
struct AdamBias {
  double bc1;
  double bc2_sqrt;
};

NDDR_HOST_DEVICE inline AdamBias adam_bias(double beta1, double beta2, std::int64_t t) {
  using std::pow;
  using std::sqrt;
  const double td = static_cast<double>(t);
  return {1.0 - pow(beta1, td), sqrt(1.0 - pow(beta2, td))};
}

/// Hyper-parameters of one element's update, rounded to T. `lr` and `wd` are the group's
/// (scheduled lr times lr_mult; weight_decay times weight_decay_mult, 0 when not decayed).
template <class T>
struct AdamElementArgs {
  T lr;
  T wd;
  T beta1;
  T beta2;
  T eps;
  T bc1;
  T bc2_sqrt;
  bool decoupled;  ///< AdamW
};

/// Updates `theta` with gradient `g` and moments `m`, `v` in place; `vmax` is the amsgrad
/// maximum (nullptr without amsgrad).
template <class T>
NDDR_HOST_DEVICE inline void adam_element(T& theta, T g, T& m, T& v, T* vmax,
                                          const AdamElementArgs<T>& a) {
  using std::sqrt;
  if (a.decoupled)
    theta *= T(1) - a.lr * a.wd;
  else
    g += a.wd * theta;
  m += (T(1) - a.beta1) * (g - m);
  v = a.beta2 * v + (T(1) - a.beta2) * g * g;
  T second = v;
  if (vmax != nullptr) {
    if (*vmax < v) *vmax = v;
    second = *vmax;
  }
  const T denom = sqrt(second) / a.bc2_sqrt + a.eps;
  theta -= (a.lr / a.bc1) * m / denom;
}

}  // namespace nddr::ops
