// The CUDA emulator's runtime: the CUDA runtime API functions nddr calls, implemented on the
// host (runtime.hpp says how), and the grid runner behind NDDR_LAUNCH (include/cuda_runtime.h).
//
// Fidelity choices, each there to make a class of GPU bug visible on a CPU:
//  - cudaMalloc'd memory starts filled with 0xFF bytes (a NaN in float and double), so a read
//    of memory nobody wrote shows up as NaN instead of a lucky zero;
//  - copies check that each side is the kind of memory the copy kind says (a host pointer
//    passed as device memory is an error), and that device ranges stay inside one allocation;
//  - kernel pointer arguments must be null or point into device memory;
//  - calls that are illegal while a stream is being captured into a graph (synchronous copies,
//    cudaMalloc, synchronizing the capturing stream) fail and invalidate the capture, as they do
//    on a GPU, and captured work runs only when the graph is launched;
//  - __syncthreads that not every thread of a block reaches is reported, not hung.
// What it cannot show: races between streams (everything runs in issue order), data races
// inside a kernel (fibers switch only at barriers), and anything about speed.

#include "runtime.hpp"

#include <cuda_profiler_api.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "include/cuda_runtime.h"

// The opaque handle types of the runtime API.
struct CUstream_st {
  bool capturing = false;
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;
  std::vector<std::function<void()>> recorded;
};
struct CUevent_st {};
struct CUgraph_st {
  std::vector<std::function<void()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};

namespace nddr_emu {
namespace {

using Allocations = std::map<std::uintptr_t, std::size_t>;  // start -> bytes

struct State {
  Allocations device;  // live cudaMalloc allocations
  Allocations pinned;  // live cudaHostAlloc allocations
  std::set<cudaStream_t> streams;
  std::set<cudaEvent_t> events;
  std::set<cudaGraph_t> graphs;
  std::set<cudaGraphExec_t> execs;
  cudaError_t last_error = cudaSuccess;
  int device_index = 0;
  std::unordered_map<const void*, bool> kernel_syncs;  // kernel -> reached a barrier
};

State& state() {
  static State s;
  return s;
}

using Lock = std::lock_guard<std::recursive_mutex>;

/// The stream under capture whose capture a potentially unsafe call from this thread would
/// break (global mode: any thread's; thread-local mode: this thread's), or null.
cudaStream_t unsafe_capture() {
  for (cudaStream_t s : state().streams)
    if (s->capturing && !s->invalidated &&
        (s->mode == cudaStreamCaptureModeGlobal ||
         (s->mode == cudaStreamCaptureModeThreadLocal &&
          s->capture_thread == std::this_thread::get_id())))
      return s;
  return nullptr;
}

/// Fails a call that is not allowed while a capture is in progress (and invalidates it).
bool refuse_during_capture(const char* call) {
  cudaStream_t s = unsafe_capture();
  if (!s) return false;
  s->invalidated = true;
  report_error(cudaErrorStreamCaptureUnsupported,
               std::string(call) + " while a stream is being captured into a graph");
  return true;
}

bool valid_stream(cudaStream_t s) { return s == nullptr || state().streams.count(s) != 0; }


/// True when [p, p + bytes) lies inside one allocation of `live` (bytes 0: p may be one past
/// the end).
bool inside(const Allocations& live, const void* p, std::size_t bytes) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = live.upper_bound(a);
  if (it == live.begin()) return false;
  --it;
  return a - it->first <= it->second && bytes <= it->second - (a - it->first);
}

}  // namespace

std::recursive_mutex& device_mutex() {
  static std::recursive_mutex m;
  return m;
}

void report_error(cudaError_t error, const std::string& what) {
  state().last_error = error;
  std::fprintf(stderr, "[cuda emulator] %s: %s\n", cudaGetErrorName(error), what.c_str());
}

cudaError_t enqueue(cudaStream_t stream, std::function<void()> work) {
  Lock lock(device_mutex());
  if (!valid_stream(stream)) return cudaErrorInvalidResourceHandle;
  if (stream && stream->capturing) {
    if (!stream->invalidated) stream->recorded.push_back(std::move(work));
    return stream->invalidated ? cudaErrorStreamCaptureInvalidated : cudaSuccess;
  }
  work();
  return cudaSuccess;
}

bool is_capturing(cudaStream_t stream) {
  Lock lock(device_mutex());
  return stream && valid_stream(stream) && stream->capturing;
}

void invalidate_capture(cudaStream_t stream) {
  Lock lock(device_mutex());
  if (stream && valid_stream(stream) && stream->capturing) stream->invalidated = true;
}

bool is_device_range(const void* p, std::size_t bytes) {
  Lock lock(device_mutex());
  return inside(state().device, p, bytes);
}

bool is_device_pointer(const void* p) { return is_device_range(p, 0); }

bool check_kernel_pointer(const char* name, std::size_t index, const void* p) {
  if (p == nullptr || is_device_pointer(p)) return true;
  report_error(cudaErrorInvalidValue, std::string("kernel ") + name + ": argument " +
                                          std::to_string(index) +
                                          " points outside device memory (a host pointer?)");
  return false;
}

// ---- the grid runner ------------------------------------------------------------------------

namespace {

constexpr std::size_t kStackBytes = 64 * 1024;

void fiber_main();

#if defined(__x86_64__)
// A fiber switch that saves only what the System V ABI says a call preserves (rbx, rbp,
// r12-r15 and the stack pointer): swapcontext also saves the signal mask, two system calls per
// switch, which made barriers cost 80 % of an emulated training step.
extern "C" void nddr_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl nddr_emu_switch
  .type nddr_emu_switch, @function
nddr_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size nddr_emu_switch, .-nddr_emu_switch
  .section .note.GNU-stack, "", @progbits
  .text
)");

/// A suspended execution: its saved stack pointer.
struct Context {
  void* sp = nullptr;
};

/// Prepares `c` to start fiber_main on the given stack at its first switch.
void make_context(Context& c, char* stack, std::size_t bytes) {
  auto top = reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t{15};
  auto* slot = reinterpret_cast<void**>(top - 16);  // fiber_main's entry: rsp = 8 (mod 16)
  slot[0] = reinterpret_cast<void*>(&fiber_main);   // where the switch's `ret` goes
  slot[1] = nullptr;
  for (int i = 1; i <= 6; ++i) slot[-i] = nullptr;  // rbp, rbx, r12-r15
  c.sp = slot - 6;
}

void switch_context(Context& from, Context& to) { nddr_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};

void make_context(Context& c, char* stack, std::size_t bytes) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, fiber_main, 0);
}

void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

struct Fiber {
  Context context;
  uint3 index;
  unsigned linear = 0;
  bool done = false;
  // While the fiber waits at a barrier: the barrier's generation counter and the value it had on
  // arrival. The scheduler does not switch to the fiber until the counter moves on.
  const unsigned long* wait_on = nullptr;
  unsigned long wait_value = 0;
};

/// One block in flight: its fibers, the scheduler context, the barrier counters.
struct BlockRun {
  const char* name = nullptr;
  const std::function<void()>* thread = nullptr;
  bool fibers = false;  // false: threads run as plain calls (the kernel never synchronizes)
  bool synced = false;  // a barrier or shuffle was reached
  std::vector<Fiber> all;
  Fiber* current = nullptr;
  Context scheduler;
  unsigned arrived = 0;
  unsigned long generation = 0;
  std::vector<unsigned> warp_arrived;
  std::vector<unsigned long> warp_generation;
  // Two slot sets per warp, used by turns (generation parity): a lane writes the next shuffle's
  // set while a slower one may still read this one's, so one wait per shuffle suffices.
  std::vector<std::array<std::array<std::uint64_t, 32>, 2>> warp_slots;
  unsigned long progress = 0;  // barrier arrivals and finished threads, to detect a deadlock
};

BlockRun* g_run = nullptr;

std::vector<std::unique_ptr<char[]>>& stacks() {
  static std::vector<std::unique_ptr<char[]>> s;
  return s;
}

/// Every fiber's body: one CUDA thread, then back to the scheduler for good.
void fiber_main() {
  (*g_run->thread)();
  g_run->current->done = true;
  switch_context(g_run->current->context, g_run->scheduler);
  __builtin_unreachable();
}

[[noreturn]] void fatal(const std::string& what) {
  std::fprintf(stderr, "[cuda emulator] fatal: %s\n", what.c_str());
  std::abort();
}

/// Suspends the current fiber until *generation differs from `value` (its barrier released).
void wait_while_equal(const unsigned long* generation, unsigned long value) {
  Fiber* f = g_run->current;
  f->wait_on = generation;
  f->wait_value = value;
  while (*generation == value) switch_context(f->context, g_run->scheduler);
  f->wait_on = nullptr;
}

void enter_barrier(const char* what) {
  BlockRun* r = g_run;
  if (!r) fatal(std::string(what) + " called outside a kernel");
  r->synced = true;
  if (!r->fibers)
    fatal(std::string("kernel ") + r->name + " reached " + what +
          " after it had run without one (the emulator learns at a kernel's first launch "
          "whether it synchronizes; a barrier behind a data-dependent branch defeats that)");
}

/// Runs one block with a fiber per thread until all are done; false when a barrier was left
/// waiting (some threads exited while others wait).
bool run_fibers(BlockRun& r, dim3 block) {
  const unsigned n = block.x * block.y * block.z;
  auto& pool = stacks();
  while (pool.size() < n) pool.push_back(std::make_unique<char[]>(kStackBytes));
  r.all.assign(n, Fiber{});
  const unsigned warps = (n + 31) / 32;
  r.warp_arrived.assign(warps, 0);
  r.warp_generation.assign(warps, 0);
  r.warp_slots.assign(warps, {});
  r.arrived = 0;
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = r.all[i];
    f.linear = i;
    f.index = uint3{i % block.x, i / block.x % block.y, i / (block.x * block.y)};
    make_context(f.context, pool[i].get(), kStackBytes);
  }
  unsigned live = n;
  while (live > 0) {
    const unsigned long before = r.progress;
    for (Fiber& f : r.all) {
      if (f.done || (f.wait_on && *f.wait_on == f.wait_value)) continue;
      r.current = &f;
      g_thread_idx = f.index;
      switch_context(r.scheduler, f.context);
      if (f.done) {
        --live;
        ++r.progress;
        const unsigned warp = f.linear / 32;
        if (r.arrived > 0 || r.warp_arrived[warp] > 0) {
          report_error(cudaErrorLaunchFailure,
                       std::string("kernel ") + r.name + ": thread " + std::to_string(f.linear) +
                           " exited while others of its block or warp wait at a barrier");
          return false;
        }
      }
    }
    if (r.progress == before) {  // every live thread waits at a barrier the others left
      report_error(cudaErrorLaunchFailure,
                   std::string("kernel ") + r.name + ": " + std::to_string(live) +
                       " threads of a block wait at a barrier that the other " +
                       std::to_string(n - live) + " exited without reaching");
      return false;
    }
  }
  r.current = nullptr;
  return true;
}

}  // namespace

void sync_block() {
  enter_barrier("__syncthreads");
  BlockRun* r = g_run;
  const unsigned long generation = r->generation;
  ++r->progress;
  if (++r->arrived == r->all.size()) {
    r->arrived = 0;
    ++r->generation;
    return;
  }
  wait_while_equal(&r->generation, generation);
}

std::uint64_t shuffle_down(std::uint64_t bits, unsigned delta, int width) {
  enter_barrier("__shfl_down_sync");
  BlockRun* r = g_run;
  const unsigned linear = r->current->linear, warp = linear / 32, lane = linear % 32;
  const unsigned size = std::min<unsigned>(32, static_cast<unsigned>(r->all.size()) - warp * 32);
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
    fatal(std::string("kernel ") + r->name + ": __shfl_down_sync width must be a power of 2 <= 32");
  const unsigned long generation = r->warp_generation[warp];
  auto& slots = r->warp_slots[warp][generation % 2];
  slots[lane] = bits;
  ++r->progress;
  if (++r->warp_arrived[warp] == size) {  // every lane has written its value
    r->warp_arrived[warp] = 0;
    ++r->warp_generation[warp];
  } else {
    wait_while_equal(&r->warp_generation[warp], generation);
  }
  // The other slot set is written next; this one again only after every lane has arrived at
  // the next shuffle, so after every lane has read here.
  const unsigned w = static_cast<unsigned>(width);
  const unsigned source = lane + delta;
  const bool inside = lane % w + delta < w && source < size;
  return inside ? slots[source] : bits;
}

cudaError_t run_grid(const char* name, const void* kernel, dim3 grid, dim3 block,
                     std::size_t shared_bytes, cudaStream_t stream, std::function<void()> thread) {
  Lock lock(device_mutex());
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 ||
      block.z > 64 || grid.y > 65535 || grid.z > 65535 || shared_bytes > 48 * 1024) {
    report_error(cudaErrorInvalidConfiguration,
                 std::string("kernel ") + name + ": grid (" + std::to_string(grid.x) + ", " +
                     std::to_string(grid.y) + ", " + std::to_string(grid.z) + "), block (" +
                     std::to_string(block.x) + ", " + std::to_string(block.y) + ", " +
                     std::to_string(block.z) + ")");
    return cudaErrorInvalidConfiguration;
  }
  auto body = [name, kernel, grid, block, thread = std::move(thread)] {
    State& s = state();
    auto known = s.kernel_syncs.find(kernel);
    BlockRun r;
    r.name = name;
    r.thread = &thread;
    r.fibers = known == s.kernel_syncs.end() || known->second;
    BlockRun* outer = g_run;
    g_run = &r;
    const dim3 saved_grid = g_grid_dim, saved_block = g_block_dim;
    g_grid_dim = grid;
    g_block_dim = block;
    bool ok = true;
    for (unsigned z = 0; z < grid.z && ok; ++z)
      for (unsigned y = 0; y < grid.y && ok; ++y)
        for (unsigned x = 0; x < grid.x && ok; ++x) {
          g_block_idx = uint3{x, y, z};
          if (r.fibers) {
            ok = run_fibers(r, block);
          } else {
            for (unsigned k = 0; k < block.z; ++k)
              for (unsigned j = 0; j < block.y; ++j)
                for (unsigned i = 0; i < block.x; ++i) {
                  g_thread_idx = uint3{i, j, k};
                  thread();
                }
          }
        }
    if (known == s.kernel_syncs.end()) s.kernel_syncs.emplace(kernel, r.synced);
    g_grid_dim = saved_grid;
    g_block_dim = saved_block;
    g_run = outer;
  };
  const cudaError_t e = enqueue(stream, std::move(body));
  if (e != cudaSuccess) report_error(e, std::string("launching kernel ") + name);
  return e;
}

}  // namespace nddr_emu

// ---- the runtime API ------------------------------------------------------------------------

using nddr_emu::Lock;
using nddr_emu::report_error;
using nddr_emu::state;
using nddr_emu::refuse_during_capture;

namespace {

/// Returns `e` after recording it as the last error (as the runtime does for failed calls).
cudaError_t fail(cudaError_t e, const std::string& what) {
  report_error(e, what);
  return e;
}

/// True when p points into a live cudaHostAlloc allocation.
/// Deletes a handle the runtime created (stream, event, graph, executable graph), refusing one
/// it does not know.
template <class H>
cudaError_t destroy_handle(std::set<H>& live, H handle, const char* call) {
  Lock lock(nddr_emu::device_mutex());
  if (!handle || !live.erase(handle)) return fail(cudaErrorInvalidResourceHandle, call);
  delete handle;
  return cudaSuccess;
}

bool is_pinned(const void* p) { return nddr_emu::inside(state().pinned, p, 1); }

/// Checks one side of a copy: device memory (whole range in one allocation) or not.
cudaError_t check_side(const void* p, std::size_t bytes, bool device, const char* side,
                       const char* call) {
  if (bytes == 0) return cudaSuccess;
  if (p == nullptr) return fail(cudaErrorInvalidValue, std::string(call) + ": null " + side);
  const bool in_device = nddr_emu::is_device_range(p, bytes);
  if (device && !in_device)
    return fail(cudaErrorInvalidValue,
                std::string(call) + ": the " + side + " is not " + std::to_string(bytes) +
                    " bytes of device memory (a host pointer, or past an allocation's end)");
  if (!device && nddr_emu::is_device_pointer(p))
    return fail(cudaErrorInvalidValue,
                std::string(call) + ": the " + side + " is device memory, the copy kind says host");
  return cudaSuccess;
}

cudaError_t check_copy(void* dst, const void* src, std::size_t count, cudaMemcpyKind kind,
                       const char* call) {
  bool dst_device = false, src_device = false;
  switch (kind) {
    case cudaMemcpyHostToHost: break;
    case cudaMemcpyHostToDevice: dst_device = true; break;
    case cudaMemcpyDeviceToHost: src_device = true; break;
    case cudaMemcpyDeviceToDevice: dst_device = src_device = true; break;
    case cudaMemcpyDefault:
      dst_device = nddr_emu::is_device_pointer(dst);
      src_device = nddr_emu::is_device_pointer(src);
      break;
    default: return fail(cudaErrorInvalidMemcpyDirection, call);
  }
  if (cudaError_t e = check_side(dst, count, dst_device, "destination", call)) return e;
  return check_side(src, count, src_device, "source", call);
}

}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return cudaErrorInvalidValue;
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  Lock lock(nddr_emu::device_mutex());
  if (device != 0) return fail(cudaErrorInvalidDevice, "cudaSetDevice(" + std::to_string(device) + ")");
  state().device_index = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return cudaErrorInvalidValue;
  *device = state().device_index;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  Lock lock(nddr_emu::device_mutex());
  if (refuse_during_capture("cudaDeviceSynchronize")) return cudaErrorStreamCaptureUnsupported;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  Lock lock(nddr_emu::device_mutex());
  const cudaError_t e = state().last_error;
  state().last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  Lock lock(nddr_emu::device_mutex());
  return state().last_error;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    default: return "cudaError (emulated)";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    default: return "error (CUDA emulator)";
  }
}

// Memory -----------------------------------------------------------------------------------

cudaError_t cudaMalloc(void** ptr, std::size_t size) {
  Lock lock(nddr_emu::device_mutex());
  if (!ptr) return fail(cudaErrorInvalidValue, "cudaMalloc: null result pointer");
  if (refuse_during_capture("cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
  *ptr = nullptr;
  if (size == 0) return cudaSuccess;
  // 256-byte aligned like cudaMalloc, but exactly `size` bytes long, so that a sanitizer build
  // (NDDR_SANITIZE) reports a kernel that runs even one element past a buffer.
  void* p = nullptr;
  if (posix_memalign(&p, 256, size) != 0 || !p)
    return fail(cudaErrorMemoryAllocation, "cudaMalloc(" + std::to_string(size) + ")");
  std::memset(p, 0xFF, size);  // NaN in float and double: unwritten memory shows
  state().device.emplace(reinterpret_cast<std::uintptr_t>(p), size);
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  Lock lock(nddr_emu::device_mutex());
  if (!ptr) return cudaSuccess;
  if (refuse_during_capture("cudaFree")) return cudaErrorStreamCaptureUnsupported;
  auto& dev = state().device;
  auto it = dev.find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == dev.end()) return fail(cudaErrorInvalidValue, "cudaFree: not a cudaMalloc pointer");
  std::memset(ptr, 0xFF, it->second);
  dev.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, std::size_t size, unsigned int) {
  Lock lock(nddr_emu::device_mutex());
  if (!ptr) return fail(cudaErrorInvalidValue, "cudaHostAlloc: null result pointer");
  *ptr = std::aligned_alloc(256, std::max<std::size_t>(256, (size + 255) / 256 * 256));
  if (!*ptr) return fail(cudaErrorMemoryAllocation, "cudaHostAlloc(" + std::to_string(size) + ")");
  state().pinned.emplace(reinterpret_cast<std::uintptr_t>(*ptr), std::max<std::size_t>(size, 1));
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  Lock lock(nddr_emu::device_mutex());
  if (!ptr) return cudaSuccess;
  if (!state().pinned.erase(reinterpret_cast<std::uintptr_t>(ptr)))
    return fail(cudaErrorInvalidValue, "cudaFreeHost: not a cudaHostAlloc pointer");
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t count, cudaMemcpyKind kind) {
  Lock lock(nddr_emu::device_mutex());
  if (refuse_during_capture("cudaMemcpy")) return cudaErrorStreamCaptureUnsupported;
  if (cudaError_t e = check_copy(dst, src, count, kind, "cudaMemcpy")) return e;
  if (count) std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  Lock lock(nddr_emu::device_mutex());
  if (cudaError_t e = check_copy(dst, src, count, kind, "cudaMemcpyAsync")) return e;
  if (count == 0) return cudaSuccess;
  const bool host_side = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToHost;
  if (host_side && nddr_emu::is_capturing(stream)) {
    const void* host = kind == cudaMemcpyHostToDevice ? src : dst;
    if (!is_pinned(host)) {
      nddr_emu::invalidate_capture(stream);
      return fail(cudaErrorStreamCaptureUnsupported,
                  "cudaMemcpyAsync: a copy to or from pageable host memory while capturing");
    }
  }
  if (kind == cudaMemcpyHostToDevice && !nddr_emu::is_capturing(stream) && !is_pinned(src)) {
    // From pageable memory the runtime stages the source before returning: copy now.
    std::memmove(dst, src, count);
    return cudaSuccess;
  }
  return nddr_emu::enqueue(stream, [dst, src, count] { std::memmove(dst, src, count); });
}

cudaError_t cudaMemset(void* ptr, int value, std::size_t count) {
  Lock lock(nddr_emu::device_mutex());
  if (refuse_during_capture("cudaMemset")) return cudaErrorStreamCaptureUnsupported;
  if (cudaError_t e = check_side(ptr, count, true, "destination", "cudaMemset")) return e;
  if (count) std::memset(ptr, value, count);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* ptr, int value, std::size_t count, cudaStream_t stream) {
  Lock lock(nddr_emu::device_mutex());
  if (cudaError_t e = check_side(ptr, count, true, "destination", "cudaMemsetAsync")) return e;
  if (count == 0) return cudaSuccess;
  return nddr_emu::enqueue(stream, [ptr, value, count] { std::memset(ptr, value, count); });
}

// Streams and events -----------------------------------------------------------------------

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  Lock lock(nddr_emu::device_mutex());
  if (!stream) return cudaErrorInvalidValue;
  *stream = new CUstream_st;
  state().streams.insert(*stream);
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  return cudaStreamCreate(stream);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  return destroy_handle(state().streams, stream, "cudaStreamDestroy");
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Lock lock(nddr_emu::device_mutex());
  if (!nddr_emu::valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize");
  if ((stream && stream->capturing) || (!stream && refuse_during_capture("cudaStreamSynchronize(0)"))) {
    if (stream) stream->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamSynchronize on a capturing stream");
  }
  return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  Lock lock(nddr_emu::device_mutex());
  if (!nddr_emu::valid_stream(stream)) return cudaErrorInvalidResourceHandle;
  if (stream && stream->capturing) {
    stream->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamQuery on a capturing stream");
  }
  return cudaSuccess;  // everything already ran
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  Lock lock(nddr_emu::device_mutex());
  if (!nddr_emu::valid_stream(stream) || !state().events.count(event))
    return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent");
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  Lock lock(nddr_emu::device_mutex());
  if (!event) return cudaErrorInvalidValue;
  *event = new CUevent_st;
  state().events.insert(*event);
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  return destroy_handle(state().events, event, "cudaEventDestroy");
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Lock lock(nddr_emu::device_mutex());
  if (!state().events.count(event) || !nddr_emu::valid_stream(stream))
    return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord");
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Lock lock(nddr_emu::device_mutex());
  if (!state().events.count(event)) return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize");
  return cudaSuccess;
}

// Graphs -----------------------------------------------------------------------------------

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  Lock lock(nddr_emu::device_mutex());
  if (!stream) return fail(cudaErrorStreamCaptureUnsupported, "capturing the legacy default stream");
  if (!nddr_emu::valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle, "cudaStreamBeginCapture");
  if (stream->capturing) return fail(cudaErrorIllegalState, "cudaStreamBeginCapture: already capturing");
  stream->capturing = true;
  stream->invalidated = false;
  stream->mode = mode;
  stream->capture_thread = std::this_thread::get_id();
  stream->recorded.clear();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  Lock lock(nddr_emu::device_mutex());
  if (!stream || !nddr_emu::valid_stream(stream) || !graph)
    return fail(cudaErrorInvalidValue, "cudaStreamEndCapture");
  if (!stream->capturing) return fail(cudaErrorIllegalState, "cudaStreamEndCapture: not capturing");
  stream->capturing = false;
  if (stream->invalidated) {
    stream->recorded.clear();
    *graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated, "cudaStreamEndCapture");
  }
  *graph = new CUgraph_st{std::move(stream->recorded)};
  stream->recorded.clear();
  state().graphs.insert(*graph);
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  Lock lock(nddr_emu::device_mutex());
  if (!status || !nddr_emu::valid_stream(stream)) return cudaErrorInvalidValue;
  *status = !stream || !stream->capturing ? cudaStreamCaptureStatusNone
            : stream->invalidated          ? cudaStreamCaptureStatusInvalidated
                                           : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  Lock lock(nddr_emu::device_mutex());
  if (!exec || !state().graphs.count(graph)) return fail(cudaErrorInvalidValue, "cudaGraphInstantiate");
  *exec = new CUgraphExec_st{graph->work};
  state().execs.insert(*exec);
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  Lock lock(nddr_emu::device_mutex());
  if (!state().execs.count(exec)) return fail(cudaErrorInvalidResourceHandle, "cudaGraphLaunch");
  return nddr_emu::enqueue(stream, [work = exec->work] {
    for (const auto& w : work) w();
  });
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  return destroy_handle(state().execs, exec, "cudaGraphExecDestroy");
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  return destroy_handle(state().graphs, graph, "cudaGraphDestroy");
}

// Profiler ranges (nddr-bench-step --profile-step): nothing to profile here.

cudaError_t cudaProfilerStart(void) { return cudaSuccess; }
cudaError_t cudaProfilerStop(void) { return cudaSuccess; }

}  // extern "C"
