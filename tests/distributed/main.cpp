// Catch2 main of nddr_distributed_tests: MPI is initialised around the whole session, so the same
// binary runs alone ([serial] tests, MPI singleton) and under mpirun ([mpi] tests).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <nddr/distributed/mpi.hpp>

int main(int argc, char** argv) {
  nddr::distributed::MpiEnvironment mpi(&argc, &argv);
  return Catch::Session().run(argc, argv);
}
