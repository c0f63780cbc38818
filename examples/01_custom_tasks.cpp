// 01_custom_tasks: NDDR-CNN on your own task set, end to end (docs/tutorial.md walks through it).
//
// The task set: MultiFashion (two Fashion-MNIST items on a 36 x 36 canvas, top-left and
// bottom-right; Sener & Koltun / Lin et al.'s recipe, built from Debian's dataset-fashion-mnist).
// Task 0 classifies the top-left item, task 1 the bottom-right item. Everything below is yours to
// replace:
//   1. a backbone (three conv stages of your own) and a classifier head,
//   2. a task type with a loss (here: 10-way item classification) and its metric,
//   3. the network spec MultiTask<Backbone, Backbone, NDDR>, an Experiment and a Trainer.
//
// Usage: 01_custom_tasks [--steps 300] [--batch 32] [--threads 2] [--device cpu|cuda|cuda:N]
//        (01_custom_tasks --help; the flags' syntax and errors: docs/cli.md)
#if defined(NDDR_WITH_CUDA)
#include <nddr/cuda.hpp>  // --device cuda: the CUDA backend, declared before the library
#endif
#include <nddr/data/fashion.hpp>  // Fashion-MNIST: link nddr::image_io (reads gzipped IDX)
#include <nddr/nddr.hpp>
#include <nddr_apps/cli.hpp>     // the examples' command-line parser (apps/, not installed)
#include <nddr_apps/optim_flags.hpp>  // --optimizer, --schedule, --warmup, ...

#include <cstdint>
#include <cstdio>
#include <string>

namespace my {

// 1a. A stage: conv 3x3 + BN + ReLU + 3x3 max pool. `stride` is the down-sampling factor, which
//     MultiTask checks across tasks so that fusion layers join maps of the same size.
template <int S, std::int64_t In, std::int64_t Out, std::int64_t Stride>
struct ConvStage {
  static constexpr const char* name = "stage";
  static constexpr std::int64_t in_channels = In, out_channels = Out, stride = Stride;
  template <class T, class D>
  static nddr::Sequential<T, D> build() {
    const std::string n = "conv" + std::to_string(S);
    nddr::Sequential<T, D> s;
    s.add(n, nddr::Conv2d<T, D>(In, Out, 3, nddr::Conv2dOptions{}.same().bias(false)))
        .add(n + ".bn", nddr::BatchNorm2d<T, D>(Out))
        .add(n + ".relu", nddr::ReLU<T, D>())
        .add("pool" + std::to_string(S),
             nddr::MaxPool2d<T, D>(nddr::Pool2dOptions{}.kernel(3).stride(Stride).same()));
    return s;
  }
};

// 1b. A head: global average pooling and a 1x1 classifier named fc8 (so the optimiser gives its
//     weight x10 and its bias x20 learning rate, as in the paper).
struct PoolClassifier {
  static constexpr const char* name = "pool_classifier";
  template <class T, class D>
  static nddr::Sequential<T, D> build(std::int64_t in, std::int64_t outputs) {
    nddr::Sequential<T, D> s;
    s.add("gap", nddr::GlobalAvgPool<T, D>()).add("fc8", nddr::OutputConv2d<T, D>(in, outputs, 1));
    return s;
  }
};

// 1c. The backbone: a flat list of stages and the head.
struct SmallNet {
  static constexpr const char* name = "small";
  static constexpr std::int64_t input_channels = 1;
  using stages = nddr::StageList<ConvStage<1, 1, 16, 2>, ConvStage<2, 16, 32, 2>,
                                 ConvStage<3, 32, 32, 1>>;
  using head = PoolClassifier;
};

// 2. A task: name, output channels, target element type, its loss (written once for every
//    device with the ops of nddr/ops/task_loss.hpp: the sink applies the task weight, and on a
//    GPU the value stays on the device until the trainer reads the step back) and its metric.
struct ItemClass {
  static constexpr const char* name = "item";
  static constexpr std::int64_t outputs = 10;
  template <class T>
  using target_t = std::int32_t;
  template <class T, class D>
  static void loss(nddr::LossSink<T, D>& sink, nddr::TensorView<const T, D> prediction,
                   nddr::TensorView<const std::int32_t, D> target,
                   nddr::TensorView<T, D> dprediction) {
    // (N, 10, 1, 1) logits as (N, 10) for the classification form of the op.
    const nddr::Shape s{prediction.shape()[0], outputs};
    nddr::ops::cross_entropy_loss(sink, prediction.reshaped(s), target,
                                  dprediction.empty() ? dprediction : dprediction.reshaped(s));
  }
  // The metric of the task, for Trainer::evaluate and the results table.
  using metric_type = nddr::AccuracyMetric;
  static metric_type make_metric() { return metric_type(); }
  static std::vector<nddr::MetricValue> metric_values(const metric_type& m) {
    return {{"item", "Accuracy", 100.0 * m.accuracy(), true}};
  }
};
static_assert(nddr::concepts::require_task<ItemClass>());

}  // namespace my

// 3-5. Data, network, trainer, training and evaluation on the device of `ctx`.
template <class D>
int run(nddr::Context<D>& ctx, std::int64_t steps, std::int64_t batch, double lr,
        const nddr::cli::OptimizerFlags& optim) {
  // 3. Data: MultiFashion composites (deterministic from the seed).
  const auto train_src = nddr::data::FashionMnist::load(nddr::data::kFashionMnistDir,
                                                        nddr::data::Split::kTrain);
  const auto test_src = nddr::data::FashionMnist::load(nddr::data::kFashionMnistDir,
                                                       nddr::data::Split::kTest);
  const auto train = nddr::data::make_multi_fashion(train_src, 20000, 1);
  const auto test = nddr::data::make_multi_fashion(test_src, 1000, 2);

  // 4. The network spec, the experiment, the network and the trainer (on device D; batches
  //    stay in host memory, the trainer uploads them).
  using Spec = nddr::MultiTask<my::SmallNet, my::SmallNet, nddr::NDDR>;
  //    AnyOptimizer: SGD, Adam or AdamW as --optimizer says (nddr::Sgd, nddr::Adam or
  //    nddr::AdamW fix one at compile time).
  using Exp = nddr::Experiment<Spec, nddr::Tasks<my::ItemClass, my::ItemClass>, nddr::AnyOptimizer>;
  using Train = nddr::Trainer<Exp, D>;
  nddr::NetworkOptions<Spec> nopt;
  nopt.fusion_lr_mult = 10.0;  // NDDR group; the paper's x100 is tuned for lr 1e-3
  nddr::Network<Spec, D> net({10, 10}, nopt);
  typename Train::options_type topt;
  topt.log_every = 50;
  topt.optimizer = nddr::cli::optimizer_options(optim, nddr::SgdOptions{});
  nddr::cli::set_weighting(topt, optim);
  Train trainer(net, nddr::cli::schedule_from(optim, lr, steps), topt);
  std::printf("%lld parameters, %lld in the NDDR group\n",
              static_cast<long long>(net.parameters().parameter_count()),
              [&] {
                long long n = 0;
                for (const auto& e : net.parameters().parameters())
                  if (net.parameters().groups()[e.group].name == "nddr") n += e.shape.numel();
                return n;
              }());

  auto to_batch = [](nddr::data::MultiFashionBatch<float> b) {
    typename Train::Batch out;
    out.image = std::move(b.image);
    std::get<0>(out.targets) = std::move(b.left);
    std::get<1>(out.targets) = std::move(b.right);
    return out;
  };
  nddr::Rng order(3);
  trainer.fit(ctx, steps, [&](std::int64_t) {
    std::vector<std::int64_t> idx;
    for (std::int64_t i = 0; i < batch; ++i)
      idx.push_back(static_cast<std::int64_t>(order.below(static_cast<std::uint64_t>(train.size()))));
    return to_batch(train.template batch<float>(idx));
  });

  // 5. Evaluation with the tasks' metrics.
  const std::int64_t eval_batch = 100;
  auto metrics = trainer.evaluate(ctx, test.size() / eval_batch, [&](std::int64_t b) {
    std::vector<std::int64_t> idx;
    for (std::int64_t i = b * eval_batch; i < (b + 1) * eval_batch; ++i) idx.push_back(i);
    return to_batch(test.template batch<float>(idx));
  });
  const auto values = Train::metric_values(metrics);
  std::printf("test accuracy: top-left item %.1f %%, bottom-right item %.1f %%\n", values[0].value,
              values[1].value);
  return 0;
}

int main(int argc, char** argv) {
  std::int64_t steps = 300, batch = 32;
  int threads = 2;
  std::string device = "cpu";
  double lr = 0.05;
  nddr::cli::OptimizerFlags optim;
  nddr::cli::ArgParser p("01_custom_tasks",
                         "NDDR-CNN on your own task set: two item classifiers on MultiFashion "
                         "(docs/tutorial.md).");
  p.integer("steps", steps, "training steps", std::int64_t{1})
      .integer("batch", batch, "images per step", std::int64_t{1}, std::int64_t{4096})
      .integer("threads", threads, "CPU threads", 1, nddr::cli::kMaxThreads)
      .device("device", device, "cpu | cuda | cuda:N")
      .real("lr", lr, "base learning rate", nddr::cli::RealRange::positive());
  nddr::cli::add_optimizer_flags(p, optim, "5e-4");
  if (const auto status = p.parse_or_exit(argc, argv)) return *status;
  try {
    nddr::cli::check_optimizer_flags(p, optim, steps);
  } catch (const nddr::cli::UsageError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return nddr::cli::kUsageExitCode;
  }
  try {
    const auto choice = nddr::cli::parse_device("01_custom_tasks", device);
    if (choice.cuda) {
      nddr::cli::require_cuda_backend("01_custom_tasks", device);
#if defined(NDDR_WITH_CUDA)
      nddr::Context<nddr::Cuda> gpu(choice.index);
      return run(gpu, steps, batch, lr, optim);
#endif
    }
    nddr::Context<nddr::Cpu> cpu(threads);
    return run(cpu, steps, batch, lr, optim);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
