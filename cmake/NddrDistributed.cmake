# Data-parallel training targets (docs/distributed.md):
#   nddr::mpi  - nddr::nddr + MPI (C++ bindings not needed, the C API is used) + NDDR_WITH_MPI=1
#   nddr::nccl - nddr::cuda + nddr::mpi + NCCL + NDDR_WITH_NCCL=1, when CUDA is on and NCCL found
# MPI is optional: without it there are no distributed targets and the library builds as before.
option(NDDR_ENABLE_MPI "Build the MPI/NCCL data-parallel targets when MPI is found" ON)

set(NDDR_HAVE_MPI OFF)
if(NDDR_ENABLE_MPI)
  find_package(MPI COMPONENTS CXX)
endif()

if(MPI_CXX_FOUND)
  set(NDDR_HAVE_MPI ON)
  add_library(nddr_mpi INTERFACE)
  add_library(nddr::mpi ALIAS nddr_mpi)
  set_target_properties(nddr_mpi PROPERTIES EXPORT_NAME mpi)
  target_link_libraries(nddr_mpi INTERFACE nddr::nddr MPI::MPI_CXX)
  target_compile_definitions(nddr_mpi INTERFACE NDDR_WITH_MPI=1)
  message(STATUS "nddr: MPI ${MPI_CXX_VERSION} found: nddr::mpi (launcher ${MPIEXEC_EXECUTABLE})")

  if(NDDR_ENABLE_CUDA AND TARGET nddr::cuda)
    find_path(NDDR_NCCL_INCLUDE_DIR nccl.h
      HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_ROOT}/include /usr/local/cuda/include)
    find_library(NDDR_NCCL_LIBRARY nccl
      HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_ROOT}/lib64 /usr/local/cuda/lib64)
    if(NDDR_NCCL_INCLUDE_DIR AND NDDR_NCCL_LIBRARY)
      nddr_import_library(NCCL::nccl "${NDDR_NCCL_LIBRARY}" "${NDDR_NCCL_INCLUDE_DIR}")
      add_library(nddr_nccl INTERFACE)
      add_library(nddr::nccl ALIAS nddr_nccl)
      set_target_properties(nddr_nccl PROPERTIES EXPORT_NAME nccl)
      target_link_libraries(nddr_nccl INTERFACE nddr::cuda nddr::mpi NCCL::nccl)
      target_compile_definitions(nddr_nccl INTERFACE NDDR_WITH_NCCL=1)
      message(STATUS "nddr: NCCL found (${NDDR_NCCL_LIBRARY}): nddr::nccl")
    else()
      message(STATUS "nddr: NCCL not found: no nddr::nccl (multi-GPU data parallelism)")
    endif()
  endif()
else()
  message(STATUS "nddr: MPI not found: no data-parallel targets (nddr::mpi, nddr::nccl); "
                 "install openmpi-bin libopenmpi-dev (tools/install-deps.sh)")
endif()
