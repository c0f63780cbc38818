// NcclCommunicator and DataParallel on CUDA networks (label cuda): compiled wherever NCCL is
// found, run on a GPU machine; self-skips when this node has fewer devices than ranks.
#include <catch2/catch.hpp>

#include <nddr/cuda.hpp>
#include <nddr/distributed.hpp>
#include <nddr/nddr.hpp>

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace {

using nddr::Cuda;
using nddr::distributed::MpiCommunicator;
using nddr::distributed::NcclCommunicator;

bool too_few_devices(const MpiCommunicator& mpi) {
  if (nddr::cuda_device_count() >= mpi.local_size()) return false;
  WARN("NCCL needs one CUDA device per rank: " << nddr::cuda_device_count() << " for "
                                               << mpi.local_size() << " ranks here; skipped");
  return true;
}

template <class T>
std::vector<T> download(nddr::TensorView<const T, Cuda> v) {
  std::vector<T> h(static_cast<std::size_t>(v.numel()));
  nddr::Storage<Cuda>::download(h.data(), v.data(), h.size() * sizeof(T));
  return h;
}
template <class T>
void upload(nddr::TensorView<T, Cuda> v, const std::vector<T>& h) {
  REQUIRE(h.size() == static_cast<std::size_t>(v.numel()));
  nddr::Storage<Cuda>::upload(v.data(), h.data(), h.size() * sizeof(T));
}

}  // namespace

TEST_CASE("NcclCommunicator: sum, average, broadcast of device tensors, host sum over MPI",
          "[nccl]") {
  MpiCommunicator mpi;
  if (too_few_devices(mpi)) return;
  nddr::Context<Cuda> ctx(mpi.local_rank());
  NcclCommunicator comm(mpi, ctx);
  const int r = comm.rank(), n = comm.size();
  CHECK(r == mpi.rank());
  CHECK(n == mpi.size());

  nddr::Tensor<float, Cuda> f(nddr::Shape{1000});
  nddr::Tensor<double, Cuda> d(nddr::Shape{3, 5});
  std::vector<float> hf(1000);
  std::vector<double> hd(15);
  for (int i = 0; i < 1000; ++i) hf[i] = static_cast<float>(r + i % 7);
  for (int i = 0; i < 15; ++i) hd[i] = (r + 1) * 0.5 * i;
  upload(f.view(), hf);
  upload(d.view(), hd);
  comm.all_reduce_sum(ctx, f.view());
  comm.all_reduce_average(ctx, d.view());
  const double rank_sum = n * (n - 1) / 2.0;
  const auto gf = download(f.cview());
  const auto gd = download(d.cview());
  for (int i = 0; i < 1000; ++i) CHECK(gf[i] == static_cast<float>(rank_sum + n * (i % 7)));
  for (int i = 0; i < 15; ++i) CHECK(gd[i] == Approx((rank_sum + n) / n * 0.5 * i));

  for (int i = 0; i < 15; ++i) hd[i] = 10.0 * r + i;
  upload(d.view(), hd);
  comm.broadcast(ctx, d.view(), n - 1);
  const auto gb = download(d.cview());
  for (int i = 0; i < 15; ++i) CHECK(gb[i] == 10.0 * (n - 1) + i);

  std::vector<double> host{1.0, static_cast<double>(r)};
  comm.all_reduce_sum_host(std::span<double>(host));
  CHECK(host[0] == n);
  CHECK(host[1] == rank_sum);
  comm.barrier();
  CHECK_THROWS_WITH(comm.broadcast(ctx, d.view(), n), Catch::Contains("is not a rank of"));
}

TEST_CASE("DataParallel over NCCL: rank 0's parameters everywhere, averaged gradients",
          "[nccl]") {
  using Spec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
  MpiCommunicator mpi;
  if (too_few_devices(mpi)) return;
  nddr::Context<Cuda> ctx(mpi.local_rank());
  NcclCommunicator comm(mpi, ctx);
  nddr::NetworkOptions<Spec> opt;
  opt.seed = 1234 + static_cast<std::uint64_t>(comm.rank());
  nddr::Network<Spec, Cuda, float> net({5, 3}, opt);
  nddr::Network<Spec> rank0_host({5, 3});  // seed 1234: rank 0's initialisation
  nddr::distributed::DataParallel dp(comm, net,
                                     nddr::distributed::DataParallelOptions{}.bucket_mb(0.01));
  dp.synchronize(ctx);
  const auto values = download(nddr::TensorView<const float, Cuda>(net.parameters().values()));
  std::int64_t differ = 0;
  for (std::size_t i = 0; i < values.size(); ++i)
    differ += values[i] != rank0_host.parameters().values()[static_cast<std::int64_t>(i)];
  CHECK(differ == 0);

  auto g = net.parameters().grads();
  std::vector<float> hg(static_cast<std::size_t>(g.numel()));
  for (std::size_t i = 0; i < hg.size(); ++i) hg[i] = static_cast<float>((comm.rank() + 1) * (i % 5));
  upload(g, hg);
  dp.average_gradients(ctx);
  const auto avg = download(nddr::TensorView<const float, Cuda>(g));
  const float mean_factor = static_cast<float>(comm.size() + 1) / 2.0f;
  std::int64_t wrong = 0;
  for (std::size_t i = 0; i < avg.size(); ++i)
    wrong += std::abs(avg[i] - mean_factor * static_cast<float>(i % 5)) > 1e-5f;
  CHECK(wrong == 0);

  // Synchronized BN runs on the GPU too (its sums go through the host all-reduce).
  CHECK_NOTHROW(nddr::distributed::DataParallel(
      comm, net, nddr::distributed::DataParallelOptions{}.sync_bn(true)));
}

TEST_CASE("AutoDataParallel with a CUDA network: NCCL under a launcher, serial alone", "[nccl]") {
  using Spec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
  MpiCommunicator mpi;
  if (too_few_devices(mpi)) return;
  nddr::Context<Cuda> ctx(mpi.local_rank());
  nddr::Network<Spec, Cuda, float> net({5, 3});
  nddr::distributed::AutoDataParallel dp(net, ctx);
  const int launched = nddr::distributed::launcher_world_size();
  CHECK(dp.size() == (launched > 1 ? launched : 1));
  CHECK(dp.rank() == (launched > 1 ? mpi.rank() : 0));
  CHECK(dp.shard(nddr::data::LoaderOptions{}).shard_world == dp.size());
  CHECK(dp.trainer_options(nddr::TrainerOptions{}).write_outputs == dp.is_root());
}

TEST_CASE("CUDA BatchNorm2d synchronized over the ranks normalises with the global batch",
          "[nccl]") {
  MpiCommunicator mpi;
  if (too_few_devices(mpi)) return;
  nddr::Context<Cuda> ctx(mpi.local_rank());
  const int r = mpi.rank(), n = mpi.size();
  // Rank k holds images k*2, k*2 + 1 of a batch of 2n; every rank can build all of them.
  const std::int64_t C = 3, H = 5, W = 4, plane = H * W;
  const auto value = [&](std::int64_t img, std::int64_t i) {
    return static_cast<float>(std::sin(0.37 * static_cast<double>(img * C * plane + i)) * 2.0 +
                              0.1 * static_cast<double>(img));
  };
  std::vector<float> whole(static_cast<std::size_t>(2 * n * C * plane)), mine;
  for (std::int64_t img = 0; img < 2 * n; ++img)
    for (std::int64_t i = 0; i < C * plane; ++i)
      whole[static_cast<std::size_t>(img * C * plane + i)] = value(img, i);
  mine.assign(whole.begin() + 2 * r * C * plane, whole.begin() + (2 * r + 2) * C * plane);
  const auto run = [&](const std::vector<float>& x_host, std::int64_t images, bool sync) {
    nddr::ParameterStore<float, Cuda> store;
    nddr::BatchNorm2d<float, Cuda> bn(C);
    bn.declare(store, "bn");
    store.allocate();
    upload(store.values(), std::vector<float>(static_cast<std::size_t>(store.values().numel()), 1.0f));
    nddr::Tensor<float, Cuda> x(nddr::Shape::nchw(images, C, H, W)), y(x.shape());
    upload(x.view(), x_host);
    if (sync) {
      nddr::ScopedBatchNormSync scope([&](std::span<double> v) { mpi.all_reduce_sum_host(v); });
      bn.forward(ctx, x.cview(), y.view());
    } else {
      bn.forward(ctx, x.cview(), y.view());
    }
    return download(nddr::TensorView<const float, Cuda>(y.view()));
  };
  const auto global = run(whole, 2 * n, false);
  const auto synced = run(mine, 2, true);
  std::int64_t wrong = 0;
  for (std::size_t i = 0; i < synced.size(); ++i)
    wrong += std::abs(synced[i] - global[static_cast<std::size_t>(2 * r * C * plane) + i]) > 1e-4f;
  CHECK(wrong == 0);
}
