// <nddr/distributed.hpp> without MPI (nddr::nddr only): the serial model works, and a program
// started as several ranks refuses to run as independent copies.
#include <catch2/catch.hpp>

#include <nddr/distributed.hpp>
#include <nddr/nddr.hpp>

#include <cstdlib>

#if defined(NDDR_WITH_MPI)
#error "this test must be compiled without MPI"
#endif

TEST_CASE("AutoDataParallel without MPI: serial alone, an error under a launcher",
          "[distributed][nompi]") {
  using Spec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
  nddr::Network<Spec> net({5, 3});
  nddr::Context<nddr::Cpu> ctx(1);
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  ::unsetenv("PMIX_SIZE");
  ::setenv("PMI_SIZE", "1", 1);
  {
    nddr::distributed::AutoDataParallel dp(net, ctx);
    CHECK(dp.size() == 1);
    CHECK(dp.is_root());
    CHECK_FALSE(dp.distributed());
  }
  ::setenv("PMI_SIZE", "2", 1);
  CHECK_THROWS_WITH(nddr::distributed::AutoDataParallel(net, ctx),
                    Catch::Contains("started as one of 2 ranks") &&
                        Catch::Contains("built without MPI") && Catch::Contains("nddr::mpi"));
  ::unsetenv("PMI_SIZE");
}
