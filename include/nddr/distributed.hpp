#pragma once
/// \file
/// Data-parallel training: the `Communicator` concept and `SerialCommunicator`, `DataParallel`,
/// `AutoDataParallel` (chosen from how the program was launched), launch detection; with the
/// `nddr::mpi` CMake target (NDDR_WITH_MPI) also `MpiEnvironment` and `MpiCommunicator`, and with
/// `nddr::nccl` (NDDR_WITH_NCCL) `NcclCommunicator`. Kept out of <nddr/nddr.hpp> so that
/// programs without MPI never see <mpi.h>. See docs/distributed.md.

#include "nddr/distributed/auto.hpp"
#include "nddr/distributed/communicator.hpp"
#include "nddr/distributed/data_parallel.hpp"
#include "nddr/distributed/launch.hpp"

#if defined(NDDR_WITH_MPI)
#include "nddr/distributed/mpi.hpp"
#endif

#if defined(NDDR_WITH_NCCL)
#include "nddr/distributed/nccl.hpp"
#endif
