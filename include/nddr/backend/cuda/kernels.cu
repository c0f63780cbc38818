// The one translation unit that compiles nddr's own CUDA kernels. CMake attaches it to every
// target linking nddr::cuda, so the library stays header-only; host code sees only the
// launcher declarations in backend/cuda/<op>.hpp. Include every kernels/*.cuh here and
// instantiate its launchers for float and double. Never include Eigen or Boost.Hana from here
// (nvcc cannot digest Hana in constant evaluation; Eigen is host-only in this project).

#include "nddr/backend/cuda/kernels/activation.cuh"
#include "nddr/backend/cuda/kernels/adam.cuh"
#include "nddr/backend/cuda/kernels/argmax.cuh"
#include "nddr/backend/cuda/kernels/conv_bn.cuh"
#include "nddr/backend/cuda/kernels/elementwise.cuh"
#include "nddr/backend/cuda/kernels/launch.cuh"
#include "nddr/backend/cuda/kernels/pool.cuh"
#include "nddr/backend/cuda/kernels/resize.cuh"
#include "nddr/backend/cuda/kernels/concat.cuh"
#include "nddr/backend/cuda/kernels/dropout.cuh"
#include "nddr/backend/cuda/kernels/loss.cuh"
#include "nddr/backend/cuda/kernels/l2_normalize.cuh"
#include "nddr/backend/cuda/kernels/sgd.cuh"
#include "nddr/backend/cuda/kernels/subspace_mix.cuh"

NDDR_CUDA_INSTANTIATE_ACTIVATION(float)
NDDR_CUDA_INSTANTIATE_ACTIVATION(double)
NDDR_CUDA_INSTANTIATE_ADAM(float)
NDDR_CUDA_INSTANTIATE_ADAM(double)
NDDR_CUDA_INSTANTIATE_ARGMAX(float)
NDDR_CUDA_INSTANTIATE_ARGMAX(double)
NDDR_CUDA_INSTANTIATE_CONV_BN(float)
NDDR_CUDA_INSTANTIATE_CONV_BN(double)
NDDR_CUDA_INSTANTIATE_CONV_BF16
NDDR_CUDA_INSTANTIATE_ELEMENTWISE(float)
NDDR_CUDA_INSTANTIATE_ELEMENTWISE(double)
NDDR_CUDA_INSTANTIATE_POOL(float)
NDDR_CUDA_INSTANTIATE_POOL(double)
NDDR_CUDA_INSTANTIATE_POOL_ARGMAX_CHECK
NDDR_CUDA_INSTANTIATE_RESIZE(float)
NDDR_CUDA_INSTANTIATE_RESIZE(double)
NDDR_CUDA_INSTANTIATE_RESIZE_LABELS(std::uint8_t)
NDDR_CUDA_INSTANTIATE_RESIZE_LABELS(std::int32_t)
NDDR_CUDA_INSTANTIATE_RESIZE_LABELS(std::int64_t)
NDDR_CUDA_INSTANTIATE_CONCAT(float)
NDDR_CUDA_INSTANTIATE_CONCAT(double)
NDDR_CUDA_INSTANTIATE_DROPOUT(float)
NDDR_CUDA_INSTANTIATE_DROPOUT(double)
NDDR_CUDA_INSTANTIATE_LOSS(float)
NDDR_CUDA_INSTANTIATE_LOSS(double)
NDDR_CUDA_INSTANTIATE_L2_NORMALIZE(float)
NDDR_CUDA_INSTANTIATE_L2_NORMALIZE(double)
NDDR_CUDA_INSTANTIATE_SGD(float)
NDDR_CUDA_INSTANTIATE_SGD(double)
NDDR_CUDA_INSTANTIATE_SUBSPACE_MIX(float)
NDDR_CUDA_INSTANTIATE_SUBSPACE_MIX(double)

// Guards for the rule above: these headers define their include guards when pulled in.
#if defined(BOOST_HANA_CONFIG_HPP)
#error "nddr kernels.cu: Boost.Hana was included; keep Hana out of kernels/*.cuh"
#endif
#if defined(EIGEN_CORE_H)
#error "nddr kernels.cu: Eigen was included; keep Eigen out of kernels/*.cuh"
#endif
