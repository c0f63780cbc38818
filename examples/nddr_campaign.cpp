// nddr-campaign: reproduces a paper table in one command (docs/experiments.md, "Reproducing a
// table with nddr-campaign"). It reads the table's manifest (campaigns/t4.txt), runs the
// experiment programs (nddr-nyuv2, nddr-imdb-wiki) as child processes, one per device slot,
// skips finished runs, resumes interrupted ones, and assembles the table (Markdown, CSV, PNG)
// with the paper's numbers beside ours. Example:
//   nddr-campaign --table t4 --data-dir datasets/nyu_v2 --seeds 3 --device cuda:0,cuda:1
//                 --init-weights deeplab_largefov_voc12.safetensors
//   nddr-campaign --table t4 --dry-run          # the plan: runs, order, initialisation, time
// It instantiates no network: everything heavy happens in the children.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "nddr/io/file.hpp"
#include "nddr/io/png.hpp"
#include "nddr_apps/campaign.hpp"
#include "nddr_apps/cli.hpp"

namespace fs = std::filesystem;
namespace cp = nddr::campaign;

namespace {

constexpr const char* kProgram = "nddr-campaign";
constexpr const char* kRecordFile = "campaign-run.txt";

struct Options {
  std::string tables;
  std::string manifests = "campaigns";
  std::string data_dir = "datasets/nyu_v2";
  std::string init_weights;
  std::string backbone = "vgg16";
  std::int64_t steps = 20001;
  std::int64_t seeds = 1;
  std::uint64_t seed = 1234;
  std::string devices = "cpu";
  int threads = 0;
  std::string output_dir = "runs/campaign";
  std::string bin_dir;
  std::string run_flags;
  double step_seconds = 0.0;
  bool dry_run = false;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::size_t begin = 0;
  for (;;) {
    const std::size_t end = std::min(s.find(sep, begin), s.size());
    out.push_back(s.substr(begin, end - begin));
    if (end == s.size()) return out;
    begin = end + 1;
  }
}

bool valid_device_list(const std::string& s) {
  const auto items = split(s, ',');
  if (items.size() > 64) return false;
  for (const auto& d : items)
    if (!nddr::cli::parse_device_value(d)) return false;
  return true;
}

bool valid_table_list(const std::string& s) {
  const auto items = split(s, ',');
  if (items.size() > 32) return false;
  for (const auto& t : items)
    if (t.empty()) return false;
  return true;
}

// --- the plan ------------------------------------------------------------------------------

enum class State { kPending, kDone, kRunning, kFailed, kBlocked, kInterrupted };

struct Job {
  const cp::RunSpec* run = nullptr;
  std::uint64_t seed = 0;
  std::string dir;
  std::vector<std::string> args;  ///< everything but --device, --threads and --resume
  std::vector<std::size_t> deps;  ///< job indices
  std::string init;               ///< how the network is initialised, for the plan
  State state = State::kPending;
  bool resume = false;
  std::int64_t resume_step = 0;
  pid_t pid = -1;
  int slot = -1;
  std::chrono::steady_clock::time_point started;
};

std::string record_text(const Job& j) {
  std::string s = j.run->program + "\n";
  for (const auto& a : j.args) s += a + "\n";
  return s;
}

std::string read_text(const std::string& path) {
  const auto bytes = nddr::io::read_regular_file(kProgram, path, std::uint64_t{1} << 20);
  return {bytes.begin(), bytes.end()};
}

std::int64_t newest_checkpoint_step(const std::string& dir) {
  std::int64_t best = 0;
  std::error_code ec;
  for (fs::directory_iterator it(fs::path(dir) / "checkpoints", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string n = it->path().filename().string();
    constexpr std::string_view kPrefix = "ckpt-", kSuffix = ".safetensors";
    if (n.size() <= kPrefix.size() + kSuffix.size() || !n.starts_with(kPrefix) ||
        !n.ends_with(kSuffix))
      continue;
    const auto step = nddr::cli::parse_integer<std::int64_t>(
        std::string_view(n).substr(kPrefix.size(), n.size() - kPrefix.size() - kSuffix.size()));
    if (step) best = std::max(best, *step);
  }
  return best;
}

std::string checkpoint_path(const std::string& dir, std::int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "ckpt-%010lld.safetensors", static_cast<long long>(step));
  return (fs::path(dir) / "checkpoints" / name).string();
}

std::string join(const std::vector<std::string>& v, const std::string& sep = " ") {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

struct Campaign {
  Options opt;
  std::vector<cp::Manifest> manifests;
  std::vector<std::string> devices;
  std::vector<std::uint64_t> seeds;
  std::vector<Job> jobs;
  std::map<std::pair<std::string, std::uint64_t>, std::size_t> index;  // (run, seed) -> job
};

[[noreturn]] void fail(const std::string& message) { throw nddr::ValueError(message); }

std::string manifest_path(const Options& o, const std::string& table) {
  if (table.find('/') != std::string::npos || table.ends_with(".txt")) return table;
  return (fs::path(o.manifests) / (table + ".txt")).string();
}

std::string describe_init(const cp::RunSpec& r, const Options& o, std::uint64_t seed) {
  if (!r.deps.empty())
    return "checkpoints of " + join(r.deps, ", ") + " (seed " + std::to_string(seed) + ")";
  for (const auto& f : r.flags)
    if (f.find("{init-weights}") != std::string::npos)
      return o.init_weights.empty() ? "from scratch (no --init-weights)"
                                    : "--init-weights " + o.init_weights;
  return "from scratch";
}

// Reads the manifests and builds every job; checks everything that can be checked before
// running anything. Throws ValueError / ManifestError / IoError.
Campaign plan(const Options& o) {
  Campaign c{o, {}, split(o.devices, ','), {}, {}, {}};
  for (std::int64_t s = 0; s < o.seeds; ++s) c.seeds.push_back(o.seed + static_cast<std::uint64_t>(s));
  std::set<std::string> seen;
  for (const std::string& t : split(o.tables, ',')) {
    const std::string path = manifest_path(o, t);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
      fail(std::string(kProgram) + ": --table " + t + ": no manifest '" + path +
           "' (give --manifests DIR, or a manifest file)");
    cp::Manifest m = cp::read_manifest(path);
    if (!seen.insert(m.id).second) fail(std::string(kProgram) + ": table " + m.id + " given twice");
    c.manifests.push_back(std::move(m));
  }
  const auto extra = cp::detail::split_blanks(o.run_flags);
  // Jobs, seed by seed, each table's runs in manifest order (dependencies come first).
  std::map<std::string, const cp::RunSpec*> specs;
  for (const std::uint64_t seed : c.seeds)
    for (const cp::Manifest& m : c.manifests) {
      for (const cp::RunSpec& r : m.runs) {
        if (auto it = specs.find(r.name); it != specs.end()) {
          const cp::RunSpec& o2 = *it->second;
          if (o2.program != r.program || o2.flags != r.flags)
            fail(r.file + ":" + std::to_string(r.line) + ": run " + r.name +
                 ": expected the same program and flags as in " + o2.file + ":" +
                 std::to_string(o2.line) + " (one name, one run), got '" + join(r.flags) + "'");
        } else {
          specs[r.name] = &r;
        }
        if (c.index.count({r.name, seed})) continue;
        Job j;
        j.run = &r;
        j.seed = seed;
        j.dir = (fs::path(o.output_dir) / r.name / ("seed-" + std::to_string(seed))).string();
        cp::Bindings b{o.data_dir, o.init_weights, {}};
        for (const auto& d : r.deps) {
          const std::size_t k = c.index.at({d, seed});
          j.deps.push_back(k);
          b.checkpoints[d] = checkpoint_path(c.jobs[k].dir, o.steps);
        }
        j.args = cp::substitute(m.data_flags, b);
        for (auto& a : cp::substitute(r.flags, b)) j.args.push_back(std::move(a));
        const std::string backbone = m.backbone.empty() ? o.backbone : m.backbone;
        for (const std::string& a : {std::string("--backbone"), backbone, std::string("--steps"),
                                     std::to_string(o.steps), std::string("--seed"),
                                     std::to_string(seed), std::string("--output-dir"), j.dir})
          j.args.push_back(a);
        j.args.insert(j.args.end(), extra.begin(), extra.end());
        j.init = describe_init(r, o, seed);
        c.index[{r.name, seed}] = c.jobs.size();
        c.jobs.push_back(std::move(j));
      }
    }
  // What is on disk already: finished runs are skipped, started ones resumed; a directory made
  // with other flags is an error (never overwritten).
  for (Job& j : c.jobs) {
    std::error_code ec;
    if (!fs::exists(j.dir, ec)) continue;
    const std::string record = (fs::path(j.dir) / kRecordFile).string();
    if (!fs::exists(record, ec)) {
      if (fs::is_empty(j.dir, ec)) continue;
      fail(std::string(kProgram) + ": '" + j.dir + "' exists but was not made by nddr-campaign (no " +
           kRecordFile + "); remove it or choose another --output-dir");
    }
    if (read_text(record) != record_text(j))
      fail(std::string(kProgram) + ": '" + j.dir + "' holds run " + j.run->name + " (seed " +
           std::to_string(j.seed) + ") made with other flags (see " + record +
           "); remove it or choose another --output-dir");
    const auto results = cp::read_results(j.dir);
    if (results && results->steps == o.steps) {
      j.state = State::kDone;
    } else {
      j.resume = true;
      j.resume_step = newest_checkpoint_step(j.dir);
    }
  }
  return c;
}

// Checks what running (not planning) needs: every table runnable, the programs, the data.
void check_runnable(const Campaign& c) {
  for (const cp::Manifest& m : c.manifests)
    if (!m.unsupported.empty())
      fail(std::string(kProgram) + ": table " + m.id + " (" + m.file +
           ") cannot be run by this build: " + m.unsupported);
  std::set<std::string> programs;
  for (const Job& j : c.jobs)
    if (j.state != State::kDone) programs.insert(j.run->program);
  for (const auto& p : programs) {
    const fs::path bin = fs::path(c.opt.bin_dir) / p;
    if (::access(bin.c_str(), X_OK) != 0)
      fail(std::string(kProgram) + ": program '" + p + "' not found as '" + bin.string() +
           "' (build it: cmake --build ... --target " + p.substr(0, 4) + "_" +
           [&] { std::string s = p.substr(5); for (char& ch : s) if (ch == '-') ch = '_'; return s; }() +
           "; or give --bin-dir DIR)");
  }
  std::error_code ec;
  if (!programs.empty() && !fs::is_directory(c.opt.data_dir, ec))
    fail(std::string(kProgram) + ": --data-dir '" + c.opt.data_dir + "' is not a directory");
  const std::string& w = c.opt.init_weights;  // a file, or a TensorFlow checkpoint prefix
  if (!programs.empty() && !w.empty() && !fs::exists(w, ec) && !fs::exists(w + ".index", ec))
    fail(std::string(kProgram) + ": --init-weights '" + w + "' does not exist");
}

// Seconds per training step measured in `dir`/log.csv: between its last two rows of one session
// (steps and elapsed_s increasing); nullopt when there are no two such rows.
std::optional<double> measured_step_seconds(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "log.csv");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  const auto header = split(line, ',');
  const auto col = std::find(header.begin(), header.end(), "elapsed_s") - header.begin();
  if (col == static_cast<std::ptrdiff_t>(header.size())) return std::nullopt;
  double prev_step = -1, prev_secs = -1, step_secs = NAN;
  while (std::getline(in, line)) {
    const auto f = split(line, ',');
    if (f.size() != header.size()) continue;
    const auto step = nddr::cli::parse_finite(f[0]);
    const auto secs = nddr::cli::parse_finite(f[static_cast<std::size_t>(col)]);
    if (!step || !secs) continue;
    if (*step > prev_step && *secs > prev_secs && prev_step >= 0)
      step_secs = (*secs - prev_secs) / (*step - prev_step);
    prev_step = *step;
    prev_secs = *secs;
  }
  if (!std::isfinite(step_secs)) return std::nullopt;
  return step_secs;
}

std::string format_duration(double s) {
  char buf[64];
  if (s < 120) std::snprintf(buf, sizeof buf, "%.0f s", s);
  else if (s < 7200) std::snprintf(buf, sizeof buf, "%.1f min", s / 60);
  else std::snprintf(buf, sizeof buf, "%.1f h (%.1f days)", s / 3600, s / 86400);
  return buf;
}

void print_plan(const Campaign& c, std::ostream& out) {
  const Options& o = c.opt;
  for (const cp::Manifest& m : c.manifests) {
    out << "table " << m.id << " (" << m.file << "): " << m.title << "\n";
    if (!m.unsupported.empty()) out << "  CANNOT RUN in this build: " << m.unsupported << "\n";
    out << "  rows:";
    for (const auto& r : m.rows) out << " " << r.label << " <- " << join(r.runs, "+") << ";";
    out << "\n";
  }
  out << "backbone " << o.backbone << ", " << o.steps << " steps, seeds "
      << cp::detail::seed_list(c.seeds) << ", devices " << join(c.devices, ",") << " (one run per "
      << "device at a time), outputs in " << o.output_dir << "\n\n";
  out << "order | run | seed | status | after | initialisation\n";
  std::int64_t remaining_steps = 0;
  std::size_t to_run = 0;
  for (std::size_t i = 0; i < c.jobs.size(); ++i) {
    const Job& j = c.jobs[i];
    std::string status = "to run";
    if (j.state == State::kDone) status = "done (skipped)";
    else if (j.resume) status = "resume from step " + std::to_string(j.resume_step);
    if (j.state != State::kDone) {
      remaining_steps += o.steps - j.resume_step;
      ++to_run;
    }
    std::vector<std::string> after;
    for (const auto d : j.deps) after.push_back(c.jobs[d].run->name);
    out << (i + 1) << " | " << j.run->name << " | " << j.seed << " | " << status << " | "
        << (after.empty() ? "-" : join(after, ", ")) << " | " << j.init << "\n"
        << "    " << j.run->program << " " << join(j.args) << " --device "
        << (c.devices.size() == 1 ? c.devices[0] : "<its slot's device>")
        << (o.threads ? " --threads " + std::to_string(o.threads) : "")
        << (j.resume ? " --resume" : "") << "\n";
  }
  out << "\n" << to_run << " of " << c.jobs.size() << " runs to do, " << remaining_steps
      << " training steps";
  // The step time: --step-seconds, else the mean of the steps measured in this campaign's logs.
  double step_seconds = o.step_seconds;
  std::string source = "given";
  if (step_seconds <= 0) {
    double sum = 0;
    int n = 0;
    for (const Job& j : c.jobs)
      if (const auto m = measured_step_seconds(j.dir)) {
        sum += *m;
        ++n;
      }
    if (n > 0) {
      step_seconds = sum / n;
      source = "measured in the logs of " + std::to_string(n) + " of these runs";
    }
  }
  if (step_seconds > 0) {
    const double s = static_cast<double>(remaining_steps) * step_seconds /
                     static_cast<double>(c.devices.size());
    out << "; estimated time at " << step_seconds << " s per step (" << source << ") on "
        << c.devices.size() << " device" << (c.devices.size() == 1 ? "" : "s") << ": "
        << format_duration(s)
        << " (every run at that step's cost, plus evaluation; single-task and mt steps cost "
           "about half an NDDR step)";
  } else {
    out << " (give --step-seconds X, a measured training step time, e.g. from nddr-bench-step, "
           "for an estimate)";
  }
  out << "\n";
}

// --- running ---------------------------------------------------------------------------------

std::atomic<int> g_signal{0};
std::atomic<int> g_signal_count{0};

extern "C" void on_stop_signal(int sig) {
  int expected = 0;
  g_signal.compare_exchange_strong(expected, sig);
  g_signal_count.fetch_add(1);
  static const char kMsg[] =
      "\nnddr-campaign: stop requested; asking the runs to checkpoint and exit (send the signal "
      "again to make them exit at once)\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocking call returns early
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

// Starts `j` on `device`; its output goes to <dir>/campaign.log.
pid_t start(const Campaign& c, Job& j, const std::string& device) {
  fs::create_directories(j.dir);
  const std::string record = (fs::path(j.dir) / kRecordFile).string();
  std::error_code ec;
  if (!fs::exists(record, ec)) {
    const std::string text = record_text(j);
    nddr::io::write_file_atomic(kProgram, record, text.data(), text.size());
  }
  std::vector<std::string> args{(fs::path(c.opt.bin_dir) / j.run->program).string()};
  args.insert(args.end(), j.args.begin(), j.args.end());
  for (const std::string& a : {std::string("--device"), device, std::string("--threads"),
                               std::to_string(c.opt.threads)})
    args.push_back(a);
  if (j.resume) args.push_back("--resume");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = (fs::path(j.dir) / "campaign.log").string();
  const pid_t parent = ::getpid();
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = ::fork();
  if (pid < 0) fail(std::string(kProgram) + ": fork failed: " + std::strerror(errno));
  if (pid == 0) {
    // Its own process group: a terminal's Ctrl-C reaches the campaign only, which forwards it
    // once (a second signal would make the run exit without its checkpoint).
    ::setpgid(0, 0);
#if defined(__linux__)
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the campaign killed outright: stop cleanly too
#endif
    if (::getppid() != parent) ::_exit(128 + SIGTERM);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGINT, &dfl, nullptr);
    ::sigaction(SIGTERM, &dfl, nullptr);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execv(argv[0], argv.data());
    const char msg[] = "nddr-campaign: exec failed\n";
    [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  return pid;
}

std::string job_name(const Job& j) { return j.run->name + " (seed " + std::to_string(j.seed) + ")"; }

// Runs every pending job; returns 0, 1 (a run failed) or 128 + the signal that stopped it.
int execute(Campaign& c, std::ostream& out) {
  install_signal_handlers();
  std::vector<std::size_t> slot_job(c.devices.size(), SIZE_MAX);
  int forwarded = 0, running = 0;
  std::size_t done = 0;
  for (const Job& j : c.jobs) done += j.state == State::kDone;
  if (done) out << kProgram << ": " << done << " of " << c.jobs.size() << " runs already done\n";
  bool failed = false;
  for (;;) {
    const int sig = g_signal.load();
    if (sig != 0 && g_signal_count.load() > forwarded) {
      forwarded = g_signal_count.load();
      for (const Job& j : c.jobs)
        if (j.state == State::kRunning) ::kill(j.pid, sig);
    }
    // Blocked jobs: a dependency failed.
    for (Job& j : c.jobs)
      if (j.state == State::kPending)
        for (const auto d : j.deps)
          if (c.jobs[d].state == State::kFailed || c.jobs[d].state == State::kBlocked)
            j.state = State::kBlocked;
    if (sig == 0)
      for (std::size_t s = 0; s < slot_job.size(); ++s) {
        if (slot_job[s] != SIZE_MAX) continue;
        for (std::size_t i = 0; i < c.jobs.size(); ++i) {
          Job& j = c.jobs[i];
          if (j.state != State::kPending) continue;
          if (!std::all_of(j.deps.begin(), j.deps.end(),
                           [&](std::size_t d) { return c.jobs[d].state == State::kDone; }))
            continue;
          j.pid = start(c, j, c.devices[s]);
          j.state = State::kRunning;
          j.slot = static_cast<int>(s);
          j.started = std::chrono::steady_clock::now();
          slot_job[s] = i;
          ++running;
          out << kProgram << ": started " << job_name(j) << " on " << c.devices[s]
              << (j.resume ? " (resuming)" : "") << "; log " << j.dir << "/campaign.log\n"
              << std::flush;
          break;
        }
      }
    if (running == 0) break;
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    for (std::size_t i = 0; i < c.jobs.size(); ++i) {
      Job& j = c.jobs[i];
      if (j.state != State::kRunning || j.pid != pid) continue;
      --running;
      slot_job[static_cast<std::size_t>(j.slot)] = SIZE_MAX;
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - j.started).count();
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      const auto results = cp::read_results(j.dir);
      if (code == 0 && results) {
        j.state = State::kDone;
        out << kProgram << ": finished " << job_name(j) << " in " << format_duration(secs) << "\n";
      } else if (g_signal.load() != 0 && (code == 128 + SIGINT || code == 128 + SIGTERM)) {
        j.state = State::kInterrupted;
        out << kProgram << ": stopped " << job_name(j) << " after its checkpoint\n";
      } else {
        j.state = State::kFailed;
        failed = true;
        out << kProgram << ": run " << job_name(j) << " failed (exit status " << code
            << "); see " << j.dir << "/campaign.log\n";
      }
      out << std::flush;
    }
  }
  if (const int sig = g_signal.load(); sig != 0) {
    out << kProgram << ": stopped by " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
        << "; every run's last checkpoint is kept: run the same command again to continue\n";
    return 128 + sig;
  }
  for (const Job& j : c.jobs)
    if (j.state == State::kBlocked)
      out << kProgram << ": not run: " << job_name(j) << " (a run it depends on failed)\n";
  return failed ? 1 : 0;
}

// --- the tables --------------------------------------------------------------------------------

void write_tables(const Campaign& c, std::ostream& out) {
  const Options& o = c.opt;
  fs::create_directories(o.output_dir);
  for (const cp::Manifest& m : c.manifests) {
    std::vector<std::vector<cp::RowValues>> values;
    for (const cp::RowSpec& r : m.rows) {
      std::vector<cp::RowValues> row;
      for (std::size_t s = 0; s < c.seeds.size(); ++s) {
        std::vector<std::optional<cp::RunResults>> results;
        for (const auto& name : r.runs)
          results.push_back(cp::read_results(c.jobs[c.index.at({name, c.seeds[s]})].dir));
        std::vector<const std::map<std::string, double>*> ptrs;
        for (const auto& res : results) ptrs.push_back(res ? &res->table : nullptr);
        row.push_back(cp::row_values(m.columns, ptrs));
      }
      values.push_back(std::move(row));
    }
    const cp::Table t = cp::assemble(m, c.seeds, values);
    const std::string setup = "backbone " + (m.backbone.empty() ? o.backbone : m.backbone) + ", " +
                              std::to_string(o.steps) + " steps" +
                              (o.run_flags.empty() ? "" : ", " + o.run_flags);
    const std::string md = cp::markdown(t, setup), csv = cp::csv(t);
    const fs::path base = fs::path(o.output_dir) / m.id;
    nddr::io::write_file_atomic(kProgram, base.string() + ".md", md.data(), md.size());
    nddr::io::write_file_atomic(kProgram, base.string() + ".csv", csv.data(), csv.size());
    nddr::io::write_png(base.string() + ".png", cp::bar_chart(t));
    out << "\n" << md << "\n(" << base.string() << ".md, .csv, .png)\n";
  }
}

std::string own_directory(const char* argv0) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) return self.parent_path().string();
  return fs::absolute(argv0).parent_path().string();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  nddr::cli::ArgParser p(kProgram,
                         "Reproduces a paper table: runs the experiment programs of its manifest "
                         "(skipping finished runs, resuming interrupted ones) and assembles the "
                         "table beside the paper's numbers (docs/experiments.md).");
  p.text("table", o.tables, "the tables: ids (t1..t7) or manifest files, comma separated",
         "table ids or manifest files, comma separated", valid_table_list, "ID[,ID...]")
      .required()
      .path("manifests", o.manifests, "directory of the manifests <id>.txt", "DIR")
      .path("data-dir", o.data_dir, "the data set folder ({data-dir} in the manifests)", "DIR")
      .path("init-weights", o.init_weights,
            "pretrained weights ({init-weights}; none: those runs start from scratch)", "FILE")
      .text("backbone", o.backbone, "--backbone of every run (tiny: smoke runs)",
            "a backbone name such as vgg16 or tiny",
            [](const std::string& s) { return cp::detail::valid_name(s); }, "NAME")
      .integer("steps", o.steps, "training steps of every run", std::int64_t{1})
      .integer("seeds", o.seeds, "number of seeds per run (--seed, --seed + 1, ...)",
               std::int64_t{1}, std::int64_t{100})
      .integer("seed", o.seed, "the first seed", std::uint64_t{0},
               std::numeric_limits<std::uint64_t>::max() - 100)
      .text("device", o.devices,
            "devices, comma separated; one run per device at a time (cpu,cpu: two CPU runs)",
            "cpu, cuda or cuda:N, comma separated", valid_device_list, "DEVICE[,DEVICE...]")
      .integer("threads", o.threads, "--threads of every run (0 = all cores)", 0,
               nddr::cli::kMaxThreads)
      .path("output-dir", o.output_dir, "runs and tables", "DIR")
      .path("bin-dir", o.bin_dir, "where the experiment programs are", "DIR")
      .default_text("nddr-campaign's own directory")
      .text("run-flags", o.run_flags, "more flags for every run, e.g. '--crop 65 --batch 2'",
            "flags for the experiment programs",
            [](const std::string& s) { return !cp::detail::split_blanks(s).empty(); }, "FLAGS")
      .real("step-seconds", o.step_seconds,
            "a measured training step time, for the plan's time estimate",
            nddr::cli::RealRange::non_negative())
      .flag("dry-run", o.dry_run, "print the plan and run nothing");
  if (const auto status = p.parse_or_exit(argc, argv)) return *status;
  for (const auto& f : cp::detail::split_blanks(o.run_flags))
    for (const auto& r : cp::reserved_flags())
      if (f.substr(0, f.find('=')) == r)
        return p.usage_error("run-flags", "no " + r + " (nddr-campaign sets it for every run)",
                             o.run_flags);
  if (o.bin_dir.empty()) o.bin_dir = own_directory(argv[0]);
  try {
    Campaign c = plan(o);
    if (o.dry_run) {
      print_plan(c, std::cout);
      return 0;
    }
    check_runnable(c);
    print_plan(c, std::cout);
    std::cout << "\n";
    const int status = execute(c, std::cout);
    if (status >= 128) return status;
    write_tables(c, std::cout);
    return status;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    std::cerr << (what.starts_with(kProgram) ? "" : std::string(kProgram) + ": ") << what << "\n";
    return 1;
  }
}
