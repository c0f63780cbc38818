// weighting_step: the per-step cost and peak memory of each multi-task weighting method
// (docs/weighting.md) on NDDR-VGG16 (MultiTask<VGG16, VGG16, NDDR>, 40-class segmentation +
// normals) on the CPU, through `Trainer::train_step`, relative to EW in the same process.
//
//   weighting_step [--methods none,ew,uw,dwa,gradnorm,rlw,pcgrad,mgda,cagrad,imtl,aligned]
//                  [--batch 2] [--size 161] [--iters 3] [--warmup 1] [--threads N]
//
// Per method: a fresh network (same seed) and trainer, `warmup` untimed steps, `iters` timed
// ones; prints one JSON line per method (median seconds per step, peak RSS during the method's
// run), then a table with the ratios against EW. `none` is the trainer without a weighting
// method. Peak RSS: the process's high-water mark, restarted before each method (freed heap
// handed back with malloc_trim, then 5 written to /proc/self/clear_refs, Linux >= 4.0).
// bench/weighting_cpu.sh runs it (built with -DNDDR_BUILD_BENCH=ON, target weighting_step).
#include <nddr/nddr.hpp>
#include <nddr/train/trainer.hpp>
#include <nddr_apps/peak_memory.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace {

using Spec = nddr::MultiTask<nddr::VGG16, nddr::VGG16, nddr::NDDR>;
using Exp = nddr::Experiment<Spec, nddr::Tasks<nddr::Segmentation<40>, nddr::SurfaceNormal>>;
using Train = nddr::Trainer<Exp, nddr::Cpu, float>;

struct Args {
  std::vector<std::string> methods = {"none",   "ew",   "uw",     "dwa",  "gradnorm", "rlw",
                                      "pcgrad", "mgda", "cagrad", "imtl", "aligned"};
  std::int64_t batch = 2, size = 161;
  int iters = 3, warmup = 1, threads = 0;
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "weighting_step: " << why
            << "\nusage: weighting_step [--methods a,b,...] [--batch N] [--size S] [--iters N] "
               "[--warmup N] [--threads N]\n";
  std::exit(2);
}

std::int64_t integer(const std::string& flag, const char* v, std::int64_t lo, std::int64_t hi) {
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || x < lo || x > hi)
    usage(flag + ": expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
          "], got '" + v + "'");
  return x;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (i + 1 >= argc) usage(f + ": expected a value");
    const char* v = argv[++i];
    if (f == "--methods") {
      a.methods.clear();
      std::string s = v;
      for (std::size_t b = 0; b <= s.size();) {
        const std::size_t e = std::min(s.find(',', b), s.size());
        if (e == b) usage("--methods: an empty name");
        a.methods.push_back(s.substr(b, e - b));
        b = e + 1;
      }
    } else if (f == "--batch") {
      a.batch = integer(f, v, 1, 64);
    } else if (f == "--size") {
      a.size = integer(f, v, 16, 1024);
    } else if (f == "--iters") {
      a.iters = static_cast<int>(integer(f, v, 1, 1000));
    } else if (f == "--warmup") {
      a.warmup = static_cast<int>(integer(f, v, 0, 1000));
    } else if (f == "--threads") {
      a.threads = static_cast<int>(integer(f, v, 0, 1024));
    } else {
      usage("unknown flag '" + f + "'");
    }
  }
  for (const auto& m : a.methods)
    if (m != "none") nddr::weighting::make_weighting(m, 2, "--methods");  // OptionError
  return a;
}

Train::Batch make_batch(const Args& a, const nddr::Network<Spec, nddr::Cpu, float>& net) {
  nddr::Rng rng(7);
  const nddr::Shape in = nddr::Shape::nchw(a.batch, 3, a.size, a.size);
  const std::int64_t hw = net.output_shape(0, in).h();
  Train::Batch b;
  b.image = nddr::Tensor<float>(in);
  for (std::int64_t i = 0; i < b.image.numel(); ++i) b.image[i] = static_cast<float>(rng.normal());
  auto& labels = std::get<0>(b.targets);
  labels = nddr::Tensor<std::int32_t>(nddr::Shape{a.batch, hw, hw});
  for (std::int64_t i = 0; i < labels.numel(); ++i)
    labels[i] = static_cast<std::int32_t>(rng.below(40));
  auto& normals = std::get<1>(b.targets);
  normals = nddr::Tensor<float>(nddr::Shape::nchw(a.batch, 3, hw, hw));
  for (std::int64_t i = 0; i < normals.numel(); ++i)
    normals[i] = static_cast<float>(rng.normal());
  return b;
}

struct Result {
  std::string method;
  double median_s = 0.0, peak_mib = 0.0;
};

Result run(const Args& a, nddr::Context<nddr::Cpu>& ctx, const std::string& method) {
  nddr::cli::reset_peak_rss();
  nddr::Network<Spec, nddr::Cpu, float> net({40, 3});
  nddr::TrainerOptions o;
  o.loss_weights = {1.0, 20.0};
  o.optimizer = nddr::SgdOptions::paper_multi_task();
  o.progress = false;
  o.log_every = 0;
  if (method != "none") o.weighting = method;
  Train trainer(net, nddr::ConstantSchedule{1e-3}, o);
  const Train::Batch batch = make_batch(a, net);
  for (int i = 0; i < a.warmup; ++i) trainer.train_step(ctx, batch);
  std::vector<double> times;
  for (int i = 0; i < a.iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    trainer.train_step(ctx, batch);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const std::size_t n = times.size();
  Result r{method, n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]),
           nddr::cli::peak_rss_mib()};
  std::printf("{\"method\":\"%s\",\"network\":\"vgg16-nddr\",\"batch\":%lld,\"size\":%lld,"
              "\"threads\":%d,\"iters\":%d,\"median_s\":%.6f,\"min_s\":%.6f,\"max_s\":%.6f,"
              "\"peak_rss_mib\":%.1f}\n",
              method.c_str(), static_cast<long long>(a.batch), static_cast<long long>(a.size),
              ctx.threads(), a.iters, r.median_s, times.front(), times.back(), r.peak_mib);
  std::fflush(stdout);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    nddr::Context<nddr::Cpu> ctx;
    if (a.threads > 0) ctx.set_threads(a.threads);
    std::vector<Result> results;
    for (const auto& m : a.methods) results.push_back(run(a, ctx, m));
    const auto ew = std::find_if(results.begin(), results.end(),
                                 [](const Result& r) { return r.method == "ew"; });
    std::printf("\n| method | s / step | x EW | peak RSS (MiB) | x EW |\n"
                "|---|---:|---:|---:|---:|\n");
    for (const Result& r : results) {
      const bool ratio = ew != results.end();
      std::printf("| %s | %.3f | %s | %.0f | %s |\n", r.method.c_str(), r.median_s,
                  ratio ? std::to_string(r.median_s / ew->median_s).substr(0, 4).c_str() : "-",
                  r.peak_mib,
                  ratio ? std::to_string(r.peak_mib / ew->peak_mib).substr(0, 4).c_str() : "-");
    }
  } catch (const std::exception& e) {
    std::cerr << "weighting_step: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
