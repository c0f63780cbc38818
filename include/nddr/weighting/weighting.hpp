#pragma once
/// \file
/// Umbrella of the multi-task weighting methods (host-only; docs/weighting.md): the contract
/// (method.hpp), the loss-weighting methods EW, DWA, UW, RLW (loss_weighting.hpp), GradNorm
/// (gradnorm.hpp), the gradient methods MGDA (mgda.hpp), PCGrad (pcgrad.hpp), CAGrad
/// (cagrad.hpp), IMTL-G (imtl.hpp), Aligned-MTL (aligned_mtl.hpp), Nash-MTL (nash_mtl.hpp),
/// and the run-time registry (registry.hpp). Never included by CUDA translation units.

#include "nddr/weighting/aligned_mtl.hpp"
#include "nddr/weighting/cagrad.hpp"
#include "nddr/weighting/gradnorm.hpp"
#include "nddr/weighting/imtl.hpp"
#include "nddr/weighting/loss_weighting.hpp"
#include "nddr/weighting/method.hpp"
#include "nddr/weighting/mgda.hpp"
#include "nddr/weighting/nash_mtl.hpp"
#include "nddr/weighting/pcgrad.hpp"
#include "nddr/weighting/registry.hpp"
