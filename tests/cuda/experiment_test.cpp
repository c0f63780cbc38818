// nddr-nyuv2's driver with --device cuda: the same tiny NDDR run on the CPU and on the GPU
// (float) agree, checkpoints written by the GPU run resume on the CPU, cross-stitch trains on
// the GPU; a run with a weighting method (--weighting) on the GPU. Self-skips without a device.
#include <catch2/catch.hpp>

#include <nddr/cuda.hpp>
#include <nddr/nddr.hpp>
#include <nddr_apps/nyuv2_experiment.hpp>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include "../support/nyu_fixture.hpp"
#include "../support/temp_dir.hpp"

#include "no_device.hpp"

namespace {

namespace ex = nddr::experiments;

using nddr_test::no_device;

ex::NyuV2Config tiny_run(const std::string& data, const std::string& out, const std::string& method,
                         const std::string& device, const std::string& steps = "4") {
  auto c = ex::parse_nyuv2_args({"--data-dir", data, "--method", method, "--backbone", "tiny",
                                 "--crop", "33", "--batch", "2", "--steps", steps, "--threads",
                                 "2", "--loader-threads", "1", "--quiet", "--output-dir", out,
                                 "--log-every", "1", "--checkpoint-every", "2", "--device",
                                 device});
  REQUIRE(c.has_value());
  // On the GPU, deterministic algorithms: the graph-vs-eager comparisons want the same bits from
  // two float runs, and cuDNN's default choices may add with atomics.
  c->deterministic = device != "cpu";
  return *c;
}

}  // namespace

TEST_CASE("nddr-nyuv2 --device cuda: trains, evaluates and resumes like the CPU run",
          "[cuda][experiments]") {
  if (no_device()) return;
  nddr_test::TempDir tmp("nddr_cuda_nyu_");
  const std::string data = tmp.file("nyu");
  nddr_test::write_nyu(data);
  std::ostringstream cpu_log, gpu_log;
  const auto cpu = ex::run_nyuv2(tiny_run(data, tmp.file("cpu"), "nddr", "cpu"), cpu_log);
  const auto gpu = ex::run_nyuv2(tiny_run(data, tmp.file("gpu"), "nddr", "cuda:0"), gpu_log);
  CHECK_THAT(gpu_log.str(), Catch::Contains("training on CUDA device 0"));
  CHECK(gpu.steps == 4);
  REQUIRE(gpu.metrics.size() == cpu.metrics.size());
  for (std::size_t i = 0; i < cpu.metrics.size(); ++i) {
    INFO(cpu.metrics[i].task << "/" << cpu.metrics[i].name);
    // Float training on two devices with different convolution algorithms: 4 steps agree to
    // a few pixels of the 2 x 40 x 48 test set (measured on an H200: 0.8 points of accuracy).
    CHECK(gpu.metrics[i].value == Approx(cpu.metrics[i].value).margin(3.0));
  }
  // --cuda-graph: the same run captured and replayed gives the eager GPU run's results.
  auto graphed = tiny_run(data, tmp.file("gpu_graph"), "nddr", "cuda:0");
  graphed.cuda_graph = true;
  std::ostringstream graph_log;
  const auto gg = ex::run_nyuv2(graphed, graph_log);
  REQUIRE(gg.metrics.size() == gpu.metrics.size());
  for (std::size_t i = 0; i < gpu.metrics.size(); ++i)
    CHECK(gg.metrics[i].value == Approx(gpu.metrics[i].value).margin(1e-3));
  // The GPU run's checkpoint (step 4) resumes on the CPU: 2 more steps there.
  auto more = tiny_run(data, tmp.file("gpu"), "nddr", "cpu", "6");
  more.resume = true;
  std::ostringstream resumed;
  const auto r = ex::run_nyuv2(more, resumed);
  CHECK_THAT(resumed.str(), Catch::Contains("resumed from step 4"));
  CHECK(r.steps == 6);

  // Cross-stitch trains on the GPU too (its mixing kernels, tests/cuda/subspace_mix_test.cpp).
  std::ostringstream cs_log;
  const auto cs = ex::run_nyuv2(tiny_run(data, tmp.file("cs"), "cross-stitch", "cuda", "2"), cs_log);
  CHECK_THAT(cs_log.str(), Catch::Contains("training on CUDA device 0"));
  CHECK(cs.steps == 2);
  for (const auto& m : cs.metrics) {
    INFO(m.task << "/" << m.name);
    CHECK(std::isfinite(m.value));
  }
}

TEST_CASE("nddr-nyuv2 --device cuda --weighting: trains, logs the weights and resumes on the CPU",
          "[cuda][experiments][weighting]") {
  if (no_device()) return;
  nddr_test::TempDir tmp("nddr_cuda_nyu_weighting_");
  const std::string data = tmp.file("nyu");
  nddr_test::write_nyu(data);
  auto gpu_cfg = tiny_run(data, tmp.file("gpu"), "nddr", "cuda:0");
  gpu_cfg.weighting = "uw";
  std::ostringstream gpu_log;
  const auto gpu = ex::run_nyuv2(gpu_cfg, gpu_log);
  CHECK_THAT(gpu_log.str(), Catch::Contains("training on CUDA device 0"));
  CHECK(gpu.steps == 4);
  for (const auto& m : gpu.metrics) {
    INFO(m.task << "/" << m.name);
    CHECK(std::isfinite(m.value));
  }
  std::ifstream jsonl(tmp.file("gpu") + "/log.jsonl");
  std::string first;
  REQUIRE(std::getline(jsonl, first));
  CHECK_THAT(first, Catch::Contains("\"weight_"));
  // UW's checkpointed state (log-variances and their momentum) resumes on the CPU.
  auto more = tiny_run(data, tmp.file("gpu"), "nddr", "cpu", "6");
  more.weighting = "uw";
  more.resume = true;
  std::ostringstream resumed;
  const auto r = ex::run_nyuv2(more, resumed);
  CHECK_THAT(resumed.str(), Catch::Contains("resumed from step 4"));
  CHECK(r.steps == 6);
}

// Table 5's backbone: the full-width DeepLab-ResNet-101 trains on the GPU through the driver.
// On the emulator every convolution is an exact loop, so the frames are 12 x 12 (training crops
// 9 x 9, test images 2 x 2 after the stride 8 of the backbone) to keep the run to seconds.
TEST_CASE("nddr-nyuv2 --backbone resnet101 --device cuda: trains and evaluates",
          "[cuda][experiments][resnet]") {
  if (no_device()) return;
  nddr_test::TempDir tmp("nddr_cuda_nyu_resnet_");
  const std::string data = tmp.file("nyu");
  nddr_test::write_nyu(data, 12, 12);
  auto c = ex::parse_nyuv2_args({"--data-dir", data, "--method", "nddr", "--backbone",
                                 "resnet101", "--crop", "9", "--batch", "1", "--steps", "1",
                                 "--threads", "2", "--loader-threads", "1", "--quiet",
                                 "--eval-limit", "1", "--output-dir", tmp.file("gpu"),
                                 "--device", "cuda"});
  REQUIRE(c.has_value());
  std::ostringstream log;
  const auto r = ex::run_nyuv2(*c, log);
  CHECK_THAT(log.str(), Catch::Contains("training on CUDA device 0"));
  CHECK(r.steps == 1);  // one step: full-width ResNet-101 columns take ~100 s on the emulator
  REQUIRE(!r.metrics.empty());
  for (const auto& m : r.metrics) {
    INFO(m.task << "/" << m.name);
    CHECK(std::isfinite(m.value));
  }
  // Table 5 has no shortcut rows: refused on the command line, before anything runs.
  CHECK_THROWS_WITH(ex::parse_nyuv2_args({"--data-dir", data, "--backbone", "resnet101",
                                          "--shortcut"}),
                    Catch::Contains("no --shortcut with --backbone resnet101"));
}
