// nddr's CUDA kernels (the one translation unit nvcc compiles for nddr::cuda), compiled by the
// host compiler for the CPU emulator: include/cuda_runtime.h stands in for CUDA's, so each
// NDDR_LAUNCH runs its grid on the calling thread.
#include "nddr/backend/cuda/kernels.cu"
