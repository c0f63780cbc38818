// Hostile inputs (docs/testing.md, "What nddr refuses to read"): every file reader refuses the
// corpus of tests/data/hostile (written by tools/hostile/make_corpus.py, listed in its
// manifest.tsv) and the cases made here at run time (a FIFO, /dev/zero, a directory, sparse
// 2 TiB files, a 1 MB line, loader threads the system refuses) with an nddr::IoError whose
// message names the file and the problem in a few hundred bytes: no crash, hang, unbounded
// allocation or silent acceptance. This executable is built with AddressSanitizer and
// UndefinedBehaviorSanitizer in every configuration.
//
// Each reader runs in a forked child under alarm(): a reader that hangs (a FIFO read) or
// crashes (a sanitizer report, std::terminate) fails its case instead of the whole run.

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <system_error>
#include <typeinfo>
#include <vector>

#include "../support/files.hpp"
#include "../support/temp_dir.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/data/fashion.hpp"
#include "nddr/data/imdb_wiki.hpp"
#include "nddr/data/loader.hpp"
#include "nddr/data/nyuv2.hpp"
#include "nddr/io/idx.hpp"
#include "nddr/io/png.hpp"
#include "nddr/io/safetensors.hpp"
#include "nddr/io/weights.hpp"

namespace {

using nddr_test::spit;

namespace fs = std::filesystem;
using Catch::Contains;

const std::string kCorpus = NDDR_TEST_DATA_DIR "/hostile";

/// Longest error message accepted: enough for a path, a field and what was expected.
constexpr std::size_t kMaxMessageBytes = 1000;

/// How a reader run in a child process ended.
struct Outcome {
  std::string kind;     // "IoError", "returned", "exception <type>", or how the child died
  std::string message;  // what() of the exception
  double seconds = 0;

  bool io_error() const { return kind == "IoError"; }
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  return os << o.kind << " after " << o.seconds << " s: " << o.message;
}

void write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const ::ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

/// Runs `fn` in a forked child that gets `seconds` before SIGALRM ends it, and reports what it
/// threw. The child leaves with _exit: no atexit handlers, no leak check of the parent's heap.
Outcome run_isolated(const std::function<void()>& fn, unsigned seconds = 20) {
  int pipe_fd[2];
  REQUIRE(::pipe(pipe_fd) == 0);
  std::fflush(nullptr);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fd[0]);
    ::alarm(seconds);
    std::string report;
    try {
      fn();
      report = "returned\n";
    } catch (const nddr::IoError& e) {
      report = std::string("IoError\n") + e.what();
    } catch (const std::exception& e) {
      report = std::string("exception ") + typeid(e).name() + "\n" + e.what();
    } catch (...) {
      report = "exception (not std::exception)\n";
    }
    write_all(pipe_fd[1], report);
    ::_exit(0);
  }
  ::close(pipe_fd[1]);
  REQUIRE(pid > 0);
  std::string report;
  char buf[4096];
  for (;;) {
    const ::ssize_t n = ::read(pipe_fd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    report.append(buf, static_cast<std::size_t>(n));
  }
  ::close(pipe_fd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  Outcome o;
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::size_t nl = report.find('\n');
  o.kind = report.substr(0, nl);
  o.message = nl == std::string::npos ? "" : report.substr(nl + 1);
  if (WIFSIGNALED(status))
    o.kind = WTERMSIG(status) == SIGALRM
                 ? "hung (killed by alarm after " + std::to_string(seconds) + " s)"
                 : std::string("killed by signal ") + ::strsignal(WTERMSIG(status));
  else if (WEXITSTATUS(status) != 0)
    o.kind = "exited with status " + std::to_string(WEXITSTATUS(status)) + " (a sanitizer?)";
  return o;
}

/// The store `weights` cases load into (tools/hostile/make_corpus.py writes files for it).
nddr::ParameterStore<float> small_store() {
  nddr::ParameterStore<float> s;
  s.declare("conv.weight", nddr::Shape{2, 3});
  s.declare("conv.bias", nddr::Shape{2});
  s.declare_buffer("bn.running_mean", nddr::Shape{2});
  s.allocate();
  return s;
}

/// Every reader, by its manifest name.
const std::map<std::string, std::function<void(const std::string&)>>& readers() {
  static const std::map<std::string, std::function<void(const std::string&)>> r = {
      {"safetensors", [](const std::string& p) { nddr::io::SafetensorsFile::read(p); }},
      {"idx", [](const std::string& p) { nddr::io::read_idx(p); }},
      {"png", [](const std::string& p) { nddr::io::read_png(p); }},
      {"list", [](const std::string& p) { nddr::data::read_list_file(p); }},
      {"imdb", [](const std::string& p) { nddr::data::read_imdb_list(p); }},
      {"weights",
       [](const std::string& p) {
         auto store = small_store();
         nddr::io::load_parameters(p, store, nddr::io::LoadOptions{}.with_strict(false));
       }},
  };
  return r;
}

/// Runs `reader` on `path` in a child and checks for a short IoError naming `path` and
/// containing `expected`.
void expect_refused(const std::string& reader, const std::string& path,
                    const std::string& expected, double max_seconds = 15) {
  INFO("reader " << reader << ", file " << path << ", expected '" << expected << "'");
  const auto it = readers().find(reader);
  REQUIRE(it != readers().end());
  const Outcome o = run_isolated([&] { it->second(path); });
  INFO(o);
  CHECK(o.io_error());
  CHECK_THAT(o.message, Contains(path) && Contains(expected));
  CHECK(o.message.size() <= kMaxMessageBytes);
  CHECK(o.seconds < max_seconds);
}

struct CorpusCase {
  std::string file, reader, expected, what;
};

std::vector<CorpusCase> manifest() {
  std::ifstream in(kCorpus + "/manifest.tsv");
  REQUIRE(in);
  std::vector<CorpusCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string field; std::getline(ss, field, '\t');) f.push_back(field);
    REQUIRE(f.size() == 4);
    cases.push_back({f[0], f[1], f[2], f[3]});
  }
  return cases;
}

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(v >> (8 * i));
  return s;
}

/// Creates `path` as a sparse file of `size` bytes starting with `head`; false when the file
/// system refuses (then the case is skipped with a warning).
bool sparse_file(const std::string& path, std::uint64_t size, const std::string& head = "") {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  const bool ok = ::write(fd, head.data(), head.size()) == static_cast<::ssize_t>(head.size()) &&
                  ::ftruncate(fd, static_cast<off_t>(size)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

TEST_CASE("hostile corpus: every file is refused by its reader", "[hostile]") {
  const std::vector<CorpusCase> cases = manifest();
  CHECK(cases.size() >= 90);
  std::map<std::string, int> per_reader;
  for (const CorpusCase& c : cases) {
    INFO(c.what);
    expect_refused(c.reader, kCorpus + "/" + c.file, c.expected);
    ++per_reader[c.reader];
  }
  for (const auto& [reader, n] : readers()) {
    INFO("reader " << reader);
    CHECK(per_reader[reader] >= 5);
  }
}

TEST_CASE("hostile: a FIFO fails at once instead of blocking", "[hostile]") {
  nddr_test::TempDir dir("nddr_hostile_");
  const std::string fifo = dir.file("pipe.safetensors");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  for (const auto& [reader, read] : readers()) {
    INFO("reader " << reader);
    expect_refused(reader, fifo, "is a FIFO, expected a regular file", 5);
  }
  nddr_test::TempDir fashion_dir("nddr_hostile_");
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"})
    REQUIRE(::mkfifo(fashion_dir.file(f).c_str(), 0600) == 0);
  const Outcome o = run_isolated([&] { nddr::data::FashionMnist::load(fashion_dir.file("")); });
  INFO(o);
  CHECK(o.io_error());
  CHECK_THAT(o.message, Contains("train-images-idx3-ubyte.gz") && Contains("FIFO"));
}

TEST_CASE("hostile: /dev/zero and a directory are refused before any read", "[hostile]") {
  if (fs::exists("/dev/zero"))
    for (const auto& [reader, read] : readers()) {
      INFO("reader " << reader);
      expect_refused(reader, "/dev/zero", "is a character device, expected a regular file", 5);
    }
  nddr_test::TempDir dir("nddr_hostile_");
  const std::string sub = dir.file("a_directory.png");
  fs::create_directories(sub);
  for (const auto& [reader, read] : readers()) {
    INFO("reader " << reader);
    expect_refused(reader, sub, "is a directory, expected a regular file", 5);
  }
  expect_refused("png", dir.file("missing.png"), "cannot open for reading", 5);
}

TEST_CASE("hostile: sparse 2 TiB files are refused by their headers or sizes", "[hostile]") {
  nddr_test::TempDir dir("nddr_hostile_");
  constexpr std::uint64_t kTwoTiB = std::uint64_t{2} << 40;
  const std::string zeros = dir.file("zeros_2tib.bin");
  if (!sparse_file(zeros, kTwoTiB)) {
    WARN("SKIPPED: the temporary file system refuses a sparse 2 TiB file");
    return;
  }
  // Eight zero bytes: a header length of 0.
  expect_refused("safetensors", zeros, "must start with '{'", 5);
  expect_refused("weights", zeros, "must start with '{'", 5);
  expect_refused("png", zeros, "bytes this reader accepts", 5);
  expect_refused("list", zeros, "bytes a text list may have", 5);
  expect_refused("imdb", zeros, "bytes a text list may have", 5);
  expect_refused("idx", zeros, "unsupported element type 0x00", 5);

  // A valid header whose one tensor covers the whole 2 TiB data section: consistent, but more
  // than any machine here can hold, and refused before anything is allocated.
  std::string header = "{\"w\":{\"dtype\":\"U8\",\"shape\":[" + std::to_string(kTwoTiB) +
                       "],\"data_offsets\":[0," + std::to_string(kTwoTiB) + "]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string whole = dir.file("tensor_2tib.safetensors");
  REQUIRE(sparse_file(whole, 8 + header.size() + kTwoTiB, le64(header.size()) + header));
  expect_refused("safetensors", whole, "more than this machine's memory", 5);

  // An IDX header declaring 2^34 bytes in a sparse file of exactly that size.
  std::string idx = {0, 0, 8, 2, 0, 4, 0, 0, 0, 4, 0, 0};  // (2^18, 2^18): 2^36 > 2^34
  const std::string big_idx = dir.file("dims_2tib.idx");
  REQUIRE(sparse_file(big_idx, kTwoTiB, idx));
  expect_refused("idx", big_idx, "exceed 17179869184 elements", 5);
}

TEST_CASE("hostile: a 1 MB line makes a short message", "[hostile]") {
  nddr_test::TempDir dir("nddr_hostile_");
  const std::string list = dir.file("long_line.txt");
  spit(list, "a.png b.png\n" + std::string(1 << 20, 'x') + " y.png\n");
  expect_refused("list", list, "line 2: longer than 4096 bytes");
  expect_refused("imdb", list, "line 1: expected '<image path> <age> <gender>'");
  // Within the line limit, a line that does not parse is quoted cut short.
  const std::string fields = dir.file("fields.txt");
  spit(fields, std::string(4000, 'p') + " q r\n");
  expect_refused("list", fields, "... (4004 bytes)");
}

TEST_CASE("hostile: loader threads the system refuses are joined and reported", "[hostile]") {
  auto make_loader = [](int threads) {
    nddr::data::PrefetchLoader<int> loader(
        64, [](std::int64_t i, nddr::Rng&) { return static_cast<int>(i); },
        nddr::data::LoaderOptions{}.batch_size(4).threads(threads));
    loader.next();
  };
  SECTION("more threads than the loader allows: an option error") {
    const Outcome o = run_isolated([&] { make_loader(100000); });
    INFO(o);
    CHECK(o.kind.starts_with("exception"));
    CHECK_THAT(o.message, Contains("threads must be in 0..1024, got 100000"));
  }
  SECTION("no thread can start: a huge default stack size") {
    const Outcome o = run_isolated([&] {
      pthread_attr_t attr;
      pthread_attr_init(&attr);
      // More than the 47-bit user address space: every pthread_create fails.
      REQUIRE(pthread_attr_setstacksize(&attr, std::size_t{1} << 47) == 0);
      REQUIRE(pthread_setattr_default_np(&attr) == 0);
      make_loader(8);
    });
    INFO(o);
    CHECK(o.kind.starts_with("exception"));
    CHECK_THAT(o.message, Contains("cannot start 8 worker threads: thread 1 failed"));
  }
  SECTION("some threads start, then RLIMIT_NPROC refuses one") {
    if (::geteuid() != 0) {
      WARN("SKIPPED: needs root to switch to an unused user id for a deterministic limit");
      return;
    }
    const Outcome o = run_isolated([&] {
      // As 'nobody' (no other processes), RLIMIT_NPROC = 3 leaves room for this process and two
      // worker threads: the third fails while two are running.
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) throw std::runtime_error("setuid failed");
      const rlimit limit{3, 3};
      if (::setrlimit(RLIMIT_NPROC, &limit) != 0) throw std::runtime_error("setrlimit failed");
      make_loader(16);
    });
    INFO(o);
    CHECK(o.kind.starts_with("exception"));
    CHECK_THAT(o.message, Contains("cannot start 16 worker threads: thread 3 failed"));
  }
}

TEST_CASE("hostile: Fashion-MNIST refuses an empty image file", "[hostile]") {
  nddr_test::TempDir dir("nddr_hostile_");
  spit(dir.file("train-images-idx3-ubyte.gz"), std::string({0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 28,
                                                            0, 0, 0, 28}));
  spit(dir.file("train-labels-idx1-ubyte.gz"), std::string({0, 0, 8, 1, 0, 0, 0, 0}));
  const Outcome o = run_isolated([&] { nddr::data::FashionMnist::load(dir.file("")); });
  INFO(o);
  CHECK(o.io_error());
  CHECK_THAT(o.message, Contains("train-images-idx3-ubyte.gz") && Contains("holds no image"));
}

TEST_CASE("hostile: the corpus readers accept the valid files next to them", "[hostile]") {
  // The checks must not refuse what nddr itself writes.
  nddr_test::TempDir dir("nddr_hostile_");
  auto store = small_store();
  const std::string w = dir.file("ok.safetensors");
  nddr::io::save_parameters(w, store);
  const Outcome loaded = run_isolated([&] {
    auto s = small_store();
    nddr::io::load_parameters(w, s);
  });
  INFO(loaded);
  CHECK(loaded.kind == "returned");
  const std::string png = dir.file("ok.png");
  nddr::io::write_png(png, nddr::io::Image8{2, 3, 1, std::vector<std::uint8_t>(6, 7)});
  spit(dir.file("ok.txt"), "\xEF\xBB\xBF" "a.png b.png\r\n\nc\xC3\xA9.png d.png\n");
  for (const auto& [reader, path] : std::vector<std::pair<std::string, std::string>>{
           {"png", png}, {"list", dir.file("ok.txt")}}) {
    const Outcome o = run_isolated([&] { readers().at(reader)(path); });
    INFO(reader << ": " << o);
    CHECK(o.kind == "returned");
  }
}
