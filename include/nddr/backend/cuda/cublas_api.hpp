#pragma once
/// \file
/// cuBLAS, loaded on first use. nddr does not link libcublas: that library pulls in
/// libcublasLt (~540 MB, ~376k relocations), which costs every process that links it ~170 ms
/// in the dynamic loader before `main`, GPU run or not. Every cuBLAS call nddr makes goes
/// through `cublas_api()`, a table of function pointers filled once per process, the first
/// time it is asked for (when the first `Context<Cuda>` creates its cuBLAS handle):
///  1. from the functions already linked into the process, when all of them are (a program
///     that links cuBLAS itself, statically or as a shared library it calls, or the CUDA
///     emulator of tests/emulation): each is declared weak below, so that it is null where
///     nothing defines it;
///  2. otherwise from `dlopen(kCublasSoname, RTLD_NOW | RTLD_LOCAL)` and `dlsym`, the library
///     found the way the dynamic loader finds any (the program's RUNPATH, LD_LIBRARY_PATH,
///     the ld.so cache).
/// A failure is a `DeviceError` naming the library and `dlerror()`'s reason, thrown by every
/// `cublas_api()` call (the load is tried once).
///
/// \code
/// NDDR_CUDA_CHECK(nddr::cuda::cublas_api().cublasSgemm_v2(h, ...), "multiplying");
/// \endcode

#include <cublas_v2.h>
#include <dlfcn.h>

#include <string>

#include "nddr/core/error.hpp"

/// The cuBLAS functions nddr calls, one `X(symbol)` each, named as the library exports them
/// (`cublasSgemm_v2`, not cublas_v2.h's macro `cublasSgemm`). To call another function, add
/// its line here; it is then `nddr::cuda::cublas_api().<symbol>`, with the header's signature.
#define NDDR_CUBLAS_FUNCTIONS(X) \
  X(cublasCreate_v2)             \
  X(cublasDestroy_v2)            \
  X(cublasSetStream_v2)          \
  X(cublasGetStream_v2)          \
  X(cublasSetMathMode)           \
  X(cublasSgemm_v2)              \
  X(cublasDgemm_v2)              \
  X(cublasSscal_v2)              \
  X(cublasDscal_v2)              \
  X(cublasGetStatusName)         \
  X(cublasGetStatusString)

// Weak redeclarations: the address of a function nothing in the process defines is null, and
// a reference to one neither pulls an archive member in nor makes a library needed.
#define NDDR_CUBLAS_WEAK(symbol) extern "C" decltype(::symbol) symbol __attribute__((weak));
NDDR_CUBLAS_FUNCTIONS(NDDR_CUBLAS_WEAK)
#undef NDDR_CUBLAS_WEAK

#define NDDR_CUBLAS_STRINGIFY_(x) #x
#define NDDR_CUBLAS_STRINGIFY(x) NDDR_CUBLAS_STRINGIFY_(x)

namespace nddr::cuda {

/// The cuBLAS library these headers were written against: libcublas.so.<CUBLAS_VER_MAJOR>.
inline constexpr const char* kCublasSoname =
    "libcublas.so." NDDR_CUBLAS_STRINGIFY(CUBLAS_VER_MAJOR);

/// A pointer to each function of `NDDR_CUBLAS_FUNCTIONS`, as a member of the same name and
/// the type the cuBLAS header declares.
struct CublasApi {
#define NDDR_CUBLAS_MEMBER(symbol) decltype(&::symbol) symbol = nullptr;
  NDDR_CUBLAS_FUNCTIONS(NDDR_CUBLAS_MEMBER)
#undef NDDR_CUBLAS_MEMBER
};

namespace detail {

/// The functions linked into the process, if every one of them is; else an empty table.
inline CublasApi linked_cublas() {
  CublasApi api;
  bool all = true;
#define NDDR_CUBLAS_LINKED(symbol) \
  api.symbol = &::symbol;          \
  all = all && api.symbol != nullptr;
  NDDR_CUBLAS_FUNCTIONS(NDDR_CUBLAS_LINKED)
#undef NDDR_CUBLAS_LINKED
  return all ? api : CublasApi{};
}

/// Fills a table: from the functions linked into the process when `use_linked` and every one
/// is, else from `library` (a soname or a path) with `dlopen` and `dlsym`; the library is
/// never closed. Throws `DeviceError` naming `library` and the reason when it cannot be
/// loaded or lacks a function. `cublas_api()` calls it once, with `kCublasSoname`; it is
/// internal, and the tests' hook for the failure path (a library that does not exist, one
/// without the functions) and for the dlopen path in a process that links the emulator.
inline CublasApi load_cublas(const char* library, bool use_linked = true) {
  if (use_linked) {
    const CublasApi linked = linked_cublas();
    if (linked.cublasCreate_v2 != nullptr) return linked;
  }
  void* lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    throw DeviceError(nddr::detail::concat(
        "nddr: cannot load cuBLAS (", library, "), which the CUDA backend needs: ",
        why ? why : "unknown dlopen error",
        "; install the CUDA toolkit's cuBLAS or put its directory on LD_LIBRARY_PATH"));
  }
  CublasApi api;
#define NDDR_CUBLAS_DLSYM(symbol)                                                         \
  api.symbol = reinterpret_cast<decltype(api.symbol)>(dlsym(lib, #symbol));               \
  if (api.symbol == nullptr) {                                                            \
    const char* why = dlerror();                                                          \
    /* copied before dlclose, which may reuse dlerror's buffer */                         \
    std::string message = nddr::detail::concat("nddr: cuBLAS library ", library,          \
                                               " has no function " #symbol ": ",          \
                                               why ? why : "dlsym returned null");        \
    dlclose(lib);                                                                         \
    throw DeviceError(message);                                                           \
  }
  NDDR_CUBLAS_FUNCTIONS(NDDR_CUBLAS_DLSYM)
#undef NDDR_CUBLAS_DLSYM
  return api;
}

/// The process's table, or why it could not be filled (`error` non-empty). Loaded once, on
/// the first call, by whichever thread gets there first (a function-local static).
struct CublasLoad {
  CublasApi api;
  std::string error;
};

inline const CublasLoad& cublas_load() {
  static const CublasLoad loaded = [] {
    CublasLoad l;
    try {
      l.api = load_cublas(kCublasSoname);
    } catch (const DeviceError& e) {
      l.error = e.what();
    }
    return l;
  }();
  return loaded;
}

}  // namespace detail

/// The cuBLAS functions nddr calls, loaded on first use (see the top of this file). Throws
/// `DeviceError` naming the library and the reason when cuBLAS cannot be loaded.
inline const CublasApi& cublas_api() {
  const detail::CublasLoad& l = detail::cublas_load();
  if (!l.error.empty()) throw DeviceError(l.error);
  return l.api;
}

}  // namespace nddr::cuda
