// Synchronized batch norm: the _sync ops with the identity reduction are the local ops bit for
// bit ([serial]); on 2 ranks holding half a batch each they give the full batch's statistics,
// outputs and gradients ([mpi]).
#include "support.hpp"

#include <vector>

namespace {

using nddr::Shape;
using nddr::Tensor;

template <class T>
Tensor<T> random_tensor(const Shape& s, std::uint64_t seed, double lo, double hi) {
  nddr::Rng rng(seed);
  Tensor<T> t(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<T>(rng.uniform(lo, hi));
  return t;
}

/// Every output of a training forward + backward of one BN op on x (N, C, H, W).
template <class T>
struct BnRun {
  Tensor<T> y, save_mean, save_inv_std, rm, rv, dx, dgamma, dbeta;
};

template <class T>
BnRun<T> run_bn(nddr::Context<nddr::Cpu>& ctx, const Tensor<T>& x, const Tensor<T>& dy,
                const nddr::BatchNormAllReduce* reduce) {
  const std::int64_t C = x.shape().c();
  const auto opt = nddr::BatchNormOptions{}.momentum(0.3);
  auto gamma = random_tensor<T>(Shape{C}, 7, 0.5, 1.5);
  auto beta = random_tensor<T>(Shape{C}, 8, -0.5, 0.5);
  BnRun<T> r{Tensor<T>(x.shape()), Tensor<T>(Shape{C}), Tensor<T>(Shape{C}),
             random_tensor<T>(Shape{C}, 9, -1, 1), random_tensor<T>(Shape{C}, 10, 0.5, 2),
             Tensor<T>(x.shape()), Tensor<T>(Shape{C}), Tensor<T>(Shape{C})};
  if (reduce) {
    nddr::ops::batch_norm_forward_training_sync<T>(ctx, x.cview(), gamma.cview(), beta.cview(),
                                                   r.rm.view(), r.rv.view(), r.y.view(),
                                                   r.save_mean.view(), r.save_inv_std.view(), opt,
                                                   *reduce);
    nddr::ops::batch_norm_backward_training_sync<T>(
        ctx, x.cview(), dy.cview(), gamma.cview(), r.save_mean.cview(), r.save_inv_std.cview(),
        r.dx.view(), r.dgamma.view(), r.dbeta.view(), opt, *reduce);
  } else {
    nddr::ops::batch_norm_forward_training<T>(ctx, x.cview(), gamma.cview(), beta.cview(),
                                              r.rm.view(), r.rv.view(), r.y.view(),
                                              r.save_mean.view(), r.save_inv_std.view(), opt);
    nddr::ops::batch_norm_backward_training<T>(
        ctx, x.cview(), dy.cview(), gamma.cview(), r.save_mean.cview(), r.save_inv_std.cview(),
        r.dx.view(), r.dgamma.view(), r.dbeta.view(), opt);
  }
  return r;
}

template <class T>
void check_identity_reduction_is_local_op() {
  nddr::Context<nddr::Cpu> ctx(2);
  const Shape s = Shape::nchw(3, 4, 5, 6);
  auto x = random_tensor<T>(s, 1, -2, 3);
  auto dy = random_tensor<T>(s, 2, -1, 1);
  int calls = 0;
  const nddr::BatchNormAllReduce identity = [&](std::span<double>) { ++calls; };
  const auto a = run_bn(ctx, x, dy, nullptr);
  const auto b = run_bn(ctx, x, dy, &identity);
  CHECK(calls == 3);  // forward: sums + count, squared deviations; backward: grad sums + count
  CHECK(dist_test::max_abs_diff(a.y.cview(), b.y.cview()) == 0.0);
  CHECK(dist_test::max_abs_diff(a.save_mean.cview(), b.save_mean.cview()) == 0.0);
  CHECK(dist_test::max_abs_diff(a.save_inv_std.cview(), b.save_inv_std.cview()) == 0.0);
  CHECK(dist_test::max_abs_diff(a.rm.cview(), b.rm.cview()) == 0.0);
  CHECK(dist_test::max_abs_diff(a.rv.cview(), b.rv.cview()) == 0.0);
  CHECK(dist_test::max_abs_diff(a.dx.cview(), b.dx.cview()) == 0.0);
  CHECK(dist_test::max_abs_diff(a.dgamma.cview(), b.dgamma.cview()) == 0.0);
  CHECK(dist_test::max_abs_diff(a.dbeta.cview(), b.dbeta.cview()) == 0.0);
}

}  // namespace

TEST_CASE("batch_norm _sync ops with the identity reduction equal the local ops bit for bit",
          "[serial][batch_norm_sync]") {
  check_identity_reduction_is_local_op<float>();
  check_identity_reduction_is_local_op<double>();
}

TEST_CASE("batch_norm _sync ops: bad inputs", "[serial][batch_norm_sync]") {
  nddr::Context<nddr::Cpu> ctx(1);
  Tensor<double> x(Shape::nchw(1, 2, 1, 1)), y(x.shape()), c1(Shape{2}), c2(Shape{2}),
      c3(Shape{2}), c4(Shape{2});
  const nddr::BatchNormAllReduce empty;
  const auto opt = nddr::BatchNormOptions{}.affine(false);
  CHECK_THROWS_WITH(nddr::ops::batch_norm_forward_training_sync<double>(
                        ctx, x.cview(), {}, {}, c1.view(), c2.view(), y.view(), c3.view(),
                        c4.view(), opt, empty),
                    Catch::Contains("batch_norm_forward_training_sync: all_reduce is empty"));
  const nddr::BatchNormAllReduce identity = [](std::span<double>) {};
  // One value per channel in the global batch: the variance is undefined.
  CHECK_THROWS_WITH(nddr::ops::batch_norm_forward_training_sync<double>(
                        ctx, x.cview(), {}, {}, c1.view(), c2.view(), y.view(), c3.view(),
                        c4.view(), opt, identity),
                    Catch::Contains("global batch 1 values per channel"));
  Tensor<double> wrong(Shape{3});
  CHECK_THROWS_WITH(nddr::ops::batch_norm_forward_training_sync<double>(
                        ctx, x.cview(), {}, {}, wrong.view(), c2.view(), y.view(), c3.view(),
                        c4.view(), opt, identity),
                    Catch::Contains("running_mean"));
}

TEST_CASE("ScopedBatchNormSync: the layer synchronizes inside a scope only, scopes nest",
          "[serial][batch_norm_sync]") {
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::ParameterStore<double> store;
  nddr::BatchNorm2d<double> bn(3);
  bn.declare(store, "bn");
  store.allocate();
  nddr::Rng rng(1);
  bn.initialize(rng);
  auto x = random_tensor<double>(Shape::nchw(2, 3, 4, 4), 3, -1, 1);
  Tensor<double> y(x.shape()), y_plain(x.shape()), dx(x.shape()), dx_plain(x.shape());
  auto dy = random_tensor<double>(x.shape(), 4, -1, 1);
  bn.forward(ctx, x.cview(), y_plain.view());
  bn.backward(ctx, x.cview(), y_plain.cview(), dy.cview(), dx_plain.view());
  int outer = 0, inner = 0;
  {
    nddr::ScopedBatchNormSync a([&](std::span<double>) { ++outer; });
    {
      nddr::ScopedBatchNormSync b([&](std::span<double>) { ++inner; });
      bn.forward(ctx, x.cview(), y.view());
    }
    // The backward uses the reduction its forward used, even after that scope ended.
    bn.backward(ctx, x.cview(), y.cview(), dy.cview(), dx.view());
    CHECK(inner == 3);
    CHECK(outer == 0);
    bn.set_training(false);
    bn.forward(ctx, x.cview(), y.view());  // inference: running statistics, no reduction
    CHECK(outer == 0);
    bn.set_training(true);
    bn.forward(ctx, x.cview(), y.view());
    CHECK(outer == 2);
  }
  CHECK(dist_test::max_abs_diff(dx.cview(), dx_plain.cview()) == 0.0);
  bn.forward(ctx, x.cview(), y.view());  // no scope left: local statistics
  CHECK(outer == 2);
  CHECK(inner == 3);
}

TEST_CASE("synchronized batch norm on 2 ranks equals the op on the whole batch",
          "[mpi][batch_norm_sync]") {
  nddr::distributed::MpiCommunicator comm;
  REQUIRE(comm.size() == 2);
  nddr::Context<nddr::Cpu> ctx(1);
  // Unequal halves (3 and 2 items): the global count, not the rank count, weighs the statistics.
  const Shape s = Shape::nchw(5, 4, 3, 5);
  auto x = random_tensor<double>(s, 11, -2, 5);
  auto dy = random_tensor<double>(s, 12, -1, 1);
  const auto full = run_bn(ctx, x, dy, nullptr);
  const std::int64_t begin = comm.rank() == 0 ? 0 : 3, count = comm.rank() == 0 ? 3 : 2;
  const auto xs = dist_test::copy_items(x, begin, count);
  const auto dys = dist_test::copy_items(dy, begin, count);
  const nddr::BatchNormAllReduce sum = [&](std::span<double> v) { comm.all_reduce_sum_host(v); };
  const auto mine = run_bn(ctx, xs, dys, &sum);
  const double tol = 1e-13;
  CHECK(dist_test::max_rel_diff(mine.save_mean.cview(), full.save_mean.cview()) < tol);
  CHECK(dist_test::max_rel_diff(mine.save_inv_std.cview(), full.save_inv_std.cview()) < tol);
  CHECK(dist_test::max_rel_diff(mine.rm.cview(), full.rm.cview()) < tol);
  CHECK(dist_test::max_rel_diff(mine.rv.cview(), full.rv.cview()) < tol);
  CHECK(dist_test::max_rel_diff(mine.y.cview(), full.y.cview().batch_slice(begin, begin + count)) < tol);
  CHECK(dist_test::max_rel_diff(mine.dx.cview(), full.dx.cview().batch_slice(begin, begin + count)) < tol);
  // dgamma, dbeta are per-rank sums: over the ranks they add up to the whole batch's.
  std::vector<double> dg(mine.dgamma.data(), mine.dgamma.data() + 4);
  dg.insert(dg.end(), mine.dbeta.data(), mine.dbeta.data() + 4);
  comm.all_reduce_sum_host(std::span<double>(dg));
  for (int c = 0; c < 4; ++c) {
    CHECK(dg[c] == Approx(full.dgamma[c]).epsilon(1e-12));
    CHECK(dg[4 + c] == Approx(full.dbeta[c]).epsilon(1e-12).margin(1e-13));
  }
}
