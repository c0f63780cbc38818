#pragma once
/// \file
/// `AutoDataParallel<Net>`: data parallelism chosen from how the program was launched, so that a
/// training driver is written once and runs unchanged alone or under `mpirun -np N`:
///   - started by a launcher with N > 1 ranks and built with MPI (`nddr::mpi`): MPI is initialised
///     (once per process, finalised at exit) and the network becomes one replica of a
///     DataParallel over MPI (CPU networks) or NCCL (CUDA networks, `nddr::nccl`);
///   - otherwise a DataParallel over SerialCommunicator, whose every call changes nothing;
///   - started as N > 1 ranks but built without MPI: OptionError, instead of N independent runs
///     overwriting each other's outputs.
///
/// In a driver (see docs/distributed.md):
///   nddr::distributed::AutoDataParallel dp(net, ctx);      // after the network is built
///   Train trainer(net, schedule, dp.trainer_options(topt)); // rank 0 alone writes
///   dp.resume(trainer);                                     // instead of trainer.resume()
///   dp.attach(ctx, trainer);                                // broadcast + gradient averaging
///   ... dp.shard(loader_options) ...                        // each rank its own samples
///   if (dp.is_root()) write_results(...);

#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/data/loader.hpp"
#include "nddr/distributed/communicator.hpp"
#include "nddr/distributed/data_parallel.hpp"
#include "nddr/distributed/launch.hpp"
#include "nddr/train/trainer.hpp"

#if defined(NDDR_WITH_MPI)
#include "nddr/distributed/mpi.hpp"
#endif
#if defined(NDDR_WITH_NCCL)
#include "nddr/distributed/nccl.hpp"
#endif

namespace nddr::distributed {

#if defined(NDDR_WITH_MPI)
namespace detail {
/// The process's MpiEnvironment, created on first use and finalised at exit.
inline MpiEnvironment& process_mpi_environment() {
  static MpiEnvironment env;
  return env;
}
}  // namespace detail
#endif

template <class Net>
class AutoDataParallel {
 public:
  using D = typename Net::device_type;

  /// Joins the launcher's job as one replica of `net` (see the file comment). `ctx` is the
  /// context the network trains on (its stream carries NCCL's collectives). The default options
  /// come from the environment (DataParallelOptions::from_env: NDDR_SYNC_BN, NDDR_BUCKET_MB).
  AutoDataParallel(Net& net, Context<D>& ctx,
                   DataParallelOptions opt = DataParallelOptions::from_env()) {
    init(net, &ctx, opt);
  }
  /// For CPU networks, which need no context to join.
  explicit AutoDataParallel(Net& net, DataParallelOptions opt = DataParallelOptions::from_env())
    requires std::is_same_v<D, Cpu>
  {
    init(net, nullptr, opt);
  }
  /// Destroyed by an exception leaving the driver on one rank of several (a non-finite loss, an
  /// unreadable sample): that rank ends the whole job (MPI_Abort) instead of leaving the others
  /// blocked in their next collective until the watchdog's timeout.
  ~AutoDataParallel() {
#if defined(NDDR_WITH_MPI)
    if (mpi_ && mpi_->size() > 1 && std::uncaught_exceptions() > exceptions_at_start_)
      mpi_->abort(1, "an exception is leaving the data-parallel training on this rank (the "
                     "other ranks would wait for it); ending the job");
#endif
  }
  AutoDataParallel(const AutoDataParallel&) = delete;
  AutoDataParallel& operator=(const AutoDataParallel&) = delete;

  int rank() const {
    return visit([](const auto& dp) { return dp.rank(); });
  }
  int size() const {
    return visit([](const auto& dp) { return dp.size(); });
  }
  bool is_root() const { return rank() == 0; }
  /// Whether this process is one of several replicas.
  bool distributed() const { return size() > 1; }
  /// Waits for every rank (e.g. after rank 0 prepared a directory).
  void barrier() {
    visit([](auto& dp) { dp.communicator().barrier(); });
  }

  template <class O>
  TrainerOptionsFor<O> trainer_options(TrainerOptionsFor<O> o) const {
    return visit([&](const auto& dp) { return dp.trainer_options(std::move(o)); });
  }
  data::LoaderOptions shard(data::LoaderOptions o) const {
    return visit([&](const auto& dp) { return dp.shard(o); });
  }
  /// DataParallel::resume (every rank reads rank 0's newest checkpoint).
  template <class Trainer>
  bool resume(Trainer& trainer) {
    return visit([&](auto& dp) { return dp.resume(trainer); });
  }
  /// Broadcasts rank 0's parameters and buffers, derives the random streams, and installs the
  /// gradient averaging as the trainer's before-update hook. Before or after resume.
  template <class Trainer>
  void attach(Context<D>& ctx, Trainer& trainer) {
    visit([&](auto& dp) {
      dp.synchronize(ctx);
      dp.attach(trainer);
    });
  }

 private:
  void init(Net& net, [[maybe_unused]] Context<D>* ctx, const DataParallelOptions& opt) {
    const int world = launcher_world_size();
#if defined(NDDR_WITH_MPI)
    if (world > 1) {
      detail::process_mpi_environment();
      mpi_ = std::make_unique<MpiCommunicator>();
      if constexpr (std::is_same_v<D, Cpu>) {
        cpu_.emplace(*mpi_, net, opt);
        return;
      } else {
#if defined(NDDR_WITH_NCCL)
        nccl_ = std::make_unique<NcclCommunicator>(*mpi_, *ctx);
        gpu_.emplace(*nccl_, net, opt);
        return;
#else
        throw OptionError(nddr::detail::concat(
            "nddr::distributed::AutoDataParallel: started as one of ", world,
            " ranks with a CUDA network, but built without NCCL: link the nddr::nccl CMake "
            "target"));
#endif
      }
    }
#else
    check<OptionError>(world <= 1, "nddr::distributed::AutoDataParallel: started as one of ",
                       world,
                       " ranks (mpirun), but built without MPI: link the nddr::mpi CMake target "
                       "or run a single process");
#endif
    serial_.emplace(serial_comm_, net, opt);
  }

  template <class F>
  decltype(auto) visit(F&& f) {
#if defined(NDDR_WITH_MPI)
    if constexpr (std::is_same_v<D, Cpu>) {
      if (cpu_) return f(*cpu_);
    }
#if defined(NDDR_WITH_NCCL)
    if constexpr (!std::is_same_v<D, Cpu>) {
      if (gpu_) return f(*gpu_);
    }
#endif
#endif
    return f(*serial_);
  }
  template <class F>
  decltype(auto) visit(F&& f) const {
    return const_cast<AutoDataParallel*>(this)->visit(std::forward<F>(f));
  }

  int exceptions_at_start_ = std::uncaught_exceptions();
  SerialCommunicator<D> serial_comm_;
  std::optional<DataParallel<SerialCommunicator<D>, Net>> serial_;
#if defined(NDDR_WITH_MPI)
  // Only the replica type of the network's device is ever named as a complete type.
  std::unique_ptr<MpiCommunicator> mpi_;
  std::optional<std::conditional_t<std::is_same_v<D, Cpu>, DataParallel<MpiCommunicator, Net>,
                                   std::monostate>>
      cpu_;
#if defined(NDDR_WITH_NCCL)
  std::unique_ptr<NcclCommunicator> nccl_;
  std::optional<std::conditional_t<std::is_same_v<D, Cpu>, std::monostate,
                                   DataParallel<NcclCommunicator, Net>>>
      gpu_;
#endif
#endif
};

}  // namespace nddr::distributed
