#pragma once
/// \file
/// The MPI model of `Communicator` (CPU tensors), the RAII `MpiEnvironment`, and the collective
/// watchdog: a rank blocked in a collective for longer than the timeout (another rank died or
/// hangs) prints which call it was in and exits non-zero, which makes `mpirun` end the job.
/// Requires the `nddr::mpi` CMake target (MPI and NDDR_WITH_MPI=1).

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <type_traits>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/distributed/communicator.hpp"

namespace nddr::distributed {

namespace detail {

/// Throws nddr::Error naming `call` and MPI's message unless rc is MPI_SUCCESS.
inline void mpi_check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw Error(nddr::detail::concat("nddr::distributed: ", call, " failed (error ", rc, "): ",
                                   std::string(text, static_cast<std::size_t>(len))));
}

template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int32_t>) return MPI_INT32_T;
  else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return MPI_UINT64_T;
  else static_assert(sizeof(T) == 0, "nddr::distributed: no MPI datatype for this element type");
}

/// MPI counts are int: larger buffers go in pieces of this many elements.
inline constexpr std::int64_t kMpiChunk = std::int64_t{1} << 30;

/// Seconds from NDDR_COLLECTIVE_TIMEOUT, else `fallback`.
inline double timeout_from_env(double fallback) {
  if (const char* v = std::getenv("NDDR_COLLECTIVE_TIMEOUT")) {
    char* end = nullptr;
    const double s = std::strtod(v, &end);
    check<OptionError>(end != v && *end == '\0' && s >= 0.0,
                       "nddr::distributed: NDDR_COLLECTIVE_TIMEOUT must be seconds >= 0, got '",
                       v, "'");
    return s;
  }
  return fallback;
}

}  // namespace detail

/// Exit status of a rank whose collective timed out.
inline constexpr int kCollectiveTimeoutExit = 3;

/// A thread that ends the process when a collective started with `begin` has not `end`ed within
/// `timeout` seconds (0 = never). It never calls MPI itself (MPI_THREAD_FUNNELED is enough): it
/// prints the call, the rank and the wait to stderr and calls std::_Exit, and `mpirun` then
/// terminates the other ranks and returns non-zero.
class CollectiveWatchdog {
 public:
  CollectiveWatchdog(double timeout_s, int rank, int size)
      : timeout_s_(timeout_s), rank_(rank), size_(size) {
    if (timeout_s_ > 0.0) thread_ = std::thread([this] { run(); });
  }
  ~CollectiveWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  double timeout() const { return timeout_s_; }

  void begin(const char* call) {
    if (timeout_s_ <= 0.0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    call_ = call;
    started_ = std::chrono::steady_clock::now();
    active_ = true;
  }
  void end() {
    if (timeout_s_ <= 0.0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    active_ = false;
  }

  /// Scope of one collective.
  class Guard {
   public:
    Guard(CollectiveWatchdog& w, const char* call) : w_(w) { w_.begin(call); }
    ~Guard() { w_.end(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    CollectiveWatchdog& w_;
  };

 private:
  void run() {
    using namespace std::chrono;
    const auto poll = duration_cast<steady_clock::duration>(
        duration<double>(std::clamp(timeout_s_ / 10.0, 0.01, 1.0)));
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      wake_.wait_for(lock, poll);
      if (!active_) continue;
      const double waited = duration<double>(steady_clock::now() - started_).count();
      if (waited < timeout_s_) continue;
      std::fprintf(stderr,
                   "nddr: rank %d of %d: %s has not completed after %.1f s: another rank died or "
                   "hangs; exiting with status %d (timeout: NDDR_COLLECTIVE_TIMEOUT or "
                   "MpiOptions::timeout_s)\n",
                   rank_, size_, call_, waited, kCollectiveTimeoutExit);
      std::fflush(stderr);
      std::_Exit(kCollectiveTimeoutExit);
    }
  }

  double timeout_s_;
  int rank_, size_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool active_ = false;
  const char* call_ = "";
  std::chrono::steady_clock::time_point started_;
  std::thread thread_;
};

/// Initialises MPI (thread level MPI_THREAD_FUNNELED: only the main thread calls MPI; loader
/// workers and the watchdog never do) and finalises it on destruction, unless MPI was already
/// initialised by someone else, who then keeps that duty. One per process, in main().
class MpiEnvironment {
 public:
  MpiEnvironment() : MpiEnvironment(nullptr, nullptr) {}
  MpiEnvironment(int* argc, char*** argv) {
    int done = 0;
    detail::mpi_check(MPI_Initialized(&done), "MPI_Initialized");
    if (done) {
      detail::mpi_check(MPI_Query_thread(&provided_), "MPI_Query_thread");
      return;
    }
    detail::mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided_),
                      "MPI_Init_thread");
    owner_ = true;
  }
  ~MpiEnvironment() {
    if (!owner_) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  /// The thread level MPI granted.
  int thread_level() const { return provided_; }
  /// Whether this object initialised MPI (and will finalise it).
  bool owner() const { return owner_; }

 private:
  int provided_ = MPI_THREAD_SINGLE;
  bool owner_ = false;
};

/// Options of an MpiCommunicator.
struct MpiOptions {
  /// Seconds a collective may block before the rank gives up and exits with
  /// kCollectiveTimeoutExit (0 = wait forever). Must exceed the longest time one rank can spend
  /// outside collectives while the others wait (evaluation, checkpoint writing on rank 0).
  /// Default: NDDR_COLLECTIVE_TIMEOUT, else 600.
  double timeout_s = detail::timeout_from_env(600.0);

  MpiOptions& timeout(double seconds) {
    timeout_s = seconds;
    return *this;
  }
};

/// `Communicator` over an MPI communicator (a duplicate of MPI_COMM_WORLD by default, so its
/// traffic never mixes with the caller's), for CPU tensors. Errors are returned by MPI
/// (MPI_ERRORS_RETURN) and thrown as nddr::Error naming the call; blocked collectives are
/// bounded by the watchdog. Needs a live MpiEnvironment.
class MpiCommunicator {
 public:
  using device_type = Cpu;

  explicit MpiCommunicator(MpiOptions opt = {}) : MpiCommunicator(MPI_COMM_WORLD, opt) {}
  /// Duplicates `comm` (e.g. MPI_COMM_SELF for a one-rank group inside an MPI job).
  explicit MpiCommunicator(MPI_Comm comm, MpiOptions opt = {}) {
    check<OptionError>(opt.timeout_s >= 0.0,
                       "nddr::distributed::MpiCommunicator: timeout_s must be >= 0, got ",
                       opt.timeout_s);
    detail::mpi_check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    detail::mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN),
                      "MPI_Comm_set_errhandler");
    detail::mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    MPI_Comm local;
    detail::mpi_check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
                      "MPI_Comm_split_type");
    detail::mpi_check(MPI_Comm_rank(local, &local_rank_), "MPI_Comm_rank");
    detail::mpi_check(MPI_Comm_size(local, &local_size_), "MPI_Comm_size");
    MPI_Comm_free(&local);
    watchdog_ = std::make_unique<CollectiveWatchdog>(opt.timeout_s, rank_, size_);
  }
  ~MpiCommunicator() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  /// Rank among the processes of this host (selects the GPU of a multi-GPU node).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  MPI_Comm native() const { return comm_; }
  double timeout() const { return watchdog_->timeout(); }

  template <class T>
  void all_reduce_sum(Context<Cpu>&, TensorView<T, Cpu> x) {
    all_reduce_sum_raw(x.data(), x.numel());
  }
  /// Sum, then scaled by 1 / size() (MPI has no average operation).
  template <class T>
  void all_reduce_average(Context<Cpu>& ctx, TensorView<T, Cpu> x) {
    all_reduce_sum(ctx, x);
    if (size_ == 1) return;
    const T scale = static_cast<T>(1.0 / static_cast<double>(size_));
    T* p = x.data();
    nddr::detail::parallel_for(ctx, x.numel(), [=](std::int64_t i) { p[i] *= scale; });
  }
  template <class T>
  void broadcast(Context<Cpu>&, TensorView<T, Cpu> x, int root) {
    broadcast_raw(x.data(), x.numel(), root);
  }
  void all_reduce_sum_host(std::span<double> v) {
    all_reduce_sum_raw(v.data(), static_cast<std::int64_t>(v.size()));
  }
  /// Broadcasts raw host bytes from `root` (e.g. an ncclUniqueId).
  void broadcast_bytes(void* data, std::int64_t bytes, int root) {
    broadcast_raw(static_cast<unsigned char*>(data), bytes, root);
  }

  template <class T>
  void all_reduce_sum_raw(T* data, std::int64_t count) {
    CollectiveWatchdog::Guard g(*watchdog_, "MPI_Allreduce");
    for (std::int64_t done = 0; done < count; done += detail::kMpiChunk) {
      const int n = static_cast<int>(std::min(detail::kMpiChunk, count - done));
      detail::mpi_check(
          MPI_Allreduce(MPI_IN_PLACE, data + done, n, detail::mpi_type<T>(), MPI_SUM, comm_),
          "MPI_Allreduce");
    }
  }
  template <class T>
  void broadcast_raw(T* data, std::int64_t count, int root) {
    nddr::distributed::detail::check_root("nddr::distributed::MpiCommunicator::broadcast", root,
                                          size_);
    CollectiveWatchdog::Guard g(*watchdog_, "MPI_Bcast");
    for (std::int64_t done = 0; done < count; done += detail::kMpiChunk) {
      const int n = static_cast<int>(std::min(detail::kMpiChunk, count - done));
      if constexpr (std::is_same_v<T, unsigned char>)
        detail::mpi_check(MPI_Bcast(data + done, n, MPI_BYTE, root, comm_), "MPI_Bcast");
      else
        detail::mpi_check(MPI_Bcast(data + done, n, detail::mpi_type<T>(), root, comm_),
                          "MPI_Bcast");
    }
  }

  void barrier() {
    CollectiveWatchdog::Guard g(*watchdog_, "MPI_Barrier");
    detail::mpi_check(MPI_Barrier(comm_), "MPI_Barrier");
  }

  /// Prints `why` with this rank and ends every process of the job (MPI_Abort).
  [[noreturn]] void abort(int code, const std::string& why) {
    std::fprintf(stderr, "nddr: rank %d of %d aborting the job: %s\n", rank_, size_, why.c_str());
    std::fflush(stderr);
    MPI_Abort(comm_, code);
    std::_Exit(code);
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::unique_ptr<CollectiveWatchdog> watchdog_;
};

static_assert(Communicator<MpiCommunicator>);
static_assert(Communicator<SerialCommunicator<Cpu>>);

}  // namespace nddr::distributed
