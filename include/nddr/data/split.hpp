#pragma once
/// \file
/// `nddr::data::Split`: which part of a dataset to read (shared by every dataset).

namespace nddr::data {

/// Training or test part of a dataset (NYUv2 `training_*` / `testing_*` lists, Fashion-MNIST
/// `train-*` / `t10k-*` files, ...).
enum class Split { kTrain, kTest };

}  // namespace nddr::data
