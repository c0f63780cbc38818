// Adam and AdamW (torch.optim semantics), the Optimizer concept, AnyOptimizer and the cosine and
// warm-up schedules: the worked numbers of the weighting spec (sections 13-14), step values of
// torch.optim on a small problem with per-group multipliers (tests/data/optimizers.safetensors,
// tools/reference/optimizers.py), option errors, and exact resume of every optimiser's state.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include <nddr/io/safetensors.hpp>
#include <nddr/nddr.hpp>
#include <nddr/testing/optimizer_laws.hpp>
#include <nddr/train/trainer.hpp>

#include "../support/seg_normal_batch.hpp"

namespace {

using nddr::Shape;
using Catch::Contains;

// One scalar parameter theta0 = 1 (spec section 13: lr 0.1, wd 0.1, gradients 0.5 then 0.25).
template <class Opt, class Options>
std::vector<double> worked_example(Options options) {
  nddr::ParameterStore<double> store;
  const auto id = store.declare("theta", Shape{1});
  store.allocate();
  store.value(id)[0] = 1.0;
  Opt opt(store, options.weight_decay(0.1));
  nddr::Context<nddr::Cpu> ctx(1);
  std::vector<double> out;
  for (const double g : {0.5, 0.25}) {
    store.grad(id)[0] = g;
    opt.step(ctx, 0.1);
    out.push_back(store.value(id)[0]);
  }
  CHECK(opt.steps() == 2);
  return out;
}

}  // namespace

TEST_CASE("Adam and AdamW: the worked example of the spec (bias correction, L2 vs decoupled)",
          "[train][optim][adam]") {
  const auto adam = worked_example<nddr::Adam<double>>(nddr::AdamOptions{});
  CHECK(adam[0] == Approx(0.90000000167).margin(1e-11));
  CHECK(adam[1] == Approx(0.8050098).margin(1e-7));
  const auto adamw = worked_example<nddr::AdamW<double>>(nddr::AdamWOptions{});
  CHECK(adamw[0] == Approx(0.89000000200).margin(1e-11));
  CHECK(adamw[1] == Approx(0.7878820).margin(1e-7));
}

TEST_CASE("Adam and AdamW: torch.optim step values with group multipliers, warm-up and cosine",
          "[train][optim][adam]") {
  const auto f = nddr::io::SafetensorsFile::read(std::string(NDDR_TEST_DATA_DIR) +
                                                 "/optimizers.safetensors");
  struct Param {
    const char* name;
    Shape shape;
    const char* group;
  };
  const std::vector<Param> params = {{"conv.weight", Shape::nchw(3, 2, 2, 2), "default"},
                                     {"conv.bias", Shape{3}, "default"},
                                     {"nddr.weight", Shape{3, 6}, "nddr"},
                                     {"fc8.bias", Shape{4}, "fc8.bias"}};
  const std::vector<double> lr_ref = f.values<double>("lr");
  const nddr::LinearWarmup schedule{nddr::CosineSchedule{0.05, 6}, 3, 0.25};
  for (std::size_t k = 0; k < lr_ref.size(); ++k)
    CHECK(schedule(static_cast<std::int64_t>(k)) == Approx(lr_ref[k]).epsilon(1e-13));

  for (const std::string run : {"adam", "adam_amsgrad", "adamw", "adamw_amsgrad"}) {
    DYNAMIC_SECTION(run) {
      nddr::ParameterStore<double> store;
      store.add_group({"nddr", 10.0, 0.5});
      store.add_group({"fc8.bias", 20.0, 0.0});
      std::vector<nddr::ParamId> ids;
      for (const Param& p : params) ids.push_back(store.declare(p.name, p.shape, p.group));
      store.allocate();
      for (std::size_t i = 0; i < params.size(); ++i) {
        const auto init = f.values<double>(std::string("init.") + params[i].name);
        std::copy(init.begin(), init.end(), store.value(ids[i]).data());
      }
      const bool ams = run.ends_with("amsgrad");
      const nddr::AnyOptimizerOptions options =
          run.starts_with("adamw")
              ? nddr::AnyOptimizerOptions(
                    nddr::AdamWOptions{}.betas(0.8, 0.95).eps(1e-6).weight_decay(0.1).amsgrad(ams))
              : nddr::AnyOptimizerOptions(
                    nddr::AdamOptions{}.betas(0.8, 0.95).eps(1e-6).weight_decay(0.1).amsgrad(ams));
      nddr::AnyOptimizer<double> opt(store, options);
      nddr::Context<nddr::Cpu> ctx(2);
      for (std::size_t step = 1; step <= lr_ref.size(); ++step) {
        for (std::size_t i = 0; i < params.size(); ++i) {
          const auto coef = f.values<double>(std::string("coef.") + params[i].name);
          auto theta = store.value(ids[i]);
          auto grad = store.grad(ids[i]);
          for (std::int64_t e = 0; e < theta.numel(); ++e)
            grad[e] = coef[static_cast<std::size_t>(e)] * std::cos(theta[e]);
        }
        opt.step(ctx, schedule(static_cast<std::int64_t>(step - 1)));
        for (std::size_t i = 0; i < params.size(); ++i) {
          const auto want = f.values<double>(run + ".step" + std::to_string(step) + "." +
                                             params[i].name);
          const auto got = store.value(ids[i]);
          double worst = 0.0;
          for (std::int64_t e = 0; e < got.numel(); ++e)
            worst = std::max(worst, std::abs(got[e] - want[static_cast<std::size_t>(e)]));
          INFO(run << " step " << step << " " << params[i].name);
          CHECK(worst <= 1e-12);
        }
      }
      // The second moment, by its checkpoint name, equals torch's exp_avg_sq.
      const auto state = opt.checkpoint_state();
      REQUIRE(state.tensors.size() == (ams ? 3u : 2u));
      CHECK(state.tensors[1].first == "optim/exp_avg_sq");
      for (std::size_t i = 0; i < params.size(); ++i) {
        const auto want = f.values<double>(run + ".exp_avg_sq." + params[i].name);
        const auto& e = store.parameters()[ids[i].index];
        for (std::size_t j = 0; j < want.size(); ++j)
          CHECK(state.tensors[1].second[static_cast<std::int64_t>(e.offset + j)] ==
                Approx(want[j]).epsilon(1e-12));
      }
      REQUIRE(state.counters.size() == 1);
      CHECK(state.counters[0].first == "optim/step");
      CHECK(state.counters[0].second[0] == static_cast<std::int64_t>(lr_ref.size()));
    }
  }
}

TEST_CASE("Adam and AdamW: zero rate changes nothing, rank rule, option errors name the field",
          "[train][optim][adam]") {
  nddr::ParameterStore<float> store;
  const auto w = store.declare("w", Shape{2, 2});
  const auto b = store.declare("b", Shape{2});
  store.allocate();
  for (int i = 0; i < 4; ++i) store.value(w)[i] = 0.5f * static_cast<float>(i + 1);
  store.value(b)[0] = 2.0f;
  const std::vector<float> before(store.values().data(),
                                  store.values().data() + store.values().numel());
  nddr::AdamW<float> adamw(store, nddr::AdamWOptions{}.weight_decay(0.5).decay_rank_ge2_only(true));
  nddr::Context<nddr::Cpu> ctx(1);
  adamw.step(ctx, 0.0);
  for (std::int64_t i = 0; i < store.values().numel(); ++i)
    CHECK(store.values()[i] == before[static_cast<std::size_t>(i)]);
  // Zero gradient: only the decay moves theta, and only the rank-2 tensor decays.
  adamw.step(ctx, 0.1);
  CHECK(store.value(w)[0] == Approx(0.5f * (1.0f - 0.1f * 0.5f)));
  CHECK(store.value(b)[0] == 2.0f);

  CHECK_THROWS_WITH(nddr::Adam<float>(store, nddr::AdamOptions{}.beta1(1.0)),
                    Contains("nddr::Adam") && Contains("AdamOptions.beta1") && Contains("[0, 1)"));
  CHECK_THROWS_WITH(nddr::AdamW<float>(store, nddr::AdamWOptions{}.eps(0.0)),
                    Contains("nddr::AdamW") && Contains("AdamWOptions.eps"));
  CHECK_THROWS_WITH(nddr::Adam<float>(store, nddr::AdamOptions{}.weight_decay(-1.0)),
                    Contains("weight_decay"));
  CHECK_THROWS_AS(adamw.step(ctx, -1.0), nddr::OptionError);
  CHECK(nddr::AdamOptions{}.weight_decay() == 0.0);
  CHECK(nddr::AdamWOptions{}.weight_decay() == 0.01);
  CHECK(nddr::AnyOptimizerOptions(nddr::AdamWOptions{}).name() == "adamw");
  CHECK(!nddr::AnyOptimizerOptions::defaults("adagrad").has_value());
}

TEST_CASE("Optimizer concept: the library optimisers model it, other types do not",
          "[train][optim][concept]") {
  STATIC_REQUIRE(nddr::concepts::Optimizer<nddr::Sgd<float, nddr::Cpu>>);
  STATIC_REQUIRE(nddr::concepts::Optimizer<nddr::Adam<double, nddr::Cpu>>);
  STATIC_REQUIRE(nddr::concepts::Optimizer<nddr::AdamW<float, nddr::Cpu>>);
  STATIC_REQUIRE(nddr::concepts::Optimizer<nddr::AnyOptimizer<float, nddr::Cpu>>);
  STATIC_REQUIRE(!nddr::concepts::Optimizer<nddr::SgdOptions>);
  STATIC_REQUIRE(!nddr::concepts::Optimizer<nddr::PolySchedule>);
}

TEST_CASE("Optimizer laws: zero rate, group multipliers and resume hold for every optimiser",
          "[train][optim][concept][laws]") {
  using nddr::testing::check_optimizer_laws;
  const auto report = [](const nddr::testing::LayerLawsResult& r) {
    INFO(r.report);
    CHECK(r.ok);
  };
  report(check_optimizer_laws<nddr::Sgd>(nddr::SgdOptions{}.weight_decay(0.01)));
  report(check_optimizer_laws<nddr::Sgd>(nddr::SgdOptions{}.nesterov(true)));
  report(check_optimizer_laws<nddr::Adam>(nddr::AdamOptions{}.weight_decay(0.01)));
  report(check_optimizer_laws<nddr::AdamW>(nddr::AdamWOptions{}.amsgrad(true)));
  report(check_optimizer_laws<nddr::AnyOptimizer>(nddr::AdamWOptions{}.weight_decay(0.1)));
}

TEST_CASE("Schedules: cosine annealing and linear warm-up give the spec's numbers",
          "[train][optim][schedule]") {
  const nddr::CosineSchedule cos{0.1, 10};
  CHECK(cos(0) == Approx(0.1));
  CHECK(cos(1) == Approx(0.0975528).margin(1e-7));
  CHECK(cos(5) == Approx(0.05).margin(1e-12));
  CHECK(cos(9) == Approx(0.0024472).margin(1e-7));
  CHECK(cos(10) == Approx(0.0).margin(1e-15));
  CHECK(cos(15) == Approx(0.05).margin(1e-12));  // no restart: it rises again past t_max
  CHECK(nddr::CosineSchedule{0.1, 10, 1e-3}(5) == Approx(0.0505).margin(1e-12));
  // LinearLR's documentation example: base 0.05, start 0.5, total 4.
  const nddr::LinearWarmup warm{nddr::ConstantSchedule{0.05}, 4, 0.5};
  const double want[] = {0.025, 0.03125, 0.0375, 0.04375, 0.05, 0.05};
  for (int t = 0; t < 6; ++t) CHECK(warm(t) == Approx(want[t]).epsilon(1e-14));
  // Warm-up then cosine (SequentialLR): the cosine restarts its counter at the milestone.
  const nddr::LinearWarmup wc{nddr::CosineSchedule{0.1, 10}, 5};
  CHECK(wc(0) == Approx(0.1 / 3.0));
  CHECK(wc(5) == Approx(0.1));
  CHECK(wc(6) == Approx(cos(1)));
  CHECK(wc(15) == Approx(0.0).margin(1e-15));
  CHECK(nddr::LinearWarmup{nddr::CosineSchedule{0.1, 10}, 0}(3) == cos(3));
  CHECK_THROWS_WITH((nddr::CosineSchedule{0.1, 0}(1)), Contains("t_max"));
  CHECK_THROWS_WITH((nddr::LinearWarmup{nddr::ConstantSchedule{0.1}, 3, 0.0}(1)),
                    Contains("start_factor"));
  CHECK_THROWS_WITH((nddr::LinearWarmup{nddr::ConstantSchedule{0.1}, -1}(1)),
                    Contains("warmup_steps"));
}

namespace {

// One Trainer instantiation for every optimiser (AnyOptimizer) on the tiny NDDR network.
using Spec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
using AnyExp = nddr::Experiment<Spec, nddr::Tasks<nddr::Segmentation<11>, nddr::SurfaceNormal>,
                                nddr::AnyOptimizer>;
using Net = nddr::Network<Spec>;
using AnyTrain = nddr::Trainer<AnyExp>;

AnyTrain::Batch batch_for(std::int64_t step) {
  return nddr_test::seg_normal_batch<AnyTrain::Batch>(1000 + static_cast<std::uint64_t>(step), 2,
                                                      16, 16, 11);
}

AnyTrain::options_type any_options(nddr::AnyOptimizerOptions optimizer) {
  AnyTrain::options_type o;
  o.loss_weights = {1.0, 20.0};
  o.progress = false;
  o.optimizer = optimizer;
  return o;
}

template <class A, class B>
bool same_bits(A a, B b) {
  if (a.numel() != b.numel()) return false;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    if (!(a[i] == b[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("Trainer: every optimiser resumes exactly (N + checkpoint + N == 2N, bit for bit)",
          "[train][optim][trainer]") {
  constexpr std::int64_t kN = 3;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("nddr_optim_resume_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  nddr::Context<nddr::Cpu> ctx(2);
  const nddr::LinearWarmup schedule{nddr::CosineSchedule{0.002, 10}, 2};
  const std::vector<std::pair<std::string, nddr::AnyOptimizerOptions>> cases = {
      {"sgd", nddr::SgdOptions::paper_multi_task()},
      {"adam", nddr::AdamOptions{}.weight_decay(1e-3)},
      {"adamw", nddr::AdamWOptions{}},
      {"adamw amsgrad", nddr::AdamWOptions{}.amsgrad(true).decay_rank_ge2_only(true)}};
  for (const auto& [name, optimizer] : cases) {
    DYNAMIC_SECTION(name) {
      Net straight({11, 3});
      AnyTrain a(straight, schedule, any_options(optimizer));
      a.fit(ctx, 2 * kN, batch_for);
      const std::string ckpt = (dir / (name + ".safetensors")).string();
      {
        Net first({11, 3});
        AnyTrain b(first, schedule, any_options(optimizer));
        b.fit(ctx, kN, batch_for);
        b.save_checkpoint(ckpt);
      }
      nddr::NetworkOptions<Spec> other;
      other.seed = 999;
      Net resumed({11, 3}, other);
      AnyTrain c(resumed, schedule, any_options(optimizer));
      c.load_checkpoint(ckpt);
      c.fit(ctx, 2 * kN, batch_for);
      CHECK(same_bits(straight.parameters().values(), resumed.parameters().values()));
      CHECK(same_bits(straight.parameters().buffer_values(), resumed.parameters().buffer_values()));
      const auto sa = a.optimizer().checkpoint_state(), sc = c.optimizer().checkpoint_state();
      REQUIRE(sa.tensors.size() == sc.tensors.size());
      for (std::size_t i = 0; i < sa.tensors.size(); ++i) {
        INFO(sa.tensors[i].first);
        CHECK(same_bits(sa.tensors[i].second, sc.tensors[i].second));
      }
      REQUIRE(sa.counters.size() == sc.counters.size());
      for (std::size_t i = 0; i < sa.counters.size(); ++i)
        CHECK(sc.counters[i].second[0] == 2 * kN);
      CHECK(a.history().back().losses == c.history().back().losses);
    }
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("Trainer: old SGD checkpoints load, a checkpoint of another optimiser is refused",
          "[train][optim][trainer][checkpoint]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("nddr_optim_compat_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  nddr::Context<nddr::Cpu> ctx(1);
  Net net({11, 3});
  AnyTrain sgd(net, nddr::ConstantSchedule{0.01}, any_options(nddr::SgdOptions{}));
  sgd.fit(ctx, 2, batch_for);
  // The format before named optimiser states: velocity as optim/state, no 'optimizer' key.
  const std::string old_file = (dir / "old.safetensors").string();
  nddr::CheckpointState st;
  st.step = 2;
  for (nddr::Rng* r : net.rngs()) st.rngs.push_back(r->state());
  const auto velocity = std::get<0>(sgd.optimizer().get()).velocity();
  nddr::save_checkpoint<float>(old_file, net.parameters(), velocity, st);
  CHECK(!nddr::io::SafetensorsFile::read(old_file).metadata().contains("optimizer"));
  Net again({11, 3});
  AnyTrain restored(again, nddr::ConstantSchedule{0.01}, any_options(nddr::SgdOptions{}));
  restored.load_checkpoint(old_file);
  CHECK(restored.step() == 2);
  CHECK(same_bits(std::get<0>(restored.optimizer().get()).velocity(), velocity));
  // New files name their optimiser; Adam refuses SGD's state (old or new) before changing anything.
  const std::string new_file = (dir / "new.safetensors").string();
  sgd.save_checkpoint(new_file);
  CHECK(nddr::io::SafetensorsFile::read(new_file).metadata().at("optimizer") == "sgd");
  Net third({11, 3});
  AnyTrain adam(third, nddr::ConstantSchedule{0.01}, any_options(nddr::AdamOptions{}));
  CHECK_THROWS_WITH(adam.load_checkpoint(new_file),
                    Contains("optimiser 'sgd'") && Contains("'adam'"));
  CHECK_THROWS_WITH(adam.load_checkpoint(old_file), Contains("optim/"));
  CHECK(adam.step() == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Trainer: Adam's step count in a checkpoint is validated before anything changes",
          "[train][optim][trainer][checkpoint]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("nddr_optim_step_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  nddr::Context<nddr::Cpu> ctx(1);
  Net net({11, 3});
  AnyTrain adam(net, nddr::ConstantSchedule{0.01}, any_options(nddr::AdamOptions{}));
  adam.fit(ctx, 2, batch_for);
  const std::string good = (dir / "good.safetensors").string();
  adam.save_checkpoint(good);
  const auto file = nddr::io::SafetensorsFile::read(good);
  CHECK(file.metadata().at("optim/step") == "2");
  CHECK(file.metadata().at("optimizer") == "adam");
  // The same tensors (flat copies, written with their shapes) with another 'optim/step'.
  std::vector<nddr::Tensor<float>> tensors;
  for (const std::string& name : file.names()) {
    const auto values = file.values<float>(name);
    nddr::Tensor<float> t(Shape{static_cast<std::int64_t>(values.size())});
    std::copy(values.begin(), values.end(), t.data());
    tensors.push_back(std::move(t));
  }
  for (const std::string step : {"-1", "2x", "", "99999999999999999999", "<none>"}) {
    std::vector<nddr::io::SafetensorsEntry> entries;
    const auto names = file.names();
    for (std::size_t i = 0; i < names.size(); ++i) {
      auto e = nddr::io::entry<float>(names[i], tensors[i].cview());
      e.shape = file.shape(names[i]);
      entries.push_back(std::move(e));
    }
    auto meta = file.metadata();
    if (step == "<none>")
      meta.erase("optim/step");
    else
      meta["optim/step"] = step;
    const std::string bad = (dir / "bad.safetensors").string();
    nddr::io::write_safetensors(bad, entries, meta);
    Net other({11, 3});
    AnyTrain fresh(other, nddr::ConstantSchedule{0.01}, any_options(nddr::AdamOptions{}));
    INFO("optim/step = '" << step << "'");
    CHECK_THROWS_WITH(fresh.load_checkpoint(bad), Contains("optim/step"));
    CHECK(fresh.step() == 0);
    CHECK(std::get<1>(fresh.optimizer().get()).steps() == 0);
  }
  std::filesystem::remove_all(dir);
}
