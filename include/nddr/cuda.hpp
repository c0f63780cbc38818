#pragma once
/// \file
/// Opt-in umbrella of the CUDA backend: `Context<Cuda>`, `Storage<Cuda>` (so `Tensor<T, Cuda>`
/// works), host/device copies, checked calls, RAII handles and the CUDA ops. Link the
/// `nddr::cuda` CMake target, which adds cuDNN, cuBLAS, the CUDA runtime and our kernels.
/// <nddr/nddr.hpp> never includes this header; include both for CPU/GPU programs.

#if !defined(NDDR_WITH_CUDA)
#error \
    "nddr/cuda.hpp: link the nddr::cuda CMake target (it defines NDDR_WITH_CUDA and compiles the kernels)"
#endif

// Plumbing
#include "nddr/backend/cuda/context.hpp"
#include "nddr/backend/cuda/copy.hpp"
#include "nddr/backend/cuda/error.hpp"
#include "nddr/backend/cuda/handles.hpp"
#include "nddr/backend/cuda/launch.hpp"
#include "nddr/backend/cuda/storage.hpp"

// Ops
#include "nddr/backend/cuda/activation.hpp"
#include "nddr/backend/cuda/adam.hpp"
#include "nddr/backend/cuda/concat.hpp"
#include "nddr/backend/cuda/dropout.hpp"
#include "nddr/backend/cuda/elementwise.hpp"
#include "nddr/backend/cuda/argmax.hpp"
#include "nddr/backend/cuda/l2_normalize.hpp"
#include "nddr/backend/cuda/loss.hpp"
#include "nddr/backend/cuda/pool.hpp"
#include "nddr/backend/cuda/resize.hpp"
#include "nddr/backend/cuda/sgd.hpp"
#include "nddr/backend/cuda/subspace_mix.hpp"
#include "nddr/backend/cuda/batch_norm.hpp"
#include "nddr/backend/cuda/conv2d.hpp"
#include "nddr/backend/cuda/linear.hpp"

// Training support (used by Trainer<E, Cuda>)
#include "nddr/backend/cuda/training.hpp"

// The ops' front doors (they validate, then call the backend of the context's device), so that
// this header alone gives ops::<op>(Context<Cuda>&, ...). They bring the CPU backend too.
#include "nddr/ops/activation.hpp"
#include "nddr/ops/argmax.hpp"
#include "nddr/ops/batch_norm.hpp"
#include "nddr/ops/concat.hpp"
#include "nddr/ops/conv2d.hpp"
#include "nddr/ops/dropout.hpp"
#include "nddr/ops/elementwise.hpp"
#include "nddr/ops/l2_normalize.hpp"
#include "nddr/ops/linear.hpp"
#include "nddr/ops/loss.hpp"
#include "nddr/ops/pool.hpp"
#include "nddr/ops/resize.hpp"
#include "nddr/ops/subspace_mix.hpp"
