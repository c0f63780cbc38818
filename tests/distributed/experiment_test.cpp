// nddr-nyuv2's driver (run_nyuv2) under mpirun -np 2 ([mpi]): the ranks train one model
// (identical evaluation on every rank), rank 0 alone writes logs, checkpoints and results, and a
// 2-rank run resumes. Data: the tiny synthetic NYUv2 of the train tests.
#include "support.hpp"

#include <fstream>
#include <sstream>

#include "../support/nyu_fixture.hpp"
#include "nddr_apps/nyuv2_experiment.hpp"

namespace {

namespace ex = nddr::experiments;

ex::NyuV2Config config(const std::filesystem::path& data, const std::filesystem::path& out,
                       std::int64_t steps, bool resume) {
  std::vector<std::string> args{"--data-dir", data.string(), "--method", "nddr", "--backbone",
                                "tiny", "--crop", "33", "--batch", "2", "--steps",
                                std::to_string(steps), "--threads", "1", "--loader-threads", "1",
                                "--quiet", "--output-dir", out.string(), "--log-every", "1"};
  if (resume) args.push_back("--resume");
  auto c = ex::parse_nyuv2_args(args);
  REQUIRE(c.has_value());
  return *c;
}

std::int64_t count_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::int64_t n = 0;
  for (std::string l; std::getline(in, l);) ++n;
  return n;
}

}  // namespace

TEST_CASE("nddr-nyuv2 driver under mpirun -np 2: one model, rank 0 writes, resume",
          "[mpi][experiments]") {
  nddr::distributed::MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  const auto dir = dist_test::shared_dir(comm, "nyuv2");
  if (comm.rank() == 0) nddr_test::write_nyu(dir / "nyu");
  comm.barrier();

  std::ostringstream log;
  auto r = ex::run_nyuv2(config(dir / "nyu", dir / "out", 2, false), log);
  CHECK(r.steps == 2);
  // Every rank evaluated its own replica on the whole test set: identical replicas give
  // identical metrics (independent runs on different shards would not).
  REQUIRE(r.row.size() == 7);
  std::vector<double> sum = r.row;
  comm.all_reduce_sum_host(std::span<double>(sum));
  for (std::size_t i = 0; i < r.row.size(); ++i) {
    INFO("metric " << i);
    if (std::isfinite(r.row[i])) CHECK(sum[i] == 2.0 * r.row[i]);
  }
  comm.barrier();
  CHECK(count_lines(dir / "out" / "log.jsonl") == 2);  // rank 1 wrote none
  CHECK(std::filesystem::exists(dir / "out" / "results.csv"));
  CHECK(count_lines(dir / "out" / "results.csv") == 2);  // header + one row, written once
  CHECK(std::filesystem::exists(dir / "out" / "checkpoints" / "ckpt-0000000002.safetensors"));
  comm.barrier();

  std::ostringstream log2;
  r = ex::run_nyuv2(config(dir / "nyu", dir / "out", 4, true), log2);
  CHECK(r.steps == 4);
  CHECK_THAT(log2.str(), Catch::Contains("resumed from step 2"));
  comm.barrier();
  CHECK(count_lines(dir / "out" / "log.jsonl") == 4);
  comm.barrier();
  if (comm.rank() == 0) std::filesystem::remove_all(dir);
}
