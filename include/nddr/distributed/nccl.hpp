#pragma once
/// \file
/// The NCCL model of `Communicator`: device (CUDA) tensors reduced by NCCL on the stream of the
/// `Context<Cuda>` passed to each call, bootstrapped over MPI (rank 0 creates the ncclUniqueId
/// and broadcasts it). Host values and barriers go through the MPI communicator. Requires the
/// `nddr::nccl` CMake target (NDDR_WITH_NCCL=1).
///
/// Every collective waits for its completion (polling the stream) so that a peer that died or
/// hangs is detected: after the MPI communicator's timeout, or as soon as NCCL reports an
/// asynchronous error, the NCCL communicator is aborted and nddr::Error is thrown.

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <thread>
#include <type_traits>

#include "nddr/backend/cuda/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/distributed/communicator.hpp"
#include "nddr/distributed/mpi.hpp"

namespace nddr::distributed {

namespace detail {

/// Throws nddr::Error naming `call` and NCCL's message unless rc is ncclSuccess.
inline void nccl_check(ncclResult_t rc, const char* call) {
  if (rc == ncclSuccess) return;
  throw Error(nddr::detail::concat("nddr::distributed: ", call, " failed: ",
                                   ncclGetErrorString(rc)));
}

template <class T>
ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, float>) return ncclFloat32;
  else if constexpr (std::is_same_v<T, double>) return ncclFloat64;
  else static_assert(sizeof(T) == 0, "nddr::distributed::NcclCommunicator: float or double only");
}

}  // namespace detail

/// `Communicator` of CUDA tensors over NCCL, one GPU per rank. Construct it on every rank with
/// the rank's context (its device is the rank's GPU, e.g. `mpi.local_rank()` on a multi-GPU
/// node); the MPI communicator must outlive it.
class NcclCommunicator {
 public:
  using device_type = Cuda;

  NcclCommunicator(MpiCommunicator& mpi, Context<Cuda>& ctx) : mpi_(mpi), device_(ctx.device()) {
    ncclUniqueId id{};
    if (mpi_.rank() == 0) detail::nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    mpi_.broadcast_bytes(&id, static_cast<std::int64_t>(sizeof id), 0);
    if (cudaSetDevice(device_) != cudaSuccess)
      throw DeviceError(nddr::detail::concat("nddr::distributed::NcclCommunicator: selecting "
                                             "CUDA device ", device_));
    detail::nccl_check(ncclCommInitRank(&comm_, mpi_.size(), id, mpi_.rank()), "ncclCommInitRank");
  }
  ~NcclCommunicator() {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const { return mpi_.rank(); }
  int size() const { return mpi_.size(); }
  ncclComm_t native() const { return comm_; }

  template <class T>
  void all_reduce_sum(Context<Cuda>& ctx, TensorView<T, Cuda> x) {
    all_reduce(ctx, x, ncclSum);
  }
  /// NCCL's own average (ncclAvg).
  template <class T>
  void all_reduce_average(Context<Cuda>& ctx, TensorView<T, Cuda> x) {
    all_reduce(ctx, x, ncclAvg);
  }
  template <class T>
  void broadcast(Context<Cuda>& ctx, TensorView<T, Cuda> x, int root) {
    nddr::distributed::detail::check_root("nddr::distributed::NcclCommunicator::broadcast", root,
                                          size());
    detail::nccl_check(ncclBroadcast(x.data(), x.data(), static_cast<std::size_t>(x.numel()),
                                     detail::nccl_type<T>(), root, comm_, ctx.stream()),
                       "ncclBroadcast");
    wait(ctx, "ncclBroadcast");
  }
  void all_reduce_sum_host(std::span<double> v) { mpi_.all_reduce_sum_host(v); }
  void barrier() { mpi_.barrier(); }
  [[noreturn]] void abort(int code, const std::string& why) {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    mpi_.abort(code, why);
  }

 private:
  template <class T>
  void all_reduce(Context<Cuda>& ctx, TensorView<T, Cuda> x, ncclRedOp_t op) {
    detail::nccl_check(ncclAllReduce(x.data(), x.data(), static_cast<std::size_t>(x.numel()),
                                     detail::nccl_type<T>(), op, comm_, ctx.stream()),
                       "ncclAllReduce");
    wait(ctx, "ncclAllReduce");
  }

  /// Polls the stream until the collective is done; aborts the NCCL communicator and throws on
  /// an asynchronous NCCL error or after the MPI communicator's timeout.
  void wait(Context<Cuda>& ctx, const char* call) {
    const auto start = std::chrono::steady_clock::now();
    const double timeout = mpi_.timeout();
    for (;;) {
      const cudaError_t q = cudaStreamQuery(ctx.stream());
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady)
        throw DeviceError(nddr::detail::concat("nddr::distributed: ", call, ": ",
                                               cudaGetErrorString(q)));
      ncclResult_t async = ncclSuccess;
      detail::nccl_check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
      const double waited =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (async != ncclSuccess || (timeout > 0.0 && waited > timeout)) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        throw Error(nddr::detail::concat(
            "nddr::distributed: rank ", rank(), " of ", size(), ": ", call,
            async != ncclSuccess ? " failed: " : " has not completed after ",
            async != ncclSuccess ? std::string(ncclGetErrorString(async))
                                 : std::to_string(waited) + " s: another rank died or hangs"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  MpiCommunicator& mpi_;
  int device_;
  ncclComm_t comm_ = nullptr;
};

static_assert(Communicator<NcclCommunicator>);

}  // namespace nddr::distributed
