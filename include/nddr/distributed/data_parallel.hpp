#pragma once
/// \file
/// `DataParallel<Comm, Net>`: the glue that turns a `Network` and its `Trainer` into one replica
/// of a data-parallel run over any `Communicator` (SerialCommunicator, MpiCommunicator,
/// NcclCommunicator):
///   - `synchronize(ctx)`: parameters and buffers broadcast from rank 0, per-rank random streams;
///   - `attach(trainer)`: after every backward pass, the flat gradient buffer is averaged over the
///     ranks in buckets (after the whole backward pass: no overlap with it), the step's losses
///     are averaged for the logs, and, without synchronized BN, the BN running statistics are
///     averaged so that every rank holds the same state; with a weighting method
///     (TrainerOptions::weighting) the per-task gradients and the task losses are averaged
///     before the method reads them (`Trainer::Reducer`), so all ranks compute the same weights;
///   - `trainer_options(o)`: rank 0 alone writes logs and checkpoints and prints progress;
///   - `shard(loader_options)`: each rank reads its own disjoint shard of every epoch;
///   - `resume(trainer)` / `load_checkpoint(trainer, path)`: every rank reads rank 0's
///     checkpoint (any rank count wrote it) and re-derives its random streams;
///   - `DataParallelOptions::sync_batch_norm`: BN statistics of the global batch (CPU and GPU;
///     the per-channel sums go through the host on the GPU).
///
/// Equivalence (tested): with equal per-rank batches of B images and per-rank losses that are
/// means over the rank's batch, R ranks with synchronized BN follow one process trained on the
/// concatenated batch of R * B images. Without it, they follow one process that splits each batch
/// of R * B into R micro-batches of B (BN statistics per micro-batch), averages their gradients
/// and averages the R updated running statistics.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/random.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/data/loader.hpp"
#include "nddr/distributed/communicator.hpp"
#include "nddr/layers/batch_norm.hpp"
#include "nddr/train/trainer.hpp"

namespace nddr::distributed {

/// Seed of rank `rank`'s copy of a random stream seeded `seed`: rank 0 keeps `seed` (so a
/// one-rank run is the plain run), every other rank gets an independent, reproducible stream.
inline std::uint64_t rank_seed(std::uint64_t seed, int rank) {
  return rank == 0 ? seed
                   : random_bits(seed ^ 0x52414E4B5345454Dull, static_cast<std::uint64_t>(rank));
}

/// Options of `DataParallel`: `DataParallelOptions{}.sync_bn(true).bucket_mb(25)`.
struct DataParallelOptions {
  /// Synchronized batch norm: statistics of the global batch (all ranks) in training forward
  /// and backward. CPU networks only.
  bool sync_batch_norm = false;
  /// Gradients are all-reduced in buckets of at most this many bytes (> 0).
  std::int64_t bucket_bytes = std::int64_t{25} << 20;
  /// Without synchronized BN, average the BN running statistics over the ranks after every step
  /// (else each rank keeps those of its own shard and rank 0's are checkpointed).
  bool average_buffers = true;

  /// Defaults overridden by the environment, so that unchanged programs can be tuned at launch:
  /// NDDR_SYNC_BN=1|0, NDDR_BUCKET_MB=<megabytes>. Throws OptionError on malformed values.
  static DataParallelOptions from_env() {
    DataParallelOptions o;
    if (const char* v = std::getenv("NDDR_SYNC_BN")) {
      const std::string s(v);
      check<OptionError>(s == "0" || s == "1", "nddr::distributed: NDDR_SYNC_BN must be 0 or 1, got '",
                         s, "'");
      o.sync_batch_norm = s == "1";
    }
    if (const char* v = std::getenv("NDDR_BUCKET_MB")) {
      char* end = nullptr;
      const double mb = std::strtod(v, &end);
      check<OptionError>(end != v && *end == '\0' && mb > 0.0,
                         "nddr::distributed: NDDR_BUCKET_MB must be megabytes > 0, got '", v, "'");
      o.bucket_mb(mb);
    }
    return o;
  }

  DataParallelOptions& sync_bn(bool v) {
    sync_batch_norm = v;
    return *this;
  }
  DataParallelOptions& bucket_mb(double mb) {
    bucket_bytes = static_cast<std::int64_t>(mb * (1 << 20));
    return *this;
  }
  DataParallelOptions& average_running_stats(bool v) {
    average_buffers = v;
    return *this;
  }
};

namespace detail {

/// What a `DataParallel` does that does not depend on its network: the communicator, the
/// options, bucketed collectives over flat buffers and the agreement on the step. One
/// instantiation per communicator, shared by the `DataParallel`s of every network of a program.
template <class Comm>
  requires Communicator<Comm>
class DataParallelCore {
 public:
  using D = typename Comm::device_type;

  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  bool is_root() const { return comm_.rank() == 0; }
  const DataParallelOptions& options() const { return opt_; }
  Comm& communicator() { return comm_; }

  /// `o` for this rank: ranks other than 0 neither write logs or checkpoints nor print progress
  /// (they still read output_dir to resume).
  template <class O>
  TrainerOptionsFor<O> trainer_options(TrainerOptionsFor<O> o) const {
    if (!is_root()) {
      o.write_outputs = false;
      o.progress = false;
    }
    return o;
  }
  /// `o` sharded for this rank (positions rank, rank + size, ... of every epoch's order).
  data::LoaderOptions shard(data::LoaderOptions o) const {
    o.shard(rank(), size());
    return o;
  }

 protected:
  DataParallelCore(Comm& comm, DataParallelOptions opt) : comm_(comm), opt_(opt) {
    check<OptionError>(opt_.bucket_bytes > 0,
                       "nddr::distributed::DataParallel: bucket_bytes must be > 0, got ",
                       opt_.bucket_bytes);
    if (opt_.sync_batch_norm) {
      bn_sync_.emplace([this](std::span<double> v) { comm_.all_reduce_sum_host(v); });
    }
  }

  /// Averages `flat` over the ranks, `bucket_bytes` at a time.
  template <class T>
  void average_flat(Context<D>& ctx, TensorView<T, D> flat) {
    for_buckets(flat, [&](TensorView<T, D> b) { comm_.all_reduce_average(ctx, b); });
  }
  /// Rank 0's `flat` on every rank, `bucket_bytes` at a time.
  template <class T>
  void broadcast_flat(Context<D>& ctx, TensorView<T, D> flat) {
    if (size() == 1) return;
    for_buckets(flat, [&](TensorView<T, D> b) { comm_.broadcast(ctx, b, 0); });
  }
  /// The mean of `v` over the ranks, in place.
  void average_host(std::span<double> v) {
    comm_.all_reduce_sum_host(v);
    for (double& x : v) x /= static_cast<double>(size());
  }
  /// Averages `losses` and `total` over the ranks; `stop` when any rank stops.
  void average_loss_values(std::span<double> losses, double& total, bool& stop) {
    std::vector<double> v(losses.begin(), losses.end());
    v.push_back(total);
    v.push_back(stop ? 1.0 : 0.0);
    comm_.all_reduce_sum_host(std::span<double>(v));
    const double inv = 1.0 / static_cast<double>(size());
    for (std::size_t k = 0; k < losses.size(); ++k) losses[k] = v[k] * inv;
    total = v[losses.size()] * inv;
    stop = v.back() > 0.0;
  }
  void agree_on_step(std::int64_t step, const char* what) {
    if (size() == 1) return;
    double v[2] = {static_cast<double>(step), static_cast<double>(step) * static_cast<double>(step)};
    comm_.all_reduce_sum_host(std::span<double>(v));
    const double n = static_cast<double>(size());
    check<IoError>(v[0] == n * static_cast<double>(step) &&
                       v[1] == n * static_cast<double>(step) * static_cast<double>(step),
                   "nddr::distributed::DataParallel::", what, ": rank ", rank(), " is at step ",
                   step, " but the ranks disagree (mean step ", v[0] / n,
                   "); every rank must see rank 0's output_dir (a shared file system)");
  }

  Comm& comm_;
  DataParallelOptions opt_;

 private:
  template <class T, class F>
  void for_buckets(TensorView<T, D> flat, F&& f) {
    const std::int64_t n = flat.numel();
    const std::int64_t bucket =
        std::max<std::int64_t>(1, opt_.bucket_bytes / static_cast<std::int64_t>(sizeof(T)));
    for (std::int64_t off = 0; off < n; off += bucket)
      f(TensorView<T, D>(flat.data() + off, Shape{std::min(bucket, n - off)}));
  }

  std::optional<ScopedBatchNormSync> bn_sync_;
};

}  // namespace detail

template <class Comm, class Net>
  requires Communicator<Comm>
class DataParallel : public detail::DataParallelCore<Comm> {
  using Core = detail::DataParallelCore<Comm>;

 public:
  using value_type = typename Net::value_type;
  using device_type = typename Net::device_type;
  using T = value_type;
  using D = device_type;
  static_assert(std::is_same_v<typename Comm::device_type, D>,
                "nddr::distributed::DataParallel: the communicator and the network must be on "
                "the same device");
  using Core::rank;
  using Core::size;

  /// Keeps references to `comm` and `net`, which must outlive it. With sync_batch_norm, every
  /// BatchNorm2d trained on this thread is synchronized while this object lives.
  DataParallel(Comm& comm, Net& net, DataParallelOptions opt = {}) : Core(comm, opt), net_(net) {}
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  /// Start of a run: every rank takes rank 0's parameters and buffers, then derives its own
  /// random streams (dropout) from rank 0's.
  void synchronize(Context<D>& ctx) {
    auto& store = net_.parameters();
    this->broadcast_flat(ctx, store.values());
    this->broadcast_flat(ctx, store.buffer_values());
    derive_random_streams();
  }

  /// Rank r != 0 replaces every random stream's seed s by rank_seed(s, r), keeping its counter;
  /// rank 0's streams stay as they are. Done by synchronize and after loading a checkpoint (by
  /// resume / load_checkpoint). Idempotent: a stream whose seed is the one this object derived
  /// last is left alone, so synchronize may come before or after resume.
  void derive_random_streams() {
    const auto rngs = net_.rngs();
    derived_.resize(rngs.size(), 0);
    for (std::size_t i = 0; i < rngs.size(); ++i) {
      Rng::State s = rngs[i]->state();
      if (derived_valid_ && s.seed == derived_[i]) continue;
      s.seed = rank_seed(s.seed, rank());
      rngs[i]->set_state(s);
      derived_[i] = s.seed;
    }
    derived_valid_ = true;
  }

  /// Averages the gradient buffer over the ranks, `bucket_bytes` at a time.
  void average_gradients(Context<D>& ctx) { this->average_flat(ctx, net_.parameters().grads()); }
  /// Averages the buffers (BN running statistics) over the ranks.
  void average_buffers(Context<D>& ctx) {
    this->average_flat(ctx, net_.parameters().buffer_values());
  }
  /// Averages a step's losses and total over the ranks (what the logs of rank 0 show), and
  /// makes the ranks agree on stopping after this step (any rank asked to, by a signal or
  /// request_stop, so all stop at the same step instead of waiting for each other forever).
  template <class StepResult>
  void average_losses(StepResult& r) {
    if (size() == 1) return;
    this->average_loss_values(std::span<double>(r.losses), r.total, r.stop);
  }

  /// What runs between backward and the optimiser step: gradients, losses, and (without
  /// synchronized BN, when average_buffers) running statistics averaged.
  template <class StepResult>
  void before_update(Context<D>& ctx, StepResult& r) {
    if (size() == 1) return;
    average_gradients(ctx);
    if (!this->opt_.sync_batch_norm && this->opt_.average_buffers) average_buffers(ctx);
    average_losses(r);
  }

  /// Installs before_update as the trainer's before-update hook; on one rank, where it would do
  /// nothing, installs none (a hook turns the trainer's CUDA-graph capture off).
  template <class Trainer>
  void attach(Trainer& trainer) {
    if (size() == 1) return;
    trainer.set_before_update(
        [this](Context<D>& ctx, typename Trainer::StepResult& r) { before_update(ctx, r); });
    // What a weighting method reads (per-task gradients, losses) is averaged before it reads it.
    trainer.set_reducer(typename Trainer::Reducer{
        [this](Context<D>& ctx, TensorView<T, D> flat) { this->average_flat(ctx, flat); },
        [this](std::span<double> v) { this->average_host(v); }});
  }

  /// Trainer::resume on every rank (all read the newest checkpoint in output_dir, written by
  /// rank 0 of a run with any rank count), then checks that all ranks found the same step and
  /// derives the random streams. Returns whether a checkpoint was found.
  template <class Trainer>
  bool resume(Trainer& trainer) {
    const bool found = trainer.resume();
    this->agree_on_step(trainer.step(), "resume");
    if (found) derive_random_streams();
    return found;
  }
  /// Trainer::load_checkpoint(path) on every rank, then as resume.
  template <class Trainer>
  void load_checkpoint(Trainer& trainer, const std::string& path) {
    trainer.load_checkpoint(path);
    this->agree_on_step(trainer.step(), "load_checkpoint");
    derive_random_streams();
  }

 private:
  Net& net_;
  std::vector<std::uint64_t> derived_;  // the seeds derive_random_streams set last
  bool derived_valid_ = false;
};

}  // namespace nddr::distributed
