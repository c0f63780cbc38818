#pragma once
/// \file
/// The part of `Trainer<E, D, T>` that does not depend on the network: the log files (append
/// all-or-none, cut back to a step, the step rows, evaluation rows, the progress line) and the
/// host state of a weighting method (its own parameters' optimiser, the epoch accumulator, their
/// checkpoint metadata). Written once here instead of once per experiment: a program that
/// instantiates many trainers (nddr-nyuv2: every method x backbone x device) compiles it once
/// per task count, not once per trainer. Internal to the Trainer (namespace detail).

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "nddr/core/context.hpp"
#include "nddr/core/error.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/json.hpp"
#include "nddr/metrics/delta.hpp"
#include "nddr/ops/resize.hpp"
#include "nddr/train/checkpoint.hpp"
#include "nddr/weighting/registry.hpp"

namespace nddr::detail {

/// A JSON number for `v` with 9 significant digits (null for NaN and infinities).
inline std::string log_json_number(double v) { return io::json::number(v, 9); }

/// The step of a log row: a CSV row's first field, a JSON line's "step" member.
inline std::optional<std::int64_t> log_row_step(std::string_view line) {
  std::string_view digits;
  if (line.starts_with("{")) {
    const std::size_t at = line.find("\"step\":");
    if (at == std::string_view::npos) return std::nullopt;
    digits = line.substr(at + 7);
  } else {
    digits = line;
  }
  digits = digits.substr(0, digits.find_first_not_of("0123456789"));
  const auto v = parse_decimal(digits, std::numeric_limits<std::int64_t>::max());
  if (!v) return std::nullopt;
  return static_cast<std::int64_t>(*v);
}

/// Rewrites log `file` without the rows of steps after `step` and without a last line left
/// incomplete by a killed writer; lines without a step (the CSV header) stay.
inline void truncate_log(const std::filesystem::path& file, std::int64_t step) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return;
  const auto bytes = io::read_regular_file("nddr::Trainer", file.string(), std::uint64_t{1} << 32);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  std::string kept;
  kept.reserve(text.size());
  std::size_t begin = 0;
  while (begin < text.size()) {
    const std::size_t nl = text.find('\n', begin);
    if (nl == std::string_view::npos) break;  // incomplete last line
    const std::string_view line = text.substr(begin, nl + 1 - begin);
    const auto s = log_row_step(line);
    if (!s || *s <= step) kept.append(line);
    begin = nl + 1;
  }
  if (kept.size() != text.size())
    io::write_file_atomic("nddr::Trainer", file.string(), kept.data(), kept.size());
}

/// Appends each text to its file, all or none: a failed or short write truncates every file
/// back to its size before the call, then throws IoError naming the file.
inline void append_lines(const std::vector<std::pair<std::filesystem::path, std::string>>& lines) {
  std::vector<std::pair<io::FileDescriptor, off_t>> opened;
  auto roll_back = [&] {
    for (auto& [fd, size] : opened)
      if (fd) [[maybe_unused]] const int rc = ::ftruncate(fd.get(), size);
  };
  for (const auto& [file, text] : lines) {
    io::FileDescriptor fd(::open(file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666));
    if (!fd) {
      const int err = errno;
      roll_back();
      throw IoError(concat("nddr::Trainer: cannot open log '", file.string(),
                           "' for appending: ", std::strerror(err)));
    }
    const off_t size = ::lseek(fd.get(), 0, SEEK_END);
    opened.emplace_back(std::move(fd), size < 0 ? 0 : size);
    std::size_t done = 0;
    while (done < text.size()) {
      const ::ssize_t n = ::write(opened.back().first.get(), text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n == 0 ? EIO : errno;
        roll_back();
        throw IoError(concat("nddr::Trainer: writing log '", file.string(), "' failed: ",
                             std::strerror(err)));
      }
      done += static_cast<std::size_t>(n);
    }
  }
}

/// One step's row of log.jsonl and log.csv.
struct StepLogRow {
  std::int64_t step = 0;
  double lr = 0.0;
  std::span<const double> losses;
  std::span<const double> weights;  ///< empty: no weighting method (no weight columns)
  double total = 0.0;
  double images_per_s = 0.0;
  double elapsed_s = 0.0;
};

/// Appends the row to `dir`/log.jsonl and `dir`/log.csv (both or neither; the CSV header first
/// when the file is new or empty). Throws IoError when the append fails.
inline void append_step_logs(const std::filesystem::path& dir, const std::string& experiment,
                             std::span<const std::string> tasks, const StepLogRow& r) {
  std::ostringstream js;
  js << "{\"experiment\":" << io::json::quote(experiment) << ",\"step\":" << r.step
     << ",\"lr\":" << log_json_number(r.lr);
  for (std::size_t k = 0; k < tasks.size(); ++k)
    js << "," << io::json::quote("loss_" + tasks[k]) << ":" << log_json_number(r.losses[k]);
  for (std::size_t k = 0; k < r.weights.size(); ++k)
    js << "," << io::json::quote("weight_" + tasks[k]) << ":" << log_json_number(r.weights[k]);
  js << ",\"loss_total\":" << log_json_number(r.total)
     << ",\"images_per_s\":" << log_json_number(r.images_per_s)
     << ",\"elapsed_s\":" << log_json_number(r.elapsed_s) << "}\n";
  const auto csv = dir / "log.csv";
  std::error_code ec;
  const bool header = !std::filesystem::exists(csv, ec) || std::filesystem::file_size(csv, ec) == 0;
  std::ostringstream out;
  if (header) {
    out << "step,lr";
    for (const auto& n : tasks) out << ",loss_" << n;
    if (!r.weights.empty())
      for (const auto& n : tasks) out << ",weight_" << n;
    out << ",loss_total,images_per_s,elapsed_s\n";
  }
  out << r.step << "," << r.lr;
  for (double l : r.losses) out << "," << l;
  for (double w : r.weights) out << "," << w;
  out << "," << r.total << "," << r.images_per_s << "," << r.elapsed_s << "\n";
  append_lines({{dir / "log.jsonl", js.str()}, {csv, out.str()}});
}

/// Appends evaluation results to `dir`/eval.jsonl (one line; `dir` empty: no file) and, with
/// `print`, prints them.
inline void append_eval_log(const std::filesystem::path& dir, const std::string& experiment,
                            std::int64_t step, const std::vector<MetricValue>& values,
                            bool print) {
  std::ostringstream line;
  line << "{\"experiment\":" << io::json::quote(experiment) << ",\"step\":" << step;
  for (const auto& v : values)
    line << "," << io::json::quote(v.task + "/" + v.name) << ":" << log_json_number(v.value);
  line << "}";
  if (!dir.empty()) append_lines({{dir / "eval.jsonl", line.str() + "\n"}});
  if (print) std::printf("%seval %s\n", isatty(STDOUT_FILENO) ? "\n" : "", line.str().c_str());
}

/// The progress line of a step: a bar on a terminal (rewritten in place), else one line.
inline void print_step_progress(const std::string& experiment, std::int64_t step,
                                std::int64_t total, std::span<const std::string> tasks,
                                std::span<const double> losses, double rate, double eta) {
  std::ostringstream os;
  const bool tty = isatty(STDOUT_FILENO);
  if (tty) {
    constexpr int kWidth = 24;
    const int filled = total > 0 ? static_cast<int>(kWidth * step / total) : kWidth;
    os << "\r[" << std::string(static_cast<std::size_t>(filled), '#')
       << std::string(static_cast<std::size_t>(kWidth - filled), '.') << "] ";
  }
  os << experiment << " step " << step << "/" << total;
  for (std::size_t k = 0; k < tasks.size(); ++k) os << " " << tasks[k] << " " << losses[k];
  char tail[96];
  std::snprintf(tail, sizeof tail, " | %.1f img/s | ETA %.0fs", rate, eta);
  os << tail;
  if (!tty) os << "\n";
  std::fputs(os.str().c_str(), stdout);
  std::fflush(stdout);
}

/// `tv` resized (TF-legacy nearest) to the spatial size of the output `os` when both are
/// dense maps of different sizes; otherwise `tv` itself (`storage` unused).
template <class U>
TensorView<const U, Cpu> fit_target(Context<Cpu>& ctx, TensorView<const U, Cpu> tv,
                                    const Shape& os, Tensor<U, Cpu>& storage) {
  const Shape& ts = tv.shape();
  const bool dense = os.rank() == 4 && os.h() * os.w() > 1 && (ts.rank() == 3 || ts.rank() == 4);
  if (!dense) return tv;
  const std::int64_t th = ts.rank() == 3 ? ts[1] : ts[2];
  const std::int64_t tw = ts.rank() == 3 ? ts[2] : ts[3];
  if (th == os.h() && tw == os.w()) return tv;
  const std::int64_t c = ts.rank() == 3 ? 1 : ts[1];
  const Shape in4 = Shape::nchw(ts[0], c, th, tw);
  Tensor<U, Cpu> r4(Shape::nchw(ts[0], c, os.h(), os.w()));
  ops::resize_forward(ctx, tv.reshaped(in4), r4.view(),
                      ResizeOptions{}.size(os.h(), os.w()).mode(ResizeMode::kNearestTfLegacy));
  if (ts.rank() == 3) r4.reshape(Shape{ts[0], os.h(), os.w()});
  storage = std::move(r4);
  return storage.cview();
}

/// Throws IoError naming `path` when the checkpoint metadata `extra` holds a weighting method
/// (a run without one cannot resume it).
inline void check_no_weighting(const std::string& path,
                               const std::map<std::string, std::string>& extra) {
  const auto it = extra.find("weighting");
  check<IoError>(it == extra.end(), path, ": the checkpoint was trained with --weighting '",
                 it == extra.end() ? std::string() : it->second,
                 "' but this run has no weighting method; pass the same --weighting");
}

/// The host state of a trainer's weighting method with `K` tasks: the method, its own
/// parameters (UW's log-variances, GradNorm's weights) stepped by `HostOptimizer` (the
/// experiment's optimiser on the CPU, no decay), the epoch's loss sums, and their checkpoint
/// metadata as exact decimal text.
template <std::size_t K, class T, class HostOptimizer>
struct WeightingHost {
  WeightingHost(weighting::AnyWeighting m, const typename HostOptimizer::options_type& o)
      : method(std::move(m)) {
    const std::span<double> p = method.parameters();
    epoch_sums.fill(0.0);
    if (p.empty()) return;
    store.add_group(ParamGroup{"weighting", 1.0, 0.0});
    store.declare("weighting", Shape{static_cast<std::int64_t>(p.size())}, "weighting");
    store.allocate();
    optimizer.emplace(store, o);
  }

  /// Steps the method's parameters with their gradient from the last `combine` and closes
  /// an epoch every `steps_per_epoch` steps.
  void after_step(Context<Cpu>& ctx, double lr, std::int64_t steps_per_epoch) {
    if (optimizer) {
      const std::span<double> p = method.parameters();
      const std::span<const double> g = method.parameter_gradient();
      TensorView<T, Cpu> v = store.values();
      TensorView<T, Cpu> dv = store.grads();
      for (std::size_t i = 0; i < p.size(); ++i) {
        v[static_cast<std::int64_t>(i)] = static_cast<T>(p[i]);
        dv[static_cast<std::int64_t>(i)] = static_cast<T>(g[i]);
      }
      optimizer->step(ctx, lr * lr_mult);
      for (std::size_t i = 0; i < p.size(); ++i)
        p[i] = static_cast<double>(v[static_cast<std::int64_t>(i)]);
      method.after_parameter_update();
    }
    if (steps_per_epoch <= 0) return;
    if (++epoch_steps < steps_per_epoch) return;
    std::array<double, K> means{};
    for (std::size_t k = 0; k < K; ++k)
      means[k] = epoch_sums[k] / static_cast<double>(epoch_steps);
    method.end_epoch(means);
    epoch_sums.fill(0.0);
    epoch_steps = 0;
  }

  /// Checkpoint metadata: the method's spec, `MethodState`, epoch accumulator and its
  /// parameters' optimiser state, each as exact decimal text.
  void save(std::map<std::string, std::string>& extra) {
    extra["weighting"] = method.spec();
    extra["weighting/state"] = weighting::state_to_text(method.state());
    weighting::MethodState epoch;
    epoch.values.assign(epoch_sums.begin(), epoch_sums.end());
    epoch.values.push_back(static_cast<double>(epoch_steps));
    extra["weighting/epoch"] = weighting::state_to_text(epoch);
    if (!optimizer) return;
    const auto st = optimizer->checkpoint_state();
    for (const auto& [name, view] : st.tensors) {
      weighting::MethodState v;
      for (std::int64_t i = 0; i < view.numel(); ++i)
        v.values.push_back(static_cast<double>(view[i]));
      extra["weighting/optim/" + name] = weighting::state_to_text(v);
    }
    for (const auto& [name, view] : st.counters)
      extra["weighting/optim/" + name] =
          weighting::state_to_text({{static_cast<double>(view[0])}, {}});
  }

  /// Throws IoError naming `path` when the metadata `extra` does not fit this method.
  void check(const std::string& path, const std::map<std::string, std::string>& extra) {
    const auto it = extra.find("weighting");
    const std::string spec = method.spec();
    nddr::check<IoError>(it != extra.end() && it->second == spec, path,
                         ": metadata 'weighting' is '",
                         it == extra.end() ? std::string("(none)") : it->second, "', expected '",
                         spec, "' (resume with the same --weighting)");
    std::vector<std::string> keys = {"weighting/state", "weighting/epoch"};
    if (optimizer) {
      const auto st = optimizer->checkpoint_state();
      for (const auto& [name, view] : st.tensors) keys.push_back("weighting/optim/" + name);
      for (const auto& [name, view] : st.counters) keys.push_back("weighting/optim/" + name);
    }
    for (const auto& key : keys) {
      const auto k = extra.find(key);
      nddr::check<IoError>(k != extra.end(), path, ": metadata '", key, "' is missing");
      try {
        const weighting::MethodState v = weighting::state_from_text(k->second);
        if (key == "weighting/state") {
          weighting::AnyWeighting probe = method;
          probe.set_state(v);
        } else if (key == "weighting/epoch") {
          nddr::check<ValueError>(v.values.size() == K + 1, "expected ", K + 1, " values, got ",
                                  v.values.size());
        }
      } catch (const ValueError& e) {
        throw IoError(concat(path, ": metadata '", key, "': ", e.what()));
      }
    }
  }

  /// Restores what `save` wrote (already checked by `check`).
  void restore(const std::map<std::string, std::string>& extra) {
    method.set_state(weighting::state_from_text(extra.at("weighting/state")));
    const auto epoch = weighting::state_from_text(extra.at("weighting/epoch"));
    for (std::size_t k = 0; k < K; ++k) epoch_sums[k] = epoch.values[k];
    epoch_steps = static_cast<std::int64_t>(epoch.values[K]);
    if (!optimizer) return;
    const auto st = optimizer->checkpoint_state();
    for (const auto& [name, view] : st.tensors) {
      const auto v = weighting::state_from_text(extra.at("weighting/optim/" + name));
      nddr::check<IoError>(static_cast<std::int64_t>(v.values.size()) == view.numel(),
                           "nddr::Trainer: checkpoint metadata 'weighting/optim/", name, "' has ",
                           v.values.size(), " values, expected ", view.numel());
      for (std::int64_t i = 0; i < view.numel(); ++i)
        view[i] = static_cast<T>(v.values[static_cast<std::size_t>(i)]);
    }
    for (const auto& [name, view] : st.counters)
      view[0] = static_cast<std::int64_t>(
          weighting::state_from_text(extra.at("weighting/optim/" + name)).values.at(0));
  }

  weighting::AnyWeighting method;
  ParameterStore<T, Cpu> store;  ///< the method's parameters, for `optimizer`
  std::optional<HostOptimizer> optimizer;
  double lr_mult = 1.0;
  std::array<double, K> epoch_sums{};  ///< sum of the method's input losses this epoch
  std::int64_t epoch_steps = 0;
};

}  // namespace nddr::detail
