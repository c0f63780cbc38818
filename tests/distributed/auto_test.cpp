// AutoDataParallel: alone it is the plain trainer ([serial]); under mpirun -np 2 it joins the
// job as a replica over MPI ([mpi]).
#include "support.hpp"

#include <cstdlib>

namespace {

using namespace dist_test;

/// Trains kSteps on this rank's share of a 4-image global batch through AutoDataParallel.
void train_auto(Net& net, std::int64_t steps, int* rank = nullptr, int* size = nullptr) {
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::distributed::AutoDataParallel dp(net, ctx);
  Train t(net, kSchedule, dp.trainer_options(quiet()));
  CHECK_FALSE(dp.resume(t));
  dp.attach(ctx, t);
  const std::int64_t mine = 4 / dp.size();
  t.fit(ctx, steps, [&](std::int64_t s) { return slice(global_batch(s, 4), dp.rank() * mine, mine); });
  if (rank) *rank = dp.rank();
  if (size) *size = dp.size();
}

}  // namespace

TEST_CASE("AutoDataParallel alone: one serial replica, the plain trainer bit for bit",
          "[serial][auto]") {
  if (nddr::distributed::launcher_world_size() > 1) return;
  Net plain({5, 3});
  {
    nddr::Context<nddr::Cpu> ctx(1);
    Train t(plain, kSchedule, quiet());
    t.fit(ctx, 2, [](std::int64_t s) { return global_batch(s, 4); });
  }
  Net net({5, 3});
  int rank = -1, size = -1;
  train_auto(net, 2, &rank, &size);
  CHECK(rank == 0);
  CHECK(size == 1);
  CHECK(max_abs_diff(net.parameters().values(), plain.parameters().values()) == 0.0);
}

TEST_CASE("AutoDataParallel under mpirun -np 2: a replica over MPI, per-rank BN equivalent",
          "[mpi][auto]") {
  REQUIRE(nddr::distributed::launcher_world_size() == 2);
  Net net({5, 3});
  int rank = -1, size = -1;
  train_auto(net, 2, &rank, &size);
  CHECK(size == 2);
  // Every rank ends with the same parameters: their sum over ranks is twice this rank's.
  nddr::distributed::MpiCommunicator comm;
  CHECK(rank == comm.rank());
  std::vector<double> v(net.parameters().values().data(),
                        net.parameters().values().data() + net.parameters().values().numel());
  std::vector<double> sum = v;
  comm.all_reduce_sum_host(std::span<double>(sum));
  double diff = 0.0;
  for (std::size_t i = 0; i < v.size(); ++i) diff = std::max(diff, std::abs(sum[i] - 2.0 * v[i]));
  CHECK(diff == 0.0);
}

TEST_CASE("DataParallelOptions::from_env reads NDDR_SYNC_BN and NDDR_BUCKET_MB",
          "[serial][auto]") {
  using nddr::distributed::DataParallelOptions;
  ::unsetenv("NDDR_SYNC_BN");
  ::unsetenv("NDDR_BUCKET_MB");
  CHECK_FALSE(DataParallelOptions::from_env().sync_batch_norm);
  CHECK(DataParallelOptions::from_env().bucket_bytes == DataParallelOptions{}.bucket_bytes);
  ::setenv("NDDR_SYNC_BN", "1", 1);
  ::setenv("NDDR_BUCKET_MB", "2", 1);
  const auto o = DataParallelOptions::from_env();
  CHECK(o.sync_batch_norm);
  CHECK(o.bucket_bytes == 2 << 20);
  {
    Net net({5, 3});
    nddr::distributed::AutoDataParallel dp(net);  // CPU networks need no context
    CHECK(dp.size() == (nddr::distributed::launched_multi_rank() ? 2 : 1));
  }
  ::setenv("NDDR_SYNC_BN", "yes", 1);
  CHECK_THROWS_WITH(DataParallelOptions::from_env(), Catch::Contains("NDDR_SYNC_BN must be 0 or 1"));
  ::setenv("NDDR_SYNC_BN", "0", 1);
  ::setenv("NDDR_BUCKET_MB", "-3", 1);
  CHECK_THROWS_WITH(DataParallelOptions::from_env(),
                    Catch::Contains("NDDR_BUCKET_MB must be megabytes > 0, got '-3'"));
  ::unsetenv("NDDR_SYNC_BN");
  ::unsetenv("NDDR_BUCKET_MB");
}
