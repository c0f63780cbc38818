#pragma once
/// \file
/// The `Communicator` concept of data-parallel training, and `SerialCommunicator`, its
/// one-process model (every collective is the identity), so that training code is written once
/// and runs alone or under `mpirun`.
///
/// A communicator joins `size()` processes ("ranks"); every collective must be called by every
/// rank, in the same order, with tensors of the same shape. Device tensors go through the
/// device's transport (MPI for CPU tensors, NCCL for CUDA ones) on the context's stream; host
/// `double`s (losses, batch-norm statistics) always go through the host transport.

#include <concepts>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "nddr/core/context.hpp"
#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/tensor.hpp"

namespace nddr::distributed {

/// What a data-parallel transport offers: identity, in-place all-reduce (sum and average) and
/// broadcast of device tensors of float and double, in-place sum of host doubles, barrier, and
/// abort of the whole job.
template <class C>
concept Communicator = requires(C& c, const C& cc, Context<typename C::device_type>& ctx,
                                TensorView<float, typename C::device_type> f,
                                TensorView<double, typename C::device_type> d,
                                std::span<double> host, int root, const std::string& why) {
  typename C::device_type;
  { cc.rank() } -> std::convertible_to<int>;
  { cc.size() } -> std::convertible_to<int>;
  c.all_reduce_sum(ctx, f);
  c.all_reduce_sum(ctx, d);
  c.all_reduce_average(ctx, f);
  c.all_reduce_average(ctx, d);
  c.broadcast(ctx, f, root);
  c.broadcast(ctx, d, root);
  c.all_reduce_sum_host(host);
  c.barrier();
  c.abort(1, why);
};

namespace detail {
/// Throws OptionError unless 0 <= root < size.
inline void check_root(const char* who, int root, int size) {
  check<OptionError>(root >= 0 && root < size, who, ": root ", root, " is not a rank of ", size);
}
}  // namespace detail

/// One process, no transport: rank 0 of 1; every collective leaves its data as it is.
template <class D = Cpu>
class SerialCommunicator {
 public:
  using device_type = D;

  int rank() const { return 0; }
  int size() const { return 1; }

  template <class T>
  void all_reduce_sum(Context<D>&, TensorView<T, D>) {}
  template <class T>
  void all_reduce_average(Context<D>&, TensorView<T, D>) {}
  template <class T>
  void broadcast(Context<D>&, TensorView<T, D>, int root) {
    detail::check_root("nddr::distributed::SerialCommunicator::broadcast", root, 1);
  }
  void all_reduce_sum_host(std::span<double>) {}
  void barrier() {}
  /// Prints `why` and ends the process with `code`.
  [[noreturn]] void abort(int code, const std::string& why) {
    std::fprintf(stderr, "nddr: aborting: %s\n", why.c_str());
    std::fflush(stderr);
    std::_Exit(code);
  }
};

}  // namespace nddr::distributed
