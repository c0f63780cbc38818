// Trainer: exact resume, non-finite loss stop, logs, checkpoint rotation, evaluation, learning.
#include <catch2/catch.hpp>

#include <nddr/nddr.hpp>
#include <nddr/train/trainer.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "../support/bf16.hpp"
#include "../support/seg_normal_batch.hpp"

namespace {

using Spec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
using Exp = nddr::Experiment<Spec, nddr::Tasks<nddr::Segmentation<11>, nddr::SurfaceNormal>>;
using Net = nddr::Network<Spec>;
using Train = nddr::Trainer<Exp>;

// A deterministic synthetic batch per step (tests/support/seg_normal_batch.hpp).
Train::Batch make_batch(std::int64_t step, std::int64_t n = 2, std::int64_t size = 16) {
  return nddr_test::seg_normal_batch<Train::Batch>(1000 + static_cast<std::uint64_t>(step), n, size,
                                                   size, 11);
}

nddr::TrainerOptions quiet(std::string dir = {}) {
  nddr::TrainerOptions o;
  o.loss_weights = {1.0, 20.0};
  o.progress = false;
  o.output_dir = std::move(dir);
  o.optimizer = nddr::SgdOptions::paper_multi_task();
  return o;
}

std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("nddr_trainer_" + name + "_" +
                                                     std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

template <class A, class B>
bool bitwise_equal(A a, B b) {
  if (a.numel() != b.numel()) return false;
  for (std::int64_t i = 0; i < a.numel(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

}  // namespace

TEST_CASE("Trainer: 2N steps equal N + checkpoint + resume + N, bit for bit", "[train][trainer]") {
  constexpr std::int64_t kN = 3;
  const auto dir = temp_dir("resume");
  nddr::Context<nddr::Cpu> ctx(2);
  const nddr::PolySchedule schedule{0.01, 100, 0.9};

  Net straight({11, 3});
  Train a(straight, schedule, quiet());
  a.fit(ctx, 2 * kN, [](std::int64_t s) { return make_batch(s); });

  const std::string ckpt = (dir / "half.safetensors").string();
  {
    Net first({11, 3});
    Train b(first, schedule, quiet());
    b.fit(ctx, kN, [](std::int64_t s) { return make_batch(s); });
    b.save_checkpoint(ckpt);
  }
  nddr::NetworkOptions<Spec> other;
  other.seed = 999;  // a different initialisation, entirely overwritten by the checkpoint
  Net resumed({11, 3}, other);
  Train c(resumed, schedule, quiet());
  c.load_checkpoint(ckpt);
  CHECK(c.step() == kN);
  c.fit(ctx, 2 * kN, [](std::int64_t s) { return make_batch(s); });

  CHECK(bitwise_equal(straight.parameters().values(), resumed.parameters().values()));
  CHECK(bitwise_equal(straight.parameters().buffer_values(), resumed.parameters().buffer_values()));
  CHECK(bitwise_equal(a.optimizer().state(), c.optimizer().state()));
  REQUIRE(a.history().size() == 2 * kN);
  CHECK(a.history().back().losses == c.history().back().losses);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Trainer: a non-finite loss stops training and names the step and task",
          "[train][trainer]") {
  const auto dir = temp_dir("nan");
  nddr::Context<nddr::Cpu> ctx(1);
  Net net({11, 3});
  Train t(net, nddr::PolySchedule{0.01, 100, 0.9}, quiet(dir.string()));
  t.fit(ctx, 2, [](std::int64_t s) { return make_batch(s); });  // writes ckpt at step 2
  const auto ckpt = dir / "checkpoints" / "ckpt-0000000002.safetensors";
  REQUIRE(std::filesystem::exists(ckpt));
  const auto bytes_before = std::filesystem::file_size(ckpt);
  const std::vector<float> before(net.parameters().values().data(),
                                  net.parameters().values().data() + net.parameters().values().numel());
  auto bad = make_batch(2);
  bad.image[5] = std::numeric_limits<float>::quiet_NaN();
  try {
    t.train_step(ctx, bad);
    FAIL("expected NonFiniteLossError");
  } catch (const nddr::NonFiniteLossError& e) {
    CHECK(e.step() == 2);
    CHECK_THAT(e.what(), Catch::Contains("step 2") && Catch::Contains("segmentation"));
  }
  CHECK(t.step() == 2);
  CHECK(bitwise_equal(net.parameters().values(), nddr::TensorView<const float>(before.data(), nddr::Shape{static_cast<std::int64_t>(before.size())})));
  CHECK(std::filesystem::file_size(ckpt) == bytes_before);
  Net again({11, 3});
  Train t2(again, nddr::PolySchedule{0.01, 100, 0.9}, quiet(dir.string()));
  CHECK(t2.resume());
  CHECK(t2.step() == 2);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Trainer: logs as JSON lines and CSV, keeps the last N checkpoints", "[train][trainer]") {
  const auto dir = temp_dir("logs");
  nddr::Context<nddr::Cpu> ctx(1);
  Net net({11, 3});
  auto opt = quiet(dir.string());
  opt.log_every = 2;
  opt.checkpoint_every = 1;
  opt.keep_checkpoints = 2;
  Train t(net, nddr::ConstantSchedule{0.01}, opt);
  int logged = 0;
  t.fit(ctx, 5, [](std::int64_t s) { return make_batch(s); },
        [&](const Train::StepResult&) { ++logged; });
  CHECK(logged == 3);  // steps 2, 4, 5
  std::ifstream js(dir / "log.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(js, line)) {
    ++lines;
    CHECK_THAT(line, Catch::Contains("\"loss_segmentation\":") && Catch::Contains("\"images_per_s\":"));
  }
  CHECK(lines == 3);
  std::ifstream csv(dir / "log.csv");
  std::getline(csv, line);
  CHECK(line == "step,lr,loss_segmentation,loss_normal,loss_total,images_per_s,elapsed_s");
  nddr::CheckpointDir cd(dir / "checkpoints", 2);
  auto files = cd.list();
  REQUIRE(files.size() == 2);
  CHECK(files.back().filename() == "ckpt-0000000005.safetensors");
  std::filesystem::remove_all(dir);
}

TEST_CASE("Trainer: checkpoint errors name the file and the tensor", "[train][trainer]") {
  const auto dir = temp_dir("errors");
  nddr::Context<nddr::Cpu> ctx(1);
  Net net({11, 3});
  Train t(net, nddr::ConstantSchedule{0.01}, quiet());
  const std::string path = (dir / "c.safetensors").string();
  t.save_checkpoint(path);
  // A network with another head width cannot take this checkpoint.
  Net other({7, 3});
  Train u(other, nddr::ConstantSchedule{0.01}, quiet());
  CHECK_THROWS_WITH(u.load_checkpoint(path),
                    Catch::Contains("c.safetensors") && Catch::Contains("task0.head.fc8.weight"));
  // A truncated file.
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  CHECK_THROWS_AS(t.load_checkpoint(path), nddr::IoError);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Trainer: learns a fixed batch and evaluates with the paper's protocol",
          "[train][trainer]") {
  nddr::Context<nddr::Cpu> ctx(2);
  Net net({11, 3});
  auto opt = quiet();
  opt.optimizer = nddr::SgdOptions{}.weight_decay(0.0);
  Train t(net, nddr::ConstantSchedule{0.05}, opt);
  const auto batch = make_batch(0, 4, 16);
  const double first = t.train_step(ctx, batch).total;
  double last = first;
  for (int i = 0; i < 40; ++i) last = t.train_step(ctx, batch).total;
  CHECK(last < 0.7 * first);
  auto metrics = t.evaluate(ctx, 2, [](std::int64_t i) { return make_batch(i); });
  auto values = Train::metric_values(metrics);
  REQUIRE(values.size() == 7);
  CHECK(values[0].name == "mIoU");
  CHECK((values[0].value >= 0.0 && values[0].value <= 100.0));
  CHECK(values[2].name == "Mean");
  CHECK((values[2].value >= 0.0 && values[2].value <= 180.0));
  CHECK(std::get<0>(metrics).valid_pixels() > 0);
  CHECK(net.training());  // mode restored
}

TEST_CASE("Trainer: periodic evaluation is called and logged", "[train][trainer]") {
  const auto dir = temp_dir("eval");
  nddr::Context<nddr::Cpu> ctx(1);
  Net net({11, 3});
  auto opt = quiet(dir.string());
  opt.eval_every = 2;
  Train t(net, nddr::ConstantSchedule{0.01}, opt);
  std::vector<std::int64_t> at;
  t.fit(ctx, 5, [](std::int64_t s) { return make_batch(s); }, {}, [&](std::int64_t step) {
    at.push_back(step);
    auto m = t.evaluate(ctx, 1, [](std::int64_t i) { return make_batch(100 + i); });
    t.log_metrics(Train::metric_values(m));
    CHECK(net.training());
  });
  CHECK(at == std::vector<std::int64_t>{2, 4});
  std::ifstream js(dir / "eval.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(js, line)) {
    ++lines;
    CHECK_THAT(line, Catch::Contains("\"segmentation/mIoU\":") && Catch::Contains("\"normals/Mean\":"));
  }
  CHECK(lines == 2);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Trainer: the before-update hook sees the gradients, write_outputs=false writes nothing",
          "[train][trainer]") {
  const auto dir = temp_dir("hook");
  nddr::Context<nddr::Cpu> ctx(1);
  Net plain({11, 3}), hooked({11, 3});
  Train a(plain, nddr::ConstantSchedule{0.01}, quiet());
  auto opt = quiet(dir.string());
  opt.write_outputs = false;
  opt.checkpoint_every = 1;
  Train b(hooked, nddr::ConstantSchedule{0.01}, opt);
  int calls = 0;
  // Halving the gradients before the update is what averaging over two identical ranks does
  // with a doubled loss; here it must change the parameters, so the hook ran before the step.
  b.set_before_update([&](nddr::Context<nddr::Cpu>&, Train::StepResult& r) {
    ++calls;
    CHECK(std::isfinite(r.total));
    auto g = hooked.parameters().grads();
    for (std::int64_t i = 0; i < g.numel(); ++i) g[i] *= 0.5f;
  });
  a.fit(ctx, 2, [](std::int64_t s) { return make_batch(s); });
  b.fit(ctx, 2, [](std::int64_t s) { return make_batch(s); });
  CHECK(calls == 2);
  CHECK_FALSE(bitwise_equal(plain.parameters().values(), hooked.parameters().values()));
  CHECK_FALSE(std::filesystem::exists(dir / "checkpoints"));
  CHECK_FALSE(std::filesystem::exists(dir / "log.jsonl"));
  CHECK_FALSE(b.resume());
  std::filesystem::remove_all(dir);
}

TEST_CASE("Trainer: BF16 convolutions (the conv_bf16 setting, CPU emulation) train like FP32 ones",
          "[train][trainer][bf16]") {
  // The check tests/cuda/trainer_test.cpp runs on a GPU, here with the CPU's emulation of the
  // GPU numerics (NDDR layers take their concatenate + Conv2d route under BF16). Segmentation
  // loss only: at initialisation the normals head of TinyNet puts out vectors of nearly zero
  // length at some pixels, where the normalised-cosine loss has gradients of 1e11, so the two
  // precisions' normals gradients differ wholesale there (a property of that loss, not of BF16).
  using FNet = nddr::Network<Spec, nddr::Cpu, float>;
  using FTrain = nddr::Trainer<Exp, nddr::Cpu, float>;
  nddr::Context<nddr::Cpu> ctx(2);
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  const auto batch = [](std::int64_t s) {
    return nddr_test::seg_normal_batch<FTrain::Batch>(500 + static_cast<std::uint64_t>(s % 2), 2,
                                                      32, 32, 11);
  };
  constexpr std::int64_t kSteps = 30;
  FNet fnet({11, 3}), bnet({11, 3});
  auto opt = quiet();
  opt.loss_weights = {1.0, 0.0};
  FTrain fp32(fnet, schedule, opt), bf16(bnet, schedule, opt);
  fp32.fit(ctx, kSteps, batch);
  {
    const nddr_test::ConvBf16Setting on(ctx, true);
    bf16.fit(ctx, kSteps, batch);
  }
  // Same weights at step 0: only the rounding differs.
  CHECK(bf16.history()[0].total == Approx(fp32.history()[0].total).epsilon(1e-2));
  CHECK(bf16.history()[0].total != fp32.history()[0].total);
  // Both learn, to about the same loss (later steps differ by up to ~10 % either way: an FP32
  // run on images scaled by 1.001 strays as far, so that is the training's sensitivity).
  const double f_end = nddr_test::mean_total_loss(fp32, kSteps - 6, kSteps);
  const double b_end = nddr_test::mean_total_loss(bf16, kSteps - 6, kSteps);
  INFO("loss at step 0: FP32 " << fp32.history()[0].total << ", BF16 " << bf16.history()[0].total
                              << "; mean of the last 6 steps: FP32 " << f_end << ", BF16 " << b_end);
  CHECK(f_end < 0.7 * fp32.history()[0].total);
  CHECK(b_end < 0.7 * bf16.history()[0].total);
  CHECK(b_end == Approx(f_end).epsilon(0.15));
}
