#pragma once
/// \file
/// `Trainer<Experiment, D, T>`: runs an `Experiment` on a `Network`: training steps (forward, the
/// tasks' weighted losses, backward, an optimiser step at the scheduled rate), non-finite-loss
/// detection, logs (JSON lines + CSV), a progress line, and exact checkpoint/resume.
///
/// Batches always come from host memory. On the CPU a step runs where it is. On a GPU
/// (`D = Cuda`, include <nddr/cuda.hpp> first) the batch is uploaded through pinned memory on a
/// copy stream, task losses stay on the device until the step is queued (the optimiser's update
/// is cancelled on the device if one is not finite), and `fit` prepares and uploads batch s + 1
/// while step s computes. Targets are resized to the outputs on the host before the upload.
/// With a weighting method (`TrainerOptions::weighting`) a GPU step reads the task losses and
/// the Gram matrix of the task gradients back mid-step and runs eagerly (docs/weighting.md).
///
/// Outputs (docs/weights.md, "Checkpoints and logs"): `log.csv`, `log.jsonl` and `eval.jsonl`
/// get one complete row per append or none (a failed write is rolled back and is an error),
/// and are cut back to the restored step when a run resumes, so a resumed run's logs read like
/// an uninterrupted run's. Checkpoints are atomic, validated before they are applied, and
/// discovered by name and step (checkpoint.hpp). A stop request (interrupt.hpp: Ctrl-C or TERM
/// under `StopOnSignals`) ends `fit` after the current step with a checkpoint and
/// `TrainingInterrupted`.

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <tuple>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "nddr/ops/resize.hpp"
#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/storage.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/json.hpp"
#include "nddr/train/checkpoint.hpp"
#include "nddr/train/device_state.hpp"
#include "nddr/train/evaluation.hpp"
#include "nddr/train/experiment.hpp"
#include "nddr/train/interrupt.hpp"
#include "nddr/train/trainer_host.hpp"
#include "nddr/weighting/registry.hpp"

namespace nddr {

/// Thrown when a task's loss is NaN or infinite; training stops before the optimiser step, so
/// parameters and checkpoints stay as they were after the last good step.
class NonFiniteLossError : public Error {
 public:
  NonFiniteLossError(std::int64_t step, std::size_t task, const std::string& name, double value)
      : Error(detail::concat("nddr::Trainer: loss of task ", task, " (", name, ") is ", value,
                             " at step ", step, "; training stopped, parameters and checkpoints "
                             "are those of the last finite step")),
        step_(step),
        task_(task) {}
  std::int64_t step() const { return step_; }
  std::size_t task() const { return task_; }

 private:
  std::int64_t step_;
  std::size_t task_;
};

/// Run-time options of a `Trainer` whose optimiser takes options of type `OptimizerOptions`
/// (`Trainer<E, D, T>::options_type`; `TrainerOptions` for SGD).
template <class OptimizerOptions>
struct TrainerOptionsFor {
  std::vector<double> loss_weights;   ///< one per task; empty = all 1 (the paper: 1 and 20)
  OptimizerOptions optimizer{};       ///< the experiment's optimiser's options
  std::int64_t log_every = 10;        ///< log and progress interval in steps (0 = never)
  std::int64_t eval_every = 0;        ///< periodic evaluation interval in steps (0 = never)
  std::int64_t checkpoint_every = 0;  ///< 0 = only when asked
  std::size_t keep_checkpoints = 3;
  std::string output_dir;             ///< logs and checkpoints; empty = none written
  /// false: logs and checkpoints in output_dir are read (resume) but never written, e.g. on the
  /// ranks other than 0 of a data-parallel run.
  bool write_outputs = true;
  bool progress = true;               ///< progress line on stdout
  std::string name = "experiment";    ///< recorded in logs and checkpoints
  /// On a GPU: capture the training step as a CUDA Graph (after one eager step per batch
  /// shape) and replay it; falls back to eager steps, for good, if the capture fails. Not used
  /// with a before-update hook (it runs host code inside the step).
  bool cuda_graph = false;
  /// A multi-task weighting or gradient method, `NAME[:key=value,...]` as `--weighting` takes
  /// it (nddr/weighting/registry.hpp, docs/weighting.md); empty = none (only the fixed
  /// `loss_weights`). The method sees the tasks' losses already scaled by `loss_weights`.
  /// CPU and GPU (docs/weighting.md, "On a GPU"); on a GPU not together with `cuda_graph`.
  std::string weighting;
  /// Learning-rate multiplier of the method's own parameters (UW's log-variances, GradNorm's
  /// weights), stepped by a second instance of the experiment's optimiser, without decay.
  double weighting_lr_mult = 1.0;
  /// Steps per epoch: after every `steps_per_epoch` steps the method is given the epoch's mean
  /// task losses (`end_epoch`: DWA, GradNorm); 0 = no epochs (DWA then keeps weights 1).
  std::int64_t steps_per_epoch = 0;
};

/// The options of a Trainer with the default optimiser, SGD.
using TrainerOptions = TrainerOptionsFor<SgdOptions>;

template <class E, class D = Cpu, class T = float>
class Trainer {
  static_assert(std::is_same_v<D, Cpu> || detail::TrainerDevice<D, T>::available,
                "nddr::Trainer<E, D>: this device's training support was not included; for "
                "nddr::Cuda include <nddr/cuda.hpp> (link nddr::cuda) before the trainer");
  using TaskList = typename E::tasks;
  static constexpr std::size_t K = E::task_count;
  static constexpr bool kOnCpu = std::is_same_v<D, Cpu>;

  template <std::size_t k>
  using task_t = typename TaskList::template task<k>;
  template <class Dev, std::size_t... I>
  static auto targets_type(std::index_sequence<I...>)
      -> std::tuple<Tensor<typename task_t<I>::template target_t<T>, Dev>...>;

 public:
  using network_type = Network<typename E::spec, D, T>;
  using optimizer_type = typename E::template optimizer<T, D>;
  static_assert(concepts::Optimizer<optimizer_type>);
  /// `TrainerOptions` for SGD, `TrainerOptionsFor<AdamOptions>` for Adam, and so on.
  using options_type = TrainerOptionsFor<typename optimizer_type::options_type>;
  using schedule_type = typename E::schedule;
  /// One target tensor per task (int32 labels, or T vectors for normals), in host memory.
  using Targets = decltype(targets_type<Cpu>(std::make_index_sequence<K>{}));

  /// A training batch in host memory, whatever the device: the image (N, C, H, W) and each
  /// task's target.
  struct Batch {
    Tensor<T, Cpu> image;
    Targets targets;
  };

  /// One streaming metric accumulator per task (see MetricFor).
  using Metrics = decltype([]<std::size_t... I>(std::index_sequence<I...>) {
    return std::tuple<typename MetricFor<task_t<I>>::type...>{MetricFor<task_t<I>>::make()...};
  }(std::make_index_sequence<K>{}));

  /// Losses (weighted, as optimised) of one step.
  struct StepResult {
    std::int64_t step = 0;
    double lr = 0.0;
    std::array<double, K> losses{};
    double total = 0.0;
    /// With a weighting method: its weights on the shared gradients (`Combination::shared`);
    /// without one: the fixed loss weights.
    std::array<double, K> weights{};
    /// Whether `fit` stops after this step (a stop was requested, see interrupt.hpp); set before
    /// the before-update hook, which may change it (data-parallel ranks agree on it there).
    bool stop = false;
  };

  /// `schedule` is the experiment's schedule type or any other callable step -> learning rate
  /// (e.g. a ConstantSchedule for a quick run).
  template <class S>
    requires std::is_invocable_r_v<double, const S&, std::int64_t>
  Trainer(network_type& net, S schedule, options_type opt = {})
      : net_(net),
        schedule_(std::move(schedule)),
        opt_(std::move(opt)),
        optimizer_(net.parameters(), opt_.optimizer) {
    if (opt_.loss_weights.empty()) opt_.loss_weights.assign(K, 1.0);
    check<OptionError>(opt_.loss_weights.size() == K, "nddr::Trainer: loss_weights has ",
                       opt_.loss_weights.size(), " entries, expected one per task (", K, ")");
    for (double w : opt_.loss_weights)
      check<OptionError>(std::isfinite(w) && w >= 0.0, "nddr::Trainer: loss weight ", w,
                         " must be finite and >= 0");
    if (!opt_.weighting.empty()) {
      check<OptionError>(kOnCpu || !opt_.cuda_graph, "nddr::Trainer: TrainerOptions::weighting ('",
                         opt_.weighting, "') cannot be combined with cuda_graph: a weighting "
                         "step reads the task losses and the Gram matrix of the task gradients "
                         "on the host in the middle of the step; set cuda_graph = false");
      check<OptionError>(std::isfinite(opt_.weighting_lr_mult) && opt_.weighting_lr_mult >= 0.0,
                         "nddr::Trainer: weighting_lr_mult ", opt_.weighting_lr_mult,
                         " must be finite and >= 0");
      check<OptionError>(opt_.steps_per_epoch >= 0, "nddr::Trainer: steps_per_epoch ",
                         opt_.steps_per_epoch, " must be >= 0");
      weighting_ = std::make_unique<WeightingRun>(
          weighting::make_weighting(opt_.weighting, K, "TrainerOptions::weighting"),
          opt_.optimizer);
    }
    if (!opt_.output_dir.empty()) {
      if (opt_.write_outputs) std::filesystem::create_directories(opt_.output_dir);
      checkpoints_.emplace(std::filesystem::path(opt_.output_dir) / "checkpoints",
                           opt_.keep_checkpoints);
    }
  }

  /// Called after the backward pass and before the optimiser step of every training step, with
  /// the step's losses (already checked finite): the place to all-reduce gradients (and losses)
  /// in data-parallel training. Empty = none.
  using BeforeUpdate = std::function<void(Context<D>&, StepResult&)>;
  void set_before_update(BeforeUpdate hook) { before_update_ = std::move(hook); }

  /// How a data-parallel run averages what a weighting method reads, before it reads it: a
  /// device buffer (the per-task gradients, (K, P)) and host values (the task losses). Empty
  /// members = one process. `DataParallel::attach` installs one.
  struct Reducer {
    std::function<void(Context<D>&, TensorView<T, D>)> average;
    std::function<void(std::span<double>)> average_host;
  };
  void set_reducer(Reducer reducer) { reducer_ = std::move(reducer); }

  /// The weighting method (TrainerOptions::weighting), or null.
  weighting::AnyWeighting* weighting_method() {
    return weighting_ ? &weighting_->method : nullptr;
  }
  /// The gradient the method's own parameters were last stepped with (UW: d objective / d s),
  /// empty without such parameters.
  std::vector<double> weighting_parameter_gradient() const {
    if (!weighting_) return {};
    const auto g = weighting_->method.parameter_gradient();
    return {g.begin(), g.end()};
  }

  network_type& network() { return net_; }
  /// The device backend's state (upload slots, CUDA Graphs and their counters), null on the
  /// CPU and before the first step; for diagnostics and tests.
  const detail::TrainerDevice<D, T>* device_state() const { return device_ ? &*device_ : nullptr; }
  optimizer_type& optimizer() { return optimizer_; }
  std::int64_t step() const { return step_; }
  const options_type& options() const { return opt_; }
  const std::vector<StepResult>& history() const { return history_; }

  /// Task names, in order.
  static std::array<std::string, K> task_names() {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return std::array<std::string, K>{std::string(task_t<I>::name)...};
    }(std::make_index_sequence<K>{});
  }

  /// One optimisation step on `batch`. Targets whose spatial size differs from the task's
  /// output are resized to it with TF-legacy nearest neighbour, as the paper's code does.
  StepResult train_step(Context<D>& ctx, const Batch& batch) {
    if constexpr (kOnCpu) {
      return train_step_cpu(ctx, batch);
    } else {
      const std::size_t slot = next_slot_;
      next_slot_ = (next_slot_ + 1) % 2;
      stage(ctx, batch, slot);
      StepResult r = enqueue_step(ctx, slot);
      return finish_step(ctx, r);
    }
  }

  /// What `evaluate` hands to its `on_outputs` callback: batch index and every task's output in
  /// host memory, dense outputs up-sampled to their label's size as the metrics see them.
  using OutputsCallback = std::function<void(std::int64_t, std::span<const Tensor<T>>)>;

  /// Evaluates on `batches` batches from `get_batch(i)` in inference mode (BN running
  /// statistics, no dropout) with the paper's protocol (dense outputs up-sampled to the label
  /// size); restores the previous mode afterwards. With `on_outputs`, also hands each batch's
  /// outputs to it (e.g. to save predictions; on a GPU this downloads them).
  Metrics evaluate(Context<D>& ctx, std::int64_t batches,
                   const std::function<Batch(std::int64_t)>& get_batch,
                   const OutputsCallback& on_outputs = {}) {
    Metrics m = [&]<std::size_t... I>(std::index_sequence<I...>) {
      return Metrics{MetricFor<task_t<I>>::make()...};
    }(std::make_index_sequence<K>{});
    const bool was_training = net_.training();
    net_.set_training(false);
    // Evaluation may reallocate the network's buffers: captured steps are recorded again.
    if constexpr (!kOnCpu)
      if (device_) device_->graphs().invalidate();
    for (std::int64_t b = 0; b < batches; ++b) {
      const Batch batch = get_batch(b);
      if constexpr (kOnCpu) {
        auto out = net_.forward(ctx, batch.image.cview());
        [&]<std::size_t... I>(std::index_sequence<I...>) {
          (update_metric<task_t<I>>(ctx, std::get<I>(m), out[I],
                                    std::get<I>(batch.targets).cview()),
           ...);
        }(std::make_index_sequence<K>{});
        if (on_outputs) hand_outputs(ctx, b, out, batch, on_outputs);
      } else {
        auto& dev = device(ctx);
        Tensor<T, D> image(batch.image.shape());
        Storage<D>::upload(image.data(), batch.image.data(), batch.image.bytes());
        auto out = net_.forward(ctx, image.cview());
        [&]<std::size_t... I>(std::index_sequence<I...>) {
          (update_metric_on_device<task_t<I>>(ctx, dev.host(), std::get<I>(m), out[I],
                                              std::get<I>(batch.targets).cview()),
           ...);
        }(std::make_index_sequence<K>{});
        if (on_outputs) hand_outputs(ctx, b, out, batch, on_outputs);
      }
    }
    net_.set_training(was_training);
    return m;
  }

  /// `evaluate`'s outputs, resized to the targets' size (dense ones) and copied to the host.
  template <class Outputs>
  void hand_outputs(Context<D>& ctx, std::int64_t b, const Outputs& out, const Batch& batch,
                    const OutputsCallback& on_outputs) {
    std::array<Tensor<T>, K> host;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (([&] {
         Tensor<T, D> scratch;
         const TensorView<const T, D> o =
             detail::resize_to_target(ctx, out[I], std::get<I>(batch.targets).cview(), scratch);
         host[I].resize(o.shape());
         if constexpr (kOnCpu)
           std::copy(o.data(), o.data() + o.numel(), host[I].data());
         else
           Storage<D>::download(host[I].data(), o.data(), host[I].bytes());
       }()),
       ...);
    }(std::make_index_sequence<K>{});
    on_outputs(b, std::span<const Tensor<T>>(host));
  }

  /// Appends evaluation results to `output_dir/eval.jsonl` (one line per call) and, when the
  /// progress line is on, prints them.
  /// A failed write is an IoError naming the file (the file keeps its earlier lines).
  void log_metrics(const std::vector<MetricValue>& values) {
    const bool file = !opt_.output_dir.empty() && opt_.write_outputs;
    detail::append_eval_log(file ? std::filesystem::path(opt_.output_dir) : std::filesystem::path(),
                            opt_.name, step_, values, opt_.progress);
  }

  /// Every metric of every task as `MetricValue`s, in task order.
  static std::vector<MetricValue> metric_values(const Metrics& m) {
    std::vector<MetricValue> out;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (([&] {
         auto v = MetricFor<task_t<I>>::values(std::get<I>(m));
         out.insert(out.end(), v.begin(), v.end());
       }()),
       ...);
    }(std::make_index_sequence<K>{});
    return out;
  }

  /// Trains until `total_steps`, drawing batches from `next_batch(step)`; logs every
  /// `log_every` steps, checkpoints every `checkpoint_every` steps and at the end, calls
  /// `on_log(result)` at every log and `on_eval(step)` every `eval_every` steps (periodic
  /// evaluation: call `evaluate` there and `log_metrics` to record it). Returns the last step's
  /// result.
  ///
  /// Before the first step, when it writes outputs, it removes the log rows of steps after the
  /// current one (left by a run that died after logging them) and refuses an output directory
  /// that holds checkpoints of another run (resume from them, or use another directory). When
  /// a stop is requested (interrupt.hpp) it finishes the current step, logs it, writes its
  /// checkpoint and throws `TrainingInterrupted`.
  StepResult fit(Context<D>& ctx, std::int64_t total_steps,
                 const std::function<Batch(std::int64_t)>& next_batch,
                 const std::function<void(const StepResult&)>& on_log = {},
                 const std::function<void(std::int64_t)>& on_eval = {}) {
    StepResult last;
    prepare_outputs();
    const auto start = std::chrono::steady_clock::now();
    const std::int64_t first = step_;
    std::int64_t logged_step = -1;
    const auto log_step = [&](const StepResult& r) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = secs > 0 ? static_cast<double>(images_) / secs : 0.0;
      const double eta = step_ > first ? secs / static_cast<double>(step_ - first) *
                                             static_cast<double>(total_steps - step_)
                                       : 0.0;
      write_logs(r, rate, secs);
      logged_step = step_;
      if (opt_.progress) print_progress(r, total_steps, rate, eta);
      if (on_log) on_log(r);
    };
    std::size_t slot = next_slot_;
    if constexpr (!kOnCpu) {
      if (step_ < total_steps) {
        const Batch first_batch = next_batch(step_);
        images_ += first_batch.image.shape()[0];
        stage(ctx, first_batch, slot);
      }
    }
    while (step_ < total_steps) {
      if constexpr (kOnCpu) {
        const Batch batch = next_batch(step_);
        images_ += batch.image.shape()[0];
        last = train_step(ctx, batch);
      } else {
        // Queue step s, then prepare and upload batch s + 1 while it computes.
        StepResult pending = enqueue_step(ctx, slot);
        const std::size_t other = (slot + 1) % 2;
        if (step_ + 1 < total_steps) {
          const Batch batch = next_batch(step_ + 1);
          images_ += batch.image.shape()[0];
          stage(ctx, batch, other);
        }
        last = finish_step(ctx, pending);
        slot = other;
        next_slot_ = other;
      }
      const bool log_now = opt_.log_every > 0 && (step_ % opt_.log_every == 0 || step_ == total_steps);
      if (log_now) log_step(last);
      if (last.stop) {
        // Requested stop: this step's log row and checkpoint, then out.
        if (opt_.log_every > 0 && logged_step != step_) log_step(last);
        if (opt_.progress && isatty(STDOUT_FILENO)) std::printf("\n");
        std::string path;
        if (checkpoints_) {
          if (opt_.write_outputs && checkpoint_step_ != step_) save_checkpoint();
          path = checkpoints_->path_for(step_).string();  // written by rank 0 when not here
        }
        throw TrainingInterrupted(step_, path, stop_signal());
      }
      if (checkpoints_ && opt_.write_outputs && opt_.checkpoint_every > 0 &&
          step_ % opt_.checkpoint_every == 0)
        save_checkpoint();
      if (on_eval && opt_.eval_every > 0 && step_ % opt_.eval_every == 0) on_eval(step_);
    }
    if (opt_.progress && isatty(STDOUT_FILENO)) std::printf("\n");
    if (checkpoints_ && opt_.write_outputs && checkpoint_step_ != step_) save_checkpoint();
    return last;
  }

  /// Writes a checkpoint of the current state (output_dir/checkpoints/ckpt-<step>.safetensors,
  /// keeping the newest `keep_checkpoints`) and returns its path.
  /// The temporaries of writers killed mid-write are removed first; pruning never deletes the
  /// file just written.
  std::filesystem::path save_checkpoint() {
    check<Error>(checkpoints_.has_value(),
                 "nddr::Trainer::save_checkpoint: set TrainerOptions::output_dir first");
    std::filesystem::create_directories(checkpoints_->dir());
    checkpoints_->remove_stale_temporaries();
    const auto path = checkpoints_->path_for(step_);
    save_checkpoint(path.string());
    checkpoint_step_ = step_;
    owns_outputs_ = true;
    checkpoints_->prune(path);
    return path;
  }
  /// Writes a checkpoint of the current state to `path` (atomically).
  void save_checkpoint(const std::string& path) {
    CheckpointState st;
    st.step = step_;
    for (Rng* r : net_.rngs()) st.rngs.push_back(r->state());
    st.extra["experiment"] = opt_.name;
    if (weighting_) save_weighting(st.extra);
    nddr::save_checkpoint<T, D>(path, net_.parameters(), optimizer_.checkpoint_state(), st);
  }
  /// Restores parameters, BN statistics, optimiser state, step and random streams. The whole
  /// file is validated first (read_checkpoint): when it throws, nothing has changed. Log rows
  /// of later steps are removed from output_dir (when this trainer writes outputs).
  void load_checkpoint(const std::string& path) { restore(read_checkpoint(path)); }

  /// Resumes from the newest checkpoint in output_dir (by step; only files named
  /// `ckpt-<step>.safetensors`), if any; returns whether one was found. Its metadata must
  /// agree with its name. Temporaries of killed checkpoint writers are removed first.
  bool resume() {
    if (!checkpoints_) return false;
    if (opt_.write_outputs) checkpoints_->remove_stale_temporaries();
    auto latest = checkpoints_->latest();
    if (!latest) return false;
    CheckpointFile c = read_checkpoint(latest->string());
    const std::int64_t named = *CheckpointDir::step_of(latest->filename().string());
    check<IoError>(c.state.step == named, latest->string(), ": the file name says step ", named,
                   " but its metadata says step ", c.state.step,
                   "; move the file out of the checkpoint directory to resume from the one before");
    restore(c);
    return true;
  }

 private:
  /// A batch in device memory (one per upload slot; unused on the CPU).
  struct DeviceBatch {
    Tensor<T, D> image;
    decltype(targets_type<D>(std::make_index_sequence<K>{})) targets;
  };

  CheckpointFile read_checkpoint(const std::string& path) {
    CheckpointFile c = nddr::read_checkpoint<T, D>(
        path, std::as_const(net_.parameters()), optimizer_.checkpoint_state().layout(),
        net_.rngs().size());
    check_weighting(path, c);  // validated before anything is applied
    return c;
  }

  /// Checkpoint metadata of the weighting method (detail::WeightingHost::save).
  void save_weighting(std::map<std::string, std::string>& extra) { weighting_->save(extra); }

  /// Throws IoError naming `path` when its weighting metadata does not fit this trainer.
  void check_weighting(const std::string& path, const CheckpointFile& c) {
    if (weighting_)
      weighting_->check(path, c.state.extra);
    else
      detail::check_no_weighting(path, c.state.extra);
  }

  void restore_weighting(const CheckpointFile& c) {
    if (weighting_) weighting_->restore(c.state.extra);
  }
  void restore(const CheckpointFile& c) {
    restore_checkpoint<T, D>(c, net_.parameters(), optimizer_.checkpoint_state());
    auto rngs = net_.rngs();
    for (std::size_t i = 0; i < rngs.size(); ++i) rngs[i]->set_state(c.state.rngs[i]);
    restore_weighting(c);
    step_ = c.state.step;
    checkpoint_step_ = step_;
    owns_outputs_ = true;
    logs_prepared_ = false;  // cut back to the restored step at the next fit
    if constexpr (!kOnCpu)
      if (device_) device_->graphs().invalidate();  // recorded with the old random counters
  }

  /// Once per trainer state: log rows of steps after step_ go (a run that died after logging
  /// them), and a checkpoint directory of another run is refused rather than mixed with ours.
  void prepare_outputs() {
    if (opt_.output_dir.empty() || !opt_.write_outputs || logs_prepared_) return;
    if (checkpoints_ && !owns_outputs_) {
      const auto latest = checkpoints_->latest();
      check<Error>(!latest, "nddr::Trainer::fit: '", checkpoints_->dir().string(),
                   "' holds checkpoints of an earlier run (newest: ",
                   latest ? latest->filename().string() : std::string(),
                   "); resume from them (Trainer::resume, --resume) or use another output "
                   "directory, so that no checkpoint of that run is overwritten or pruned");
    }
    owns_outputs_ = true;
    const std::filesystem::path dir(opt_.output_dir);
    for (const char* name : {"log.csv", "log.jsonl", "eval.jsonl"})
      detail::truncate_log(dir / name, step_);
    logs_prepared_ = true;
  }

  StepResult train_step_cpu(Context<Cpu>& ctx, const Batch& batch) {
    net_.set_training(true);
    auto out = net_.forward(ctx, batch.image.cview());
    StepResult r;
    r.step = step_;
    r.lr = schedule_(step_);
    prepare_douts(out);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (compute_loss<I>(ctx, out[I], std::get<I>(batch.targets), r), ...);
    }(std::make_index_sequence<K>{});
    for (std::size_t k = 0; k < K; ++k) {
      if (!std::isfinite(r.losses[k]))
        throw NonFiniteLossError(step_, k, task_names()[k], r.losses[k]);
      r.total += r.losses[k];
      r.weights[k] = opt_.loss_weights[k];
    }
    if (weighting_) {
      weighted_backward(ctx, batch.image.cview(), r);
    } else {
      std::vector<TensorView<const T, D>> douts;
      for (auto& d : douts_) douts.push_back(d.cview());
      net_.backward(ctx, batch.image.cview(), douts);
    }
    r.stop = stop_requested();
    if (before_update_) before_update_(ctx, r);
    optimizer_.step(ctx, r.lr);
    if (weighting_) weighting_->after_step(ctx, r.lr, opt_.steps_per_epoch);
    ++step_;
    history_.push_back(r);
    return r;
  }

  /// The method's state besides `weighting_`: its own parameters' optimiser and the epoch
  /// accumulator. Built with the trainer; lives behind a pointer because the optimiser binds to
  /// the store. The method's parameters are few host values: their store and optimiser are on
  /// the CPU whatever D is; only the (K, P) task gradients live on D.
  struct WeightingRun
      : detail::WeightingHost<K, T, typename E::template optimizer<T, Cpu>> {
    /// One contiguous run of parameters in the flat gradient buffer: shared (owner -1) or
    /// task `owner`'s head.
    using Range = detail::GradientRange;
    using host_optimizer_type = typename E::template optimizer<T, Cpu>;
    static_assert(std::is_same_v<typename host_optimizer_type::options_type,
                                 typename optimizer_type::options_type>);
    using detail::WeightingHost<K, T, host_optimizer_type>::WeightingHost;

    Tensor<T, D> task_grads;  ///< (K, P): g_k of every parameter, one row per task
    std::vector<Range> ranges;
  };

  /// The backward pass(es) of a step under a weighting method: leaves the combined gradient
  /// in the network's gradient buffer and sets `r.total` and `r.weights`.
  void weighted_backward(Context<D>& ctx, TensorView<const T, D> image, StepResult& r) {
    WeightingRun& w = *weighting_;
    w.lr_mult = opt_.weighting_lr_mult;
    std::array<double, K> losses = r.losses;
    if (reducer_.average_host) reducer_.average_host(std::span<double>(losses));
    for (std::size_t k = 0; k < K; ++k) w.epoch_sums[k] += losses[k];
    const bool needs_gram = w.method.needs_gram();
    Eigen::MatrixXd gram;
    if (needs_gram) {
      task_gradients(ctx, image);
      if (reducer_.average) reducer_.average(ctx, w.task_grads.view());
      gram = shared_gram(ctx);
    }
    const weighting::Combination c =
        w.method.combine({std::span<const double>(losses), needs_gram ? &gram : nullptr});
    for (std::size_t k = 0; k < K; ++k) r.weights[k] = c.shared[static_cast<Eigen::Index>(k)];
    r.total = c.loss;
    if (needs_gram) {
      combine_task_gradients(ctx, c, gram);
      return;
    }
    // Loss weighting: one backward pass of sum_k w_k L_k.
    std::vector<TensorView<const T, D>> douts;
    for (std::size_t k = 0; k < K; ++k) {
      Tensor<T, D>& d = douts_[k];
      const double h = c.heads[static_cast<Eigen::Index>(k)];
      if constexpr (kOnCpu) {
        const T s = static_cast<T>(h);
        for (std::int64_t i = 0; i < d.numel(); ++i) d.data()[i] *= s;
      } else {
        device(ctx).scale(ctx, d.view(), h);
      }
      douts.push_back(d.cview());
    }
    net_.backward(ctx, image, douts);
  }

  /// K backward passes from the step's one forward pass, task k's into row k of `task_grads`
  /// (no retained activations: only the K x P gradient rows are extra).
  void task_gradients(Context<D>& ctx, TensorView<const T, D> image) {
    WeightingRun& w = *weighting_;
    auto& store = net_.parameters();
    const std::int64_t p = store.grads().numel();
    if (w.ranges.empty()) w.ranges = parameter_ranges();
    if (w.task_grads.numel() != static_cast<std::int64_t>(K) * p)
      w.task_grads = Tensor<T, D>(Shape{static_cast<std::int64_t>(K), p});
    for (std::size_t k = 0; k < K; ++k) {
      std::vector<TensorView<const T, D>> douts(K);  // empty views: zero gradient
      douts[k] = douts_[k].cview();
      net_.backward(ctx, image, douts);
      T* row = w.task_grads.data() + static_cast<std::int64_t>(k) * p;
      if constexpr (kOnCpu)
        std::memcpy(row, store.grads().data(), static_cast<std::size_t>(p) * sizeof(T));
      else
        device(ctx).copy_row(ctx, store.grads().data(), row, p);
    }
  }

  /// The parameters in flat order, as shared and head ranges: "task<k>.head.*" is task k's,
  /// everything else is shared (docs/weighting.md, "What shared parameters means"). Adjacent
  /// parameters of the same owner make one range.
  std::vector<typename WeightingRun::Range> parameter_ranges() const {
    std::vector<typename WeightingRun::Range> out;
    for (const ParamEntry& e : net_.parameters().parameters()) {
      int owner = -1;
      for (std::size_t k = 0; k < K; ++k)
        if (e.name.starts_with("task" + std::to_string(k) + ".head.")) owner = static_cast<int>(k);
      const std::int64_t n = e.shape.numel();
      if (!out.empty() && out.back().owner == owner &&
          out.back().offset + static_cast<std::size_t>(out.back().size) == e.offset)
        out.back().size += n;
      else
        out.push_back({e.offset, n, owner});
    }
    return out;
  }

  using RowsMap =
      Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                 Eigen::OuterStride<>>;
  /// Task k's gradient of range `r` as row k of a (K, r.size) map.
  RowsMap task_rows(const typename WeightingRun::Range& r) const {
    const std::int64_t p = weighting_->task_grads.numel() / static_cast<std::int64_t>(K);
    return RowsMap(weighting_->task_grads.data() + r.offset, static_cast<Eigen::Index>(K),
                   static_cast<Eigen::Index>(r.size), Eigen::OuterStride<>(p));
  }

  /// G G^T (K x K, double) over the shared parameters: in double on the CPU; on a device
  /// accumulated there in T (cuBLAS) and symmetrised here.
  Eigen::MatrixXd shared_gram(Context<D>& ctx) {
    const auto k = static_cast<Eigen::Index>(K);
    Eigen::MatrixXd m = Eigen::MatrixXd::Zero(k, k);
    if constexpr (kOnCpu) {
      for (const auto& r : weighting_->ranges) {
        if (r.owner >= 0) continue;
        const Eigen::MatrixXd rows = task_rows(r).template cast<double>();  // (K, size)
        m.noalias() += rows * rows.transpose();
      }
    } else {
      const std::int64_t p = weighting_->task_grads.numel() / static_cast<std::int64_t>(K);
      const std::vector<double> g = device(ctx).gram(ctx, weighting_->task_grads.data(),
                                                     static_cast<std::int64_t>(K), p,
                                                     weighting_->ranges);
      for (Eigen::Index j = 0; j < k; ++j)
        for (Eigen::Index i = 0; i < k; ++i)
          m(i, j) = 0.5 * (g[static_cast<std::size_t>(i + j * k)] +
                           g[static_cast<std::size_t>(j + i * k)]);
    }
    return m;
  }

  /// Writes the combined gradient into the network's gradient buffer: sum_k shared[k] g_k
  /// (clipped to max_shared_norm) on shared parameters, heads[k] g_k on task k's head.
  void combine_task_gradients(Context<D>& ctx, const weighting::Combination& c,
                              const Eigen::MatrixXd& gram) {
    const double clip =
        weighting::clip_factor(weighting::combined_norm(gram, c.shared), c.max_shared_norm);
    const Eigen::RowVectorXd w = (c.shared * clip).transpose();
    T* g = net_.parameters().grads().data();
    if constexpr (!kOnCpu) {
      const std::int64_t p = weighting_->task_grads.numel() / static_cast<std::int64_t>(K);
      device(ctx).combine(ctx, weighting_->task_grads.data(), static_cast<std::int64_t>(K), p,
                          weighting_->ranges, std::span<const double>(w.data(), K),
                          std::span<const double>(c.heads.data(), K), g);
    } else {
      for (const auto& r : weighting_->ranges) {
        Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> out(g + r.offset,
                                                            static_cast<Eigen::Index>(r.size));
        const Eigen::MatrixXd rows = task_rows(r).template cast<double>();  // (K, size)
        if (r.owner < 0)
          out = (w * rows).template cast<T>();
        else
          out = (c.heads[r.owner] * rows.row(r.owner)).template cast<T>();
      }
    }
  }

  detail::TrainerDevice<D, T>& device(Context<D>& ctx) {
    if (!device_) device_.emplace(ctx, K, host_threads());
    return *device_;
  }
  static int host_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(std::min(n, 8u));
  }

  /// Resizes the targets of `batch` to the network's output sizes on the host and queues their
  /// and the image's upload into slot `slot` (device only; returns after the host-side copy).
  void stage(Context<D>& ctx, const Batch& batch, std::size_t slot) {
    auto& dev = device(ctx);
    dev.uploader().wait_slot(slot);  // its device buffers may be reallocated below
    DeviceBatch& db = dev_batches_[slot];
    using Piece = typename std::remove_reference_t<decltype(dev.uploader())>::Piece;
    std::vector<Piece> pieces;
    db.image.resize(batch.image.shape());
    pieces.push_back(Piece{db.image.data(), batch.image.data(), batch.image.bytes()});
    Targets resized;  // keeps resized targets alive until the upload has staged them
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (([&] {
         using U = typename task_t<I>::template target_t<T>;
         const Shape os = net_.output_shape(I, batch.image.shape());
         const TensorView<const U, Cpu> tv = fit_target<U>(
             dev.host(), std::get<I>(batch.targets).cview(), os, std::get<I>(resized));
         auto& dt = std::get<I>(db.targets);
         dt.resize(tv.shape());
         pieces.push_back(Piece{dt.data(), tv.data(),
                                static_cast<std::size_t>(tv.numel()) * sizeof(U)});
       }()),
       ...);
    }(std::make_index_sequence<K>{});
    dev.uploader().upload(slot, pieces);
  }

  /// Queues forward, losses, backward and the update of the batch in `slot` (the update is
  /// cancelled on the device if a loss is not finite), eagerly or as a CUDA Graph;
  /// `finish_step` reads the losses back.
  StepResult enqueue_step(Context<D>& ctx, std::size_t slot) {
    auto& dev = device(ctx);
    DeviceBatch& db = dev_batches_[slot];
    net_.set_training(true);
    StepResult r;
    r.step = step_;
    r.lr = schedule_(step_);
    r.stop = stop_requested();
    dev.uploader().acquire(ctx, slot);
    dev.prepare_update(ctx, net_.parameters(), optimizer_, r.lr);
    if (weighting_) {
      // Losses and Gram matrix go to the host mid-step: eager, and the losses are read here.
      try {
        dev.eager(ctx, [&] { weighted_step_device(ctx, dev, db, r); });
      } catch (...) {
        dev.uploader().release(ctx, slot);
        throw;
      }
      dev.losses().mark_ready(ctx);
      dev.uploader().release(ctx, slot);
      pending_slot_ = slot;
      return r;
    }
    auto body = [&] {
      auto out = net_.forward(ctx, db.image.cview());
      prepare_douts(out);
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        (device_loss<I>(ctx, dev, out[I], std::get<I>(db.targets).cview()), ...);
      }(std::make_index_sequence<K>{});
      std::vector<TensorView<const T, D>> douts;
      for (auto& d : douts_) douts.push_back(d.cview());
      net_.backward(ctx, db.image.cview(), douts);
      if (before_update_) before_update_(ctx, r);
      dev.update(ctx, net_.parameters(), optimizer_);
    };
    if (opt_.cuda_graph && !before_update_) {
      // Warm-up, capture and replays; a shape or buffer change captures again.
      using Key = typename std::remove_reference_t<decltype(dev.graphs())>::key_type;
      const auto key = [&] {
        return Key{db.image.shape(), net_.layout_version(), ctx.workspace_data(),
                   dev.plan_version(), ctx.settings()};
      };
      dev.graphs().run(ctx, slot, key, step_, net_.rngs(), body);
    } else {
      dev.eager(ctx, body);
    }
    dev.losses().mark_ready(ctx);
    dev.uploader().release(ctx, slot);
    pending_slot_ = slot;
    return r;
  }

  /// Waits for the step queued by `enqueue_step` and completes its result.
  StepResult finish_step(Context<D>& ctx, StepResult r) {
    auto& dev = device(ctx);
    if (weighting_) {
      // Losses, total and weights were set by weighted_step_device.
      weighting_->after_step(dev.host(), r.lr, opt_.steps_per_epoch);
    } else {
      finish_losses(ctx, dev, dev_batches_[pending_slot_], r);
      for (std::size_t k = 0; k < K; ++k) r.weights[k] = opt_.loss_weights[k];
    }
    ++step_;
    history_.push_back(r);
    return r;
  }

  /// A training step under a weighting method on the device (inside `dev.eager`): forward, the
  /// task losses read back to the host (checked), the weighted backward pass(es), the
  /// before-update hook and the optimiser's update.
  template <class Dev>
  void weighted_step_device(Context<D>& ctx, Dev& dev, DeviceBatch& db, StepResult& r) {
    auto out = net_.forward(ctx, db.image.cview());
    prepare_douts(out);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (device_loss<I>(ctx, dev, out[I], std::get<I>(db.targets).cview()), ...);
    }(std::make_index_sequence<K>{});
    dev.losses().queue_reads(ctx);
    dev.losses().mark_ready(ctx);
    finish_losses(ctx, dev, db, r);
    weighted_backward(ctx, db.image.cview(), r);
    if (before_update_) before_update_(ctx, r);
    dev.update(ctx, net_.parameters(), optimizer_);
  }

  /// Queues task I's loss (the task's `loss`, written once for every device, into the device's
  /// LossSink: its value stays on the device) and its gradient into douts_[I].
  template <std::size_t I, class Dev, class U>
  void device_loss(Context<D>& ctx, Dev& dev, TensorView<const T, D> out,
                   TensorView<const U, D> target) {
    using Task = task_t<I>;
    const Shape& os = out.shape();
    check<ShapeError>(os.rank() >= 2 && os[1] == Task::outputs, "nddr::Trainer: task ", I, " (",
                      Task::name, ") output has shape ", os.str(), ", expected ", Task::outputs,
                      " channels");
    // The weight rounded to T, as the CPU path passes it.
    auto sink = dev.loss_sink(ctx, I, static_cast<double>(static_cast<T>(opt_.loss_weights[I])),
                              Task::name, target.data());
    Task::loss(sink, out, target, douts_[I].view());
  }

  /// Every task's loss of the step read back into `r.losses` (checked finite: a
  /// NonFiniteLossError names the task) and summed into `r.total`.
  template <class Dev>
  void finish_losses(Context<D>& ctx, Dev& dev, const DeviceBatch& db, StepResult& r) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((r.losses[I] = dev.finished_loss(ctx, I, task_t<I>::name, std::get<I>(db.targets).data())),
       ...);
    }(std::make_index_sequence<K>{});
    for (std::size_t k = 0; k < K; ++k) {
      if (!std::isfinite(r.losses[k]))
        throw NonFiniteLossError(step_, k, task_names()[k], r.losses[k]);
      r.total += r.losses[k];
    }
  }

  void prepare_douts(const std::array<TensorView<const T, D>, K>& out) {
    for (std::size_t k = 0; k < K; ++k) {
      douts_[k].resize(out[k].shape());
      douts_[k].zero();
    }
  }

  /// `target` resized (TF-legacy nearest) to the spatial size of the output `os` when both are
  /// dense maps of different sizes; otherwise `target` itself (`storage` unused).
  template <class U>
  static TensorView<const U, Cpu> fit_target(Context<Cpu>& ctx, TensorView<const U, Cpu> tv,
                                             const Shape& os, Tensor<U, Cpu>& storage) {
    return detail::fit_target(ctx, tv, os, storage);
  }

  template <std::size_t I, class Target>
  void compute_loss(Context<Cpu>& ctx, TensorView<const T, Cpu> out, const Target& target,
                    StepResult& r) {
    using Task = task_t<I>;
    using U = typename Task::template target_t<T>;
    Tensor<U, Cpu> resized;
    const TensorView<const U, Cpu> tv = fit_target<U>(ctx, target.cview(), out.shape(), resized);
    r.losses[I] = static_cast<double>(task_loss<Task>(ctx, out, tv, douts_[I].view(),
                                                      static_cast<T>(opt_.loss_weights[I])));
  }

  /// Appends the step's row to log.jsonl and log.csv (both or neither). When that fails (a full
  /// disk), a checkpoint of the current state is attempted before the IoError propagates, so
  /// the steps since the last checkpoint are not lost where the disk still takes it.
  void write_logs(const StepResult& r, double rate, double secs) {
    if (opt_.output_dir.empty() || !opt_.write_outputs) return;
    const auto names = task_names();
    detail::StepLogRow row{step_, r.lr, std::span<const double>(r.losses), {}, r.total, rate,
                           secs};
    if (weighting_) row.weights = std::span<const double>(r.weights);
    try {
      detail::append_step_logs(std::filesystem::path(opt_.output_dir), opt_.name, names, row);
    } catch (const IoError& e) {
      std::string saved;
      if (checkpoints_ && checkpoint_step_ != step_) {
        try {
          saved = "; wrote a checkpoint of this step to '" + save_checkpoint().string() + "'";
        } catch (const std::exception& ce) {
          saved = detail::concat("; a checkpoint of this step could not be written either (",
                                 ce.what(), ")");
        }
      }
      throw IoError(detail::concat(e.what(), " at step ", step_, "; training stopped", saved));
    }
  }

  void print_progress(const StepResult& r, std::int64_t total, double rate, double eta) const {
    const auto names = task_names();
    detail::print_step_progress(opt_.name, step_, total, names, std::span<const double>(r.losses),
                                rate, eta);
  }

  network_type& net_;
  std::function<double(std::int64_t)> schedule_;
  options_type opt_;
  optimizer_type optimizer_;
  std::optional<CheckpointDir> checkpoints_;
  BeforeUpdate before_update_;
  Reducer reducer_;
  std::unique_ptr<WeightingRun> weighting_;
  std::optional<detail::TrainerDevice<D, T>> device_;
  std::array<DeviceBatch, 2> dev_batches_;
  std::size_t next_slot_ = 0;
  std::size_t pending_slot_ = 0;
  std::array<Tensor<T, D>, K> douts_;
  std::vector<StepResult> history_;
  std::int64_t step_ = 0;
  std::int64_t images_ = 0;
  std::int64_t checkpoint_step_ = -1;  ///< the step of the last checkpoint written or restored
  bool owns_outputs_ = false;         ///< the checkpoints in output_dir are this run's
  bool logs_prepared_ = false;        ///< prepare_outputs ran for the current state
};

}  // namespace nddr
