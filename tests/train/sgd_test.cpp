// Momentum SGD and learning-rate schedules: hand-computed updates, a PyTorch-semantics reference
// loop, exact checkpoint round trip of the velocity, group multipliers, option errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include <nddr/core/parameter_store.hpp>
#include <nddr/optim/schedule.hpp>
#include <nddr/optim/sgd.hpp>

namespace {

using nddr::Shape;

template <class T>
void fill_uniform(nddr::TensorView<T> v, std::uint64_t seed, double lo, double hi) {
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::int64_t i = 0; i < v.numel(); ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const double u = static_cast<double>(s >> 11) / 9007199254740992.0;
    v[i] = static_cast<T>(lo + (hi - lo) * u);
  }
}

// A store with a conv kernel, a BN-like vector, a linear kernel split over several chunks and
// an fc8-style bias, spread over four groups with distinct multipliers.
template <class T>
struct Model {
  nddr::ParameterStore<T> store;
  std::vector<nddr::ParamId> ids;

  Model() {
    store.add_group({"nddr", 100.0, 1.0});
    store.add_group({"fc8.weight", 10.0, 1.0});
    store.add_group({"fc8.bias", 20.0, 0.0});
    ids.push_back(store.declare("conv1.weight", Shape::nchw(4, 3, 3, 3)));
    ids.push_back(store.declare("conv1.bn.weight", Shape{4}));
    ids.push_back(store.declare("fusion.conv.weight", Shape::nchw(4, 8, 1, 1), "nddr"));
    ids.push_back(store.declare("fusion.bn.bias", Shape{4}, "nddr"));
    ids.push_back(store.declare("fc8.weight", Shape{7, 20011}, "fc8.weight"));
    ids.push_back(store.declare("fc8.bias", Shape{7}, "fc8.bias"));
    store.allocate();
    for (std::size_t k = 0; k < ids.size(); ++k)
      fill_uniform(store.value(ids[k]), 100 + k, -1.0, 1.0);
  }
  void set_grads(std::uint64_t step) {
    for (std::size_t k = 0; k < ids.size(); ++k)
      fill_uniform(store.grad(ids[k]), 1000 * step + k, -0.5, 0.5);
  }
};

}  // namespace

TEST_CASE("Sgd: hand-computed two steps, kernel decayed, bias not, group lr multipliers",
          "[train][sgd]") {
  nddr::ParameterStore<double> store;
  store.add_group({"fc8.weight", 10.0, 1.0});
  store.add_group({"fc8.bias", 20.0, 1.0});
  const auto w = store.declare("fc8.weight", Shape::nchw(1, 2, 1, 1), "fc8.weight");
  const auto b = store.declare("fc8.bias", Shape{1}, "fc8.bias");
  store.allocate();
  store.value(w)[0] = 1.0;
  store.value(w)[1] = -2.0;
  store.value(b)[0] = 0.5;

  nddr::Sgd<double> sgd(store, nddr::SgdOptions{}.momentum(0.9).weight_decay(0.5));
  nddr::Context<nddr::Cpu> ctx(2);
  store.grad(w)[0] = 0.1;
  store.grad(w)[1] = 0.2;
  store.grad(b)[0] = 0.4;
  sgd.step(ctx, 0.01);  // kernel lr 0.1, bias lr 0.2
  CHECK(store.value(w)[0] == Approx(0.94).epsilon(1e-14));
  CHECK(store.value(w)[1] == Approx(-1.92).epsilon(1e-14));
  CHECK(store.value(b)[0] == Approx(0.42).epsilon(1e-14));
  CHECK(sgd.velocity(w)[0] == Approx(0.6).epsilon(1e-14));
  CHECK(sgd.velocity(b)[0] == Approx(0.4).epsilon(1e-14));

  store.grad(w)[0] = 0.3;
  store.grad(w)[1] = -0.1;
  store.grad(b)[0] = -0.2;
  sgd.step(ctx, 0.005);  // kernel lr 0.05, bias lr 0.1
  CHECK(store.value(w)[0] == Approx(0.8745).epsilon(1e-14));
  CHECK(store.value(w)[1] == Approx(-1.831).epsilon(1e-14));
  CHECK(store.value(b)[0] == Approx(0.404).epsilon(1e-14));
  CHECK(sgd.velocity(w)[0] == Approx(1.31).epsilon(1e-14));
  CHECK(sgd.velocity(w)[1] == Approx(-1.78).epsilon(1e-14));
  CHECK(sgd.velocity(b)[0] == Approx(0.16).epsilon(1e-14));

  // Padding after each entry stays zero in the velocity and the values.
  const auto v = sgd.velocity();
  for (std::int64_t i = 2; i < 8; ++i) CHECK(v[i] == 0.0);
  for (std::int64_t i = 9; i < v.numel(); ++i) CHECK(v[i] == 0.0);
  CHECK(v.shape() == store.values().shape());

  SECTION("decay_rank_ge2_only(false) decays the bias too") {
    store.value(b)[0] = 0.5;
    store.grad(b)[0] = 0.4;
    nddr::Sgd<double> all(store, nddr::SgdOptions{}.weight_decay(0.5).decay_rank_ge2_only(false));
    all.step(ctx, 0.01);
    CHECK(store.value(b)[0] == Approx(0.5 - 0.2 * (0.4 + 0.25)).epsilon(1e-14));
  }
  SECTION("a group's weight_decay_mult 0 switches decay off") {
    store.add_group({"fc8.weight", 10.0, 0.0});
    store.value(w)[0] = 1.0;
    store.grad(w)[0] = 0.1;
    nddr::Sgd<double> nodecay(store, nddr::SgdOptions{}.weight_decay(0.5));
    nodecay.step(ctx, 0.01);
    CHECK(store.value(w)[0] == Approx(1.0 - 0.1 * 0.1).epsilon(1e-14));
  }
}

// PyTorch's SGD (dampening 0): d_p = g + wd * p; buf = d_p at the first step, else
// buf = m * buf + d_p; d_p = nesterov ? d_p + m * buf : buf; p -= lr * d_p.
template <class T>
void check_against_reference(bool nesterov, int threads) {
  Model<T> model;
  const auto& entries = model.store.parameters();
  const auto values0 = model.store.values();
  std::vector<T> ref(values0.data(), values0.data() + values0.numel());
  std::vector<T> buf(ref.size(), T(0));
  const double wd = 5e-4, m = 0.9;
  const nddr::PolySchedule poly{1e-3, 20001};
  nddr::Sgd<T> sgd(model.store, nddr::SgdOptions{}.weight_decay(wd).nesterov(nesterov));
  nddr::Context<nddr::Cpu> ctx(threads);
  for (std::int64_t t = 0; t < 5; ++t) {
    model.set_grads(static_cast<std::uint64_t>(t));
    const auto g = model.store.grads();
    for (const auto& e : entries) {
      const auto& group = model.store.groups()[e.group];
      const T lr = static_cast<T>(poly(t) * group.lr_mult);
      const T wd_e = e.shape.rank() >= 2 ? static_cast<T>(wd * group.weight_decay_mult) : T(0);
      for (std::size_t i = e.offset; i < e.offset + static_cast<std::size_t>(e.shape.numel());
           ++i) {
        const T d_p = g[static_cast<std::int64_t>(i)] + wd_e * ref[i];
        buf[i] = t == 0 ? d_p : static_cast<T>(m) * buf[i] + d_p;
        const T step = nesterov ? d_p + static_cast<T>(m) * buf[i] : buf[i];
        ref[i] -= lr * step;
      }
    }
    sgd.step(ctx, poly(t));
  }
  const auto values = model.store.values();
  const auto vel = sgd.velocity();
  std::int64_t mismatches = 0;
  for (std::int64_t i = 0; i < values.numel(); ++i) {
    const T tol = std::numeric_limits<T>::epsilon() * 8 * (T(1) + std::abs(ref[i]));
    if (std::abs(values[i] - ref[i]) > tol || std::abs(vel[i] - buf[i]) > tol * 10) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("Sgd: equals a PyTorch-semantics reference loop (v starts at g)", "[train][sgd]") {
  SECTION("double, momentum") { check_against_reference<double>(false, 1); }
  SECTION("double, nesterov, 2 threads") { check_against_reference<double>(true, 2); }
  SECTION("float, momentum, 2 threads") { check_against_reference<float>(false, 2); }
}

TEST_CASE("Sgd: the first step's velocity is exactly the decayed gradient", "[train][sgd]") {
  Model<float> model;
  model.set_grads(0);
  nddr::Sgd<float> sgd(model.store);
  const auto theta0 = model.store.value(model.ids[0]);
  std::vector<float> before(theta0.data(), theta0.data() + theta0.numel());
  sgd.step(1e-3);
  const auto v = sgd.velocity(model.ids[0]);
  const auto g = model.store.grad(model.ids[0]);
  for (std::int64_t i = 0; i < v.numel(); ++i)
    REQUIRE(v[i] == g[i] + static_cast<float>(5e-4) * before[static_cast<std::size_t>(i)]);
}

TEST_CASE("Sgd: threads do not change the result", "[train][sgd]") {
  Model<float> a, b;
  nddr::Sgd<float> sa(a.store), sb(b.store);
  nddr::Context<nddr::Cpu> one(1), two(2);
  for (std::int64_t t = 0; t < 3; ++t) {
    a.set_grads(static_cast<std::uint64_t>(t));
    b.set_grads(static_cast<std::uint64_t>(t));
    sa.step(one, 1e-3);
    sb.step(two, 1e-3);
  }
  const auto va = a.store.values(), vb = b.store.values();
  std::int64_t diff = 0;
  for (std::int64_t i = 0; i < va.numel(); ++i) diff += va[i] != vb[i];
  CHECK(diff == 0);
}

TEST_CASE("Sgd: exact checkpoint round trip of the velocity", "[train][sgd]") {
  const nddr::PolySchedule poly{1e-3, 20};
  Model<float> run;
  nddr::Sgd<float> sgd(run.store, nddr::SgdOptions::paper_multi_task());
  nddr::Context<nddr::Cpu> ctx(2);
  for (std::int64_t t = 0; t < 3; ++t) {
    run.set_grads(static_cast<std::uint64_t>(t));
    sgd.step(ctx, poly(t));
  }
  const nddr::Tensor<float> saved_values = [&] {
    nddr::Tensor<float> c(run.store.values().shape());
    std::copy_n(run.store.values().data(), c.numel(), c.view().data());
    return c;
  }();
  nddr::Tensor<float> saved_state(sgd.velocity().shape());
  std::copy_n(sgd.velocity().data(), saved_state.numel(), saved_state.view().data());

  auto continue_3 = [&](Model<float>& m, nddr::Sgd<float>& opt) {
    for (std::int64_t t = 3; t < 6; ++t) {
      m.set_grads(static_cast<std::uint64_t>(t));
      opt.step(ctx, poly(t));
    }
  };
  continue_3(run, sgd);

  auto restored_run = [&](bool restore_velocity, bool via_state) {
    auto m = std::make_unique<Model<float>>();
    std::copy_n(saved_values.data(), saved_values.numel(), m->store.values().data());
    nddr::Sgd<float> opt(m->store, nddr::SgdOptions::paper_multi_task());
    if (restore_velocity && via_state)
      std::copy_n(saved_state.data(), saved_state.numel(), opt.state().data());
    else if (restore_velocity)
      opt.set_velocity(saved_state.cview());
    continue_3(*m, opt);
    std::int64_t diff = 0;
    for (std::int64_t i = 0; i < saved_values.numel(); ++i) {
      diff += m->store.values()[i] != run.store.values()[i];
      diff += opt.velocity()[i] != sgd.velocity()[i];
    }
    return diff;
  };
  CHECK(restored_run(true, false) == 0);
  CHECK(restored_run(true, true) == 0);
  CHECK(restored_run(false, false) > 0);  // the velocity matters: the test can fail

  nddr::Tensor<float> wrong(Shape{3});
  CHECK_THROWS_AS(sgd.set_velocity(wrong.cview()), nddr::ShapeError);
  CHECK_THROWS_WITH(sgd.set_velocity(wrong.cview()),
                    Catch::Contains("set_velocity") && Catch::Contains("(3)"));
  sgd.reset();
  CHECK(sgd.velocity()[0] == 0.f);
}

TEST_CASE("Sgd: the NDDR group keeps its x100 multiplier at every scheduled step",
          "[train][sgd]") {
  nddr::ParameterStore<double> store;
  const std::size_t nddr_group = store.add_group({"nddr", 100.0, 1.0});
  const auto base = store.declare("conv.bn.weight", Shape{1});
  const auto fused = store.declare("fusion.bn.weight", Shape{1}, "nddr");
  store.allocate();
  nddr::Sgd<double> sgd(store, nddr::SgdOptions{}.momentum(0.0));
  const nddr::PolySchedule poly{1e-3, 10};
  for (std::int64_t t = 0; t < 12; ++t) {
    store.value(base)[0] = 1.0;
    store.value(fused)[0] = 1.0;
    store.grad(base)[0] = 0.5;
    store.grad(fused)[0] = 0.5;
    const double lr = poly(t);
    sgd.step(lr);
    INFO("step " << t << ", lr " << lr);
    CHECK(store.groups()[nddr_group].lr_mult == 100.0);
    CHECK(sgd.group_lr(nddr_group, lr) == 100.0 * lr);
    CHECK(1.0 - store.value(base)[0] == Approx(0.5 * lr).margin(1e-15));
    CHECK(1.0 - store.value(fused)[0] == Approx(50.0 * lr).margin(1e-13));
  }
}

TEST_CASE("Schedules: values at 0, max/2, max-1 and beyond", "[train][sgd]") {
  const nddr::PolySchedule paper{1e-3, 20001};
  CHECK(paper.power == 0.9);
  CHECK(paper(0) == 1e-3);
  CHECK(paper(10000) == Approx(1e-3 * std::pow(10001.0 / 20001.0, 0.9)).epsilon(1e-14));
  CHECK(paper(20000) == Approx(1e-3 * std::pow(1.0 / 20001.0, 0.9)).epsilon(1e-10));
  CHECK(paper(20000) > 0.0);
  CHECK(paper(20001) == 0.0);
  CHECK(paper(50000) == 0.0);
  const nddr::PolySchedule even{0.1, 100, 2.0};
  CHECK(even(50) == Approx(0.025).epsilon(1e-14));
  CHECK(even(99) == Approx(0.1 * 1e-4).epsilon(1e-12));

  const nddr::StepSchedule step{0.1, 10, 0.5};
  CHECK(step(0) == 0.1);
  CHECK(step(9) == 0.1);
  CHECK(step(10) == Approx(0.05).epsilon(1e-15));
  CHECK(step(25) == Approx(0.025).epsilon(1e-15));

  const nddr::MultiStepSchedule multi{1e-3, {15, 30, 45}, 0.5};
  CHECK(multi(14) == 1e-3);
  CHECK(multi(15) == Approx(5e-4).epsilon(1e-15));
  CHECK(multi(44) == Approx(2.5e-4).epsilon(1e-15));
  CHECK(multi(1000) == Approx(1.25e-4).epsilon(1e-15));

  const nddr::ConstantSchedule constant{0.01};
  CHECK(constant(0) == 0.01);
  CHECK(constant(123456) == 0.01);

  static_assert(nddr::concepts::LrSchedule<nddr::PolySchedule>);
  static_assert(!nddr::concepts::LrSchedule<int>);
}

TEST_CASE("Sgd and schedules: option errors name the field and the value", "[train][sgd]") {
  nddr::ParameterStore<float> store;
  store.declare("w", Shape{2, 2});
  CHECK_THROWS_WITH(nddr::Sgd<float>(store), Catch::Contains("not allocated"));
  store.allocate();
  CHECK_THROWS_AS(nddr::Sgd<float>(store, nddr::SgdOptions{}.momentum(1.0)), nddr::OptionError);
  CHECK_THROWS_WITH(nddr::Sgd<float>(store, nddr::SgdOptions{}.momentum(1.0)),
                    Catch::Contains("momentum") && Catch::Contains("got 1"));
  CHECK_THROWS_WITH(nddr::Sgd<float>(store, nddr::SgdOptions{}.momentum(-0.1)),
                    Catch::Contains("momentum") && Catch::Contains("-0.1"));
  CHECK_THROWS_WITH(nddr::Sgd<float>(store, nddr::SgdOptions{}.weight_decay(-1e-3)),
                    Catch::Contains("weight_decay") && Catch::Contains("-0.001"));
  CHECK_THROWS_AS(nddr::Sgd<float>(store, nddr::SgdOptions{}.weight_decay(std::nan(""))),
                  nddr::OptionError);
  nddr::Sgd<float> sgd(store);
  CHECK_THROWS_AS(sgd.step(-0.5), nddr::OptionError);
  CHECK_THROWS_WITH(sgd.step(-0.5), Catch::Contains("lr") && Catch::Contains("-0.5"));
  store.add_group({"default", -1.0, 1.0});
  CHECK_THROWS_WITH(sgd.step(0.1), Catch::Contains("'default'") && Catch::Contains("-1"));

  CHECK_THROWS_WITH((nddr::PolySchedule{1e-3, 0}(0)),
                    Catch::Contains("max_steps") && Catch::Contains("got 0"));
  CHECK_THROWS_WITH((nddr::PolySchedule{-1.0, 10}(0)),
                    Catch::Contains("base_lr") && Catch::Contains("-1"));
  CHECK_THROWS_AS((nddr::PolySchedule{}(-1)), nddr::ValueError);
  CHECK_THROWS_WITH((nddr::StepSchedule{0.1, 0, 0.5}(3)),
                    Catch::Contains("step_size") && Catch::Contains("got 0"));
  CHECK_THROWS_WITH((nddr::MultiStepSchedule{0.1, {10, 5}, 0.5}(3)),
                    Catch::Contains("milestones") && Catch::Contains("5"));
}
