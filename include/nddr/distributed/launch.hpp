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

/// Whether a launcher started this process as one of several ranks.
inline bool launched_multi_rank() { return launcher_world_size() > 1; }

}  // namespace nddr::distributed
