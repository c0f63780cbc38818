#pragma once
/// \file
/// Stopping a training run cleanly: a process-wide stop request that `Trainer::fit` honours at
/// the next step boundary (it finishes the step, writes a checkpoint, appends the step's log
/// rows and throws `TrainingInterrupted`), and `StopOnSignals`, which turns SIGINT and SIGTERM
/// into such a request.
///
/// With `StopOnSignals` alive, the first Ctrl-C (or a scheduler's TERM) prints one line and asks
/// the run to stop; a second one exits at once (the default action of that signal). The
/// experiment binaries catch `TrainingInterrupted`, print where the checkpoint is and exit with
/// 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a shell expects.
///
/// Example:
///   int main() {
///     nddr::StopOnSignals stop_on_signals;      // before training starts
///     try {
///       trainer.fit(ctx, steps, next_batch);
///     } catch (const nddr::TrainingInterrupted& e) {
///       std::cerr << "my-app: " << e.what() << "; run again with --resume to continue\n";
///       return e.exit_code();
///     }
///   }

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>

#include "nddr/core/error.hpp"

namespace nddr {

namespace detail {

/// The signal that asked to stop, 0 for none, -1 for `request_stop()` from code. Lock-free, so
/// a signal handler may store it.
inline std::atomic<int> g_stop_request{0};
static_assert(std::atomic<int>::is_always_lock_free);

inline const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: return "a signal";
  }
}

extern "C" inline void nddr_stop_signal_handler(int sig) {
  int expected = 0;
  if (!g_stop_request.compare_exchange_strong(expected, sig)) {
    // A second signal: exit at once, with that signal's default action (and exit status).
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigemptyset(&dfl.sa_mask);
    ::sigaction(sig, &dfl, nullptr);
    ::raise(sig);
    return;
  }
  // Only async-signal-safe calls here: write(2) of a fixed text.
  static const char kMsg[] =
      "\nnddr: stop requested; finishing the current step and writing a checkpoint (send the "
      "signal again to exit at once)\n";
  [[maybe_unused]] const ::ssize_t n = ::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
}

}  // namespace detail

/// Asks `Trainer::fit` to stop after the current step (as a signal would, from code: a GUI's
/// stop button, a time budget, a test).
inline void request_stop() {
  int expected = 0;
  detail::g_stop_request.compare_exchange_strong(expected, -1);
}
/// Whether a stop was requested (by `request_stop` or a signal caught by `StopOnSignals`).
inline bool stop_requested() { return detail::g_stop_request.load() != 0; }
/// The signal that requested the stop (SIGINT, SIGTERM), or 0 (none, or `request_stop`).
inline int stop_signal() {
  const int s = detail::g_stop_request.load();
  return s > 0 ? s : 0;
}
/// Forgets a stop request (a run that handled one and goes on, e.g. the next test).
inline void clear_stop_request() { detail::g_stop_request.store(0); }

/// While alive, SIGINT and SIGTERM request a stop instead of killing the process (a second
/// signal kills it); the previous handlers come back on destruction. Create one, early in
/// `main`, per program. System calls interrupted by the signal are restarted (SA_RESTART).
class StopOnSignals {
 public:
  StopOnSignals() {
    struct sigaction sa {};
    sa.sa_handler = detail::nddr_stop_signal_handler;
    ::sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    check<Error>(::sigaction(SIGINT, &sa, &old_int_) == 0 && ::sigaction(SIGTERM, &sa, &old_term_) == 0,
                 "nddr::StopOnSignals: cannot install the SIGINT/SIGTERM handlers: ",
                 std::strerror(errno));
  }
  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;
  ~StopOnSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

/// Thrown by `Trainer::fit` when it stopped on request: the step reached, where its checkpoint
/// is (empty when the trainer writes none), and the signal (0 when asked from code).
class TrainingInterrupted : public Error {
 public:
  TrainingInterrupted(std::int64_t step, std::string checkpoint, int signal)
      : Error(message(step, checkpoint, signal)),
        step_(step),
        checkpoint_(std::move(checkpoint)),
        signal_(signal) {}
  std::int64_t step() const { return step_; }
  const std::string& checkpoint() const { return checkpoint_; }
  int signal() const { return signal_; }
  /// The exit status a program should end with: 128 + the signal, 1 when asked from code.
  int exit_code() const { return signal_ > 0 ? 128 + signal_ : 1; }

 private:
  static std::string message(std::int64_t step, const std::string& checkpoint, int signal) {
    std::string m = detail::concat("training stopped by ",
                                   signal > 0 ? detail::signal_name(signal) : "request",
                                   " after step ", step, "; ");
    if (checkpoint.empty())
      return m + "no checkpoint was written (no output directory)";
    return m + "checkpoint written to '" + checkpoint + "'";
  }

  std::int64_t step_;
  std::string checkpoint_;
  int signal_;
};

}  // namespace nddr
