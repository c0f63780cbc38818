#pragma once
/// \file
/// `Context<D>`: the per-device execution state that every op takes first.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "nddr/core/device.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/settings.hpp"
#include "nddr/core/storage.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace nddr {

/// Execution state of device `D`. The primary template is specialised per backend.
template <class D>
class Context {
  static_assert(kDeviceAvailable<D>,
                "nddr::Context: no backend for this device; for nddr::Cuda add "
                "#include <nddr/cuda.hpp> and link nddr::cuda");
};

/// CPU execution state: the thread count used by every op and a reusable scratch buffer.
template <>
class Context<Cpu> {
 public:
  using device_type = Cpu;

  /// Uses every hardware thread.
  Context() : Context(default_threads()) {}
  /// Uses `threads` threads (>= 1).
  explicit Context(int threads) { set_threads(threads); }

  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() { Storage<Cpu>::deallocate(workspace_); }

  int threads() const { return threads_; }

  /// How this context computes (core/settings.hpp: BF16 convolution emulation, the forced
  /// convolution algorithm); every op run on it reads them.
  const NumericSettings& settings() const { return settings_; }
  void set_settings(const NumericSettings& s) { settings_ = s; }
  void set_threads(int threads) {
    check<OptionError>(threads >= 1, "nddr::Context<Cpu>: thread count must be >= 1, got ",
                       threads);
    threads_ = threads;
  }

  static int default_threads() {
#if defined(_OPENMP)
    return omp_get_num_procs();
#else
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
#endif
  }

  /// Scratch memory of at least `count` elements of `T`, valid until the next call.
  /// Contents are unspecified. Grows, never shrinks.
  template <class T>
  T* workspace(std::size_t count) {
    const std::size_t bytes = count * sizeof(T);
    if (bytes > workspace_bytes_) {
      Storage<Cpu>::deallocate(workspace_);
      workspace_ = nullptr;
      workspace_ = Storage<Cpu>::allocate(bytes);
      workspace_bytes_ = bytes;
    }
    return static_cast<T*>(workspace_);
  }

 private:
  int threads_ = 1;
  NumericSettings settings_{};
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
};

namespace detail {

/// Runs `body(i)` for i in [0, count) on the context's threads (static schedule).
template <class F>
void parallel_for(const Context<Cpu>& ctx, std::int64_t count, F&& body) {
#if defined(_OPENMP)
  const int threads = count > 1 ? ctx.threads() : 1;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t i = 0; i < count; ++i) body(i);
#else
  (void)ctx;
  for (std::int64_t i = 0; i < count; ++i) body(i);
#endif
}

/// Runs `body(begin, end)` on disjoint ranges of [0, count) of near-equal size, one per
/// thread and at most `count` of them, in one parallel region that returns when all are done.
/// Each body runs with a nested thread count of 1: Eigen parallelises a product unless
/// omp_get_num_threads() > 1, so in a one-thread region it would start a team of its own;
/// capping this task's ICV (task-local, gone with the region) keeps the products inside serial
/// unless Eigen::setNbThreads was raised globally.
template <class F>
void parallel_ranges(const Context<Cpu>& ctx, std::int64_t count, F&& body) {
  const std::int64_t parts =
      std::max<std::int64_t>(1, std::min<std::int64_t>(ctx.threads(), count));
  parallel_for(ctx, parts, [&](std::int64_t t) {
#if defined(_OPENMP)
    omp_set_num_threads(1);
#endif
    body(count * t / parts, count * (t + 1) / parts);
  });
}

}  // namespace detail
}  // namespace nddr
