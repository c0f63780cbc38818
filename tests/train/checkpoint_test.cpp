// Checkpoints and logs under failure: validate-then-write loads (a failed load changes nothing),
// strict metadata, discovery by name and step (stray files are never read or pruned), stale
// temporaries of killed writers, log rows cut back on resume, failed log writes, and stopping
// on SIGINT/SIGTERM with a checkpoint.
#include <catch2/catch.hpp>

#include <nddr/nddr.hpp>
#include <nddr/train/interrupt.hpp>
#include <nddr/train/trainer.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../support/seg_normal_batch.hpp"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

using Spec = nddr::MultiTask<nddr::TinyNet, nddr::TinyNet, nddr::NDDR>;
using Exp = nddr::Experiment<Spec, nddr::Tasks<nddr::Segmentation<11>, nddr::SurfaceNormal>>;
using Net = nddr::Network<Spec>;
using Train = nddr::Trainer<Exp>;

Train::Batch make_batch(std::int64_t step) {
  return nddr_test::seg_normal_batch<Train::Batch>(1000 + static_cast<std::uint64_t>(step), 2, 16,
                                                   16, 11);
}
const auto kBatches = [](std::int64_t s) { return make_batch(s); };

nddr::TrainerOptions quiet(std::string dir = {}) {
  nddr::TrainerOptions o;
  o.loss_weights = {1.0, 20.0};
  o.progress = false;
  o.output_dir = std::move(dir);
  o.optimizer = nddr::SgdOptions::paper_multi_task();
  return o;
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag)
      : path(fs::temp_directory_path() / ("nddr_ckpt_" + tag + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

/// Everything a load may change: parameters, buffers, optimiser state, step, random streams.
struct Snapshot {
  std::vector<float> values, buffers, optim;
  std::int64_t step = 0;
  std::vector<std::uint64_t> rngs;

  static std::vector<float> copy(nddr::TensorView<const float> v) {
    return std::vector<float>(v.data(), v.data() + v.numel());
  }
  static Snapshot of(Net& net, Train& t) {
    Snapshot s;
    const auto& store = std::as_const(net.parameters());
    s.values = copy(store.values());
    s.buffers = copy(store.buffer_values());
    const auto o = t.optimizer().state();
    s.optim = copy(nddr::TensorView<const float>(o.data(), o.shape()));
    s.step = t.step();
    for (nddr::Rng* r : net.rngs()) {
      s.rngs.push_back(r->state().seed);
      s.rngs.push_back(r->state().counter);
    }
    return s;
  }
  // Bytewise, so that NaN payloads would count as changes too.
  bool operator==(const Snapshot& o) const {
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    return same(values, o.values) && same(buffers, o.buffers) && same(optim, o.optim) &&
           step == o.step && rngs == o.rngs;
  }
};

/// A checkpoint file's tensors and metadata, editable and writable again.
struct Editable {
  struct Tensor {
    nddr::io::Dtype dtype = nddr::io::Dtype::kF32;
    std::vector<std::int64_t> shape;
    std::vector<float> f32;
    std::vector<std::int32_t> i32;
  };
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> meta;

  static Editable read(const std::string& path) {
    const auto f = nddr::io::SafetensorsFile::read(path);
    Editable e;
    for (const auto& name : f.names()) {
      Tensor t;
      t.shape = f.shape(name);
      t.f32 = f.values<float>(name);
      e.tensors[name] = std::move(t);
    }
    e.meta = f.metadata();
    return e;
  }
  void write(const std::string& path) const {
    std::vector<nddr::io::SafetensorsEntry> entries;
    for (const auto& [name, t] : tensors) {
      const void* data = t.dtype == nddr::io::Dtype::kI32 ? static_cast<const void*>(t.i32.data())
                                                          : static_cast<const void*>(t.f32.data());
      entries.push_back(nddr::io::SafetensorsEntry{name, t.dtype, t.shape, data});
    }
    nddr::io::write_safetensors(path, entries, meta);
  }
  std::string first_param() const {
    for (const auto& [name, t] : tensors)
      if (name.starts_with("param/")) return name;
    return {};
  }
};

/// The steps of a CSV log's rows (header skipped) or a JSONL log's lines.
std::vector<std::int64_t> logged_steps(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::int64_t> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("step,")) continue;
    const std::size_t at = line.find("\"step\":");
    out.push_back(std::stoll(at == std::string::npos ? line : line.substr(at + 7)));
  }
  return out;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool same_values(Net& a, Net& b) {
  const auto va = std::as_const(a.parameters()).values(), vb = std::as_const(b.parameters()).values();
  return va.numel() == vb.numel() &&
         std::memcmp(va.data(), vb.data(), static_cast<std::size_t>(va.numel()) * sizeof(float)) == 0;
}

/// A pid that no process has (a child that has exited and been reaped).
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

std::string host() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  std::string h(buf);
  for (char& c : h)
    if (c == '.' || c == '/') c = '_';
  return h.empty() ? "localhost" : h;
}

}  // namespace

TEST_CASE("load_checkpoint: every bad checkpoint is refused before anything changes",
          "[train][checkpoint]") {
  TempDir dir("validate");
  nddr::Context<nddr::Cpu> ctx(1);
  const std::string good = dir.file("good.safetensors");
  {
    Net net({11, 3});
    Train t(net, nddr::ConstantSchedule{0.01}, quiet());
    t.fit(ctx, 2, kBatches);
    t.save_checkpoint(good);
  }
  // The network that bad files are loaded into: another initialisation, one step in.
  nddr::NetworkOptions<Spec> other;
  other.seed = 77;
  Net net({11, 3}, other);
  Train t(net, nddr::ConstantSchedule{0.01}, quiet());
  t.fit(ctx, 1, kBatches);
  const Snapshot before = Snapshot::of(net, t);
  const Editable base = Editable::read(good);
  const std::string param = base.first_param();
  REQUIRE(!param.empty());
  const std::size_t streams = net.rngs().size();
  REQUIRE(streams >= 1);

  struct Case {
    std::string name;
    std::function<void(Editable&)> edit;
    std::string expected;
  };
  auto meta = [](std::string key, std::string value) {
    return [key, value](Editable& e) { e.meta[key] = value; };
  };
  const std::vector<Case> cases = {
      // The bug that started this: tensors fit, the stream count does not.
      {"one stream too many",
       [&](Editable& e) {
         e.meta["rng_count"] = std::to_string(streams + 1);
         e.meta["rng/" + std::to_string(streams)] = "1 2";
       },
       "random streams"},
      {"one stream too few",
       [&](Editable& e) {
         e.meta["rng_count"] = std::to_string(streams - 1);
         e.meta.erase("rng/" + std::to_string(streams - 1));
       },
       "random streams"},
      {"a stream beyond the count", meta("rng/" + std::to_string(streams + 5), "1 2"), "rng_count"},
      {"negative step", meta("step", "-5"), "'step' = '-5'"},
      {"step past int64", meta("step", "18446744073709551615"), "'step'"},
      {"step with junk", meta("step", "12abc"), "'step' = '12abc'"},
      {"fractional step", meta("step", "7.9"), "'step' = '7.9'"},
      {"empty step", meta("step", ""), "'step'"},
      {"step with a sign", meta("step", "+3"), "'step'"},
      {"stream with junk", meta("rng/0", "1 2 junk"), "'rng/0' = '1 2 junk'"},
      {"negative stream", meta("rng/0", "-1 -1"), "'rng/0'"},
      {"stream without counter", meta("rng/0", "1"), "'rng/0'"},
      {"stream counter past u64", meta("rng/0", "1 18446744073709551616"), "'rng/0'"},
      {"wrong format", meta("format", "nddr-checkpoint-9"), "'format'"},
      {"no step", [](Editable& e) { e.meta.erase("step"); }, "lacks 'step'"},
      {"an int32 parameter",
       [&](Editable& e) {
         auto& t = e.tensors[param];
         t.dtype = nddr::io::Dtype::kI32;
         t.i32.assign(t.f32.size(), 1);
       },
       "is I32, expected F32"},
      {"a reshaped parameter",
       [&](Editable& e) {
         auto& t = e.tensors[param];
         std::int64_t n = 1;
         for (auto d : t.shape) n *= d;
         t.shape = {1, n};  // same element count, another rank
       },
       "has shape"},
      {"a NaN parameter",
       [&](Editable& e) { e.tensors[param].f32[0] = std::numeric_limits<float>::quiet_NaN(); },
       "non-finite"},
      {"an infinite optimiser state",
       [](Editable& e) { e.tensors["optim/state"].f32.back() = std::numeric_limits<float>::infinity(); },
       "'optim/state' holds a non-finite value"},
      {"a missing buffer",
       [](Editable& e) {
         for (auto it = e.tensors.begin(); it != e.tensors.end(); ++it)
           if (it->first.starts_with("buffer/")) {
             e.tensors.erase(it);
             return;
           }
       },
       "lacks tensor 'buffer/"},
      {"a tensor the network lacks",
       [](Editable& e) { e.tensors["param/not.in.this.net"] = Editable::Tensor{nddr::io::Dtype::kF32, {1}, {0.f}, {}}; },
       "'param/not.in.this.net' is not part of this network"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    Editable e = base;
    c.edit(e);
    const std::string path = dir.file("bad.safetensors");
    e.write(path);
    CHECK_THROWS_WITH(t.load_checkpoint(path), Contains(path) && Contains(c.expected));
    CHECK(Snapshot::of(net, t) == before);
  }
  SECTION("a truncated file") {
    fs::copy_file(good, dir.file("cut.safetensors"));
    fs::resize_file(dir.file("cut.safetensors"), fs::file_size(good) - 9);
    CHECK_THROWS_AS(t.load_checkpoint(dir.file("cut.safetensors")), nddr::IoError);
    CHECK(Snapshot::of(net, t) == before);
  }
  SECTION("the unedited file loads") {
    Editable e = base;
    e.write(dir.file("same.safetensors"));
    t.load_checkpoint(dir.file("same.safetensors"));
    CHECK(t.step() == 2);
    CHECK_FALSE(Snapshot::of(net, t) == before);
  }
}

TEST_CASE("CheckpointDir: only its own names, ordered by step, stray files are never read or pruned",
          "[train][checkpoint]") {
  using CD = nddr::CheckpointDir;
  CHECK(CD::step_of("ckpt-0000000042.safetensors") == 42);
  CHECK(CD::step_of("ckpt-10000000000.safetensors") == 10000000000LL);
  CHECK_FALSE(CD::step_of("ckpt-42.safetensors"));              // not as path_for writes it
  CHECK_FALSE(CD::step_of("ckpt-00000000042.safetensors"));     // an extra zero
  CHECK_FALSE(CD::step_of("ckpt-backup.safetensors"));
  CHECK_FALSE(CD::step_of("ckpt-000000004a.safetensors"));
  CHECK_FALSE(CD::step_of("ckpt--000000001.safetensors"));
  CHECK_FALSE(CD::step_of("ckpt-0000000042.safetensors.bak"));
  CHECK_FALSE(CD::step_of("ckpt-99999999999999999999.safetensors"));

  TempDir dir("names");
  const fs::path ck = dir.path / "checkpoints";
  fs::create_directories(ck);
  for (const char* stray : {"ckpt-backup.safetensors", "ckpt-2.safetensors", "ckpt-zzz.safetensors",
                            "ckpt-0000000003.safetensors.bak"})
    std::ofstream(ck / stray) << "not a checkpoint";
  fs::create_directories(ck / "ckpt-0000000099.safetensors");  // a directory with a checkpoint's name
  // Numeric, not lexical, order past ten digits.
  std::ofstream(ck / "ckpt-9999999999.safetensors") << "x";
  std::ofstream(ck / "ckpt-10000000000.safetensors") << "x";
  CD cd(ck, 5);
  auto l = cd.list();
  REQUIRE(l.size() == 2);
  CHECK(l.back().filename() == "ckpt-10000000000.safetensors");
  fs::remove(ck / "ckpt-9999999999.safetensors");
  fs::remove(ck / "ckpt-10000000000.safetensors");

  // A real run: resume must pick its checkpoint, never the strays; pruning leaves them.
  nddr::Context<nddr::Cpu> ctx(1);
  {
    Net net({11, 3});
    auto o = quiet(dir.path.string());
    o.checkpoint_every = 1;
    o.keep_checkpoints = 2;
    Train t(net, nddr::ConstantSchedule{0.01}, o);
    t.fit(ctx, 4, kBatches);
  }
  l = cd.list();
  REQUIRE(l.size() == 2);
  CHECK(l[0].filename() == "ckpt-0000000003.safetensors");
  CHECK(l[1].filename() == "ckpt-0000000004.safetensors");
  for (const char* stray : {"ckpt-backup.safetensors", "ckpt-2.safetensors", "ckpt-zzz.safetensors",
                            "ckpt-0000000003.safetensors.bak", "ckpt-0000000099.safetensors"})
    CHECK(fs::exists(ck / stray));
  Net net({11, 3});
  auto o = quiet(dir.path.string());
  o.keep_checkpoints = 2;
  Train t(net, nddr::ConstantSchedule{0.01}, o);
  CHECK(t.resume());
  CHECK(t.step() == 4);

  SECTION("a checkpoint whose metadata disagrees with its name is refused, nothing changes") {
    fs::copy_file(ck / "ckpt-0000000003.safetensors", ck / "ckpt-0000000007.safetensors");
    Net fresh({11, 3});
    Train u(fresh, nddr::ConstantSchedule{0.01}, o);
    const Snapshot before = Snapshot::of(fresh, u);
    CHECK_THROWS_WITH(u.resume(), Contains("ckpt-0000000007.safetensors") &&
                                      Contains("name says step 7") && Contains("says step 3"));
    CHECK(Snapshot::of(fresh, u) == before);
  }
  SECTION("a fresh run refuses a directory holding another run's checkpoints") {
    Net fresh({11, 3});
    Train u(fresh, nddr::ConstantSchedule{0.01}, o);
    CHECK_THROWS_WITH(u.fit(ctx, 1, kBatches), Contains("holds checkpoints of an earlier run") &&
                                                   Contains("ckpt-0000000004.safetensors"));
    CHECK(u.step() == 0);
    CHECK(cd.list().size() == 2);
  }
  SECTION("pruning never deletes the checkpoint just written") {
    // Keeping one, a run that went back in steps writes a checkpoint older than the newest.
    auto keep_one = o;
    keep_one.keep_checkpoints = 1;
    Net back({11, 3});
    Train u(back, nddr::ConstantSchedule{0.01}, keep_one);
    u.load_checkpoint((ck / "ckpt-0000000003.safetensors").string());
    const fs::path written = u.save_checkpoint();
    CHECK(written.filename() == "ckpt-0000000003.safetensors");
    CHECK(fs::exists(written));
    CHECK(fs::exists(ck / "ckpt-0000000004.safetensors"));
  }
}

TEST_CASE("Trainer: temporaries of killed checkpoint writers are removed, live ones kept",
          "[train][checkpoint]") {
  TempDir dir("stale");
  const fs::path ck = dir.path / "checkpoints";
  fs::create_directories(ck);
  const std::string dead = std::to_string(dead_pid());
  const std::string h = host();
  const std::vector<std::string> stale = {
      "ckpt-0000000002.safetensors.tmp." + h + "." + dead + ".0",
      "ckpt-0000000002.safetensors.tmp." + dead + ".3",  // the name nddr used before
  };
  const std::vector<std::string> kept = {
      "ckpt-0000000002.safetensors.tmp." + h + "." + std::to_string(::getpid()) + ".0",  // alive
      "ckpt-0000000002.safetensors.tmp.otherhost." + dead + ".0",  // another host, fresh
      "notes.txt.tmp." + h + "." + dead + ".0",                   // not a checkpoint's
      "ckpt-backup.safetensors.tmp." + h + "." + dead + ".0",      // not a checkpoint's
  };
  for (const auto& n : stale) std::ofstream(ck / n) << "partial";
  for (const auto& n : kept) std::ofstream(ck / n) << "partial";
  const std::string old_other = "ckpt-0000000005.safetensors.tmp.otherhost.12.0";
  std::ofstream(ck / old_other) << "partial";
  fs::last_write_time(ck / old_other, fs::file_time_type::clock::now() - std::chrono::hours(2));

  nddr::CheckpointDir cd(ck, 3);
  auto removed = cd.remove_stale_temporaries();
  CHECK(removed.size() == stale.size() + 1);
  for (const auto& n : stale) CHECK_FALSE(fs::exists(ck / n));
  CHECK_FALSE(fs::exists(ck / old_other));
  for (const auto& n : kept) CHECK(fs::exists(ck / n));

  // The trainer does it on resume and before writing.
  std::ofstream(ck / stale[0]) << "partial";
  Net net({11, 3});
  Train t(net, nddr::ConstantSchedule{0.01}, quiet(dir.path.string()));
  CHECK_FALSE(t.resume());
  CHECK_FALSE(fs::exists(ck / stale[0]));
}

TEST_CASE("Trainer: a resumed run's logs have each step once, as an uninterrupted run's",
          "[train][checkpoint]") {
  TempDir dir("logs");
  nddr::Context<nddr::Cpu> ctx(1);
  auto o = quiet(dir.path.string());
  o.log_every = 1;
  o.checkpoint_every = 2;
  o.eval_every = 1;
  auto on_eval = [](Train& t) {
    return [&t](std::int64_t) { t.log_metrics({nddr::MetricValue{"seg", "x\"y", 1.0}}); };
  };
  {
    Net net({11, 3});
    Train t(net, nddr::ConstantSchedule{0.01}, o);
    t.fit(ctx, 5, kBatches, {}, on_eval(t));
  }
  // As if killed after logging step 5 and writing half of step 6's row, before ckpt-5 existed.
  fs::remove(dir.path / "checkpoints" / "ckpt-0000000005.safetensors");
  std::ofstream(dir.path / "log.csv", std::ios::app) << "6,0.01,1.2";
  CHECK(logged_steps(dir.path / "log.jsonl") == std::vector<std::int64_t>{1, 2, 3, 4, 5});

  Net net({11, 3});
  Train t(net, nddr::ConstantSchedule{0.01}, o);
  REQUIRE(t.resume());
  CHECK(t.step() == 4);
  t.fit(ctx, 6, kBatches, {}, on_eval(t));
  const std::vector<std::int64_t> want{1, 2, 3, 4, 5, 6};
  CHECK(logged_steps(dir.path / "log.csv") == want);
  CHECK(logged_steps(dir.path / "log.jsonl") == want);
  CHECK(logged_steps(dir.path / "eval.jsonl") == want);
  // Names are JSON-quoted: the metric name's quote is escaped.
  CHECK_THAT(slurp(dir.path / "eval.jsonl"), Contains("\"seg/x\\\"y\":1"));
}

TEST_CASE("Trainer: a failed log write is an error, rolled back, with a checkpoint if possible",
          "[train][checkpoint]") {
  TempDir dir("logfail");
  nddr::Context<nddr::Cpu> ctx(1);
  auto o = quiet(dir.path.string());
  o.log_every = 1;
  o.checkpoint_every = 100;
  Net net({11, 3});
  Train t(net, nddr::ConstantSchedule{0.01}, o);
  t.fit(ctx, 2, kBatches);  // logs steps 1, 2; checkpoint 2 at the end
  const std::string jsonl_before = slurp(dir.path / "log.jsonl");

  SECTION("a full disk (log.csv on /dev/full): both logs unchanged, checkpoint of the step") {
    REQUIRE(fs::exists("/dev/full"));  // Linux
    const std::string csv_before = slurp(dir.path / "log.csv");
    fs::rename(dir.path / "log.csv", dir.path / "log.csv.real");
    fs::create_symlink("/dev/full", dir.path / "log.csv");
    CHECK_THROWS_WITH(t.fit(ctx, 3, kBatches),
                      Contains("log.csv") && Contains("No space left on device") &&
                          Contains("at step 3") && Contains("ckpt-0000000003.safetensors"));
    CHECK(slurp(dir.path / "log.jsonl") == jsonl_before);  // its row was rolled back
    CHECK(fs::exists(dir.path / "checkpoints" / "ckpt-0000000003.safetensors"));
    fs::remove(dir.path / "log.csv");
    CHECK(slurp(dir.path / "log.csv.real") == csv_before);
  }
  SECTION("a file size limit (EFBIG) on every file: error names the log, nothing half-written") {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit old{};
    ::getrlimit(RLIMIT_FSIZE, &old);
    rlimit small = old;
    small.rlim_cur = static_cast<rlim_t>(fs::file_size(dir.path / "log.jsonl") + 20);
    ::setrlimit(RLIMIT_FSIZE, &small);
    std::string what;
    try {
      t.fit(ctx, 3, kBatches);
    } catch (const nddr::IoError& e) {
      what = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, SIG_DFL);
    CHECK_THAT(what, Contains("log.jsonl") && Contains("at step 3") &&
                         Contains("could not be written either"));
    CHECK(slurp(dir.path / "log.jsonl") == jsonl_before);
    CHECK(logged_steps(dir.path / "log.csv") == std::vector<std::int64_t>{1, 2});
  }
}

TEST_CASE("Trainer: a stop request (SIGINT, SIGTERM) ends fit after the step with a checkpoint",
          "[train][checkpoint][signal]") {
  TempDir dir("signal");
  nddr::Context<nddr::Cpu> ctx(1);
  const nddr::PolySchedule schedule{0.01, 100, 0.9};
  Net straight({11, 3});
  Train a(straight, schedule, quiet());
  a.fit(ctx, 6, kBatches);

  auto o = quiet(dir.path.string());
  o.log_every = 5;
  o.checkpoint_every = 5000;
  {
    nddr::StopOnSignals guard;
    Net net({11, 3});
    Train t(net, schedule, o);
    try {
      t.fit(ctx, 6, [](std::int64_t s) {
        if (s == 2) ::raise(SIGINT);  // arrives while step 2 is prepared
        return make_batch(s);
      });
      FAIL("expected TrainingInterrupted");
    } catch (const nddr::TrainingInterrupted& e) {
      CHECK(e.step() == 3);
      CHECK(e.signal() == SIGINT);
      CHECK(e.exit_code() == 130);
      CHECK_THAT(e.what(), Contains("SIGINT") && Contains("after step 3") &&
                               Contains("ckpt-0000000003.safetensors"));
    }
    CHECK(nddr::stop_requested());
    nddr::clear_stop_request();
  }
  CHECK(fs::exists(dir.path / "checkpoints" / "ckpt-0000000003.safetensors"));
  CHECK(logged_steps(dir.path / "log.csv") == std::vector<std::int64_t>{3});  // flushed at the stop

  // Resumed, it ends exactly where the uninterrupted run does.
  Net resumed({11, 3});
  Train c(resumed, schedule, o);
  REQUIRE(c.resume());
  CHECK(c.step() == 3);
  c.fit(ctx, 6, kBatches);
  CHECK(same_values(straight, resumed));
  CHECK(logged_steps(dir.path / "log.csv") == std::vector<std::int64_t>{3, 5, 6});

  SECTION("request_stop from code, no output directory") {
    Net net({11, 3});
    Train t(net, schedule, quiet());
    try {
      t.fit(ctx, 6, [](std::int64_t s) {
        if (s == 0) nddr::request_stop();
        return make_batch(s);
      });
      FAIL("expected TrainingInterrupted");
    } catch (const nddr::TrainingInterrupted& e) {
      CHECK(e.step() == 1);
      CHECK(e.signal() == 0);
      CHECK(e.checkpoint().empty());
      CHECK_THAT(e.what(), Contains("no checkpoint"));
    }
    nddr::clear_stop_request();
  }
}

TEST_CASE("StopOnSignals: the first SIGTERM requests a stop, a second one exits at once",
          "[train][checkpoint][signal]") {
  // In a child process: the default action of the second signal ends it.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    nddr::StopOnSignals guard;
    ::raise(SIGTERM);
    if (!nddr::stop_requested() || nddr::stop_signal() != SIGTERM) ::_exit(3);
    ::raise(SIGTERM);
    ::_exit(4);  // not reached
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGTERM);
  // The handlers are process state: the guard puts back what was there.
  struct sigaction before {}, after {};
  ::sigaction(SIGTERM, nullptr, &before);
  { nddr::StopOnSignals guard; }
  ::sigaction(SIGTERM, nullptr, &after);
  CHECK(after.sa_handler == before.sa_handler);
}
