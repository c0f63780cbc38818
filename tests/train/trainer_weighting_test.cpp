// Trainer + weighting methods (TrainerOptions::weighting), in double on a two-task TinyNet NDDR
// network: the combined gradient against separately computed task gradients, UW's log-variance
// gradient against finite differences, exact resume with stateful methods, short training runs,
// checkpoint and option errors.
#include <catch2/catch.hpp>

#include <nddr/nddr.hpp>
#include <nddr/train/trainer.hpp>
#include <nddr/weighting/registry.hpp>

#include <Eigen/Core>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "../support/seg_normal_batch.hpp"

namespace {

namespace nw = nddr::weighting;
using Spec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
using Exp = nddr::Experiment<Spec, nddr::Tasks<nddr::Segmentation<11>, nddr::SurfaceNormal>>;
using Net = nddr::Network<Spec, nddr::Cpu, double>;
using Train = nddr::Trainer<Exp, nddr::Cpu, double>;
constexpr std::size_t kTasks = 2;

// Labels at the outputs' size, so no resizing sits between the trainer and the reference.
Train::Batch make_batch(std::int64_t step, std::int64_t size = 16) {
  Net probe({11, 3});
  const auto os = probe.output_shape(0, nddr::Shape::nchw(2, 3, size, size));
  return nddr_test::seg_normal_batch<Train::Batch>(500 + static_cast<std::uint64_t>(step), 2, size,
                                                   os.h(), 11);
}

nddr::TrainerOptionsFor<nddr::SgdOptions> options(std::string weighting, std::string dir = {}) {
  nddr::TrainerOptionsFor<nddr::SgdOptions> o;
  o.progress = false;
  o.output_dir = std::move(dir);
  o.optimizer = nddr::SgdOptions{}.weight_decay(0.0);
  o.weighting = std::move(weighting);
  return o;
}

std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() /
           ("nddr_trainer_weighting_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// Owner of each parameter entry: task k for "task<k>.head.*", -1 (shared) otherwise.
std::vector<int> owners(const Net& net) {
  std::vector<int> out;
  for (const auto& e : net.parameters().parameters()) {
    int owner = -1;
    for (std::size_t k = 0; k < kTasks; ++k)
      if (e.name.rfind("task" + std::to_string(k) + ".head.", 0) == 0) owner = static_cast<int>(k);
    out.push_back(owner);
  }
  return out;
}

// One task's loss and parameter gradient by its own forward and backward pass (the random
// streams reset to `rngs` first, so dropout draws what the trainer's single forward drew).
struct TaskGradient {
  double loss = 0.0;
  std::vector<double> grad;  // the flat gradient buffer
};
template <std::size_t I>
TaskGradient task_gradient(nddr::Context<nddr::Cpu>& ctx, Net& net, const Train::Batch& b,
                           const std::vector<nddr::Rng::State>& rngs) {
  using Task = Exp::tasks::task<I>;
  auto streams = net.rngs();
  for (std::size_t i = 0; i < streams.size(); ++i) streams[i]->set_state(rngs[i]);
  net.set_training(true);
  auto out = net.forward(ctx, b.image.cview());
  nddr::Tensor<double> dout(out[I].shape());
  TaskGradient g;
  g.loss = nddr::task_loss<Task>(ctx, out[I], std::get<I>(b.targets).cview(), dout.view(), 1.0);
  std::vector<nddr::TensorView<const double>> douts(kTasks);
  douts[I] = dout.cview();
  net.backward(ctx, b.image.cview(), douts);
  const auto flat = net.parameters().grads();
  g.grad.assign(flat.data(), flat.data() + flat.numel());
  return g;
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace

TEST_CASE("Trainer weighting: the combined gradient is the method's combination of task gradients",
          "[train][trainer][weighting]") {
  nddr::Context<nddr::Cpu> ctx(1);
  const auto batch = make_batch(0);
  for (const std::string spec : {"ew", "ew:reduction=mean", "uw", "rlw:seed=3", "dwa", "gradnorm",
                                 "pcgrad:seed=5", "mgda", "mgda:norm=l2", "cagrad:c=0.4", "imtl",
                                 "aligned", "nash"}) {
    INFO("weighting " << spec);
    Net trained({11, 3}), reference({11, 3});
    std::vector<nddr::Rng::State> rngs;
    for (auto* r : reference.rngs()) rngs.push_back(r->state());
    Train t(trained, nddr::ConstantSchedule{0.01}, options(spec));
    const auto r = t.train_step(ctx, batch);

    const TaskGradient g0 = task_gradient<0>(ctx, reference, batch, rngs);
    const TaskGradient g1 = task_gradient<1>(ctx, reference, batch, rngs);
    CHECK(r.losses[0] == Approx(g0.loss).epsilon(1e-12));
    CHECK(r.losses[1] == Approx(g1.loss).epsilon(1e-12));

    // The Gram matrix of the shared gradients and the method's weights, independently.
    const auto own = owners(reference);
    const auto& entries = reference.parameters().parameters();
    Eigen::MatrixXd gram = Eigen::MatrixXd::Zero(2, 2);
    for (std::size_t e = 0; e < entries.size(); ++e) {
      if (own[e] >= 0) continue;
      for (std::int64_t i = 0; i < entries[e].shape.numel(); ++i) {
        const std::size_t at = entries[e].offset + static_cast<std::size_t>(i);
        const double a = g0.grad[at], b = g1.grad[at];
        gram(0, 0) += a * a;
        gram(0, 1) += a * b;
        gram(1, 1) += b * b;
      }
    }
    gram(1, 0) = gram(0, 1);
    nw::AnyWeighting method = nw::make_weighting(spec, kTasks);
    const std::vector<double> losses = {g0.loss, g1.loss};
    const nw::Combination c = method.combine({losses, method.needs_gram() ? &gram : nullptr});
    CHECK(r.weights[0] == Approx(c.shared[0]).epsilon(1e-9));
    CHECK(r.weights[1] == Approx(c.shared[1]).epsilon(1e-9));
    CHECK(r.total == Approx(c.loss).epsilon(1e-9));
    const double clip = nw::clip_factor(nw::combined_norm(gram, c.shared), c.max_shared_norm);

    std::vector<double> expected(g0.grad.size(), 0.0), diff(g0.grad.size(), 0.0);
    const auto got = trained.parameters().grads();
    for (std::size_t e = 0; e < entries.size(); ++e)
      for (std::int64_t i = 0; i < entries[e].shape.numel(); ++i) {
        const std::size_t at = entries[e].offset + static_cast<std::size_t>(i);
        expected[at] = own[e] < 0 ? clip * (c.shared[0] * g0.grad[at] + c.shared[1] * g1.grad[at])
                                  : c.heads[own[e]] * (own[e] == 0 ? g0.grad[at] : g1.grad[at]);
        diff[at] = got[static_cast<std::int64_t>(at)] - expected[at];
      }
    REQUIRE(max_abs(expected) > 0.0);
    CHECK(max_abs(diff) <= 1e-9 * max_abs(expected));
  }
}

TEST_CASE("Trainer weighting: UW's log-variance gradient matches finite differences",
          "[train][trainer][weighting]") {
  nddr::Context<nddr::Cpu> ctx(1);
  const auto batch = make_batch(1);
  Net net({11, 3});
  std::vector<nddr::Rng::State> rngs;
  for (auto* r : net.rngs()) rngs.push_back(r->state());
  // Rate 0: the network stays put, so each step sees the same losses; only s changes.
  Train t(net, nddr::ConstantSchedule{0.0}, options("uw:init=0.3"));
  auto objective = [&](std::size_t i, double delta) {
    auto streams = net.rngs();
    for (std::size_t j = 0; j < streams.size(); ++j) streams[j]->set_state(rngs[j]);
    const std::vector<double> s0 = {0.3, 0.3};
    auto s = t.weighting_method()->parameters();
    for (std::size_t j = 0; j < s.size(); ++j) s[j] = s0[j] + (j == i ? delta : 0.0);
    return t.train_step(ctx, batch).total;
  };
  objective(0, 0.0);
  const std::vector<double> grad = t.weighting_parameter_gradient();
  REQUIRE(grad.size() == kTasks);
  constexpr double h = 1e-5;
  for (std::size_t i = 0; i < kTasks; ++i) {
    const double fd = (objective(i, h) - objective(i, -h)) / (2 * h);
    CHECK(grad[i] == Approx(fd).epsilon(1e-6));
  }
  // At a positive rate s moves against its gradient (SGD without decay on the method group).
  Net net2({11, 3});
  auto o = options("uw:init=0.3");
  o.weighting_lr_mult = 10.0;
  Train t2(net2, nddr::ConstantSchedule{0.01}, o);
  t2.train_step(ctx, batch);
  const auto g = t2.weighting_parameter_gradient();
  const auto s = t2.weighting_method()->parameters();
  for (std::size_t i = 0; i < kTasks; ++i) CHECK(s[i] == Approx(0.3 - 0.1 * g[i]).epsilon(1e-12));
}

TEST_CASE("Trainer weighting: 2N steps equal N + checkpoint + resume + N with stateful methods",
          "[train][trainer][weighting]") {
  constexpr std::int64_t kN = 3;
  nddr::Context<nddr::Cpu> ctx(1);
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  auto next = [](std::int64_t s) { return make_batch(s); };
  for (const std::string spec : {"dwa", "uw", "rlw:seed=7", "pcgrad", "nash:update_every=2",
                                 "gradnorm:alpha=1.5"}) {
    INFO("weighting " << spec);
    const auto dir = temp_dir("resume");
    auto opt = options(spec);
    opt.optimizer = nddr::SgdOptions::paper_multi_task();
    opt.steps_per_epoch = 2;  // DWA and GradNorm change their weights after epoch 1
    Net straight({11, 3});
    Train a(straight, schedule, opt);
    a.fit(ctx, 2 * kN + 2, next);

    const std::string ckpt = (dir / "half.safetensors").string();
    {
      Net first({11, 3});
      Train b(first, schedule, opt);
      b.fit(ctx, kN, next);
      b.save_checkpoint(ckpt);
    }
    nddr::NetworkOptions<Spec> other;
    other.seed = 999;
    Net resumed({11, 3}, other);
    Train c(resumed, schedule, opt);
    c.load_checkpoint(ckpt);
    c.fit(ctx, 2 * kN + 2, next);
    const auto va = straight.parameters().values();
    const auto vc = resumed.parameters().values();
    bool same = true;
    for (std::int64_t i = 0; i < va.numel(); ++i) same = same && va[i] == vc[i];
    CHECK(same);
    CHECK(a.weighting_method()->state() == c.weighting_method()->state());
    CHECK(a.history().back().weights == c.history().back().weights);
    CHECK(a.history().back().losses == c.history().back().losses);
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("Trainer weighting: every method trains a fixed batch, losses finite and falling",
          "[train][trainer][weighting]") {
  nddr::Context<nddr::Cpu> ctx(1);
  const auto batch = make_batch(2);
  for (const std::string spec : {"ew", "dwa", "uw", "rlw", "gradnorm", "mgda", "pcgrad", "cagrad",
                                 "imtl", "aligned", "nash"}) {
    INFO("weighting " << spec);
    Net net({11, 3});
    auto opt = options(spec);
    opt.steps_per_epoch = 3;
    // Nash-MTL scales the heads' gradients by alpha ~ 1 / |g_k| (only the shared part is
    // clipped), far above 1 on this small network: a smaller rate.
    Train t(net, nddr::ConstantSchedule{spec == "nash" ? 0.002 : 0.03}, opt);
    const auto first = t.train_step(ctx, batch);
    auto last = first;
    bool finite = true;
    for (int i = 0; i < 25; ++i) {
      last = t.train_step(ctx, batch);
      for (std::size_t k = 0; k < kTasks; ++k)
        finite = finite && std::isfinite(last.losses[k]) && std::isfinite(last.weights[k]);
    }
    CHECK(finite);
    CHECK(last.losses[0] + last.losses[1] < 0.8 * (first.losses[0] + first.losses[1]));
  }
}

TEST_CASE("Trainer weighting: logs carry the weights, bad options and checkpoints are errors",
          "[train][trainer][weighting]") {
  nddr::Context<nddr::Cpu> ctx(1);
  const auto dir = temp_dir("logs");
  auto opt = options("rlw", dir.string());
  opt.log_every = 1;
  {
    Net net({11, 3});
    Train t(net, nddr::ConstantSchedule{0.01}, opt);
    t.fit(ctx, 2, [](std::int64_t s) { return make_batch(s); });
    std::ifstream csv(dir / "log.csv");
    std::string header, row;
    std::getline(csv, header);
    std::getline(csv, row);
    CHECK(header.find(",weight_segmentation,weight_normal,") != std::string::npos);
    std::ifstream js(dir / "log.jsonl");
    std::getline(js, row);
    CHECK(row.find("\"weight_segmentation\":") != std::string::npos);
  }
  const std::string ckpt = (dir / "checkpoints" / "ckpt-0000000002.safetensors").string();
  REQUIRE(std::filesystem::exists(ckpt));
  {
    Net net({11, 3});
    Train plain(net, nddr::ConstantSchedule{0.01}, options(""));
    CHECK_THROWS_WITH(plain.load_checkpoint(ckpt),
                      Catch::Contains("trained with --weighting 'rlw:seed=0'"));
    Train other(net, nddr::ConstantSchedule{0.01}, options("pcgrad"));
    CHECK_THROWS_WITH(other.load_checkpoint(ckpt),
                      Catch::Contains("metadata 'weighting' is 'rlw:seed=0', expected 'pcgrad"));
  }
  Net net({11, 3});
  CHECK_THROWS_AS(Train(net, nddr::ConstantSchedule{0.01}, options("sgdw")), nddr::OptionError);
  CHECK_THROWS_WITH(Train(net, nddr::ConstantSchedule{0.01}, options("cagrad:c=x")),
                    Catch::Contains("TrainerOptions::weighting: cagrad:c=x"));
  std::filesystem::remove_all(dir);
}
