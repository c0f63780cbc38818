#pragma once
/// \file
/// `OptimizerState<T, D>`: what an optimiser hands a checkpoint, by name. Flat tensors laid out
/// like `store.values()` (SGD's velocity, Adam's moments), written as `optim/<name>` tensors,
/// and integer counters (Adam's step count t), one-element int64 tensors on the optimiser's
/// device (so a captured CUDA Graph can read them), written as `optim/<name>` metadata. The
/// views alias the optimiser's own buffers: restoring into them restores the optimiser.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nddr/core/shape.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr {

/// Names and shapes of an optimiser's state: what a checkpoint must hold to restore it.
struct OptimizerLayout {
  std::string optimizer;  ///< "sgd", "adam", "adamw" (recorded as metadata 'optimizer')
  std::vector<std::pair<std::string, Shape>> tensors;
  std::vector<std::string> counters;
};

/// Writable views of an optimiser's state (see the file comment).
template <class T, class D>
struct OptimizerState {
  std::string optimizer;
  std::vector<std::pair<std::string, TensorView<T, D>>> tensors;
  std::vector<std::pair<std::string, TensorView<std::int64_t, D>>> counters;  ///< shape (1,)

  OptimizerLayout layout() const {
    OptimizerLayout l{optimizer, {}, {}};
    for (const auto& [name, view] : tensors) l.tensors.emplace_back(name, view.shape());
    for (const auto& [name, view] : counters) l.counters.push_back(name);
    return l;
  }
};

}  // namespace nddr
