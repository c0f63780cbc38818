#pragma once
/// \file
/// The nddr umbrella header: concepts, core, the CPU backend, the layers, networks and training.
/// Never pulls CUDA headers (for the GPU add <nddr/cuda.hpp>), nor libpng or zlib: the image and
/// IDX readers, the data sets and the plots are in <nddr/image_io.hpp> (CMake target
/// `nddr::image_io`).

// Core
#include "nddr/core/bfloat16.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/macros.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/shape.hpp"
#include "nddr/core/storage.hpp"
#include "nddr/core/tensor.hpp"

// Concepts
#include "nddr/concepts/device.hpp"
#include "nddr/concepts/layer.hpp"
#include "nddr/concepts/tensor.hpp"

// Ops (CPU backend)
#include "nddr/ops/activation.hpp"
#include "nddr/ops/batch_norm.hpp"
#include "nddr/ops/concat.hpp"
#include "nddr/ops/conv2d.hpp"
#include "nddr/ops/dropout.hpp"
#include "nddr/ops/argmax.hpp"
#include "nddr/ops/l2_normalize.hpp"
#include "nddr/ops/linear.hpp"
#include "nddr/ops/loss.hpp"
#include "nddr/ops/pool.hpp"
#include "nddr/ops/resize.hpp"

// Layers
#include "nddr/layers/batch_norm.hpp"
#include "nddr/layers/conv2d.hpp"
#include "nddr/layers/dropout.hpp"
#include "nddr/layers/linear.hpp"
#include "nddr/layers/pool.hpp"
#include "nddr/layers/relu.hpp"
#include "nddr/layers/sequential.hpp"
#include "nddr/layers/resize.hpp"

// Multi-task networks: concepts, backbones, fusion layers, tasks, MultiTask / Network
#include "nddr/concepts/backbone.hpp"
#include "nddr/concepts/fusion_layer.hpp"
#include "nddr/concepts/head.hpp"
#include "nddr/concepts/stage.hpp"
#include "nddr/concepts/task.hpp"
#include "nddr/backbones/resnet101.hpp"
#include "nddr/backbones/tiny.hpp"
#include "nddr/backbones/vgg16.hpp"
#include "nddr/backbones/vgg16_classifier.hpp"
#include "nddr/fusion/cross_stitch.hpp"
#include "nddr/fusion/nddr.hpp"
#include "nddr/fusion/none.hpp"
#include "nddr/fusion/shortcut.hpp"
#include "nddr/fusion/sluice.hpp"
#include "nddr/multitask/multitask.hpp"
#include "nddr/multitask/network.hpp"
#include "nddr/tasks/tasks.hpp"

// I/O
#include "nddr/io/safetensors.hpp"
#include "nddr/io/weights.hpp"

// Training: optimiser, schedules, metrics, data loading, trainer
#include "nddr/data/loader.hpp"
#include "nddr/data/split.hpp"
#include "nddr/metrics/classification.hpp"
#include "nddr/metrics/delta.hpp"
#include "nddr/metrics/normals.hpp"
#include "nddr/metrics/segmentation.hpp"
#include "nddr/concepts/optimizer.hpp"
#include "nddr/optim/adam.hpp"
#include "nddr/optim/any.hpp"
#include "nddr/optim/schedule.hpp"
#include "nddr/optim/sgd.hpp"
#include "nddr/train/checkpoint.hpp"
#include "nddr/train/evaluation.hpp"
#include "nddr/train/experiment.hpp"
#include "nddr/train/trainer.hpp"
