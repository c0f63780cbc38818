#pragma once
/// \file
/// The process's peak resident memory over a stretch of a run, for the tables of nddr-demo
/// (`--weightings`) and bench/weighting_step: `reset_peak_rss()` before it, `peak_rss_mib()`
/// after. Header-only, standard and POSIX headers only (the benchmarks include it without
/// linking nddr_apps).

#include <sys/resource.h>

#include <fstream>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace nddr::cli {

/// Restarts the resident-set high-water mark (VmHWM): freed heap is handed back to the system
/// first (malloc_trim), then 5 is written to /proc/self/clear_refs (Linux >= 4.0). Where that
/// is refused, `peak_rss_mib` keeps reporting the process's peak so far.
inline void reset_peak_rss() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  std::ofstream f("/proc/self/clear_refs");
  if (f) f << "5";
}

/// The resident-set high-water mark in MiB since the last `reset_peak_rss` (VmHWM of
/// /proc/self/status; elsewhere getrusage's ru_maxrss, the process's peak).
inline double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

}  // namespace nddr::cli
