// Hostile checkpoints (docs/reliability.md): read_checkpoint / load_checkpoint refuse malformed
// checkpoint files (bad metadata, wrong tensors, corrupt bytes, special paths) with an IoError
// naming the file, and leave the store and the optimiser state bytewise unchanged. Runs under
// ASan + UBSan with the rest of nddr_hostile_tests; a small store instead of a network keeps the
// executable cheap to build. (tests/train/checkpoint_test.cpp checks the same through a Trainer.)

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "../support/files.hpp"
#include "../support/temp_dir.hpp"
#include "nddr/core/parameter_store.hpp"
#include "nddr/core/tensor.hpp"
#include "nddr/train/checkpoint.hpp"

namespace {

using nddr_test::slurp;
using nddr_test::spit;

namespace fs = std::filesystem;
using Catch::Contains;

struct Fixture {
  nddr::ParameterStore<float> store;
  nddr::Tensor<float> optim{nddr::Shape{8}};

  explicit Fixture(float base) {
    store.declare("conv.weight", nddr::Shape{2, 3});
    store.declare("conv.bias", nddr::Shape{2});
    store.declare_buffer("bn.running_mean", nddr::Shape{2});
    store.allocate();
    auto v = store.values();
    for (std::int64_t i = 0; i < v.numel(); ++i) v[i] = base + static_cast<float>(i);
    auto b = store.buffer_values();
    for (std::int64_t i = 0; i < b.numel(); ++i) b[i] = base - static_cast<float>(i);
    for (std::int64_t i = 0; i < optim.numel(); ++i) optim[i] = base * 0.5f + static_cast<float>(i);
  }
  std::string bytes() const {
    const auto& s = store;
    auto v = s.values();
    auto b = s.buffer_values();
    std::string out(reinterpret_cast<const char*>(v.data()), static_cast<std::size_t>(v.numel()) * 4);
    out.append(reinterpret_cast<const char*>(b.data()), static_cast<std::size_t>(b.numel()) * 4);
    out.append(reinterpret_cast<const char*>(optim.data()), static_cast<std::size_t>(optim.numel()) * 4);
    return out;
  }
  nddr::CheckpointState load(const std::string& path) {
    return nddr::load_checkpoint<float>(path, store, optim.view(), 2);
  }
};

}  // namespace

TEST_CASE("hostile checkpoints: refused with the file named, store unchanged", "[hostile][checkpoint]") {
  ::alarm(120);  // a reader that hangs (a FIFO) fails the run instead of blocking CI
  nddr_test::TempDir dir("hostile_ckpt");
  const std::string good = dir.file("good.safetensors");
  {
    Fixture w(1.0f);
    nddr::CheckpointState st;
    st.step = 7;
    st.rngs = {{1, 2}, {3, 4}};
    nddr::save_checkpoint<float>(good, w.store, w.optim.cview(), st);
  }
  Fixture f(100.0f);
  const std::string before = f.bytes();
  const std::string good_bytes = slurp(good);

  // Metadata edits: the file re-written with one metadata value changed.
  const auto file = nddr::io::SafetensorsFile::read(good);
  auto rewrite = [&](const std::string& path, const std::map<std::string, std::string>& meta,
                     const std::function<void(std::vector<nddr::io::SafetensorsEntry>&)>& edit = {}) {
    std::vector<std::vector<float>> keep;
    std::vector<nddr::io::SafetensorsEntry> entries;
    for (const auto& name : file.names()) {
      keep.push_back(file.values<float>(name));
      entries.push_back({name, nddr::io::Dtype::kF32, file.shape(name), keep.back().data()});
    }
    if (edit) edit(entries);
    nddr::io::write_safetensors(path, entries, meta);
  };
  struct Case {
    std::string key, value, expected;
  };
  const std::vector<Case> meta_cases = {
      {"step", "-5", "'step'"},
      {"step", "9223372036854775808", "'step'"},
      {"step", "1e3", "'step'"},
      {"step", " 7", "'step'"},
      {"step", "7\n", "'step'"},
      {"rng_count", "3", "random streams"},
      {"rng_count", "99999999999999999999999", "'rng_count'"},
      {"rng/0", "1 2 3", "'rng/0'"},
      {"rng/1", "", "'rng/1'"},
      {"rng/1", "18446744073709551616 0", "'rng/1'"},
      {"rng/01", "1 2", "'rng/01'"},
      {"format", "", "'format'"},
  };
  for (const Case& c : meta_cases) {
    INFO(c.key << " = '" << c.value << "'");
    auto meta = file.metadata();
    meta[c.key] = c.value;
    const std::string path = dir.file("meta.safetensors");
    rewrite(path, meta);
    CHECK_THROWS_WITH(f.load(path), Contains(path) && Contains(c.expected));
    CHECK(f.bytes() == before);
  }

  // Byte-level damage: truncations at every region, a lying header length, flipped bytes.
  const std::vector<std::pair<std::string, std::string>> damaged = {
      {"empty", ""},
      {"header cut", good_bytes.substr(0, 20)},
      {"data cut", good_bytes.substr(0, good_bytes.size() - 3)},
      {"trailing junk", good_bytes + "junk"},
      {"huge header length", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + good_bytes.substr(8)},
      {"not json", std::string(good_bytes).replace(8, 1, "[")},
  };
  for (const auto& [what, bytes] : damaged) {
    INFO(what);
    const std::string path = dir.file("damaged.safetensors");
    spit(path, bytes);
    CHECK_THROWS_WITH(f.load(path), Contains(path));
    CHECK(f.bytes() == before);
  }

  // Special paths: a FIFO, a device, a directory, a missing file.
  const std::string fifo = dir.file("fifo.safetensors");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  fs::create_directories(dir.file("dir.safetensors"));
  for (const std::string& path : {fifo, std::string("/dev/zero"), dir.file("dir.safetensors"),
                                  dir.file("missing.safetensors")}) {
    INFO(path);
    CHECK_THROWS_WITH(f.load(path), Contains(path));
    CHECK(f.bytes() == before);
  }

  // The good file loads, and only then does the store change.
  const auto st = f.load(good);
  CHECK(st.step == 7);
  CHECK(st.rngs.size() == 2);
  CHECK(f.bytes() != before);
  ::alarm(0);
}
