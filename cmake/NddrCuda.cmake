# CUDA plumbing, with the CMake 3.25 workarounds recorded in docs/design.md:
#  - CMAKE_CUDA_ARCHITECTURES must be set before enable_language(CUDA) (else sm_75);
#  - CMake 3.25 does not know CUDA20: set the -std=c++20 flag variables by hand and never use
#    the cuda_std_20 compile feature;
#  - one shared CUDA runtime (CMAKE_CUDA_RUNTIME_LIBRARY Shared);
#  - cuDNN has no CMake target in the toolkit: CUDNN::cudnn is made here.
# An imported target for a library that ships no CMake package (cuDNN, NCCL), once.
function(nddr_import_library target library include_dir)
  if(NOT TARGET ${target})
    add_library(${target} UNKNOWN IMPORTED)
    set_target_properties(${target} PROPERTIES
      IMPORTED_LOCATION "${library}"
      INTERFACE_INCLUDE_DIRECTORIES "${include_dir}")
  endif()
endfunction()

include(CheckLanguage)
check_language(CUDA)
set(_nddr_cuda_default OFF)
if(CMAKE_CUDA_COMPILER)
  set(_nddr_cuda_default ON)
endif()
option(NDDR_ENABLE_CUDA "Build the CUDA backend (nddr::cuda) and its tests" ${_nddr_cuda_default})

if(NDDR_ENABLE_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  enable_language(CUDA)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)

  find_path(CUDNN_INCLUDE_DIR cudnn.h
    HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV CUDNN_ROOT PATH_SUFFIXES include)
  # libcudnn.so.9 alone: the Python wheel (nvidia-cudnn-cu13) ships no unversioned symlink.
  find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9
    HINTS ${CUDAToolkit_LIBRARY_DIR} ENV CUDNN_ROOT PATH_SUFFIXES lib64 lib)
  if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY)
    message(FATAL_ERROR "nddr: NDDR_ENABLE_CUDA is ON but cuDNN was not found "
                        "(cudnn.h / libcudnn near ${CUDAToolkit_LIBRARY_DIR}); "
                        "set CUDNN_ROOT or configure with -DNDDR_ENABLE_CUDA=OFF")
  endif()
  nddr_import_library(CUDNN::cudnn "${CUDNN_LIBRARY}" "${CUDNN_INCLUDE_DIR}")
  message(STATUS "nddr: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
                 "arch ${CMAKE_CUDA_ARCHITECTURES}, cuDNN ${CUDNN_LIBRARY})")
else()
  message(STATUS "nddr: CUDA backend OFF")
endif()

# nddr::cuda: INTERFACE target (the headers stay header-only) linking nddr_cuda_kernels, a static
# library of kernels.cu (our __global__ templates, instantiated once for float and double),
# compiled once for every consumer in the build tree instead of once per executable. Both are
# installed and exported (nddr::cuda, nddr::cuda_kernels) for find_package(nddr) users.
function(nddr_add_cuda_target)
  add_library(nddr_cuda INTERFACE)
  add_library(nddr::cuda ALIAS nddr_cuda)
  set_target_properties(nddr_cuda PROPERTIES EXPORT_NAME cuda)
  # Not CUDA::cublas: nddr loads cuBLAS on first use (include/nddr/backend/cuda/cublas_api.hpp,
  # docs/cuda.md), because linking it costs every process ~170 ms at start (libcublasLt's
  # relocations); ${CMAKE_DL_LIBS} for dlopen (empty where libc has it).
  target_link_libraries(nddr_cuda INTERFACE nddr::nddr CUDA::cudart CUDNN::cudnn ${CMAKE_DL_LIBS})
  target_compile_definitions(nddr_cuda INTERFACE NDDR_WITH_CUDA=1)
  target_compile_options(nddr_cuda INTERFACE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -diag-suppress=20011,20012,20014>)
  set(_kernels "${PROJECT_SOURCE_DIR}/include/nddr/backend/cuda/kernels.cu")
  if(EXISTS "${_kernels}")
    add_library(nddr_cuda_kernels STATIC "${_kernels}")
    target_link_libraries(nddr_cuda_kernels PUBLIC nddr::nddr CUDA::cudart)
    target_compile_definitions(nddr_cuda_kernels PUBLIC NDDR_WITH_CUDA=1)
    target_compile_options(nddr_cuda_kernels PRIVATE
      --expt-relaxed-constexpr -diag-suppress=20011,20012,20014)
    set_target_properties(nddr_cuda_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON
                                                       EXPORT_NAME cuda_kernels)
    target_link_libraries(nddr_cuda INTERFACE nddr_cuda_kernels)
  endif()
endfunction()
