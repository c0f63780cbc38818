// Data-parallel training on 2 ranks against its exact single-process equivalents ([mpi]):
// synchronized BN = one process on the concatenated batch; per-rank BN = one process averaging
// the gradients (and running statistics) of per-rank micro-batches. Also: rank 0 alone writes,
// resume across rank counts, per-rank dropout streams, sharded loading, and the serial model.
#include "support.hpp"

#include <fstream>
#include <set>
#include <vector>

namespace {

using namespace dist_test;
using nddr::distributed::DataParallel;
using nddr::distributed::DataParallelOptions;
using nddr::distributed::MpiCommunicator;

constexpr std::int64_t kPerRank = 2;
constexpr std::int64_t kSteps = 3;

/// One process on the global batch of every step (kPerRank * ranks images), steps [0, steps);
/// returns each step's total loss.
std::vector<double> train_single(Net& net, std::int64_t ranks, std::int64_t steps) {
  nddr::Context<nddr::Cpu> ctx(1);
  Train t(net, kSchedule, quiet());
  t.fit(ctx, steps, [&](std::int64_t s) { return global_batch(s, kPerRank * ranks); });
  std::vector<double> totals;
  for (const auto& r : t.history()) totals.push_back(r.total);
  return totals;
}

/// The exact single-process equivalent of R ranks with per-rank BN: each step's global batch is
/// split into R micro-batches that run forward and backward from the same state (BN statistics
/// per micro-batch); their gradients and updated running statistics are averaged, then one
/// optimiser step.
std::vector<double> train_micro_batches(Net& net, std::int64_t ranks, std::int64_t steps) {
  nddr::Context<nddr::Cpu> ctx(1);
  auto& store = net.parameters();
  Exp::optimizer<double, nddr::Cpu> sgd(store, nddr::SgdOptions::paper_multi_task());
  std::vector<double> losses;
  for (std::int64_t s = 0; s < steps; ++s) {
    const auto batch = global_batch(s, kPerRank * ranks);
    nddr::Tensor<double> buffers0(store.buffer_values().shape()), grad_sum(store.grads().shape()),
        buffer_sum(store.buffer_values().shape());
    std::copy_n(store.buffer_values().data(), buffers0.numel(), buffers0.data());
    double loss = 0.0;
    for (std::int64_t r = 0; r < ranks; ++r) {
      std::copy_n(buffers0.data(), buffers0.numel(), store.buffer_values().data());
      const auto micro = slice(batch, r * kPerRank, kPerRank);
      net.set_training(true);
      auto out = net.forward(ctx, micro.image.cview());
      nddr::Tensor<double> d0(out[0].shape()), d1(out[1].shape());
      loss += nddr::task_loss<nddr::Segmentation<5>>(
          ctx, out[0], std::get<0>(micro.targets).cview(), d0.view(), 1.0);
      loss += nddr::task_loss<nddr::SurfaceNormal>(
          ctx, out[1], std::get<1>(micro.targets).cview(), d1.view(), 20.0);
      const std::vector<nddr::TensorView<const double>> douts{d0.cview(), d1.cview()};
      net.backward(ctx, micro.image.cview(), douts);
      for (std::int64_t i = 0; i < grad_sum.numel(); ++i) grad_sum[i] += store.grads()[i];
      for (std::int64_t i = 0; i < buffer_sum.numel(); ++i)
        buffer_sum[i] += store.buffer_values()[i];
    }
    const double inv = 1.0 / static_cast<double>(ranks);
    for (std::int64_t i = 0; i < grad_sum.numel(); ++i) store.grads()[i] = grad_sum[i] * inv;
    for (std::int64_t i = 0; i < buffer_sum.numel(); ++i)
      store.buffer_values()[i] = buffer_sum[i] * inv;
    sgd.step(ctx, kSchedule(s));
    losses.push_back(loss * inv);
  }
  return losses;
}

/// This rank's part of a data-parallel run up to step `last`: the global batch of every step has
/// 2 * kPerRank images (what 2 ranks of kPerRank see), split evenly over the ranks of `comm`.
template <class Comm>
void train_parallel(Comm& comm, Train& t, std::int64_t last) {
  nddr::Context<nddr::Cpu> ctx(1);
  const std::int64_t global = 2 * kPerRank, mine = global / comm.size();
  t.fit(ctx, last, [&](std::int64_t s) {
    return slice(global_batch(s, global), comm.rank() * mine, mine);
  });
}

void check_same_state(Net& a, Net& b, double tol) {
  INFO("parameters");
  CHECK(max_rel_diff(a.parameters().values(), b.parameters().values()) < tol);
  INFO("BN running statistics");
  CHECK(max_rel_diff(a.parameters().buffer_values(), b.parameters().buffer_values()) < tol);
}

constexpr double kTol = 1e-9;

}  // namespace

TEST_CASE("DataParallel on 2 ranks with synchronized BN = 1 process on the combined batch",
          "[mpi][data_parallel]") {
  MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  Net reference({5, 3});
  const auto ref_losses = train_single(reference, 2, kSteps);

  nddr::NetworkOptions<Spec> other;
  other.seed = 77 + static_cast<std::uint64_t>(comm.rank());  // rank 0's parameters win
  Net net({5, 3}, comm.rank() == 0 ? nddr::NetworkOptions<Spec>{} : other);
  DataParallel dp(comm, net, DataParallelOptions{}.sync_bn(true));
  nddr::Context<nddr::Cpu> ctx(1);
  dp.synchronize(ctx);
  Train t(net, kSchedule, dp.trainer_options(quiet()));
  dp.attach(t);
  train_parallel(comm, t, kSteps);

  check_same_state(net, reference, kTol);
  REQUIRE(t.history().size() == static_cast<std::size_t>(kSteps));
  for (std::int64_t s = 0; s < kSteps; ++s)
    CHECK(t.history()[s].total == Approx(ref_losses[s]).epsilon(1e-10));
  // A single-rank check is not enough: the state must also differ from a run without the
  // synchronization (per-rank statistics), or this test could not fail.
  Net unsynced({5, 3});
  train_micro_batches(unsynced, 2, kSteps);
  CHECK(max_rel_diff(unsynced.parameters().values(), reference.parameters().values()) > 1e-6);
}

TEST_CASE("DataParallel on 2 ranks with a weighting method = 1 process on the combined batch",
          "[mpi][data_parallel][weighting]") {
  MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  // Per-task gradients and losses are averaged before the method reads them, so the weights
  // (non-linear in the gradients) are those of the combined batch.
  for (const std::string spec : {"mgda", "pcgrad", "uw", "cagrad"}) {
    INFO("weighting " << spec);
    auto opt = quiet();
    opt.weighting = spec;
    Net reference({5, 3});
    nddr::Context<nddr::Cpu> ctx(1);
    Train single(reference, kSchedule, opt);
    single.fit(ctx, kSteps, [&](std::int64_t s) { return global_batch(s, 2 * kPerRank); });

    Net net({5, 3});
    DataParallel dp(comm, net, DataParallelOptions{}.sync_bn(true));
    dp.synchronize(ctx);
    Train t(net, kSchedule, dp.trainer_options(opt));
    dp.attach(t);
    train_parallel(comm, t, kSteps);
    check_same_state(net, reference, kTol);
    for (std::int64_t s = 0; s < kSteps; ++s)
      for (std::size_t k = 0; k < 2; ++k)
        CHECK(t.history()[s].weights[k] ==
              Approx(single.history()[s].weights[k]).epsilon(1e-9));
  }
}

TEST_CASE("DataParallel on 2 ranks without synchronized BN = 1 process averaging per-rank "
          "micro-batches",
          "[mpi][data_parallel]") {
  MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  Net reference({5, 3});
  const auto ref_losses = train_micro_batches(reference, 2, kSteps);

  Net net({5, 3});
  DataParallel dp(comm, net);
  nddr::Context<nddr::Cpu> ctx(1);
  dp.synchronize(ctx);
  Train t(net, kSchedule, dp.trainer_options(quiet()));
  dp.attach(t);
  train_parallel(comm, t, kSteps);

  check_same_state(net, reference, kTol);
  for (std::int64_t s = 0; s < kSteps; ++s)
    CHECK(t.history()[s].total == Approx(ref_losses[s]).epsilon(1e-10));
  // ... which is not the combined-batch run (BN statistics of 2 images, not 4).
  Net combined({5, 3});
  train_single(combined, 2, kSteps);
  CHECK(max_rel_diff(combined.parameters().values(), reference.parameters().values()) > 1e-6);
}

TEST_CASE("DataParallel: rank 0 alone writes logs and checkpoints, resume 2 ranks -> 1 -> 2",
          "[mpi][data_parallel]") {
  MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  const auto dir_a = shared_dir(comm, "resume_a");
  const auto dir_b = shared_dir(comm, "resume_b");
  Net reference({5, 3});
  train_single(reference, 2, 2 * kSteps);
  const auto opt = DataParallelOptions{}.sync_bn(true);
  nddr::Context<nddr::Cpu> ctx(1);

  // 2 ranks train kSteps and write (rank 0) a checkpoint ...
  {
    Net net({5, 3});
    DataParallel dp(comm, net, opt);
    dp.synchronize(ctx);
    Train t(net, kSchedule, dp.trainer_options(quiet(dir_a.string())));
    CHECK_FALSE(dp.resume(t));
    dp.attach(t);
    train_parallel(comm, t, kSteps);
  }
  comm.barrier();
  std::int64_t lines = 0;
  {
    std::ifstream log(dir_a / "log.jsonl");
    for (std::string l; std::getline(log, l);) ++lines;
  }
  CHECK(lines == kSteps);  // one line per step: rank 1 wrote none
  std::int64_t checkpoints = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_a / "checkpoints"))
    checkpoints += e.path().extension() == ".safetensors";
  CHECK(checkpoints == 1);

  // ... which one rank (a one-rank MPI group) resumes on the combined batch to 2 * kSteps, and
  // writes a checkpoint there ...
  if (comm.rank() == 0) {
    MpiCommunicator self(MPI_COMM_SELF);
    nddr::NetworkOptions<Spec> other;
    other.seed = 4321;
    Net net({5, 3}, other);
    DataParallel dp(self, net, opt);
    Train t(net, kSchedule, dp.trainer_options(quiet(dir_a.string())));
    REQUIRE(dp.resume(t));
    CHECK(t.step() == kSteps);
    dp.attach(t);
    train_parallel(self, t, 2 * kSteps);
    check_same_state(net, reference, kTol);
  }
  comm.barrier();

  // ... and the other way round: one rank writes at kSteps, two ranks resume.
  if (comm.rank() == 0) {
    MpiCommunicator self(MPI_COMM_SELF);
    Net net({5, 3});
    DataParallel dp(self, net, opt);
    Train t(net, kSchedule, dp.trainer_options(quiet(dir_b.string())));
    dp.attach(t);
    train_parallel(self, t, kSteps);
  }
  comm.barrier();
  {
    nddr::NetworkOptions<Spec> other;
    other.seed = 99;
    Net net({5, 3}, other);
    DataParallel dp(comm, net, opt);
    Train t(net, kSchedule, dp.trainer_options(quiet(dir_b.string())));
    REQUIRE(dp.resume(t));
    CHECK(t.step() == kSteps);
    dp.attach(t);
    train_parallel(comm, t, 2 * kSteps);
    check_same_state(net, reference, kTol);
  }
  comm.barrier();
  if (comm.rank() == 0) {
    std::filesystem::remove_all(dir_a);
    std::filesystem::remove_all(dir_b);
  }
}

TEST_CASE("DataParallel: dropout streams differ across ranks, rank 0 keeps the plain ones, "
          "re-derived after loading a checkpoint",
          "[mpi][data_parallel]") {
  using DropSpec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
  using DropNet = nddr::Network<DropSpec>;
  using DropTrain = nddr::Trainer<nddr::Experiment<DropSpec, nddr::Tasks<nddr::Segmentation<5>,
                                                                         nddr::SurfaceNormal>>>;
  MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  const auto dir = shared_dir(comm, "dropout");
  nddr::Context<nddr::Cpu> ctx(1);
  DropNet plain({5, 3});
  const auto plain_rngs = plain.rngs();
  REQUIRE_FALSE(plain_rngs.empty());

  DropNet net({5, 3});
  DataParallel dp(comm, net);
  dp.synchronize(ctx);
  auto rngs = net.rngs();
  std::vector<double> seeds;  // low 32 bits, exact in a double
  for (std::size_t i = 0; i < rngs.size(); ++i) {
    const auto expected = nddr::distributed::rank_seed(plain_rngs[i]->seed(), comm.rank());
    CHECK(rngs[i]->seed() == expected);
    CHECK(rngs[i]->state().counter == plain_rngs[i]->state().counter);
    seeds.push_back(static_cast<double>(rngs[i]->seed() & 0xffffffffu));
  }
  if (comm.rank() == 0)
    for (std::size_t i = 0; i < rngs.size(); ++i) CHECK(rngs[i]->seed() == plain_rngs[i]->seed());
  // Differ across ranks: the sum over ranks is not twice this rank's value.
  std::vector<double> sum = seeds;
  comm.all_reduce_sum_host(std::span<double>(sum));
  for (std::size_t i = 0; i < seeds.size(); ++i) CHECK(sum[i] != 2.0 * seeds[i]);

  // Rank 0's checkpoint holds rank 0's streams; every rank re-derives its own from them.
  DropTrain t(net, nddr::PolySchedule{0.01, 100, 0.9}, dp.trainer_options(quiet(dir.string())));
  if (comm.rank() == 0) t.save_checkpoint();
  comm.barrier();
  DropNet fresh({5, 3});
  DataParallel dp2(comm, fresh);
  DropTrain t2(fresh, nddr::PolySchedule{0.01, 100, 0.9}, dp2.trainer_options(quiet(dir.string())));
  REQUIRE(dp2.resume(t2));
  auto fresh_rngs = fresh.rngs();
  for (std::size_t i = 0; i < rngs.size(); ++i) CHECK(fresh_rngs[i]->seed() == rngs[i]->seed());
  comm.barrier();
  if (comm.rank() == 0) std::filesystem::remove_all(dir);
}

TEST_CASE("DataParallel: sharded loaders cover every sample once per epoch",
          "[mpi][data_parallel]") {
  MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  Net net({5, 3});
  DataParallel dp(comm, net);
  for (const std::int64_t size : {10, 11}) {
    const auto opt = dp.shard(nddr::data::LoaderOptions{}.batch_size(2).seed(3).threads(1));
    nddr::data::PrefetchLoader<std::int64_t> loader(
        size, [](std::int64_t i, nddr::Rng&) { return i; }, opt);
    for (std::int64_t epoch = 0; epoch < 2; ++epoch) {
      std::vector<double> seen(static_cast<std::size_t>(size), 0.0);
      for (std::int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
        const auto batch = loader.next();
        CHECK(batch.epoch == epoch);
        for (auto i : batch.items) seen[static_cast<std::size_t>(i)] += 1.0;
      }
      comm.all_reduce_sum_host(std::span<double>(seen));
      INFO("dataset size " << size << ", epoch " << epoch);
      for (double c : seen) CHECK(c == 1.0);
    }
  }
}

TEST_CASE("DataParallel over SerialCommunicator is the plain trainer, bit for bit, with or "
          "without synchronized BN",
          "[serial][data_parallel]") {
  Net plain({5, 3});
  train_single(plain, 2, kSteps);
  for (bool sync : {false, true}) {
    nddr::distributed::SerialCommunicator<> comm;
    Net net({5, 3});
    DataParallel dp(comm, net, DataParallelOptions{}.sync_bn(sync));
    nddr::Context<nddr::Cpu> ctx(1);
    dp.synchronize(ctx);
    Train t(net, kSchedule, dp.trainer_options(quiet()));
    dp.attach(t);
    train_parallel(comm, t, kSteps);
    INFO("sync_bn " << sync);
    CHECK(max_abs_diff(net.parameters().values(), plain.parameters().values()) == 0.0);
    CHECK(max_abs_diff(net.parameters().buffer_values(), plain.parameters().buffer_values()) == 0.0);
  }
}
