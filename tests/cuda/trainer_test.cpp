// Trainer<E, Cuda> equals Trainer<E, Cpu>: steps through fit (overlapped uploads) and
// train_step, losses, parameters, BN statistics and optimiser state in double; evaluation;
// non-finite losses and bad labels leave the parameters untouched; checkpoints written on one
// device load on the other. Self-skips without a device.
#include <catch2/catch.hpp>

#include <nddr/cuda.hpp>
#include <nddr/nddr.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/train/trainer.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../support/seg_normal_batch.hpp"
#include "../support/temp_dir.hpp"

#include "no_device.hpp"

namespace {

using Spec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
using Exp = nddr::Experiment<Spec, nddr::Tasks<nddr::Segmentation<11>, nddr::SurfaceNormal>>;
template <class D>
using Net = nddr::Network<Spec, D, double>;
template <class D>
using Train = nddr::Trainer<Exp, D, double>;
using nddr::Cpu;
using nddr::Cuda;

using nddr_test::no_device;

// A deterministic batch per step; labels (with ignored pixels) and normals (with invalid
// pixels) at `label_size`, which the trainer resizes to the outputs when they differ.
template <class B>
B make_batch(std::int64_t step, std::int64_t n = 2, std::int64_t size = 16,
             std::int64_t label_size = 16) {
  return nddr_test::seg_normal_batch<B>(500 + static_cast<std::uint64_t>(step), n, size,
                                        label_size, 11);
}

nddr::TrainerOptions quiet(std::string dir = {}) {
  nddr::TrainerOptions o;
  o.loss_weights = {1.0, 20.0};
  o.progress = false;
  o.output_dir = std::move(dir);
  o.optimizer = nddr::SgdOptions::paper_multi_task();
  return o;
}

std::vector<double> host(nddr::TensorView<const double, Cuda> v) {
  std::vector<double> h(static_cast<std::size_t>(v.numel()));
  nddr::Storage<Cuda>::download(h.data(), v.data(), h.size() * sizeof(double));
  return h;
}
std::vector<double> host(nddr::TensorView<const double, Cpu> v) {
  return std::vector<double>(v.data(), v.data() + v.numel());
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double scale = 1e-30, diff = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(b[i]));
    diff = std::max(diff, std::abs(a[i] - b[i]));
  }
  return diff / scale;
}

// Parameters, BN statistics and velocity of the two trainers, within `tol` relative.
void check_same_state(Train<Cuda>& g, Train<Cpu>& c, double tol) {
  const auto& gs = std::as_const(g.network().parameters());
  const auto& cs = std::as_const(c.network().parameters());
  CHECK(max_rel_diff(host(gs.values()), host(cs.values())) <= tol);
  CHECK(max_rel_diff(host(gs.buffer_values()), host(cs.buffer_values())) <= tol);
  CHECK(max_rel_diff(host(std::as_const(g.optimizer()).velocity()),
                     host(std::as_const(c.optimizer()).velocity())) <= tol);
  CHECK(g.step() == c.step());
}

}  // namespace

TEST_CASE("Trainer<Cuda>: fit and train_step match the CPU trainer in double",
          "[cuda][trainer]") {
  if (no_device()) return;
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu(0);
  Net<Cpu> hnet({11, 3});
  Net<Cuda> dnet({11, 3});
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  Train<Cpu> ht(hnet, schedule, quiet());
  Train<Cuda> dt(dnet, schedule, quiet());
  // The CPU runs other convolution algorithms (Winograd, tap-skipping) than cuDNN, so the two
  // agree to ~1e-9 after a few steps, not to the last bit. Labels larger than the outputs
  // exercise the host-side target resizing too.
  const auto big = [](std::int64_t s) { return make_batch<Train<Cpu>::Batch>(s, 2, 16, 32); };
  const auto big_d = [](std::int64_t s) { return make_batch<Train<Cuda>::Batch>(s, 2, 16, 32); };
  ht.fit(cpu, 4, big);
  dt.fit(gpu, 4, big_d);
  REQUIRE(dt.history().size() == 4);
  for (std::size_t s = 0; s < 4; ++s)
    for (std::size_t k = 0; k < 2; ++k) {
      INFO("step " << s << " task " << k);
      CHECK(dt.history()[s].losses[k] ==
            Approx(ht.history()[s].losses[k]).epsilon(1e-7));
    }
  check_same_state(dt, ht, 1e-7);

  // Single steps alternate the upload slots; a batch of another size reallocates them.
  for (std::int64_t s = 4; s < 7; ++s) {
    const std::int64_t n = s == 5 ? 3 : 2;
    const auto rc = ht.train_step(cpu, make_batch<Train<Cpu>::Batch>(s, n));
    const auto rg = dt.train_step(gpu, make_batch<Train<Cuda>::Batch>(s, n));
    CHECK(rg.total == Approx(rc.total).epsilon(1e-7));
  }
  check_same_state(dt, ht, 1e-7);

  // Evaluation: outputs computed on the GPU, metrics on the host, as the CPU trainer.
  const auto mc = Train<Cpu>::metric_values(
      ht.evaluate(cpu, 2, [](std::int64_t i) { return make_batch<Train<Cpu>::Batch>(100 + i, 1); }));
  const auto mg = Train<Cuda>::metric_values(
      dt.evaluate(gpu, 2, [](std::int64_t i) { return make_batch<Train<Cuda>::Batch>(100 + i, 1); }));
  REQUIRE(mc.size() == mg.size());
  for (std::size_t i = 0; i < mc.size(); ++i) {
    INFO(mc[i].task << "/" << mc[i].name);
    CHECK(mg[i].value == Approx(mc[i].value).epsilon(1e-7).margin(1e-7));
  }
}

TEST_CASE("Trainer<Cuda>: a non-finite loss or a bad label leaves the parameters untouched",
          "[cuda][trainer]") {
  if (no_device()) return;
  nddr::Context<Cuda> gpu(0);
  Net<Cuda> dnet({11, 3});
  Train<Cuda> dt(dnet, nddr::ConstantSchedule{0.01}, quiet());
  dt.fit(gpu, 1, [](std::int64_t s) { return make_batch<Train<Cuda>::Batch>(s); });
  const auto before = host(std::as_const(dnet.parameters()).values());
  const auto velocity = host(std::as_const(dt.optimizer()).velocity());

  auto nan = make_batch<Train<Cuda>::Batch>(1);
  nan.image[3] = std::numeric_limits<double>::quiet_NaN();
  try {
    dt.train_step(gpu, nan);
    FAIL("expected NonFiniteLossError");
  } catch (const nddr::NonFiniteLossError& e) {
    CHECK(e.step() == 1);
    CHECK_THAT(e.what(), Catch::Contains("step 1"));
  }
  CHECK(dt.step() == 1);
  CHECK(host(std::as_const(dnet.parameters()).values()) == before);
  CHECK(host(std::as_const(dt.optimizer()).velocity()) == velocity);

  auto bad = make_batch<Train<Cuda>::Batch>(1);
  for (std::int64_t i = 0; i < 16 * 16; ++i) std::get<0>(bad.targets)[i] = 77;  // all of sample 0
  CHECK_THROWS_WITH(dt.train_step(gpu, bad), Catch::Contains("label 77") && Catch::Contains("11 classes"));
  CHECK(dt.step() == 1);
  CHECK(host(std::as_const(dnet.parameters()).values()) == before);

  // A good batch after the failures trains normally.
  dt.train_step(gpu, make_batch<Train<Cuda>::Batch>(1));
  CHECK(dt.step() == 2);
  CHECK(host(std::as_const(dnet.parameters()).values()) != before);
}

TEST_CASE("Trainer<Cuda>: checkpoints written on one device resume on the other",
          "[cuda][trainer]") {
  if (no_device()) return;
  nddr_test::TempDir dir("nddr_cuda_ckpt_");
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu(0);
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  const auto cb = [](std::int64_t s) { return make_batch<Train<Cpu>::Batch>(s); };
  const auto gb = [](std::int64_t s) { return make_batch<Train<Cuda>::Batch>(s); };

  // CPU writes at step 2; the GPU resumes from it (its own initialisation differs) and both go
  // on to step 4.
  Net<Cpu> hnet({11, 3});
  Train<Cpu> ht(hnet, schedule, quiet());
  ht.fit(cpu, 2, cb);
  ht.save_checkpoint(dir.file("cpu.safetensors"));
  nddr::NetworkOptions<Spec> other;
  other.seed = 4242;
  Net<Cuda> dnet({11, 3}, other);
  Train<Cuda> dt(dnet, schedule, quiet());
  dt.load_checkpoint(dir.file("cpu.safetensors"));
  CHECK(dt.step() == 2);
  check_same_state(dt, ht, 0.0);
  ht.fit(cpu, 4, cb);
  dt.fit(gpu, 4, gb);
  check_same_state(dt, ht, 1e-7);

  // The GPU writes at step 4; a fresh CPU trainer loads exactly the GPU's state.
  dt.save_checkpoint(dir.file("gpu.safetensors"));
  Net<Cpu> hnet2({11, 3}, other);
  Train<Cpu> ht2(hnet2, schedule, quiet());
  ht2.load_checkpoint(dir.file("gpu.safetensors"));
  check_same_state(dt, ht2, 0.0);
}

TEST_CASE("Trainer<Cuda>: CUDA Graph replays equal eager steps, dropout and checkpoints included",
          "[cuda][trainer][graph]") {
  if (no_device()) return;
  nddr_test::TempDir dir("nddr_cuda_graph_");
  nddr::Context<Cuda> gpu(0);
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  const auto batch = [](std::int64_t s) { return make_batch<Train<Cuda>::Batch>(s, 2, 32, 32); };
  Net<Cuda> enet({11, 3}), gnet({11, 3});
  Train<Cuda> eager(enet, schedule, quiet());
  auto gopt = quiet();
  gopt.cuda_graph = true;
  Train<Cuda> graph(gnet, schedule, gopt);
  eager.fit(gpu, 8, batch);
  graph.fit(gpu, 8, batch);
  const auto& graphs = graph.device_state()->graphs();
  INFO("graphs disabled: " << graphs.disabled_reason());
  REQUIRE_FALSE(graphs.disabled());
  // step 0 eager (warm-up), steps 1 and 2 captured (one graph per upload slot), 3..7 replayed
  CHECK(graphs.captures() == 2);
  CHECK(graphs.replays() == 5);
  const auto same = [&](double tol) {
    CHECK(max_rel_diff(host(std::as_const(gnet.parameters()).values()),
                       host(std::as_const(enet.parameters()).values())) <= tol);
    CHECK(max_rel_diff(host(std::as_const(gnet.parameters()).buffer_values()),
                       host(std::as_const(enet.parameters()).buffer_values())) <= tol);
    CHECK(max_rel_diff(host(std::as_const(graph.optimizer()).velocity()),
                       host(std::as_const(eager.optimizer()).velocity())) <= tol);
    const auto er = enet.rngs(), gr = gnet.rngs();
    REQUIRE(er.size() == gr.size());
    for (std::size_t i = 0; i < er.size(); ++i) CHECK(gr[i]->state().counter == er[i]->state().counter);
  };
  same(1e-9);
  for (std::size_t s = 0; s < 8; ++s) CHECK(graph.history()[s].total == Approx(eager.history()[s].total).epsilon(1e-9));

  // Evaluation reallocates buffers: the next steps capture again and still match.
  const auto eval = [](std::int64_t i) { return make_batch<Train<Cuda>::Batch>(50 + i, 1, 24, 24); };
  eager.evaluate(gpu, 1, eval);
  graph.evaluate(gpu, 1, eval);
  eager.fit(gpu, 12, batch);
  graph.fit(gpu, 12, batch);
  CHECK(graphs.captures() == 4);
  same(1e-9);

  // A checkpoint written by the graph trainer resumes (eagerly or with graphs) identically.
  graph.save_checkpoint(dir.file("g.safetensors"));
  Net<Cuda> rnet({11, 3});
  Train<Cuda> resumed(rnet, schedule, gopt);
  resumed.load_checkpoint(dir.file("g.safetensors"));
  resumed.fit(gpu, 16, batch);
  eager.fit(gpu, 16, batch);
  CHECK(max_rel_diff(host(std::as_const(rnet.parameters()).values()),
                     host(std::as_const(enet.parameters()).values())) <= 1e-9);
}

TEST_CASE("Trainer<Cuda>: BF16 convolutions train like FP32 ones, eagerly and as CUDA Graphs",
          "[cuda][trainer][bf16]") {
  if (no_device()) return;
  using FNet = nddr::Network<Spec, Cuda, float>;
  using FTrain = nddr::Trainer<Exp, Cuda, float>;
  // Deterministic algorithms, so that the graph replays can be compared with eager steps.
  nddr::Context<Cuda> gpu(0);
  gpu.set_settings(nddr::NumericSettings{}.conv_deterministic(true));
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  // Two batches in turn.
  const auto batch = [](std::int64_t s) { return make_batch<FTrain::Batch>(s % 2, 2, 32, 32); };
  constexpr std::int64_t kSteps = 30;
  FNet fnet({11, 3}), bnet({11, 3}), gnet({11, 3});
  // Segmentation loss only (see the CPU twin of this test in tests/train/trainer_test.cpp).
  auto fopt = quiet();
  fopt.loss_weights = {1.0, 0.0};
  FTrain fp32(fnet, schedule, fopt);
  FTrain bf16(bnet, schedule, fopt);
  auto gopt = fopt;
  gopt.cuda_graph = true;
  FTrain graph(gnet, schedule, gopt);
  fp32.fit(gpu, kSteps, batch);
  {
    const nddr_test::ConvBf16Setting on(gpu, true);
    bf16.fit(gpu, kSteps, batch);
    graph.fit(gpu, kSteps, batch);
  }
  // Same weights at step 0: only the rounding differs. Both learn, to about the same loss (the
  // CPU emulation of tests/train/trainer_test.cpp shows the spread to expect).
  CHECK(bf16.history()[0].total == Approx(fp32.history()[0].total).epsilon(1e-2));
  CHECK(bf16.history()[0].total != fp32.history()[0].total);
  const double f_end = nddr_test::mean_total_loss(fp32, kSteps - 6, kSteps);
  const double b_end = nddr_test::mean_total_loss(bf16, kSteps - 6, kSteps);
  INFO("mean loss of the last 6 steps: FP32 " << f_end << ", BF16 " << b_end);
  CHECK(f_end < 0.7 * fp32.history()[0].total);
  CHECK(b_end < 0.7 * bf16.history()[0].total);
  CHECK(b_end == Approx(f_end).epsilon(0.15));
  // The graph replays of BF16 steps equal the eager BF16 steps.
  const auto& graphs = graph.device_state()->graphs();
  INFO("graphs disabled: " << graphs.disabled_reason());
  REQUIRE_FALSE(graphs.disabled());
  CHECK(graphs.replays() > 0);
  for (std::size_t s = 0; s < static_cast<std::size_t>(kSteps); ++s)
    CHECK(graph.history()[s].total == Approx(bf16.history()[s].total).epsilon(1e-5));
  const auto params = [](const FNet& net) {
    const auto v = std::as_const(net.parameters()).values();
    std::vector<float> h(static_cast<std::size_t>(v.numel()));
    nddr::Storage<Cuda>::download(h.data(), v.data(), h.size() * sizeof(float));
    return std::vector<double>(h.begin(), h.end());
  };
  CHECK(max_rel_diff(params(gnet), params(bnet)) <= 1e-5);
}

TEST_CASE("Trainer<Cuda>: switching the context to BF16 mid-run captures the step again",
          "[cuda][trainer][bf16][graphs]") {
  // The captured graph bakes in the convolutions' precision: the graph key holds the context's
  // settings, so a replay after the switch would be a bug, and graph and eager runs agree.
  if (no_device()) return;
  using FNet = nddr::Network<Spec, Cuda, float>;
  using FTrain = nddr::Trainer<Exp, Cuda, float>;
  nddr::Context<Cuda> gpu(0);
  gpu.set_settings(nddr::NumericSettings{}.conv_deterministic(true));
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  const auto batch = [](std::int64_t s) { return make_batch<FTrain::Batch>(s % 2, 2, 16, 16); };
  FNet enet({11, 3}), gnet({11, 3});
  auto opt = quiet();
  FTrain eager(enet, schedule, opt);
  opt.cuda_graph = true;
  FTrain graph(gnet, schedule, opt);
  eager.fit(gpu, 5, batch);
  graph.fit(gpu, 5, batch);
  const auto& graphs = graph.device_state()->graphs();
  const auto captures = graphs.captures();
  CHECK(captures >= 1);
  gpu.set_settings(nddr::NumericSettings(gpu.settings()).conv_bf16(true));
  eager.fit(gpu, 10, batch);
  graph.fit(gpu, 10, batch);
  CHECK(graphs.captures() > captures);
  for (std::size_t s = 0; s < 10; ++s) {
    INFO("step " << s + 1);
    CHECK(graph.history()[s].total == eager.history()[s].total);
  }
}

namespace {

// Weighting tests: default loss weights, the paper's SGD, epochs of `epoch` steps (DWA and
// GradNorm read the epoch means).
nddr::TrainerOptions weighted(std::string spec, std::string dir = {}, std::int64_t epoch = 1) {
  nddr::TrainerOptions o = quiet(std::move(dir));
  o.loss_weights = {1.0, 1.0};
  o.weighting = std::move(spec);
  o.steps_per_epoch = epoch;
  return o;
}

}  // namespace

TEST_CASE("Trainer<Cuda>: every weighting method trains like the CPU trainer in double",
          "[cuda][trainer][weighting]") {
  if (no_device()) return;
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu(0);
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  const auto cb = [](std::int64_t s) { return make_batch<Train<Cpu>::Batch>(s); };
  const auto gb = [](std::int64_t s) { return make_batch<Train<Cuda>::Batch>(s); };
  for (const std::string spec : {"ew", "dwa", "uw", "gradnorm", "rlw:seed=3", "mgda",
                                 "pcgrad:seed=5", "cagrad:c=0.4", "imtl", "aligned", "nash"}) {
    INFO("weighting " << spec);
    Net<Cpu> hnet({11, 3});
    Net<Cuda> dnet({11, 3});
    Train<Cpu> ht(hnet, schedule, weighted(spec));
    Train<Cuda> dt(dnet, schedule, weighted(spec));
    ht.fit(cpu, 3, cb);
    dt.fit(gpu, 3, gb);
    REQUIRE(dt.history().size() == 3);
    for (std::size_t s = 0; s < 3; ++s) {
      INFO("step " << s);
      const auto& g = dt.history()[s];
      const auto& c = ht.history()[s];
      for (std::size_t k = 0; k < 2; ++k) {
        CHECK(g.losses[k] == Approx(c.losses[k]).epsilon(1e-7));
        CHECK(g.weights[k] == Approx(c.weights[k]).epsilon(1e-6));
      }
      CHECK(g.total == Approx(c.total).epsilon(1e-7));
    }
    // Not the loss weights: the method's weights were used (DWA's differ from epoch 2 on).
    if (spec == "dwa") CHECK(dt.history()[2].weights[0] != 1.0);
    check_same_state(dt, ht, 1e-6);
    const auto gs = dt.weighting_method()->state(), cs = ht.weighting_method()->state();
    REQUIRE(gs.values.size() == cs.values.size());
    for (std::size_t i = 0; i < gs.values.size(); ++i)
      CHECK(gs.values[i] == Approx(cs.values[i]).epsilon(1e-6).margin(1e-12));
    const auto gg = dt.weighting_parameter_gradient(), cg = ht.weighting_parameter_gradient();
    REQUIRE(gg.size() == cg.size());
    for (std::size_t i = 0; i < gg.size(); ++i) CHECK(gg[i] == Approx(cg[i]).epsilon(1e-6));
  }
}

TEST_CASE("Trainer<Cuda>: a weighted run resumed mid-run equals the uninterrupted one",
          "[cuda][trainer][weighting]") {
  if (no_device()) return;
  nddr::Context<Cuda> gpu(0);
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  const auto gb = [](std::int64_t s) { return make_batch<Train<Cuda>::Batch>(s); };
  for (const std::string spec : {"uw", "gradnorm"}) {
    INFO("weighting " << spec);
    nddr_test::TempDir dir("nddr_cuda_weighting_resume_");
    Net<Cuda> whole_net({11, 3}), first_net({11, 3}), resumed_net({11, 3});
    Train<Cuda> whole(whole_net, schedule, weighted(spec, {}, 2));
    whole.fit(gpu, 4, gb);
    {
      Train<Cuda> first(first_net, schedule, weighted(spec, dir.file("run"), 2));
      first.fit(gpu, 3, gb);  // a checkpoint at step 3, mid-epoch
    }
    Train<Cuda> resumed(resumed_net, schedule, weighted(spec, dir.file("run"), 2));
    REQUIRE(resumed.resume());
    CHECK(resumed.step() == 3);
    resumed.fit(gpu, 4, gb);
    CHECK(host(std::as_const(resumed_net.parameters()).values()) ==
          host(std::as_const(whole_net.parameters()).values()));
    CHECK(resumed.weighting_method()->state() == whole.weighting_method()->state());
    CHECK(resumed.weighting_parameter_gradient() == whole.weighting_parameter_gradient());
    for (std::size_t k = 0; k < 2; ++k)
      CHECK(resumed.history().back().weights[k] == whole.history().back().weights[k]);
  }
}

TEST_CASE("Trainer<Cuda>: weighting averages through the Reducer and refuses CUDA Graphs",
          "[cuda][trainer][weighting]") {
  if (no_device()) return;
  nddr::Context<Cuda> gpu(0);
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  const auto gb = [](std::int64_t s) { return make_batch<Train<Cuda>::Batch>(s); };

  auto opt = weighted("mgda");
  opt.cuda_graph = true;
  Net<Cuda> net({11, 3});
  CHECK_THROWS_AS(Train<Cuda>(net, schedule, opt), nddr::OptionError);
  CHECK_THROWS_WITH(Train<Cuda>(net, schedule, opt),
                    Catch::Contains("mgda") && Catch::Contains("cuda_graph"));

  // The data-parallel hook (DataParallel::attach installs it with NCCL) sees the device's
  // (K, P) task gradients and the host losses before the method. Doubling every task gradient
  // there leaves MGDA's weights (scale-invariant) and doubles the combined gradient.
  Net<Cuda> plain_net({11, 3}), hooked_net({11, 3});
  Train<Cuda> plain(plain_net, schedule, weighted("mgda"));
  Train<Cuda> hooked(hooked_net, schedule, weighted("mgda"));
  const auto p = std::as_const(hooked_net.parameters()).grads().numel();
  int device_calls = 0, host_calls = 0;
  hooked.set_reducer(Train<Cuda>::Reducer{
      [&](nddr::Context<Cuda>& ctx, nddr::TensorView<double, Cuda> rows) {
        ++device_calls;
        CHECK(rows.numel() == 2 * p);
        ctx.synchronize();
        std::vector<double> h(static_cast<std::size_t>(rows.numel()));
        nddr::Storage<Cuda>::download(h.data(), rows.data(), h.size() * sizeof(double));
        for (double& x : h) x *= 2.0;
        nddr::Storage<Cuda>::upload(rows.data(), h.data(), h.size() * sizeof(double));
      },
      [&](std::span<double> losses) {
        ++host_calls;
        CHECK(losses.size() == 2);
      }});
  plain.fit(gpu, 1, gb);
  hooked.fit(gpu, 1, gb);
  CHECK(device_calls == 1);
  CHECK(host_calls == 1);
  for (std::size_t k = 0; k < 2; ++k)
    CHECK(hooked.history()[0].weights[k] == Approx(plain.history()[0].weights[k]).epsilon(1e-12));
  const auto hg = host(std::as_const(hooked_net.parameters()).grads());
  const auto pg = host(std::as_const(plain_net.parameters()).grads());
  std::size_t bad = 0;
  for (const auto& e : std::as_const(plain_net.parameters()).parameters())
    for (std::int64_t i = 0; i < e.shape.numel(); ++i) {
      const std::size_t at = e.offset + static_cast<std::size_t>(i);
      if (hg[at] != Approx(2.0 * pg[at]).epsilon(1e-10) && bad++ == 0)
        FAIL_CHECK(e.name << "[" << i << "]: " << hg[at] << " vs 2 * " << pg[at]);
    }
  CHECK(bad == 0);
}

namespace {

// A task of the user's own, defined here and not in the library: depth-like regression whose
// loss is L1 + 0.5 * L2 over the measured pixels (0 = no measurement), written once for both
// devices, and whose metric is the share of measured pixels predicted within 0.25.
struct WithinMetric {
  std::int64_t count = 0, hits = 0;
  template <class T>
  void update(nddr::TensorView<const T> p, nddr::TensorView<const T> g) {
    for (std::int64_t i = 0; i < p.numel(); ++i) {
      if (std::isnan(g[i]) || g[i] == T(0)) continue;
      ++count;
      hits += std::abs(p[i] - g[i]) < T(0.25);
    }
  }
};

struct RobustDepth {
  static constexpr const char* name = "robust_depth";
  static constexpr std::int64_t outputs = 1;
  template <class T>
  using target_t = T;
  template <class T, class D>
  static void loss(nddr::LossSink<T, D>& sink, nddr::TensorView<const T, D> p,
                   nddr::TensorView<const T, D> g, nddr::TensorView<T, D> dp) {
    const auto measured = nddr::DenseLossOptions{}.zero_invalid(true);
    auto l1 = measured, l2 = measured;
    nddr::ops::dense_loss(sink, p, g, dp, l1.form(nddr::DenseLossForm::kL1));
    nddr::ops::dense_loss(sink, p, g, dp, l2.form(nddr::DenseLossForm::kL2).scale(0.5));
  }
  using metric_type = WithinMetric;
  static metric_type make_metric() { return {}; }
  static std::vector<nddr::MetricValue> metric_values(const metric_type& m) {
    return {{name, "within0.25", 100.0 * static_cast<double>(m.hits) /
                                     static_cast<double>(std::max<std::int64_t>(m.count, 1)),
             true}};
  }
};
static_assert(nddr::concepts::require_task<RobustDepth>());

using UserExp = nddr::Experiment<Spec, nddr::Tasks<RobustDepth, nddr::BinarySegmentation>>;
template <class D>
using UserTrain = nddr::Trainer<UserExp, D, double>;

// Images, depth targets in [0.5, 3] with zeros and NaNs, binary targets with NaNs.
template <class B>
B user_batch(std::int64_t step, std::int64_t n = 2, std::int64_t size = 32) {
  nddr::Rng rng(900 + static_cast<std::uint64_t>(step));
  B b;
  b.image = nddr::Tensor<double>(nddr::Shape::nchw(n, 3, size, size));
  for (std::int64_t i = 0; i < b.image.numel(); ++i) b.image[i] = rng.uniform(-1.0, 1.0);
  auto& depth = std::get<0>(b.targets);
  auto& mask = std::get<1>(b.targets);
  depth = nddr::Tensor<double>(nddr::Shape::nchw(n, 1, size, size));
  mask = nddr::Tensor<double>(depth.shape());
  for (std::int64_t i = 0; i < depth.numel(); ++i) {
    const double u = rng.uniform(0.0, 1.0);
    depth[i] = u < 0.1 ? 0.0 : (u < 0.15 ? std::nan("") : 0.5 + 2.5 * rng.uniform(0.0, 1.0));
    const double v = rng.uniform(0.0, 1.0);
    mask[i] = v < 0.05 ? std::nan("") : (v < 0.35 ? 1.0 : 0.0);
  }
  return b;
}

std::vector<double> values(const nddr::ParameterStore<double, Cuda>& s) {
  return host(s.values());
}
std::vector<double> values(const nddr::ParameterStore<double, Cpu>& s) {
  return host(s.values());
}

}  // namespace

TEST_CASE("Trainer<Cuda>: a user task with its own loss and metric trains like the CPU, "
          "eagerly and as CUDA Graphs",
          "[cuda][trainer][task]") {
  if (no_device()) return;
  nddr::Context<Cpu> cpu(2);
  nddr::Context<Cuda> gpu(0);
  Net<Cpu> hnet({1, 1});
  Net<Cuda> enet({1, 1}), gnet({1, 1});
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  auto opt = quiet();
  opt.loss_weights = {1.0, 2.0};
  UserTrain<Cpu> ht(hnet, schedule, opt);
  UserTrain<Cuda> eager(enet, schedule, opt);
  opt.cuda_graph = true;
  UserTrain<Cuda> graph(gnet, schedule, opt);
  ht.fit(cpu, 5, [](std::int64_t s) { return user_batch<UserTrain<Cpu>::Batch>(s); });
  eager.fit(gpu, 5, [](std::int64_t s) { return user_batch<UserTrain<Cuda>::Batch>(s); });
  graph.fit(gpu, 5, [](std::int64_t s) { return user_batch<UserTrain<Cuda>::Batch>(s); });
  const auto& graphs = graph.device_state()->graphs();
  INFO("graphs disabled: " << graphs.disabled_reason());
  REQUIRE_FALSE(graphs.disabled());
  CHECK(graphs.captures() == 2);  // step 0 eager, 1 and 2 captured, 3 and 4 replayed
  CHECK(graphs.replays() == 2);
  for (std::size_t s = 0; s < 5; ++s)
    for (std::size_t k = 0; k < 2; ++k) {
      INFO("step " << s << " task " << k);
      const double c = ht.history()[s].losses[k];
      CHECK(std::isfinite(c));
      CHECK(c > 0.0);
      CHECK(eager.history()[s].losses[k] == Approx(c).epsilon(1e-7));
      CHECK(graph.history()[s].losses[k] == Approx(c).epsilon(1e-7));
    }
  const auto hv = values(std::as_const(hnet.parameters()));
  CHECK(max_rel_diff(values(std::as_const(enet.parameters())), hv) <= 1e-7);
  CHECK(max_rel_diff(values(std::as_const(gnet.parameters())), hv) <= 1e-7);

  // The user's metric and the binary task's metrics, from GPU outputs, as on the CPU.
  const auto eval_c = [](std::int64_t i) { return user_batch<UserTrain<Cpu>::Batch>(70 + i, 1); };
  const auto eval_g = [](std::int64_t i) { return user_batch<UserTrain<Cuda>::Batch>(70 + i, 1); };
  const auto mc = UserTrain<Cpu>::metric_values(ht.evaluate(cpu, 2, eval_c));
  const auto mg = UserTrain<Cuda>::metric_values(eager.evaluate(gpu, 2, eval_g));
  REQUIRE(mc.size() == 4);
  REQUIRE(mg.size() == mc.size());
  CHECK(mc[0].task == "robust_depth");
  for (std::size_t i = 0; i < mc.size(); ++i) {
    INFO(mc[i].task << "/" << mc[i].name);
    CHECK(mg[i].value == Approx(mc[i].value).epsilon(1e-7).margin(1e-7));
  }
}

namespace {

/// Task's loss (weight 0.7) on the GPU through the trainer's device sink against the CPU's:
/// value and gradient, in double.
template <class Task>
void check_device_task(nddr::Context<Cuda>& gpu, const nddr::io::SafetensorsFile& f,
                       const std::string& key) {
  INFO(Task::name << " on " << key);
  nddr::Context<Cpu> cpu(1);
  const auto p = f.tensor<double>(key + ".p"), g = f.tensor<double>(key + ".g");
  nddr::Tensor<double> grad(p.shape());
  const double want = nddr::task_loss<Task>(cpu, p.cview(), g.cview(), grad.view(), 0.7);
  nddr::detail::TrainerDevice<Cuda, double> dev(gpu, 1, 1);
  const auto dp = nddr::to_device(gpu, p), dg = nddr::to_device(gpu, g);
  nddr::Tensor<double, Cuda> dgrad(p.shape());
  dgrad.zero();
  auto sink = dev.loss_sink(gpu, 0, 0.7, Task::name, dg.data());
  Task::loss(sink, dp.cview(), dg.cview(), dgrad.view());
  dev.losses().queue_reads(gpu);
  dev.losses().mark_ready(gpu);
  CHECK(dev.finished_loss(gpu, 0, Task::name, dg.data()) == Approx(want).epsilon(1e-12));
  CHECK(max_rel_diff(host(dgrad.cview()), host(grad.cview())) <= 1e-12);
}

}  // namespace

TEST_CASE("LossSink<Cuda>: the dense tasks' losses and gradients equal the CPU's",
          "[cuda][task]") {
  if (no_device()) return;
  nddr::Context<Cuda> gpu(0);
  const auto f = nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/dense_tasks.safetensors");
  check_device_task<nddr::Depth>(gpu, f, "depth");
  check_device_task<nddr::DepthTask<nddr::DenseLossForm::kL2>>(gpu, f, "depth");
  check_device_task<nddr::DenseRegression<3, nddr::DenseLossForm::kL2>>(gpu, f, "reg3");
  check_device_task<nddr::BinarySegmentation>(gpu, f, "bin");
  check_device_task<nddr::BinarySegmentationTask<false>>(gpu, f, "bin");
}
