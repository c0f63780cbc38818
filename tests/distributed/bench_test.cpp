// Scaling benchmark (hidden, run by hand; numbers in docs/distributed.md):
//   OMP_NUM_THREADS=1 mpirun -np R --allow-run-as-root --oversubscribe
//       build/tests/distributed/nddr_distributed_tests "[.bench]"
// for R = 1, 2: a TinyNet NDDR training step (float, 4 images of 64 x 64 per rank), timed after
// warm-up; rank 0 prints the step time and the global throughput.
#include "support.hpp"

#include <chrono>
#include <cstdio>

TEST_CASE("DataParallel scaling benchmark", "[.bench]") {
  using BSpec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
  using BExp = nddr::Experiment<BSpec, nddr::Tasks<nddr::Segmentation<5>, nddr::SurfaceNormal>>;
  using BTrain = nddr::Trainer<BExp>;
  constexpr std::int64_t kBatch = 4, kSide = 64, kWarm = 3, kTimed = 20;
  nddr::distributed::MpiCommunicator comm;
  nddr::Network<BSpec> net({5, 3});
  nddr::distributed::DataParallel dp(comm, net);
  nddr::Context<nddr::Cpu> ctx(1);
  dp.synchronize(ctx);
  BTrain t(net, nddr::PolySchedule{0.01, 1000, 0.9}, dp.trainer_options(dist_test::quiet()));
  dp.attach(t);
  nddr::Rng rng(42 + static_cast<std::uint64_t>(comm.rank()));
  BTrain::Batch b;
  b.image = nddr::Tensor<float>(nddr::Shape::nchw(kBatch, 3, kSide, kSide));
  for (std::int64_t i = 0; i < b.image.numel(); ++i) b.image[i] = static_cast<float>(rng.uniform(-1, 1));
  std::get<0>(b.targets) = nddr::Tensor<std::int32_t>(nddr::Shape{kBatch, kSide, kSide});
  for (std::int64_t i = 0; i < std::get<0>(b.targets).numel(); ++i)
    std::get<0>(b.targets)[i] = static_cast<std::int32_t>(rng.below(5));
  auto& nor = std::get<1>(b.targets);
  nor = nddr::Tensor<float>(nddr::Shape::nchw(kBatch, 3, kSide, kSide));
  for (std::int64_t i = 0; i < nor.numel(); ++i) nor[i] = static_cast<float>(rng.uniform(0.1, 1));
  for (std::int64_t s = 0; s < kWarm; ++s) t.train_step(ctx, b);
  // The same steps with and without the gradient all-reduce: the difference is the cost of
  // communication, the rest of the slowdown over one rank is the ranks sharing the machine.
  const auto timed = [&] {
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    for (std::int64_t s = 0; s < kTimed; ++s) t.train_step(ctx, b);
    comm.barrier();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
           kTimed;
  };
  const double with_comm = timed();
  t.set_before_update({});
  const double without_comm = timed();
  // The gradient all-reduce alone, ranks already in step.
  comm.barrier();
  const auto start = std::chrono::steady_clock::now();
  for (std::int64_t s = 0; s < kTimed; ++s) dp.average_gradients(ctx);
  const double reduce_only =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / kTimed;
  if (comm.rank() == 0)
    std::printf("bench: ranks %d, per-rank batch %ld x %ld^2, %.1f ms/step (%.1f without the "
                "all-reduce; all-reduce alone %.2f ms), %.1f images/s, %ld parameters\n",
                comm.size(), static_cast<long>(kBatch), static_cast<long>(kSide),
                1000.0 * with_comm, 1000.0 * without_comm, 1000.0 * reduce_only,
                static_cast<double>(kBatch * comm.size()) / with_comm,
                static_cast<long>(net.parameters().parameter_count()));
  SUCCEED();
}
