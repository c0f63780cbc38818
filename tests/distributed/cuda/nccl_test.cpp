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

TEST_CASE("NcclCommunicator: sum, average, broadcast of device tensors; host sum over MPI",
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

  CHECK_THROWS_WITH(nddr::distributed::DataParallel(
                        comm, net, nddr::distributed::DataParallelOptions{}.sync_bn(true)),
                    Catch::Contains("sync_batch_norm runs on the CPU only"));
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

TEST_CASE("CUDA BatchNorm2d refuses synchronized batch norm", "[nccl]") {
  MpiCommunicator mpi;
  if (too_few_devices(mpi)) return;
  nddr::Context<Cuda> ctx(mpi.local_rank());
  nddr::ParameterStore<float, Cuda> store;
  nddr::BatchNorm2d<float, Cuda> bn(2);
  bn.declare(store, "bn");
  store.allocate();
  nddr::Tensor<float, Cuda> x(nddr::Shape::nchw(2, 2, 3, 3)), y(x.shape()), dx(x.shape());
  {
    nddr::ScopedBatchNormSync sync([](std::span<double>) {});
    CHECK_THROWS_WITH(bn.forward(ctx, x.cview(), y.view()),
                      Catch::Contains("synchronized batch norm") && Catch::Contains("CPU only"));
  }
  // Outside a scope the layer trains as before.
  bn.forward(ctx, x.cview(), y.view());
  bn.backward(ctx, x.cview(), y.cview(), y.cview(), dx.view());
  ctx.synchronize();
}
