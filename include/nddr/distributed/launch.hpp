#pragma once
/// \file
/// How this process was launched, read from the environment only (no MPI needed): lets a program
/// built without MPI refuse to run as N independent copies under `mpirun -np N`, and one built
/// with MPI set up data parallelism only when it was started by a launcher.

#include <cstdlib>
#include <string>

namespace nddr::distributed {

/// The world size announced by an MPI launcher: Open MPI's OMPI_COMM_WORLD_SIZE, PMI_SIZE
/// (MPICH, Intel MPI, Slurm's srun) or PMIX_SIZE; 0 when no launcher started the process.
inline int launcher_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    if (const char* v = std::getenv(name)) {
      char* end = nullptr;
      const long n = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && n > 0) return static_cast<int>(n);
    }
  }
  return 0;
}

/// This process's rank in the job as announced by the launcher (OMPI_COMM_WORLD_RANK, PMI_RANK,
/// PMIX_RANK); 0 when none is set. Lets code that has no communicator at hand (e.g. a driver's
/// result files) leave the writing to rank 0.
inline int launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"}) {
    if (const char* v = std::getenv(name)) {
      char* end = nullptr;
      const long n = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && n >= 0) return static_cast<int>(n);
    }
  }
  return 0;
}

/// This process's rank among those of its host, as announced by the launcher
/// (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID); 0 when none is set. Selects
/// the GPU of a rank before MPI is initialised.
inline int launcher_local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}) {
    if (const char* v = std::getenv(name)) {
      char* end = nullptr;
      const long n = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && n >= 0) return static_cast<int>(n);
    }
  }
  return 0;
}

/// Whether a launcher started this process as one of several ranks.
inline bool launched_multi_rank() { return launcher_world_size() > 1; }

}  // namespace nddr::distributed
