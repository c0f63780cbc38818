// BatchNorm2d op and layer: laws (training and inference), op gradient checks, PyTorch
// reference values (tools/reference/batch_norm.py), float path, errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nddr/io/safetensors.hpp>
#include <nddr/layers/batch_norm.hpp>
#include <nddr/layers/conv2d.hpp>
#include <nddr/layers/relu.hpp>
#include <nddr/layers/sequential.hpp>
#include <nddr/testing/gradient_check.hpp>
#include <nddr/testing/layer_laws.hpp>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

using nddr::BatchNormOptions;
using nddr::Shape;
using nddr::Tensor;
using TensorD = nddr::Tensor<double>;

// Counts elements outside |got - want| <= 1e-9 * (1 + |want|) and reports the first.
void check_close(const std::string& what, const double* got, const std::vector<double>& want,
                 double rtol = 1e-9) {
  std::int64_t bad = 0;
  std::ostringstream first;
  first.precision(17);
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::abs(got[i] - want[i]) <= rtol * (1.0 + std::abs(want[i]))) continue;
    if (bad++ == 0) first << "[" << i << "] got " << got[i] << " want " << want[i];
  }
  INFO(what << ": " << bad << " mismatches, first " << first.str());
  CHECK(bad == 0);
}

TensorD random_tensor(nddr::Rng& rng, Shape s, double lo, double hi) {
  TensorD t(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = rng.uniform(lo, hi);
  return t;
}

// BatchNorm2d whose initialize() also randomizes the running statistics, which the laws kit
// leaves alone (it randomizes trainable parameters only).
struct BatchNormWithRandomStats {
  using value_type = double;
  using device_type = nddr::Cpu;
  nddr::BatchNorm2d<double> bn;

  Shape output_shape(const Shape& in) const { return bn.output_shape(in); }
  void declare(nddr::ParameterStore<double>& s, const std::string& p) { bn.declare(s, p); }
  void initialize(nddr::Rng& rng) {
    bn.initialize(rng);
    auto m = bn.running_mean();
    auto v = bn.running_var();
    for (std::int64_t c = 0; c < m.numel(); ++c) {
      m[c] = rng.uniform(-0.5, 0.5);
      v[c] = rng.uniform(0.3, 2.0);
    }
  }
  void set_training(bool on) { bn.set_training(on); }
  bool training() const { return bn.training(); }
  void forward(nddr::Context<nddr::Cpu>& ctx, nddr::TensorView<const double> x,
               nddr::TensorView<double> y) {
    bn.forward(ctx, x, y);
  }
  void backward(nddr::Context<nddr::Cpu>& ctx, nddr::TensorView<const double> x,
                nddr::TensorView<const double> y, nddr::TensorView<const double> dy,
                nddr::TensorView<double> dx) {
    bn.backward(ctx, x, y, dy, dx);
  }
};

}  // namespace

TEST_CASE("BatchNorm2d: laws in training mode", "[ops][batch_norm]") {
  SECTION("defaults") {
    nddr::BatchNorm2d<double> bn(3);
    auto r = nddr::testing::check_layer_laws(bn, Shape::nchw(2, 3, 4, 5));
    INFO(r.report);
    CHECK(r.ok);
  }
  SECTION("tf_slim preset, N = 1") {
    nddr::BatchNorm2d<double> bn(4, BatchNormOptions::tf_slim());
    auto r = nddr::testing::check_layer_laws(bn, Shape::nchw(1, 4, 3, 3));
    INFO(r.report);
    CHECK(r.ok);
  }
  SECTION("affine off") {
    nddr::BatchNorm2d<double> bn(2, BatchNormOptions{}.affine(false));
    auto r = nddr::testing::check_layer_laws(bn, Shape::nchw(3, 2, 2, 3));
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("BatchNorm2d: laws in inference mode with random running statistics",
          "[ops][batch_norm]") {
  BatchNormWithRandomStats layer{nddr::BatchNorm2d<double>(3)};
  layer.set_training(false);
  auto r = nddr::testing::check_layer_laws(layer, Shape::nchw(2, 3, 3, 4));
  INFO(r.report);
  CHECK(r.ok);
  // The kit's store is gone; a forward on a fresh store shows the statistics do matter.
  BatchNormWithRandomStats probe{nddr::BatchNorm2d<double>(3)};
  nddr::ParameterStore<double> store;
  probe.declare(store, "bn");
  store.allocate();
  nddr::Rng rng(1);
  probe.initialize(rng);
  probe.set_training(false);
  nddr::Context<nddr::Cpu> ctx(1);
  TensorD x(Shape::nchw(1, 3, 1, 1), 0.0), y(x.shape());
  probe.forward(ctx, x.cview(), y.view());
  const double want = -probe.bn.running_mean()[0] / std::sqrt(probe.bn.running_var()[0] + 1e-5);
  CHECK(y[0] == Approx(want).epsilon(1e-12));
}

// Finite differences of the BN ops for x, gamma and beta through loss = sum(y * r), in both
// modes; with `relu`, of the fused BatchNorm + ReLU (backward reads forward's y).
static void check_op_gradients(bool relu, std::uint64_t seed, Shape s, double beta_range) {
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Rng rng(seed);
  TensorD x = random_tensor(rng, s, -1.0, 2.0), r = random_tensor(rng, s, -1.0, 1.0);
  TensorD gamma = random_tensor(rng, Shape{3}, 0.5, 1.5),
          beta = random_tensor(rng, Shape{3}, -beta_range, beta_range);
  TensorD rm = random_tensor(rng, Shape{3}, -0.5, 0.5), rv = random_tensor(rng, Shape{3}, 0.5, 2.0);
  TensorD y(s), mean(Shape{3}), inv_std(Shape{3});
  const auto plain = BatchNormOptions::tf_slim();
  const auto opt = BatchNormOptions::tf_slim().relu(relu);

  for (bool training : {true, false}) {
    INFO("training = " << training << ", relu = " << relu);
    auto forward = [&](const BatchNormOptions& o) {
      if (training)
        nddr::ops::batch_norm_forward_training(ctx, x, gamma, beta, rm.view(), rv.view(), y.view(),
                                               mean.view(), inv_std.view(), o);
      else
        nddr::ops::batch_norm_forward_inference(ctx, x, gamma, beta, rm, rv, y.view(), o);
    };
    if (relu) {
      // Finite differences across the ReLU's kink are meaningless: the data keep every
      // pre-activation away from 0, and some on each side.
      forward(plain);
      std::int64_t near_zero = 0, positive = 0;
      for (std::int64_t i = 0; i < y.numel(); ++i) {
        near_zero += std::abs(y[i]) < 1e-3;
        positive += y[i] > 0.0;
      }
      REQUIRE(near_zero == 0);
      REQUIRE(positive > 0);
      REQUIRE(positive < y.numel());
    }
    auto loss = [&] {
      forward(opt);
      double l = 0.0;
      for (std::int64_t i = 0; i < y.numel(); ++i) l += y[i] * r[i];
      return l;
    };
    forward(opt);
    TensorD dx(s, 0.5), dgamma(Shape{3}, 7.0), dbeta(Shape{3}, 7.0);
    if (training)
      nddr::ops::batch_norm_backward_training(ctx, x, r, gamma, mean, inv_std, dx.view(),
                                              dgamma.view(), dbeta.view(), opt, y);
    else
      nddr::ops::batch_norm_backward_inference(ctx, x, r, gamma, rm, rv, dx.view(), dgamma.view(),
                                               dbeta.view(), opt, y);
    for (std::int64_t i = 0; i < dx.numel(); ++i) dx[i] -= 0.5;  // accumulated onto 0.5
    auto gx = nddr::testing::check_gradient("dx", x.data(), x.numel(), dx.data(), loss);
    auto gg = nddr::testing::check_gradient("dgamma", gamma.data(), 3, dgamma.data(), loss);
    auto gb = nddr::testing::check_gradient("dbeta", beta.data(), 3, dbeta.data(), loss);
    INFO(gx.report << gg.report << gb.report);
    CHECK(gx.ok);
    CHECK(gg.ok);
    CHECK(gb.ok);
  }
}

TEST_CASE("batch_norm ops: finite-difference gradients for x, gamma, beta", "[ops][batch_norm]") {
  check_op_gradients(false, 5, Shape::nchw(1, 3, 2, 3), 1.0);
}

TEST_CASE("batch_norm ops with the fused ReLU: finite-difference gradients", "[ops][batch_norm]") {
  check_op_gradients(true, 15, Shape::nchw(2, 3, 2, 3), 0.3);
}

// The fused op against its definition: BatchNorm, then ReLU (forward and backward through the
// separate ops). Both run the same arithmetic in the same order, so they agree bit for bit.
TEST_CASE("batch_norm ops: the fused ReLU equals BatchNorm followed by ReLU, bit for bit",
          "[ops][batch_norm]") {
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Rng rng(16);
  const Shape s = Shape::nchw(3, 4, 5, 7), cs{4};
  const TensorD x = random_tensor(rng, s, -2.0, 3.0), dy = random_tensor(rng, s, -1.0, 1.0);
  const TensorD gamma = random_tensor(rng, cs, 0.5, 1.5), beta = random_tensor(rng, cs, -1.0, 1.0);
  const TensorD dx0 = random_tensor(rng, s, -1.0, 1.0);
  const auto plain = BatchNormOptions::tf_slim();
  const auto fused = BatchNormOptions::tf_slim().relu(true);
  const auto identity = nddr::BatchNormAllReduce([](std::span<double>) {});
  enum class Mode { kTraining, kInference, kSync };
  for (Mode mode : {Mode::kTraining, Mode::kInference, Mode::kSync}) {
    INFO("mode " << static_cast<int>(mode));
    TensorD rm1(cs, 0.1), rv1(cs, 1.3), rm2(cs, 0.1), rv2(cs, 1.3);
    TensorD m1(cs), i1(cs), m2(cs), i2(cs);
    TensorD z(s), y1(s), y2(s);
    // Separate: z = BN(x), y1 = ReLU(z); dz = ReLU'(y1) dy (into zeros), dx1 += BN'(dz).
    // Fused: y2 = ReLU(BN(x)); dx2 += BN'(mask(y2) dy).
    auto run_forward = [&](const BatchNormOptions& o, TensorD& rm, TensorD& rv, TensorD& m,
                           TensorD& is, TensorD& out) {
      if (mode == Mode::kTraining)
        nddr::ops::batch_norm_forward_training(ctx, x, gamma, beta, rm.view(), rv.view(),
                                               out.view(), m.view(), is.view(), o);
      else if (mode == Mode::kSync)
        nddr::ops::batch_norm_forward_training_sync(ctx, x, gamma, beta, rm.view(), rv.view(),
                                                    out.view(), m.view(), is.view(), o, identity);
      else
        nddr::ops::batch_norm_forward_inference(ctx, x, gamma, beta, rm, rv, out.view(), o);
    };
    auto run_backward = [&](const BatchNormOptions& o, const TensorD& rm, const TensorD& rv,
                            const TensorD& m, const TensorD& is, const TensorD& g, TensorD& dx,
                            TensorD& dg, TensorD& db, nddr::TensorView<const double> out) {
      if (mode == Mode::kTraining)
        nddr::ops::batch_norm_backward_training(ctx, x, g, gamma, m, is, dx.view(), dg.view(),
                                                db.view(), o, out);
      else if (mode == Mode::kSync)
        nddr::ops::batch_norm_backward_training_sync(ctx, x, g, gamma, m, is, dx.view(), dg.view(),
                                                     db.view(), o, identity, out);
      else
        nddr::ops::batch_norm_backward_inference(ctx, x, g, gamma, rm, rv, dx.view(), dg.view(),
                                                 db.view(), o, out);
    };
    run_forward(plain, rm1, rv1, m1, i1, z);
    nddr::ops::relu_forward<double>(ctx, z, y1.view());
    run_forward(fused, rm2, rv2, m2, i2, y2);
    TensorD dz(s, 0.0), dx1 = dx0, dx2 = dx0, dg1(cs), db1(cs), dg2(cs), db2(cs);
    nddr::ops::relu_backward<double>(ctx, y1, dy, dz.view());
    run_backward(plain, rm1, rv1, m1, i1, dz, dx1, dg1, db1, {});
    run_backward(fused, rm2, rv2, m2, i2, dy, dx2, dg2, db2, y2.cview());
    std::int64_t differ = 0;
    for (std::int64_t i = 0; i < s.numel(); ++i) differ += !(y1[i] == y2[i]) + !(dx1[i] == dx2[i]);
    for (std::int64_t c = 0; c < 4; ++c)
      differ += !(dg1[c] == dg2[c]) + !(db1[c] == db2[c]) + !(rm1[c] == rm2[c]) + !(rv1[c] == rv2[c]);
    CHECK(differ == 0);
    std::int64_t zeros = 0;
    for (std::int64_t i = 0; i < s.numel(); ++i) zeros += y2[i] == 0.0;
    CHECK(zeros > 0);  // the ReLU did cut something
  }
  // The fused backward needs forward's output for the mask: a clear error without it.
  TensorD m(cs), is(cs, 1.0), dx(s), dg(cs), db(cs);
  CHECK_THROWS_WITH(nddr::ops::batch_norm_backward_training(ctx, x, dy, gamma, m, is, dx.view(),
                                                            dg.view(), db.view(), fused),
                    Catch::Contains("nddr::ops::batch_norm_backward_training") &&
                        Catch::Contains("y (forward's output; BatchNormOptions.relu"));
}

TEST_CASE("BatchNorm2d with the fused ReLU: layer laws, same as BatchNorm2d + ReLU", "[ops][batch_norm]") {
  nddr::BatchNorm2d<double> bn(3, BatchNormOptions::tf_slim().relu(true));
  CHECK(bn.reads_output_in_backward());
  CHECK_FALSE(nddr::BatchNorm2d<double>(3).reads_output_in_backward());
  auto r = nddr::testing::check_layer_laws(bn, Shape::nchw(2, 3, 4, 5));
  INFO(r.report);
  CHECK(r.ok);
  // In a Sequential: conv + BN(relu) equals conv + BN + ReLU, forward and backward.
  nddr::Context<nddr::Cpu> ctx(2);
  auto build = [](bool fused) {
    nddr::Sequential<double> seq;
    seq.add("conv", nddr::Conv2d<double>(2, 3, 3, nddr::Conv2dOptions{}.padding(1).bias(false)));
    seq.add("bn", nddr::BatchNorm2d<double>(3, BatchNormOptions::tf_slim().relu(fused)));
    if (!fused) seq.add("relu", nddr::ReLU<double>());
    seq.add("conv2", nddr::Conv2d<double>(3, 2, 1, nddr::Conv2dOptions{}.bias(false)));
    return seq;
  };
  auto a = build(true), b = build(false);
  nddr::ParameterStore<double> sa, sb;
  a.declare(sa, "net");
  b.declare(sb, "net");
  sa.allocate();
  sb.allocate();
  nddr::Rng ra(3), rb(3);
  a.initialize(ra);
  b.initialize(rb);
  nddr::Rng rng(4);
  const Shape xs = Shape::nchw(2, 2, 6, 5);
  const TensorD x = random_tensor(rng, xs, -1.0, 1.0);
  const Shape ys = a.output_shape(xs);
  const TensorD dy = random_tensor(rng, ys, -1.0, 1.0);
  TensorD ya(ys), yb(ys), dxa(xs), dxb(xs);
  a.forward(ctx, x, ya.view());
  b.forward(ctx, x, yb.view());
  a.backward(ctx, x, ya, dy, dxa.view());
  b.backward(ctx, x, yb, dy, dxb.view());
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < ya.numel(); ++i) differ += !(ya[i] == yb[i]);
  for (std::int64_t i = 0; i < dxa.numel(); ++i) differ += !(dxa[i] == dxb[i]);
  const auto ga = std::as_const(sa).grads(), gb = std::as_const(sb).grads();
  REQUIRE(ga.numel() == gb.numel());
  for (std::int64_t i = 0; i < ga.numel(); ++i) differ += !(ga[i] == gb[i]);
  CHECK(differ == 0);
}

TEST_CASE("batch_norm ops: PyTorch reference values", "[ops][batch_norm]") {
  const auto f = nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/batch_norm.safetensors");
  nddr::Context<nddr::Cpu> ctx(2);
  for (int i = 0; i < 3; ++i) {
    const std::string p = "case" + std::to_string(i) + ".";
    const TensorD x = f.tensor<double>(p + "x"), dy = f.tensor<double>(p + "dy");
    const TensorD gamma = f.tensor<double>(p + "gamma"), beta = f.tensor<double>(p + "beta");
    const TensorD rm0 = f.tensor<double>(p + "running_mean0");
    const TensorD rv0 = f.tensor<double>(p + "running_var0");
    const Shape cs = gamma.shape();
    INFO("case " << i << " x " << x.shape().str());

    struct Mode {
      const char* name;
      BatchNormOptions opt;
    };
    for (const Mode& m :
         {Mode{"train.", BatchNormOptions{}}, Mode{"tfslim.", BatchNormOptions::tf_slim()},
          Mode{"noaffine.", BatchNormOptions{}.affine(false)}}) {
      const std::string q = p + m.name;
      INFO(q);
      TensorD rm = rm0, rv = rv0, y(x.shape()), mean(cs), inv_std(cs);
      TensorD dx(x.shape()), dgamma(cs), dbeta(cs);
      nddr::ops::batch_norm_forward_training(ctx, x, gamma, beta, rm.view(), rv.view(), y.view(),
                                             mean.view(), inv_std.view(), m.opt);
      nddr::ops::batch_norm_backward_training(ctx, x, dy, gamma, mean, inv_std, dx.view(),
                                              dgamma.view(), dbeta.view(), m.opt);
      check_close(q + "y", y.data(), f.values<double>(q + "y"));
      check_close(q + "dx", dx.data(), f.values<double>(q + "dx"));
      check_close(q + "running_mean", rm.data(), f.values<double>(q + "running_mean"));
      check_close(q + "running_var", rv.data(), f.values<double>(q + "running_var"));
      if (m.opt.affine()) {
        check_close(q + "dgamma", dgamma.data(), f.values<double>(q + "dgamma"));
        check_close(q + "dbeta", dbeta.data(), f.values<double>(q + "dbeta"));
      }
    }

    const std::string q = p + "eval.";
    TensorD y(x.shape()), dx(x.shape()), dgamma(cs), dbeta(cs);
    nddr::ops::batch_norm_forward_inference(ctx, x, gamma, beta, rm0, rv0, y.view(), {});
    nddr::ops::batch_norm_backward_inference(ctx, x, dy, gamma, rm0, rv0, dx.view(), dgamma.view(),
                                             dbeta.view(), {});
    check_close(q + "y", y.data(), f.values<double>(q + "y"));
    check_close(q + "dx", dx.data(), f.values<double>(q + "dx"));
    check_close(q + "dgamma", dgamma.data(), f.values<double>(q + "dgamma"));
    check_close(q + "dbeta", dbeta.data(), f.values<double>(q + "dbeta"));

    // The fused ReLU against PyTorch's F.relu(F.batch_norm(...)), training and inference.
    const auto fused = BatchNormOptions::tf_slim().relu(true);
    {
      const std::string r = p + "relu.";
      TensorD rm = rm0, rv = rv0, yr(x.shape()), mean(cs), inv_std(cs);
      TensorD dxr(x.shape()), dgr(cs), dbr(cs);
      nddr::ops::batch_norm_forward_training(ctx, x, gamma, beta, rm.view(), rv.view(),
                                             yr.view(), mean.view(), inv_std.view(), fused);
      nddr::ops::batch_norm_backward_training(ctx, x, dy, gamma, mean, inv_std, dxr.view(),
                                              dgr.view(), dbr.view(), fused, yr);
      check_close(r + "y", yr.data(), f.values<double>(r + "y"));
      check_close(r + "dx", dxr.data(), f.values<double>(r + "dx"));
      check_close(r + "dgamma", dgr.data(), f.values<double>(r + "dgamma"));
      check_close(r + "dbeta", dbr.data(), f.values<double>(r + "dbeta"));
      check_close(r + "running_mean", rm.data(), f.values<double>(r + "running_mean"));
      check_close(r + "running_var", rv.data(), f.values<double>(r + "running_var"));
    }
    {
      const std::string r = p + "relu_eval.";
      TensorD yr(x.shape()), dxr(x.shape()), dgr(cs), dbr(cs);
      nddr::ops::batch_norm_forward_inference(ctx, x, gamma, beta, rm0, rv0, yr.view(), fused);
      nddr::ops::batch_norm_backward_inference(ctx, x, dy, gamma, rm0, rv0, dxr.view(), dgr.view(),
                                               dbr.view(), fused, yr);
      check_close(r + "y", yr.data(), f.values<double>(r + "y"));
      check_close(r + "dx", dxr.data(), f.values<double>(r + "dx"));
      check_close(r + "dgamma", dgr.data(), f.values<double>(r + "dgamma"));
      check_close(r + "dbeta", dbr.data(), f.values<double>(r + "dbeta"));
    }
  }
}

TEST_CASE("BatchNorm2d layer: PyTorch reference through parameters and buffers",
          "[ops][batch_norm]") {
  const auto f = nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/batch_norm.safetensors");
  nddr::Context<nddr::Cpu> ctx(2);
  const TensorD x = f.tensor<double>("case1.x"), dy = f.tensor<double>("case1.dy");
  nddr::BatchNorm2d<double> bn(4, BatchNormOptions::tf_slim());
  nddr::ParameterStore<double> store;
  bn.declare(store, "nddr_1.bn");
  store.allocate();
  nddr::Rng rng(0);
  bn.initialize(rng);
  REQUIRE(store.find("nddr_1.bn.weight"));
  REQUIRE(store.find("nddr_1.bn.bias"));
  REQUIRE(store.find_buffer("nddr_1.bn.running_mean"));
  REQUIRE(store.find_buffer("nddr_1.bn.running_var"));
  CHECK(store.value(*store.find("nddr_1.bn.weight"))[3] == 1.0);
  CHECK(store.value(*store.find("nddr_1.bn.bias"))[3] == 0.0);
  CHECK(bn.running_mean()[2] == 0.0);
  CHECK(bn.running_var()[2] == 1.0);

  auto load = [&](nddr::TensorView<double> dst, const std::string& key) {
    const auto v = f.values<double>(key);
    REQUIRE(static_cast<std::int64_t>(v.size()) == dst.numel());
    for (std::int64_t i = 0; i < dst.numel(); ++i) dst[i] = v[static_cast<std::size_t>(i)];
  };
  load(store.value(*store.find("nddr_1.bn.weight")), "case1.gamma");
  load(store.value(*store.find("nddr_1.bn.bias")), "case1.beta");
  load(bn.running_mean(), "case1.running_mean0");
  load(bn.running_var(), "case1.running_var0");

  TensorD y(x.shape()), dx(x.shape());
  bn.forward(ctx, x, y.view());
  bn.backward(ctx, x, y, dy, dx.view());
  check_close("tfslim.y", y.data(), f.values<double>("case1.tfslim.y"));
  check_close("tfslim.dx", dx.data(), f.values<double>("case1.tfslim.dx"));
  check_close("tfslim.dgamma", store.grad(*store.find("nddr_1.bn.weight")).data(),
              f.values<double>("case1.tfslim.dgamma"));
  check_close("tfslim.running_mean", bn.running_mean().data(),
              f.values<double>("case1.tfslim.running_mean"));
  check_close("tfslim.running_var", bn.running_var().data(),
              f.values<double>("case1.tfslim.running_var"));
}

TEST_CASE("batch_norm ops: float agrees with double", "[ops][batch_norm]") {
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Rng rng(9);
  const Shape s = Shape::nchw(3, 4, 5, 6), cs{4};
  // A large common offset: float statistics must still be computed accurately.
  TensorD x = random_tensor(rng, s, 99.0, 101.0), dy = random_tensor(rng, s, -1.0, 1.0);
  TensorD gamma = random_tensor(rng, cs, 0.5, 1.5), beta = random_tensor(rng, cs, -1.0, 1.0);
  Tensor<float> xf(s), dyf(s), gf(cs), bf(cs);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    xf[i] = static_cast<float>(x[i]);
    x[i] = xf[i];
    dyf[i] = static_cast<float>(dy[i]);
    dy[i] = dyf[i];
  }
  for (std::int64_t c = 0; c < 4; ++c) {
    gf[c] = static_cast<float>(gamma[c]);
    gamma[c] = gf[c];
    bf[c] = static_cast<float>(beta[c]);
    beta[c] = bf[c];
  }
  TensorD rm(cs), rv(cs, 1.0), y(s), mean(cs), is(cs), dx(s), dg(cs), db(cs);
  Tensor<float> rmf(cs), rvf(cs, 1.f), yf(s), meanf(cs), isf(cs), dxf(s), dgf(cs), dbf(cs);
  nddr::ops::batch_norm_forward_training(ctx, x, gamma, beta, rm.view(), rv.view(), y.view(),
                                         mean.view(), is.view(), {});
  nddr::ops::batch_norm_backward_training(ctx, x, dy, gamma, mean, is, dx.view(), dg.view(),
                                          db.view(), {});
  nddr::ops::batch_norm_forward_training(ctx, xf, gf, bf, rmf.view(), rvf.view(), yf.view(),
                                         meanf.view(), isf.view(), {});
  nddr::ops::batch_norm_backward_training(ctx, xf, dyf, gf, meanf, isf, dxf.view(), dgf.view(),
                                          dbf.view(), {});
  double max_dy = 0.0, max_dx = 0.0;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    max_dy = std::max(max_dy, std::abs(yf[i] - y[i]));
    max_dx = std::max(max_dx, std::abs(dxf[i] - dx[i]));
  }
  // float spacing near x = 100 is ~8e-6; normalising scales it by gamma * inv_std ~ 2.5
  CHECK(max_dy < 1e-4);
  CHECK(max_dx < 1e-4);
  for (std::int64_t c = 0; c < 4; ++c) {
    CHECK(rvf[c] == Approx(rv[c]).epsilon(1e-5));
    CHECK(dgf[c] == Approx(dg[c]).epsilon(1e-3).margin(1e-3));
  }
}

TEST_CASE("batch_norm: errors name the op, field and value", "[ops][batch_norm]") {
  nddr::Context<nddr::Cpu> ctx(1);
  const Shape s = Shape::nchw(2, 3, 2, 2), cs{3};
  TensorD x(s), y(s), g(cs, 1.0), b(cs), rm(cs), rv(cs, 1.0), m(cs), is(cs);
  auto train = [&](const BatchNormOptions& o) {
    nddr::ops::batch_norm_forward_training(ctx, x, g, b, rm.view(), rv.view(), y.view(), m.view(),
                                           is.view(), o);
  };
  CHECK_NOTHROW(train({}));
  CHECK_THROWS_AS(train(BatchNormOptions{}.eps(0.0)), nddr::OptionError);
  CHECK_THROWS_WITH(train(BatchNormOptions{}.eps(-1e-3)),
                    Catch::Contains("batch_norm_forward_training") && Catch::Contains("eps") &&
                        Catch::Contains("-0.001"));
  CHECK_THROWS_WITH(train(BatchNormOptions{}.momentum(1.5)),
                    Catch::Contains("momentum") && Catch::Contains("1.5"));
  CHECK_THROWS_AS(train(BatchNormOptions{}.momentum(-0.1)), nddr::OptionError);
  CHECK_THROWS_AS(train(BatchNormOptions{}.momentum(std::numeric_limits<double>::quiet_NaN())),
                  nddr::OptionError);
  CHECK_NOTHROW(train(BatchNormOptions{}.momentum(0.0)));
  CHECK_NOTHROW(train(BatchNormOptions{}.momentum(1.0)));
  CHECK_THROWS_WITH(nddr::BatchNorm2d<double>(3, BatchNormOptions{}.eps(0.0)),
                    Catch::Contains("nddr::BatchNorm2d") && Catch::Contains("eps"));

  TensorD rm4(Shape{4});
  CHECK_THROWS_WITH(
      nddr::ops::batch_norm_forward_training(ctx, x, g, b, rm4.view(), rv.view(), y.view(),
                                             m.view(), is.view(), {}),
      Catch::Contains("running_mean") && Catch::Contains("(4)") && Catch::Contains("(3)"));
  CHECK_THROWS_AS(nddr::ops::batch_norm_forward_inference(ctx, x, g, b, rm, rm4, y.view(), {}),
                  nddr::ShapeError);
  CHECK_THROWS_WITH(nddr::ops::batch_norm_forward_inference(ctx, x, rm4, b, rm, rv, y.view(), {}),
                    Catch::Contains("gamma") && Catch::Contains("(4)"));
  TensorD y_bad(Shape::nchw(2, 3, 2, 3));
  CHECK_THROWS_WITH(nddr::ops::batch_norm_forward_inference(ctx, x, g, b, rm, rv, y_bad.view(), {}),
                    Catch::Contains("(2, 3, 2, 3)") && Catch::Contains("(2, 3, 2, 2)"));

  // One value per channel: variance undefined in training, fine in inference.
  TensorD x1(Shape::nchw(1, 3, 1, 1)), y1(x1.shape());
  CHECK_THROWS_WITH(nddr::ops::batch_norm_forward_training(ctx, x1, g, b, rm.view(), rv.view(),
                                                           y1.view(), m.view(), is.view(), {}),
                    Catch::Contains("(1, 3, 1, 1)") && Catch::Contains("more than one value"));
  CHECK_THROWS_AS(nddr::ops::batch_norm_backward_training(ctx, x1, y1, g, m, is, y1.view(),
                                                          TensorD().view(), TensorD().view(), {}),
                  nddr::ShapeError);
  CHECK_NOTHROW(nddr::ops::batch_norm_forward_inference(ctx, x1, g, b, rm, rv, y1.view(), {}));

  nddr::BatchNorm2d<double> bn(3);
  CHECK_THROWS_WITH(bn.output_shape(Shape::nchw(2, 4, 5, 5)),
                    Catch::Contains("BatchNorm2d") && Catch::Contains("(2, 4, 5, 5)"));
  CHECK_THROWS_AS(bn.output_shape(Shape{2, 3}), nddr::ShapeError);
  CHECK_THROWS_AS(nddr::BatchNorm2d<double>(0), nddr::OptionError);
}

// The GPU's split per-channel reductions (backend/cuda/kernels/conv_bn.cuh) are built from
// three host/device helpers; their logic is checked here on the CPU, block by block and thread
// by thread as the kernels run them.
TEST_CASE("batch_norm split reductions: every element once, shifted moments accurate",
          "[ops][batch_norm]") {
  constexpr std::int64_t kBlock = 256;
  struct Case {
    std::int64_t items, channels, plane;
  };
  // Planes larger and smaller than a block, a step that is a multiple of the plane, 1x1 maps.
  for (const Case k : {Case{10, 64, 103041}, Case{10, 512, 1681}, Case{3, 5, 7}, Case{2, 3, 512},
                       Case{64, 40, 1}, Case{1, 1, 1}, Case{4, 2, 2048}}) {
    INFO("items " << k.items << " channels " << k.channels << " plane " << k.plane);
    const std::int64_t splits =
        nddr::ops::batch_norm_reduce_splits(k.items, k.plane, k.channels, kBlock);
    CHECK(splits >= 1);
    CHECK(splits <= 1024);
    CHECK(splits * k.channels <= std::max<std::int64_t>(1024 + k.channels, k.channels));
    // Channel 1 (or 0) of an NCHW tensor: offsets relative to its first element.
    const std::int64_t stride = k.channels * k.plane;
    std::vector<int> seen(static_cast<std::size_t>(k.items * k.plane), 0);
    std::int64_t wrong = 0;
    const std::int64_t step = splits * kBlock;
    for (std::int64_t first = 0; first < step; ++first)
      nddr::ops::batch_norm_strided_visit(k.items, k.plane, stride, first, step,
                                          [&](std::int64_t off) {
                                            const std::int64_t n = off / stride, p = off % stride;
                                            if (p >= k.plane || n >= k.items) {
                                              ++wrong;
                                              return;
                                            }
                                            ++seen[static_cast<std::size_t>(n * k.plane + p)];
                                          });
    CHECK(wrong == 0);
    std::int64_t not_once = 0;
    for (int v : seen) not_once += v != 1;
    CHECK(not_once == 0);
  }

  // Shifted sums: a channel with a mean of 1e4 and spread 1e-2, in float, shifted by its first
  // element, gives the two-pass moments to double rounding.
  nddr::Rng rng(21);
  std::vector<float> v(5000);
  for (auto& e : v) e = static_cast<float>(1e4 + 1e-2 * rng.normal());
  double s1 = 0.0, s2 = 0.0;
  const double shift = v[0];
  for (float e : v) {
    s1 += e - shift;
    s2 += (e - shift) * (e - shift);
  }
  const auto m = nddr::ops::batch_norm_moments_from_shifted_sums(static_cast<double>(v.size()),
                                                                 shift, s1, s2);
  // Two passes in double: the reference.
  double ref_mean = 0.0, ref_var = 0.0;
  for (float e : v) ref_mean += e;
  ref_mean /= static_cast<double>(v.size());
  for (float e : v) ref_var += (e - ref_mean) * (e - ref_mean);
  ref_var /= static_cast<double>(v.size());
  CHECK(m.mean == Approx(ref_mean).epsilon(1e-14));
  CHECK(m.var == Approx(ref_var).epsilon(1e-9));
  CHECK(ref_var == Approx(1e-4).epsilon(0.1));
  // Rounding can push a constant channel's variance below zero: clamped.
  CHECK(nddr::ops::batch_norm_moments_from_shifted_sums(4.0, 1.0, 1e-17, 0.0).var == 0.0);
}
