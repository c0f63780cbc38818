// nddr-demo's runs (run_demo), compiled once in the nddr_apps library (apps/CMakeLists.txt).
#include "nddr_apps/demo.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <tuple>

#include "nddr/backbones/tiny.hpp"
#include "nddr/ops/resize.hpp"
#include "nddr/data/fashion.hpp"
#include "nddr/distributed/auto.hpp"
#include "nddr/fusion/cross_stitch.hpp"
#include "nddr/fusion/nddr.hpp"
#include "nddr/fusion/none.hpp"
#include "nddr/multitask/multitask.hpp"
#include "nddr/multitask/network.hpp"
#include "nddr/train/trainer.hpp"
#include "nddr/viz/plot.hpp"
#include "nddr_apps/peak_memory.hpp"

#if defined(NDDR_WITH_CUDA)
#include "nddr/cuda.hpp"  // the GPU backend (--device cuda), when the program links nddr::cuda
#endif

namespace nddr::viz {

namespace detail {

using DemoSeg = Segmentation<data::DenseFashion::kClasses>;

// Network outputs of a task list.
template <class TaskList>
struct demo_outputs;
template <class... X>
struct demo_outputs<Tasks<X...>> {
  static constexpr std::array<std::int64_t, sizeof...(X)> value{X::outputs...};
};

// Moves the targets of `b` that task `X` needs.
template <class X, class T>
auto take_target(data::DenseFashionBatch<T>& b) {
  if constexpr (std::is_same_v<X, DemoSeg>)
    return std::move(b.seg);
  else
    return std::move(b.normal);
}

// The demo's fixed data: both splits, and batch i of training as indices drawn from the seed.
struct DemoData {
  data::DenseFashion train;
  data::DenseFashion test;
};

inline std::vector<std::int64_t> demo_train_indices(const DemoOptions& o, std::int64_t step) {
  Rng rng(random_bits(o.seed ^ 0x5eedba7c4ULL, static_cast<std::uint64_t>(step)));
  std::vector<std::int64_t> idx(static_cast<std::size_t>(o.batch));
  for (auto& i : idx) i = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(o.train_samples)));
  return idx;
}

constexpr std::int64_t kEvalBatch = 50;

// Writes predictions.png: for four test images, input | seg GT | seg prediction | normal GT |
// normal prediction, each upscaled x4 (nearest). Outputs are up-sampled bilinearly to the
// label size as in the evaluation; segmentation takes the arg-max, normals are normalised.
template <class NetT>
void write_predictions(Context<Cpu>& ctx, NetT& net, const DemoData& d, const std::string& path) {
  std::vector<std::int64_t> idx = {0, 1, 2, 3};
  auto b = d.test.template batch<float>(idx);
  const bool was = net.training();
  net.set_training(false);
  auto out = net.forward(ctx, b.image.cview());
  const std::int64_t s = d.test.side(), plane = s * s;
  Tensor<float> seg_up(Shape::nchw(4, out[0].shape().c(), s, s));  // (4, 11, S, S)
  Tensor<float> nor_up(Shape::nchw(4, 3, s, s));                    // (4, 3, S, S)
  const auto up = ResizeOptions{}.size(s, s).mode(ResizeMode::kBilinearTfLegacy);
  ops::resize_forward(ctx, out[0], seg_up.view(), up);
  ops::resize_forward(ctx, out[1], nor_up.view(), up);
  net.set_training(was);
  const double lo = -d.test.mean / d.test.std, hi = (1.0 - d.test.mean) / d.test.std;
  std::vector<io::Image8> rows;
  for (std::int64_t n = 0; n < 4; ++n) {
    Tensor<std::int32_t> pred(Shape{s, s});
    const std::int64_t classes = seg_up.shape().c();
    for (std::int64_t p = 0; p < plane; ++p) {
      std::int64_t best = 0;
      for (std::int64_t c = 1; c < classes; ++c)
        if (seg_up[(n * classes + c) * plane + p] > seg_up[(n * classes + best) * plane + p]) best = c;
      pred[p] = static_cast<std::int32_t>(best);
    }
    Tensor<float> np(Shape{3, s, s});
    for (std::int64_t p = 0; p < plane; ++p) {
      double v[3], norm = 0;
      for (int c = 0; c < 3; ++c) {
        v[c] = nor_up[(n * 3 + c) * plane + p];
        norm += v[c] * v[c];
      }
      norm = norm > 0 ? std::sqrt(norm) : 1.0;
      for (int c = 0; c < 3; ++c) np[c * plane + p] = static_cast<float>(v[c] / norm);
    }
    const TensorView<const float> img(b.image.data() + n * plane, Shape{s, s});
    const TensorView<const std::int32_t> gt(b.seg.data() + n * plane, Shape{s, s});
    const TensorView<const float> ngt(b.normal.data() + n * 3 * plane, Shape{3, s, s});
    rows.push_back(hconcat({upscale_nearest(gray_image(img, lo, hi), 4),
                            upscale_nearest(segmentation_image(gt), 4),
                            upscale_nearest(segmentation_image(pred.cview()), 4),
                            upscale_nearest(normal_image(ngt), 4),
                            upscale_nearest(normal_image(np.cview()), 4)}));
  }
  io::write_png(path, vconcat(rows));
}

// Peak memory of one run: on the CPU the process's resident-set high-water mark
// (nddr_apps/peak_memory.hpp), on a GPU the most device memory nddr's tensors held.
template <class D>
void reset_peak_memory() {
#if defined(NDDR_WITH_CUDA)
  if constexpr (!std::is_same_v<D, Cpu>) return cuda::MemoryPool::instance().reset_peak();
#endif
  cli::reset_peak_rss();
}
template <class D>
double peak_memory_mib() {
#if defined(NDDR_WITH_CUDA)
  if constexpr (!std::is_same_v<D, Cpu>)
    return static_cast<double>(cuda::MemoryPool::instance().peak_bytes()) / (1024.0 * 1024.0);
#endif
  return cli::peak_rss_mib();
}

template <class Spec>
NetworkOptions<Spec> demo_network_options(const DemoOptions& o) {
  NetworkOptions<Spec> nopt;
  nopt.seed = o.seed;
  nopt.fusion_lr_mult = o.fusion_lr_mult;
  nopt.shortcut_channels = o.shortcut_channels;
  return nopt;
}

// Trains and evaluates one model on `ctx`'s device; `after(host_ctx, host_net)` runs on the
// trained network (on the CPU: a host copy of a GPU network). A non-empty `weighting` (a
// --weightings method) replaces --weighting for this run.
template <class Spec, class TaskList, class D, class After>
DemoRow demo_run_on(Context<D>& ctx, const std::string& method, const std::string& slug,
                    const std::string& weighting, const DemoOptions& o, const DemoData& d,
                    std::ostream& log, After&& after) {
  reset_peak_memory<D>();
  using Exp = Experiment<Spec, TaskList, AnyOptimizer>;  // one Trainer for every --optimizer
  using Train = Trainer<Exp, D>;
  constexpr std::size_t K = Exp::task_count;
  const NetworkOptions<Spec> nopt = demo_network_options<Spec>(o);
  Network<Spec, D> net(demo_outputs<TaskList>::value, nopt);
  // Under mpirun -np N (built with nddr::mpi) one replica of N drawing its own batch each step;
  // rank 0 alone writes. Alone: changes nothing.
  auto dp = [&] {
    if constexpr (std::is_same_v<D, Cpu>)
      return std::make_unique<distributed::AutoDataParallel<Network<Spec, D>>>(net);
    else
      return std::make_unique<distributed::AutoDataParallel<Network<Spec, D>>>(net, ctx);
  }();
  typename Train::options_type topt;
  topt.optimizer = cli::optimizer_options(
      o.optim, K == 1 ? SgdOptions::paper_single_task() : SgdOptions::paper_multi_task());
  if (K > 1) cli::set_weighting(topt, o.optim);  // single-task baselines stay plain
  if (!weighting.empty()) {
    topt.weighting = weighting;
    // DWA and GradNorm read epoch means: without --weighting-epoch, one pass over the data.
    if (topt.steps_per_epoch == 0)
      topt.steps_per_epoch = std::max<std::int64_t>(1, o.train_samples / o.batch);
  }
  topt.loss_weights.clear();
  for (std::size_t k = 0; k < K; ++k)
    topt.loss_weights.push_back(Train::task_names()[k] == std::string("normal") ? o.normal_weight : 1.0);
  topt.output_dir = (std::filesystem::path(o.output_dir) / "runs" / slug).string();
  topt.keep_checkpoints = 1;
  topt.log_every = o.log_every;
  topt.progress = o.progress;
  topt.name = slug;
  if (dp->is_root()) std::filesystem::remove_all(topt.output_dir);  // fresh logs; no resume
  dp->barrier();
  Train trainer(net, cli::schedule_from(o.optim, o.base_lr, o.steps), dp->trainer_options(topt));
  dp->attach(ctx, trainer);
  const auto to_batch = [](data::DenseFashionBatch<float> b) {
    typename Train::Batch out;
    out.image = std::move(b.image);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((std::get<I>(out.targets) = take_target<typename TaskList::template task<I>>(b)), ...);
    }(std::make_index_sequence<K>{});
    return out;
  };
  log << "== " << method << " ==\n" << std::flush;
  const auto start = std::chrono::steady_clock::now();
  trainer.fit(ctx, o.steps, [&](std::int64_t step) {
    const auto idx = demo_train_indices(o, step * dp->size() + dp->rank());
    return to_batch(d.train.template batch<float>(idx));
  });
  DemoRow row;
  row.method = method;
  row.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::int64_t eval_batches = (o.test_samples + kEvalBatch - 1) / kEvalBatch;
  const auto metrics = trainer.evaluate(ctx, eval_batches, [&](std::int64_t i) {
    std::vector<std::int64_t> idx;
    for (std::int64_t j = i * kEvalBatch; j < std::min(o.test_samples, (i + 1) * kEvalBatch); ++j)
      idx.push_back(j);
    return to_batch(d.test.template batch<float>(idx));
  });
  row.metrics = Train::metric_values(metrics);
  row.peak_mib = peak_memory_mib<D>();
  for (std::size_t k = 0; k < K; ++k) {
    std::vector<double> l;
    for (const auto& r : trainer.history()) l.push_back(r.losses[k] / topt.loss_weights[k]);
    row.losses.emplace_back(Train::task_names()[k], std::move(l));
  }
  if (dp->is_root()) {
    if constexpr (std::is_same_v<D, Cpu>) {
      after(ctx, net);
    } else {
      Network<Spec, Cpu> host(demo_outputs<TaskList>::value, nopt);
      auto copy = [](auto dst, auto src) {
        Storage<D>::download(dst.data(), src.data(), static_cast<std::size_t>(src.numel()) * sizeof(float));
      };
      copy(host.parameters().values(), std::as_const(net.parameters()).values());
      copy(host.parameters().buffer_values(), std::as_const(net.parameters()).buffer_values());
      Context<Cpu> host_ctx(o.threads);
      after(host_ctx, host);
    }
  }
  return row;
}

// `demo_run_on` on the device of `o.device`.
template <class Spec, class TaskList, class After>
DemoRow demo_run(const std::string& method, const std::string& slug, const DemoOptions& o,
                 const DemoData& d, std::ostream& log, After&& after,
                 const std::string& weighting = {}) {
  const cli::DeviceChoice device = cli::parse_device("nddr-demo", o.device);
  if (device.cuda) {
#if defined(NDDR_WITH_CUDA)
    Context<Cuda> ctx =
        cli::open_device("nddr-demo", o.device, [&] { return Context<Cuda>(device.index); });
    return demo_run_on<Spec, TaskList>(ctx, method, slug, weighting, o, d, log, after);
#else
    cli::require_cuda_backend("nddr-demo", o.device);
#endif
  }
  Context<Cpu> ctx(o.threads);
  return demo_run_on<Spec, TaskList>(ctx, method, slug, weighting, o, d, log, after);
}

inline std::string format_value(double v, int precision = 2) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream os;
  os << std::fixed << std::setprecision(precision) << v;
  return os.str();
}

// Mean of the values in windows of `w` steps, plotted at the window's last step.
inline Series smoothed(const std::string& label, const std::vector<double>& y, Rgb color) {
  Series s;
  s.label = label;
  s.color = color;
  const std::size_t w = std::max<std::size_t>(1, y.size() / 60);
  for (std::size_t i = 0; i + w <= y.size(); i += w) {
    double sum = 0;
    for (std::size_t j = i; j < i + w; ++j) sum += y[j];
    s.x.push_back(static_cast<double>(i + w));
    s.y.push_back(sum / static_cast<double>(w));
  }
  return s;
}

}  // namespace detail

namespace detail {

// A run directory name for weighting spec `w`: its letters and digits, '_' for the rest.
std::string weighting_slug(std::string_view w) {
  std::string out(w);
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return out;
}

// The six runs of the demo on seed `o.seed` (per-run logs under runs/<slug><suffix>), with their
// Delta_m against the single-task rows; NDDR writes `pred_path` unless it is empty.
std::vector<DemoRow> demo_methods(const DemoOptions& o, const DemoData& d, std::ostream& log,
                                  const std::string& suffix, const std::string& pred_path,
                                  const DeltaOptions& delta) {
  using Two = Tasks<DemoSeg, SurfaceNormal>;
  const auto nothing = [](Context<Cpu>&, auto&) {};
  std::vector<DemoRow> rows;
  rows.push_back(demo_run<MultiTask<FashionNet, None>, Tasks<DemoSeg>>(
      "single-task seg", "single_seg" + suffix, o, d, log, nothing));
  rows.push_back(demo_run<MultiTask<FashionNet, None>, Tasks<SurfaceNormal>>(
      "single-task normals", "single_normal" + suffix, o, d, log, nothing));
  rows.push_back(demo_run<MultiTask<FashionNet, FashionNet, Shared<5>>, Two>(
      "split (Shared<5>)", "split" + suffix, o, d, log, nothing));
  rows.push_back(demo_run<MultiTask<FashionNet, FashionNet, CrossStitch>, Two>(
      "cross-stitch", "cross_stitch" + suffix, o, d, log, nothing));
  // One closure type for every NDDR run (one instantiation): predictions for the first only.
  std::string pred = pred_path;
  const auto nddr_after = [&](Context<Cpu>& ctx, auto& net) {
    if (!pred.empty()) write_predictions(ctx, net, d, pred);
  };
  rows.push_back(demo_run<MultiTask<FashionNet, FashionNet, NDDR>, Two>(
      "NDDR", "nddr" + suffix, o, d, log, nddr_after));
  pred.clear();
  rows.push_back(demo_run<MultiTask<FashionNet, FashionNet, Shortcut<NDDR>>, Two>(
      "NDDR-Shortcut", "nddr_shortcut" + suffix, o, d, log, nothing));
  for (const std::string& w : o.weightings)  // --weightings: NDDR under each method
    rows.push_back(demo_run<MultiTask<FashionNet, FashionNet, NDDR>, Two>(
        "NDDR + " + w, "nddr_" + weighting_slug(w) + suffix, o, d, log, nddr_after, w));

  // Delta_m against the union of the two single-task runs' metrics.
  std::vector<MetricValue> baseline = rows[0].metrics;
  baseline.insert(baseline.end(), rows[1].metrics.begin(), rows[1].metrics.end());
  for (std::size_t i = 2; i < rows.size(); ++i)
    rows[i].delta_m = delta_m(rows[i].metrics, baseline, delta);
  return rows;
}

// Mean and sample standard deviation (n - 1; 0 for one value) of `v`; NaN when a value is.
std::pair<double, double> mean_std(const std::vector<double>& v) {
  double sum = 0.0;
  for (double x : v) sum += x;
  const double mean = sum / static_cast<double>(v.size());
  double ss = 0.0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0};
}

// --seeds: rows holding every seed's mean, and their standard deviations (`mean_std`), metric by
// metric, for Delta_m and train time alike; the losses are the first seed's (for the curves).
std::pair<std::vector<DemoRow>, std::vector<DemoRow>> aggregate_seeds(
    const std::vector<std::vector<DemoRow>>& per_seed) {
  std::vector<DemoRow> means = per_seed.front(), stds = per_seed.front();
  for (std::size_t i = 0; i < means.size(); ++i) {
    const auto over_seeds = [&](auto&& value) {
      std::vector<double> v;
      for (const auto& rows : per_seed) v.push_back(value(rows[i]));
      return mean_std(v);
    };
    for (std::size_t m = 0; m < means[i].metrics.size(); ++m)
      std::tie(means[i].metrics[m].value, stds[i].metrics[m].value) =
          over_seeds([&](const DemoRow& r) { return r.metrics[m].value; });
    std::tie(means[i].delta_m, stds[i].delta_m) =
        over_seeds([](const DemoRow& r) { return r.delta_m; });
    std::tie(means[i].train_seconds, stds[i].train_seconds) =
        over_seeds([](const DemoRow& r) { return r.train_seconds; });
    std::tie(means[i].peak_mib, stds[i].peak_mib) =
        over_seeds([](const DemoRow& r) { return r.peak_mib; });
    stds[i].losses.clear();
  }
  return {means, stds};
}

// A table cell: the value, or "mean ± std" with --seeds.
std::string demo_cell(double v, const double* sd, int precision = 2) {
  if (!sd || !std::isfinite(v)) return format_value(v, precision);
  return format_value(v, precision) + " ± " + format_value(*sd, precision);
}

}  // namespace detail

std::vector<std::string> parse_weightings(std::string_view list, std::string_view flag) {
  std::vector<std::string> out;
  std::vector<std::string> slugs;
  std::size_t begin = 0;
  while (true) {
    const std::size_t comma = list.find(',', begin);
    const std::string_view item = list.substr(begin, comma == std::string_view::npos
                                                         ? std::string_view::npos
                                                         : comma - begin);
    check<OptionError>(!item.empty(), flag, ": an empty method name (a ',' with nothing before "
                       "or after it)");
    // key=value without ':' continues the previous method's options ("cagrad:c=0.4,rescale=1").
    if (!out.empty() && item.find(':') == std::string_view::npos &&
        item.find('=') != std::string_view::npos)
      out.back() += "," + std::string(item);
    else
      out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    begin = comma + 1;
  }
  const std::string names = weighting::weighting_names();
  for (const std::string& spec : out) {
    const std::string name = spec.substr(0, spec.find(':'));
    check<OptionError>((", " + names + ", ").find(", " + name + ", ") != std::string::npos, flag,
                       ": unknown method '", cli::echo(name, 24), "'; valid: ", names);
    weighting::make_weighting(spec, 2, flag);  // OptionError: a bad key or value
    const std::string slug = detail::weighting_slug(spec);
    check<OptionError>(std::find(slugs.begin(), slugs.end(), slug) == slugs.end(), flag, ": '",
                       spec, "' is listed twice");
    slugs.push_back(slug);
  }
  return out;
}

/// Runs the demo (see the file comment), printing progress and the table to `log`. Throws
/// IoError (naming the package to install) when Fashion-MNIST is missing from `data_dir`, and
/// OptionError for bad options.
DemoResult run_demo(const DemoOptions& o, std::ostream& log_out) {
  o.validate();
  if (!o.weightings.empty()) {  // no two runs in one directory
    std::string joined;
    for (const std::string& w : o.weightings) joined += (joined.empty() ? "" : ",") + w;
    parse_weightings(joined, "nddr::viz::DemoOptions::weightings");
  }
  // Under mpirun every rank trains and evaluates; rank 0 alone logs and writes files.
  const bool root = distributed::launcher_rank() == 0;
  std::ostream no_log(nullptr);
  std::ostream& log = root ? log_out : no_log;
  namespace fs = std::filesystem;
  const auto start = std::chrono::steady_clock::now();
  fs::create_directories(o.output_dir);
  const bool many = o.seeds > 1;
  const auto train_src = data::FashionMnist::load(o.data_dir, data::Split::kTrain);
  const auto test_src = data::FashionMnist::load(o.data_dir, data::Split::kTest);
  const auto dopt = data::DenseFashionOptions{}.size(o.canvas);

  DemoResult res;
  DemoResult& r = res;
  r.results_csv = fs::path(o.output_dir) / "results.csv";
  r.loss_curves_png = fs::path(o.output_dir) / "loss_curves.png";
  r.predictions_png = fs::path(o.output_dir) / "predictions.png";
  for (std::int64_t k = 0; k < o.seeds; ++k) {
    DemoOptions os = o;
    os.seed = o.seed + static_cast<std::uint64_t>(k);
    detail::DemoData d;
    d.train = data::make_dense_fashion(train_src, os.train_samples,
                                       data::DenseFashionOptions(dopt).seed(os.seed));
    d.test = data::make_dense_fashion(test_src, os.test_samples,
                                      data::DenseFashionOptions(dopt).seed(os.seed + 1000));
    log << "DenseFashion " << o.canvas << "x" << o.canvas << ": " << o.train_samples
        << " train / " << o.test_samples << " test samples; " << o.steps << " steps of "
        << o.batch << ", " << o.optim.optimizer << ", " << o.optim.schedule << " lr " << o.base_lr
        << (o.optim.warmup > 0 ? " after " + std::to_string(o.optim.warmup) + " warm-up steps"
                               : "")
        << ", loss weights seg 1 / normal "
        << o.normal_weight << ", fusion lr x" << o.fusion_lr_mult << ", " << o.threads
        << " threads, seed " << os.seed
        << (many ? " (" + std::to_string(k + 1) + " of " + std::to_string(o.seeds) + ")" : "")
        << "\n";
    // One seed: runs/<slug>, as ever; several: runs/<slug>_seed<S>, predictions of the first.
    r.per_seed.push_back(detail::demo_methods(
        os, d, log, many ? "_seed" + std::to_string(os.seed) : "",
        k == 0 ? r.predictions_png.string() : "", r.delta));
  }
  if (many)
    std::tie(r.rows, r.stds) = detail::aggregate_seeds(r.per_seed);
  else
    r.rows = r.per_seed.front();

  std::ostringstream table;
  std::ofstream csv;
  if (root) csv.open(r.results_csv);
  table << "| method |";
  csv << "method";
  for (const auto& c : demo_metric_columns()) {
    table << " " << c << " |";
    csv << "," << c << (many ? "_mean," + c + "_std" : "");
  }
  // --weightings adds the peak memory of every run (not in the default table).
  const bool peak = !o.weightings.empty();
  table << " Δm (%) | train time (s) |" << (peak ? " peak memory (MiB) |" : "") << "\n|---|";
  csv << (many ? ",delta_m_percent_mean,delta_m_percent_std,train_seconds_mean"
               : ",delta_m_percent,train_seconds")
      << (peak ? (many ? ",peak_mib_mean" : ",peak_mib") : "") << "\n";
  for (std::size_t c = 0; c < demo_metric_columns().size() + 2 + (peak ? 1 : 0); ++c)
    table << "---:|";
  table << "\n";
  for (std::size_t i = 0; i < r.rows.size(); ++i) {
    const DemoRow& row = r.rows[i];
    const DemoRow* sd = many ? &r.stds[i] : nullptr;
    table << "| " << row.method << " |";
    csv << row.method;
    for (const auto& c : demo_metric_columns()) {
      const double v = row.metric(c);
      const double s = sd ? sd->metric(c) : NAN;
      table << " " << detail::demo_cell(v, sd ? &s : nullptr) << " |";
      csv << "," << (std::isfinite(v) ? detail::format_value(v, 4) : "");
      if (sd) csv << "," << (std::isfinite(v) ? detail::format_value(s, 4) : "");
    }
    const bool single = !std::isfinite(row.delta_m);
    const std::string sign = row.delta_m >= 0 ? "+" : "";
    const double* delta_sd = sd ? &sd->delta_m : nullptr;
    table << " " << (single ? "baseline" : sign + detail::demo_cell(row.delta_m, delta_sd))
          << " | " << detail::format_value(row.train_seconds, 1) << " |";
    if (peak) table << " " << detail::format_value(row.peak_mib, 1) << " |";
    table << "\n";
    csv << "," << (single ? "" : detail::format_value(row.delta_m, 4));
    if (sd) csv << "," << (single ? "" : detail::format_value(sd->delta_m, 4));
    csv << "," << detail::format_value(row.train_seconds, 2);
    if (peak) csv << "," << detail::format_value(row.peak_mib, 1);
    csv << "\n";
  }
  table << "\n" << describe(r.delta)
        << ". Baseline: single-task seg (mIoU, PixelAcc) and single-task normals (Mean, Median, "
           "11.25, 22.5, 30). Mean/Median are angle errors in degrees (lower is better); the "
           "others are percentages (higher is better).\n";
  if (peak)
    table << "NDDR + M: NDDR trained with the weighting method M (docs/weighting.md). Peak memory: "
          << (o.device == "cpu" ? "the process's peak resident set during the run"
                                : "the most GPU memory held by nddr's tensors during the run")
          << ".\n";
  if (many)
    table << "Mean ± standard deviation (n - 1) over " << o.seeds << " seeds (" << o.seed << " to "
          << o.seed + static_cast<std::uint64_t>(o.seeds - 1)
          << "; Δm per seed against that seed's single-task runs); train time"
          << (peak ? " and peak memory: the mean" : ": the mean")
          << ". Every seed's row: results_per_seed.csv.\n";
  r.table = table.str();

  if (many && root) {  // every seed's rows, as results.csv has them for one seed
    std::ofstream per(fs::path(o.output_dir) / "results_per_seed.csv");
    per << "seed,method";
    for (const auto& c : demo_metric_columns()) per << "," << c;
    per << ",delta_m_percent,train_seconds" << (peak ? ",peak_mib" : "") << "\n";
    for (std::size_t k = 0; k < r.per_seed.size(); ++k)
      for (const DemoRow& row : r.per_seed[k]) {
        per << o.seed + k << "," << row.method;
        for (const auto& c : demo_metric_columns()) {
          const double v = row.metric(c);
          per << "," << (std::isfinite(v) ? detail::format_value(v, 4) : "");
        }
        per << "," << (std::isfinite(row.delta_m) ? detail::format_value(row.delta_m, 4) : "")
            << "," << detail::format_value(row.train_seconds, 2);
        if (peak) per << "," << detail::format_value(row.peak_mib, 1);
        per << "\n";
      }
  }

  // Loss curves: one panel per task, every run that trains the task (the first seed's).
  std::vector<io::Image8> panels;
  for (const char* task : {"segmentation", "normal"}) {
    std::vector<Series> series;
    for (std::size_t i = 0; i < r.rows.size(); ++i)
      for (const auto& [name, l] : r.rows[i].losses)
        if (name == task) series.push_back(detail::smoothed(r.rows[i].method, l, series_color(i)));
    const std::string title = std::string(task == std::string("normal") ? "normal (1 - cos)"
                                                                        : "segmentation (cross-entropy)") +
                              " training loss";
    panels.push_back(render_line_plot(
        series, PlotOptions{}.size(640, 420).with_title(title).labels("step", "")));
  }
  if (root) io::write_png(r.loss_curves_png.string(), hconcat(panels, 8));

  r.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log << "\n" << r.table << "\nTotal wall time " << detail::format_value(r.total_seconds, 1)
      << " s. Wrote " << r.results_csv.string() << ", "
      << (many ? (fs::path(o.output_dir) / "results_per_seed.csv").string() + ", " : "")
      << r.loss_curves_png.string() << ", "
      << r.predictions_png.string() << " and per-run logs under "
      << (fs::path(o.output_dir) / "runs").string() << "/\n";
  return res;
}

}  // namespace nddr::viz
