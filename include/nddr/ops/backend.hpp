#pragma once
/// \file
/// The backend registry: one class template per op family, declared here and specialised per
/// device, `template <> struct Activation<Cpu>` in backend/cpu/activation.hpp and
/// `template <> struct Activation<Cuda>` in backend/cuda/activation.hpp.
///
/// Every op has one front door, a function template in `ops/<op>.hpp` deduced on the device of
/// its `Context<D>`: it validates its arguments once and calls
/// `ops::backend::<Family><D>::<op>(...)`, whose static member functions trust their inputs.
/// The backend's name depends on D, so the specialisation is looked up when the front door is
/// instantiated, not where it is defined: the order in which a program includes the layer
/// headers and `<nddr/cuda.hpp>` does not matter. A missing specialisation (D = Cuda without
/// `<nddr/cuda.hpp>`) is an incomplete type at the call, after `Context`'s static_assert has
/// named the header to include.
///
/// This header is light (nvcc-safe), so the CUDA backend headers, which kernels/*.cuh include,
/// declare their specialisations without the front doors, which pull in the CPU backend (Eigen,
/// OpenMP). Backends never include each other.

#include <type_traits>

#include "nddr/core/tensor.hpp"

namespace nddr::ops {

/// A view on device D that does not take part in deducing D: a front door deduces its device
/// from the `Context<D>&` alone, so views convert as they did to the per-device signatures.
template <class T, class D>
using ViewOn = TensorView<T, std::type_identity_t<D>>;

namespace backend {

template <class D>
struct Activation;  ///< ops/activation.hpp: ReLU
template <class D>
struct Argmax;  ///< ops/argmax.hpp: argmax over channels
template <class D>
struct BatchNorm;  ///< ops/batch_norm.hpp: BN (+ fused ReLU), sync BN
template <class D>
struct Concat;  ///< ops/concat.hpp: channel concat and split
template <class D>
struct Conv2d;  ///< ops/conv2d.hpp: 2-D convolution
template <class D>
struct Dropout;  ///< ops/dropout.hpp: counter-based inverted dropout
template <class D>
struct Elementwise;  ///< ops/elementwise.hpp: y += x, ReLU(a + b)
template <class D>
struct L2Normalize;  ///< ops/l2_normalize.hpp: per-pixel L2 normalisation
template <class D>
struct Linear;  ///< ops/linear.hpp: fully connected layer
template <class D>
struct Loss;  ///< ops/loss.hpp: cross-entropy, normal loss
template <class D>
struct NddrMix;  ///< ops/nddr_mix.hpp: concat-free NDDR 1x1 mix
template <class D>
struct Pool;  ///< ops/pool.hpp: max, average, global average pool
template <class D>
struct Resize;  ///< ops/resize.hpp: bilinear / nearest resize
template <class D>
struct SubspaceMix;  ///< ops/subspace_mix.hpp: cross-stitch / sluice mix

}  // namespace backend
}  // namespace nddr::ops
