// nddr-prepare-imdb-wiki (examples/nddr_prepare_imdb_wiki.cpp) on the fixture of
// tests/data/imdb_wiki_prep (tools/reference/imdb_wiki_fixture.py): its outputs are the expected
// ones byte for byte, the crops have the colour of their source JPEG, nddr-imdb-wiki's loader
// reads them, and every corrupt variant (bad .mat, missing field, wrong class or length, bad face
// box, path traversal, truncated JPEG) is one error line naming the file, the record and the
// field, exit status 1, with nothing written. The program runs as a process; without it (built
// without libmatio / libturbojpeg) these tests skip.

#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../support/temp_dir.hpp"
#include "nddr/data/imdb_wiki.hpp"
#include "nddr/io/png.hpp"

namespace {

namespace fs = std::filesystem;
using Catch::Contains;

const std::string kFixture = NDDR_TEST_DATA_DIR "/imdb_wiki_prep";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

struct Run {
  int rc = -1;
  std::string out, err;
};

#if defined(NDDR_PREPARE_IMDB_WIKI_BINARY)
/// Runs the program with `args` (no shell metacharacters in them), stdout and stderr captured.
Run prepare(const nddr_test::TempDir& dir, const std::string& args) {
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  const std::string cmd = std::string("'") + NDDR_PREPARE_IMDB_WIKI_BINARY + "' " + args + " >'" +
                          out + "' 2>'" + err + "' </dev/null";
  const int status = std::system(cmd.c_str());
  Run r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}
#endif

}  // namespace

TEST_CASE("nddr-prepare-imdb-wiki writes the expected lists, crops and faces", "[imdb_prep]") {
#if !defined(NDDR_PREPARE_IMDB_WIKI_BINARY)
  WARN("nddr-prepare-imdb-wiki was not built (no libmatio / libturbojpeg): skipped");
#else
  nddr_test::TempDir dir("nddr_imdb_prep_");
  const std::string out = dir.file("faces-out");
  const Run r = prepare(dir, "--mat " + kFixture + "/imdb.mat --output-dir " + out + " --size 16");
  INFO(r.err);
  REQUIRE(r.rc == 0);
  CHECK(r.err.empty());
  CHECK_THAT(r.out, Contains("train: 5 faces of 4 subjects"));
  CHECK_THAT(r.out, Contains("test: 1 faces of 1 subjects"));
  for (const char* f : {"train.txt", "test.txt", "crops.tsv"}) {
    INFO(f);
    CHECK(slurp(out + "/" + f) == slurp(kFixture + "/expected/" + f));
  }
  // Each crop has its JPEG's colour (the fixture's images are solid), within JPEG error.
  std::istringstream colors(slurp(kFixture + "/expected/colors.tsv"));
  int index = 0, rgb[3] = {0, 0, 0}, faces = 0;
  while (colors >> index >> rgb[0] >> rgb[1] >> rgb[2]) {
    char name[32];
    std::snprintf(name, sizeof name, "/faces/%07d.png", index);
    const nddr::io::Image8 img = nddr::io::read_png(out + name);
    REQUIRE(img.width == 16);
    REQUIRE(img.height == 16);
    REQUIRE(img.channels == 3);
    for (int k = 0; k < 3; ++k) CHECK(std::abs(int(img.at(8, 8, k)) - rgb[k]) <= 6);
    ++faces;
  }
  CHECK(faces == 6);
  CHECK(std::distance(fs::directory_iterator(out + "/faces"), fs::directory_iterator{}) == 6);
  // nddr-imdb-wiki's loader reads the result.
  const nddr::data::ImdbWikiDataset train(out + "/train.txt", out,
                                          nddr::data::ImdbWikiOptions{}.size(8));
  const nddr::data::ImdbWikiDataset test(out + "/test.txt", out,
                                         nddr::data::ImdbWikiOptions{}.size(8));
  REQUIRE(train.size() == 5);
  REQUIRE(test.size() == 1);
  const nddr::data::ImdbSample s = test.load(0);
  CHECK(s.image.shape() == nddr::Shape{3, 8, 8});
  CHECK(s.age == 25);
  CHECK(s.gender == 0);
  CHECK(train.load(4).age == 10);

  // Never over an existing, non-empty directory; nothing in it changes.
  const Run again = prepare(dir, "--mat " + kFixture + "/imdb.mat --output-dir " + out);
  CHECK(again.rc == 1);
  CHECK_THAT(again.err, Contains("is not empty; refusing to overwrite"));
  CHECK(again.err.rfind("nddr-prepare-imdb-wiki: '", 0) == 0);
  CHECK(slurp(out + "/train.txt") == slurp(kFixture + "/expected/train.txt"));
  // An empty one is fine.
  const std::string empty = dir.file("empty");
  fs::create_directories(empty);
  CHECK(prepare(dir, "--mat " + kFixture + "/imdb.mat --output-dir " + empty + " --size 8").rc == 0);
  CHECK(fs::exists(empty + "/faces/0000012.png"));
  // wiki.mat: no celeb_id, subjects by name (an empty name is a subject of its own).
  const Run wiki = prepare(dir, "--mat " + kFixture + "/wiki.mat --output-dir " +
                                    dir.file("wiki-out") + " --size 8 --test-fraction 0.5");
  INFO(wiki.err);
  CHECK(wiki.rc == 0);
  CHECK_THAT(wiki.out, Contains("kept 6; subjects by name"));
  CHECK_THAT(slurp(dir.file("wiki-out") + "/crops.tsv"), Contains("\trecord:12\t"));
#endif
}

TEST_CASE("nddr-prepare-imdb-wiki refuses corrupt metadata and images, naming them", "[imdb_prep]") {
#if !defined(NDDR_PREPARE_IMDB_WIKI_BINARY)
  WARN("nddr-prepare-imdb-wiki was not built (no libmatio / libturbojpeg): skipped");
#else
  nddr_test::TempDir dir("nddr_imdb_prep_bad_");
  std::istringstream cases(slurp(kFixture + "/corrupt/expected_errors.tsv"));
  std::string line;
  int n = 0;
  while (std::getline(cases, line)) {
    const auto tab = line.find('\t');
    const std::string file = line.substr(0, tab);
    std::vector<std::string> expected;  // the substrings the error must contain
    for (std::size_t b = tab + 1, e = 0; b <= line.size(); b = e + 1) {
      e = std::min(line.find('\t', b), line.size());
      expected.push_back(line.substr(b, e - b));
    }
    const std::string out = dir.file("out-" + file);
    // The corrupt .mat files point at the images of the fixture's root.
    const Run r = prepare(dir, "--mat " + kFixture + "/corrupt/" + file + " --image-root " +
                                   kFixture + " --output-dir " + out + " --size 8");
    INFO(file << ": exit " << r.rc << ", stderr: " << r.err);
    CHECK(r.rc == 1);
    for (const std::string& part : expected) CHECK_THAT(r.err, Contains(part));
    CHECK(r.err.rfind("nddr-prepare-imdb-wiki: ", 0) == 0);
    CHECK_THAT(r.err, !Contains("nddr-prepare-imdb-wiki: nddr-prepare-imdb-wiki"));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.size() < 1000);
    CHECK_FALSE(fs::exists(out));
    ++n;
  }
  CHECK(n == 9);
  // No staging directory is left behind by the failures.
  for (const auto& e : fs::directory_iterator(dir.file("")))
    CHECK(e.path().filename().string().find(".partial.") == std::string::npos);
#endif
}

TEST_CASE("nddr-prepare-imdb-wiki --skip-corrupt skips bad JPEGs and face boxes, lists them",
          "[imdb_prep]") {
#if !defined(NDDR_PREPARE_IMDB_WIKI_BINARY)
  WARN("nddr-prepare-imdb-wiki was not built (no libmatio / libturbojpeg): skipped");
#else
  nddr_test::TempDir dir("nddr_imdb_prep_skip_");
  // Each corrupt record is skipped for its reason; the other records are written as usual.
  struct Case {
    const char* mat;
    std::int64_t record;
    const char* reason;
    const char* error;  // part of the error skipped.tsv keeps
    int seed;           // a split that keeps a face on both sides without the record
  };
  for (const Case& c : {Case{"bad_jpeg.mat", 8, "JPEG unreadable or corrupt",
                             "corrupt or truncated JPEG", 0},
                        Case{"box_outside.mat", 5, "face box not inside the image",
                             "[100 100 120 120] is not a face box inside", 1},
                        Case{"box_three.mat", 2, "face box not inside the image",
                             "expected 4 numbers [x1 y1 x2 y2], got 3 numbers", 0}}) {
    const std::string out = dir.file(std::string("out-") + c.mat);
    const Run r = prepare(dir, "--mat " + kFixture + "/corrupt/" + c.mat + " --image-root " +
                                   kFixture + " --output-dir " + out +
                                   " --size 8 --skip-corrupt --seed " + std::to_string(c.seed));
    INFO(c.mat << ": exit " << r.rc << "\nstdout: " << r.out << "\nstderr: " << r.err);
    REQUIRE(r.rc == 0);
    CHECK(r.err.empty());
    CHECK_THAT(r.out, Contains(std::string("skipped 1: ") + c.reason));
    CHECK_THAT(r.out, Contains("skipped 1 record(s) in all (--skip-corrupt)"));
    const std::string skipped = slurp(out + "/skipped.tsv");
    std::istringstream rows(skipped);
    std::string header, row, extra;
    std::getline(rows, header);
    std::getline(rows, row);
    CHECK(header == "index\treason\tsource\terror");
    CHECK(row.rfind(std::to_string(c.record) + "\t" + c.reason + "\t", 0) == 0);
    CHECK_THAT(row, Contains(c.error));
    CHECK_FALSE(std::getline(rows, extra));
    char name[32];
    std::snprintf(name, sizeof name, "faces/%07lld.png", static_cast<long long>(c.record));
    CHECK_FALSE(fs::exists(out + "/" + name));
    const std::string lists = slurp(out + "/train.txt") + slurp(out + "/test.txt");
    CHECK_THAT(lists, !Contains(name));
    const auto faces =
        std::distance(fs::directory_iterator(out + "/faces"), fs::directory_iterator{});
    CHECK(faces == std::count(lists.begin(), lists.end(), '\n'));
    CHECK(faces >= 2);
  }
  // With the split of seed 0, box_outside.mat's record 5 is the one test face: skipping it
  // would leave test.txt empty, which is an error, with nothing written.
  const std::string emptied = dir.file("emptied");
  const Run e = prepare(dir, "--mat " + kFixture + "/corrupt/box_outside.mat --image-root " +
                                 kFixture + " --output-dir " + emptied +
                                 " --size 8 --skip-corrupt");
  CHECK(e.rc == 1);
  CHECK(e.err == "nddr-prepare-imdb-wiki: --skip-corrupt skipped 1 records and left the test list "
                 "without a face; nothing written\n");
  CHECK_FALSE(fs::exists(emptied));
  // On clean data the flag changes nothing but the (empty) list of skipped records.
  const std::string out = dir.file("clean");
  const Run r = prepare(dir, "--mat " + kFixture + "/imdb.mat --output-dir " + out +
                                 " --size 16 --skip-corrupt");
  REQUIRE(r.rc == 0);
  for (const char* f : {"train.txt", "test.txt", "crops.tsv"}) {
    INFO(f);
    CHECK(slurp(out + "/" + f) == slurp(kFixture + "/expected/" + f));
  }
  CHECK(slurp(out + "/skipped.tsv") == "index\treason\tsource\terror\n");
  CHECK_THAT(r.out, Contains("skipped 0 record(s) in all"));
#endif
}
