#pragma once
/// \file
/// A generic multi-threaded prefetching loader. Worker threads call a user `load(index, rng)`
/// for the samples of upcoming batches; `next()` hands the batches out strictly in order. The
/// sample order and every sample's random stream depend only on (seed, epoch, index), never on
/// the thread count or on timing, so a run is reproducible with any number of workers.

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/random.hpp"

namespace nddr::data {

/// Most worker threads a `PrefetchLoader` starts (more only wait for the same disk and cores).
inline constexpr int kMaxWorkerThreads = 1024;

/// Options of `PrefetchLoader`: `LoaderOptions{}.batch_size(10).seed(1234).threads(4)`.
struct LoaderOptions {
  std::int64_t items_per_batch = 1;
  bool shuffle_samples = true;
  std::uint64_t base_seed = 0;
  /// Worker threads (0 to kMaxWorkerThreads); 0 loads synchronously inside `next()`.
  int worker_threads = 1;
  /// Batches that may be loaded ahead of the consumer (the bound of the queue).
  std::int64_t prefetch_batches = 2;
  /// Drops the last, incomplete batch of every epoch.
  bool drop_incomplete = false;
  std::int64_t shard_rank = 0;
  std::int64_t shard_world = 1;
  /// Global batch number to start at (resuming a run: epochs * batches_per_epoch + batch).
  std::int64_t first_batch = 0;

  LoaderOptions& batch_size(std::int64_t v) {
    items_per_batch = v;
    return *this;
  }
  LoaderOptions& shuffle(bool v) {
    shuffle_samples = v;
    return *this;
  }
  LoaderOptions& seed(std::uint64_t v) {
    base_seed = v;
    return *this;
  }
  LoaderOptions& threads(int v) {
    worker_threads = v;
    return *this;
  }
  LoaderOptions& prefetch(std::int64_t v) {
    prefetch_batches = v;
    return *this;
  }
  LoaderOptions& drop_last(bool v) {
    drop_incomplete = v;
    return *this;
  }
  /// Data-parallel sharding: this rank reads positions rank, rank + world, ... of every epoch's
  /// (shared) order, so the shards are disjoint and together cover every sample once.
  LoaderOptions& shard(std::int64_t rank, std::int64_t world) {
    shard_rank = rank;
    shard_world = world;
    return *this;
  }
  LoaderOptions& start_batch(std::int64_t v) {
    first_batch = v;
    return *this;
  }
};

/// One batch: the items in order, their dataset indices, and where it sits in the stream.
template <class Item>
struct Batch {
  std::vector<Item> items;
  std::vector<std::int64_t> indices;
  std::int64_t epoch = 0;
  /// Position of the batch inside its epoch.
  std::int64_t batch = 0;
};

/// The sample order of `epoch` over `size` samples: a seeded Fisher-Yates permutation (identity
/// without shuffling). The same for every rank, which shards it afterwards.
inline std::vector<std::int64_t> epoch_order(std::int64_t size, std::uint64_t seed,
                                             std::int64_t epoch, bool shuffle) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(size));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  if (!shuffle) return order;
  Rng rng(random_bits(seed ^ 0x53485546464C45ull, static_cast<std::uint64_t>(epoch)));
  for (std::int64_t i = size - 1; i > 0; --i) {
    const auto j = static_cast<std::int64_t>(rng.below(static_cast<std::uint64_t>(i + 1)));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

/// The positions of `order` that rank `rank` of `world` reads: rank, rank + world, ...
inline std::vector<std::int64_t> shard_order(const std::vector<std::int64_t>& order,
                                             std::int64_t rank, std::int64_t world) {
  std::vector<std::int64_t> mine;
  for (std::size_t p = static_cast<std::size_t>(rank); p < order.size();
       p += static_cast<std::size_t>(world))
    mine.push_back(order[p]);
  return mine;
}

/// The random stream of one sample in one epoch (augmentation draws).
inline Rng sample_rng(std::uint64_t seed, std::int64_t epoch, std::int64_t index) {
  return Rng(random_bits(random_bits(seed, static_cast<std::uint64_t>(epoch)),
                         static_cast<std::uint64_t>(index)));
}

namespace detail {

/// Rethrows the current exception with `context` prefixed, keeping nddr's error type.
[[noreturn]] inline void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const IoError& e) {
    throw IoError(context + e.what());
  } catch (const ValueError& e) {
    throw ValueError(context + e.what());
  } catch (const ShapeError& e) {
    throw ShapeError(context + e.what());
  } catch (const OptionError& e) {
    throw OptionError(context + e.what());
  } catch (const std::exception& e) {
    throw Error(context + e.what());
  } catch (...) {
    throw Error(context + "unknown exception");
  }
}

}  // namespace detail

/// Endless stream of batches over `size` samples, epoch after epoch, loaded ahead by worker
/// threads. `load(index, rng)` must be callable concurrently from several threads.
template <class Item>
class PrefetchLoader {
 public:
  using LoadFn = std::function<Item(std::int64_t, Rng&)>;

  PrefetchLoader(std::int64_t size, LoadFn load, const LoaderOptions& opt)
      : size_(size), load_(std::move(load)), opt_(opt) {
    const char* op = "nddr::data::PrefetchLoader";
    check<OptionError>(size >= 1, op, ": size must be >= 1, got ", size);
    check<OptionError>(opt.items_per_batch >= 1, op, ": batch_size must be >= 1, got ",
                       opt.items_per_batch);
    check<OptionError>(opt.worker_threads >= 0 && opt.worker_threads <= kMaxWorkerThreads, op,
                       ": threads must be in 0..", kMaxWorkerThreads, ", got ", opt.worker_threads);
    check<OptionError>(opt.prefetch_batches >= 1, op, ": prefetch must be >= 1, got ",
                       opt.prefetch_batches);
    check<OptionError>(
        opt.shard_world >= 1 && opt.shard_rank >= 0 && opt.shard_rank < opt.shard_world, op,
        ": shard needs 0 <= rank < world, got rank ", opt.shard_rank, ", world ", opt.shard_world);
    check<OptionError>(opt.first_batch >= 0, op, ": start_batch must be >= 0, got ",
                       opt.first_batch);
    shard_size_ = (size - opt.shard_rank + opt.shard_world - 1) / opt.shard_world;
    check<OptionError>(shard_size_ >= 1, op, ": rank ", opt.shard_rank, " of ", opt.shard_world,
                       " gets no sample of ", size);
    batches_per_epoch_ = opt.drop_incomplete
                             ? shard_size_ / opt.items_per_batch
                             : (shard_size_ + opt.items_per_batch - 1) / opt.items_per_batch;
    check<OptionError>(batches_per_epoch_ >= 1, op, ": drop_last with batch_size ",
                       opt.items_per_batch, " leaves no batch of the ", shard_size_,
                       " samples of this shard");
    consumed_ = opt.first_batch;
    claim_batch_ = opt.first_batch;
    start_workers();
  }

  PrefetchLoader(const PrefetchLoader&) = delete;
  PrefetchLoader& operator=(const PrefetchLoader&) = delete;

  /// Stops the workers; a sample being loaded finishes first, nothing else is waited for.
  ~PrefetchLoader() { stop_workers(); }

  std::int64_t size() const { return size_; }
  /// Samples this rank reads per epoch.
  std::int64_t shard_size() const { return shard_size_; }
  std::int64_t batches_per_epoch() const { return batches_per_epoch_; }
  /// Global number of the batch the next `next()` returns.
  std::int64_t position() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return consumed_;
  }

  /// The next batch in stream order. A failed sample is rethrown here, its message prefixed
  /// with the sample index, epoch and batch (the dataset's message names the file).
  Batch<Item> next() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::int64_t g = consumed_;
    if (workers_.empty()) {
      lock.unlock();
      return load_inline(g);
    }
    ensure_slot(g);
    ready_.wait(lock, [&] { return slots_.at(g).remaining == 0; });
    // A failed batch stays in place: every later call rethrows the same error.
    if (slots_.at(g).error) std::rethrow_exception(slots_.at(g).error);
    Slot slot = std::move(slots_.at(g));
    slots_.erase(g);
    ++consumed_;
    lock.unlock();
    space_.notify_all();
    Batch<Item> b;
    b.epoch = g / batches_per_epoch_;
    b.batch = g % batches_per_epoch_;
    b.indices = std::move(slot.indices);
    b.items.reserve(slot.items.size());
    for (auto& it : slot.items) b.items.push_back(std::move(*it));
    return b;
  }

 private:
  struct Slot {
    std::vector<std::int64_t> indices;
    std::vector<std::optional<Item>> items;
    std::int64_t claimed = 0;
    std::int64_t remaining = 0;
    std::exception_ptr error;
  };

  /// Starts the workers. When the system refuses a thread (std::thread throws: a process or
  /// memory limit), the ones already running are stopped and joined before the OptionError
  /// naming the thread count propagates: a destroyed joinable std::thread would terminate.
  void start_workers() {
    const int wanted = opt_.worker_threads;
    workers_.reserve(static_cast<std::size_t>(wanted));
    try {
      for (int t = 0; t < wanted; ++t) workers_.emplace_back([this] { work(); });
    } catch (const std::system_error& e) {
      const std::size_t started = workers_.size();
      stop_workers();
      throw OptionError(nddr::detail::concat(
          "nddr::data::PrefetchLoader: cannot start ", wanted, " worker threads: thread ",
          started + 1, " failed (", e.what(), "); the system allows fewer threads, use fewer "
          "(threads(n), --loader-threads) or raise the process limit (ulimit -u)"));
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    space_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  /// Dataset indices of global batch g.
  std::vector<std::int64_t> batch_indices(std::int64_t g) {
    const std::int64_t epoch = g / batches_per_epoch_;
    const std::int64_t b = g % batches_per_epoch_;
    // Workers run up to `prefetch` batches ahead, so two epochs can be live at once.
    orders_.erase(orders_.begin(), orders_.lower_bound(consumed_ / batches_per_epoch_));
    auto it = orders_.find(epoch);
    if (it == orders_.end())
      it = orders_
               .emplace(epoch,
                        shard_order(epoch_order(size_, opt_.base_seed, epoch, opt_.shuffle_samples),
                                    opt_.shard_rank, opt_.shard_world))
               .first;
    const std::int64_t begin = b * opt_.items_per_batch;
    const std::int64_t end = std::min(begin + opt_.items_per_batch, shard_size_);
    return {it->second.begin() + begin, it->second.begin() + end};
  }

  void ensure_slot(std::int64_t g) {
    if (slots_.count(g) != 0) return;
    Slot s;
    s.indices = batch_indices(g);
    s.items.resize(s.indices.size());
    s.remaining = static_cast<std::int64_t>(s.indices.size());
    slots_.emplace(g, std::move(s));
  }

  Item load_one(std::int64_t g, std::int64_t index) {
    Rng rng = sample_rng(opt_.base_seed, g / batches_per_epoch_, index);
    try {
      return load_(index, rng);
    } catch (...) {
      detail::rethrow_with_context("nddr::data::PrefetchLoader: sample " + std::to_string(index) +
                                   " (epoch " + std::to_string(g / batches_per_epoch_) +
                                   ", batch " + std::to_string(g % batches_per_epoch_) + "): ");
    }
  }

  Batch<Item> load_inline(std::int64_t g) {
    std::vector<std::int64_t> idx;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      idx = batch_indices(g);
    }
    Batch<Item> b;
    b.epoch = g / batches_per_epoch_;
    b.batch = g % batches_per_epoch_;
    for (std::int64_t i : idx) b.items.push_back(load_one(g, i));
    b.indices = std::move(idx);
    std::lock_guard<std::mutex> lock(mutex_);
    ++consumed_;
    return b;
  }

  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      space_.wait(lock, [&] { return stop_ || claim_batch_ < consumed_ + opt_.prefetch_batches; });
      if (stop_) return;
      const std::int64_t g = claim_batch_;
      ensure_slot(g);
      Slot& slot = slots_.at(g);
      const std::int64_t k = slot.claimed++;
      if (slot.claimed == static_cast<std::int64_t>(slot.indices.size())) ++claim_batch_;
      const std::int64_t index = slot.indices[static_cast<std::size_t>(k)];
      lock.unlock();
      std::optional<Item> item;
      std::exception_ptr error;
      try {
        item.emplace(load_one(g, index));
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      // std::map nodes are stable and the consumer erases a slot only after it completed.
      Slot& done = slots_.at(g);
      if (error && !done.error) done.error = error;
      done.items[static_cast<std::size_t>(k)] = std::move(item);
      if (--done.remaining == 0) ready_.notify_all();
    }
  }

  std::int64_t size_;
  LoadFn load_;
  LoaderOptions opt_;
  std::int64_t shard_size_ = 0;
  std::int64_t batches_per_epoch_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable ready_;  // a batch completed
  std::condition_variable space_;  // the consumer advanced, or stop
  std::map<std::int64_t, Slot> slots_;
  std::int64_t consumed_ = 0;     // next batch next() returns
  std::int64_t claim_batch_ = 0;  // batch whose samples workers claim next
  std::map<std::int64_t, std::vector<std::int64_t>> orders_;  // shard order per live epoch
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace nddr::data
