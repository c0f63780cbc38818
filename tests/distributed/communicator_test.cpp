// Communicators: SerialCommunicator and MpiCommunicator on one rank ([serial]) and on two
// ([mpi]); launch detection; DataParallel's bucketed gradient averaging.
#include "support.hpp"

#include <cstdlib>
#include <vector>

using nddr::distributed::MpiCommunicator;
using nddr::distributed::SerialCommunicator;

TEST_CASE("SerialCommunicator: every collective is the identity", "[serial][communicator]") {
  SerialCommunicator<> comm;
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<float> f(nddr::Shape{5});
  nddr::Tensor<double> d(nddr::Shape{3});
  for (int i = 0; i < 5; ++i) f[i] = static_cast<float>(i) + 0.5f;
  for (int i = 0; i < 3; ++i) d[i] = -1.25 * i;
  comm.all_reduce_sum(ctx, f.view());
  comm.all_reduce_average(ctx, d.view());
  comm.broadcast(ctx, f.view(), 0);
  std::vector<double> host{1.5, 2.5};
  comm.all_reduce_sum_host(std::span<double>(host));
  comm.barrier();
  CHECK(comm.rank() == 0);
  CHECK(comm.size() == 1);
  for (int i = 0; i < 5; ++i) CHECK(f[i] == static_cast<float>(i) + 0.5f);
  for (int i = 0; i < 3; ++i) CHECK(d[i] == -1.25 * i);
  CHECK(host == std::vector<double>{1.5, 2.5});
  CHECK_THROWS_WITH(comm.broadcast(ctx, f.view(), 1),
                    Catch::Contains("SerialCommunicator::broadcast") &&
                        Catch::Contains("root 1 is not a rank of 1"));
}

TEST_CASE("MpiCommunicator on MPI_COMM_SELF: one rank, identity, errors named",
          "[serial][communicator]") {
  MpiCommunicator comm(MPI_COMM_SELF);
  nddr::Context<nddr::Cpu> ctx(1);
  CHECK(comm.rank() == 0);
  CHECK(comm.size() == 1);
  nddr::Tensor<float> f(nddr::Shape{4});
  for (int i = 0; i < 4; ++i) f[i] = 1.0f + static_cast<float>(i);
  comm.all_reduce_sum(ctx, f.view());
  comm.all_reduce_average(ctx, f.view());
  comm.broadcast(ctx, f.view(), 0);
  comm.barrier();
  for (int i = 0; i < 4; ++i) CHECK(f[i] == 1.0f + static_cast<float>(i));
  CHECK_THROWS_WITH(comm.broadcast(ctx, f.view(), 2),
                    Catch::Contains("MpiCommunicator::broadcast") &&
                        Catch::Contains("root 2 is not a rank of 1"));
  CHECK_THROWS_WITH(MpiCommunicator(MPI_COMM_SELF, nddr::distributed::MpiOptions{}.timeout(-1)),
                    Catch::Contains("timeout_s must be >= 0"));
}

TEST_CASE("MPI errors become nddr::Error naming the call", "[serial][communicator]") {
  CHECK_THROWS_WITH(nddr::distributed::detail::mpi_check(MPI_ERR_COUNT, "MPI_Allreduce"),
                    Catch::Contains("MPI_Allreduce failed") && Catch::Contains("count"));
}

TEST_CASE("launcher_world_size reads the launcher's environment", "[serial][communicator]") {
  // Run alone, no launcher variable is set (the [serial] tests are not started by mpirun).
  if (std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr) {
    CHECK(nddr::distributed::launcher_world_size() == 0);
    ::setenv("PMI_SIZE", "4", 1);
    CHECK(nddr::distributed::launcher_world_size() == 4);
    CHECK(nddr::distributed::launched_multi_rank());
    ::setenv("PMI_SIZE", "x", 1);
    CHECK(nddr::distributed::launcher_world_size() == 0);
    ::unsetenv("PMI_SIZE");
  }
}

TEST_CASE("MpiCommunicator on 2 ranks: sum, average, broadcast, host sum, barrier",
          "[mpi][communicator]") {
  MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  nddr::Context<nddr::Cpu> ctx(1);
  const int r = comm.rank();
  CHECK(comm.local_size() == 2);
  CHECK(comm.local_rank() == r);

  nddr::Tensor<float> f(nddr::Shape{7});
  nddr::Tensor<double> d(nddr::Shape{2, 3});
  for (int i = 0; i < 7; ++i) f[i] = static_cast<float>(10 * r + i);
  for (int i = 0; i < 6; ++i) d[i] = r == 0 ? 1.0 * i : 3.0 * i;
  comm.all_reduce_sum(ctx, f.view());
  comm.all_reduce_average(ctx, d.view());
  for (int i = 0; i < 7; ++i) CHECK(f[i] == static_cast<float>(10 + 2 * i));
  for (int i = 0; i < 6; ++i) CHECK(d[i] == 2.0 * i);

  nddr::Tensor<double> b(nddr::Shape{3});
  for (int i = 0; i < 3; ++i) b[i] = 100.0 * r + i;
  comm.broadcast(ctx, b.view(), 1);
  for (int i = 0; i < 3; ++i) CHECK(b[i] == 100.0 + i);

  std::vector<double> host{1.0 + r, 0.5};
  comm.all_reduce_sum_host(std::span<double>(host));
  CHECK(host == std::vector<double>{3.0, 1.0});
  comm.barrier();
}

TEST_CASE("DataParallel: bucketed gradient averaging, loss averaging, rank-0-only outputs",
          "[mpi][communicator]") {
  MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  nddr::Context<nddr::Cpu> ctx(1);
  dist_test::Net net({5, 3});
  const int r = comm.rank();
  auto g = net.parameters().grads();
  for (std::int64_t i = 0; i < g.numel(); ++i) g[i] = r == 0 ? 1.0 * (i % 97) : 3.0 * (i % 97);
  // 1000 bytes = 125 doubles per bucket: many buckets, the last one partial.
  nddr::distributed::DataParallel dp(comm, net,
                                     nddr::distributed::DataParallelOptions{}.bucket_mb(1000.0 / (1 << 20)));
  REQUIRE(g.numel() % 125 != 0);
  dp.average_gradients(ctx);
  std::int64_t wrong = 0;
  for (std::int64_t i = 0; i < g.numel(); ++i) wrong += g[i] != 2.0 * (i % 97);
  CHECK(wrong == 0);

  dist_test::Train::StepResult res;
  res.losses = {1.0 + r, 10.0 * (r + 1)};
  res.total = res.losses[0] + res.losses[1];
  dp.average_losses(res);
  CHECK(res.losses[0] == 1.5);
  CHECK(res.losses[1] == 15.0);
  CHECK(res.total == 16.5);
  CHECK_FALSE(res.stop);
  // A stop requested on one rank only (its Ctrl-C) stops every rank after the same step.
  res.stop = r == 1;
  dp.average_losses(res);
  CHECK(res.stop);

  const auto o = dp.trainer_options(dist_test::quiet("somewhere"));
  CHECK(o.write_outputs == (r == 0));
  CHECK(o.progress == false);  // quiet() already turned it off on rank 0
  nddr::TrainerOptions loud;
  CHECK(dp.trainer_options(loud).progress == (r == 0));
  const auto lo = dp.shard(nddr::data::LoaderOptions{}.batch_size(3));
  CHECK(lo.shard_rank == r);
  CHECK(lo.shard_world == 2);
  CHECK(lo.items_per_batch == 3);
  CHECK_THROWS_WITH(
      nddr::distributed::DataParallel(comm, net, nddr::distributed::DataParallelOptions{}.bucket_mb(0)),
      Catch::Contains("bucket_bytes must be > 0"));
}
