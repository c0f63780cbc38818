// A rank that dies or hangs mid-training must make the job fail instead of hanging. These
// tests are hidden ([.]): they are run under mpirun by expect_failure.cmake, which passes when
// the job exits non-zero in time with the expected message (tests/distributed/CMakeLists.txt).
#include "support.hpp"

#include <chrono>
#include <csignal>
#include <thread>

namespace {

using namespace dist_test;

/// Trains on 2 ranks; at step 2 rank 1 runs `failure` while rank 0 goes on into the gradient
/// all-reduce, which can then never complete.
template <class F>
void train_until_rank1_fails(F failure) {
  nddr::distributed::MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  Net net({5, 3});
  nddr::distributed::DataParallel dp(comm, net);
  nddr::Context<nddr::Cpu> ctx(1);
  dp.synchronize(ctx);
  Train t(net, kSchedule, dp.trainer_options(quiet()));
  dp.attach(t);
  t.fit(ctx, 50, [&](std::int64_t s) {
    if (s == 2 && comm.rank() == 1) failure();
    return slice(global_batch(s, 4), 2 * comm.rank(), 2);
  });
  FAIL("training finished although rank 1 failed");
}

}  // namespace

TEST_CASE("a killed rank ends the job", "[.dead_rank]") {
  train_until_rank1_fails([] { std::raise(SIGKILL); });
}

TEST_CASE("a hung rank ends the job after the collective timeout", "[.hung_rank]") {
  train_until_rank1_fails([] { std::this_thread::sleep_for(std::chrono::seconds(300)); });
}

TEST_CASE("an exception on one rank ends the job through AutoDataParallel", "[.exception_rank]") {
  Net net({5, 3});
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::distributed::AutoDataParallel dp(net, ctx);
  REQUIRE(dp.size() == 2);
  Train t(net, kSchedule, dp.trainer_options(quiet()));
  dp.attach(ctx, t);
  t.fit(ctx, 50, [&](std::int64_t s) {
    if (s == 2 && dp.rank() == 1) throw nddr::IoError("rank 1 cannot read its sample");
    return slice(global_batch(s, 4), 2 * dp.rank(), 2);
  });
  FAIL("training finished although rank 1 failed");
}
