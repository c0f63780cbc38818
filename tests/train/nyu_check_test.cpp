// `nddr-nyuv2 --check-data` (apps/include/nddr_apps/nyuv2_check.hpp): clean on the synthetic
// NYUv2 fixture, and on a corrupted copy it reports every problem, each naming its file.

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "../support/nyu_fixture.hpp"
#include "../support/temp_dir.hpp"
#include "nddr/io/png.hpp"
#include "nddr_apps/nyuv2_check.hpp"

namespace {

namespace fs = std::filesystem;
using Catch::Contains;

const nddr::apps::NyuCheckOptions kFixtureCounts{4, 2};

/// The problems joined, one per line (for CHECK_THAT).
std::string joined(const nddr::apps::NyuCheckReport& r) {
  std::string s;
  for (const std::string& p : r.problems) s += p + "\n";
  return s;
}

}  // namespace

TEST_CASE("check-data passes the synthetic NYUv2 folder", "[nyu_check]") {
  nddr_test::TempDir dir("nddr_nyu_check_");
  nddr_test::write_nyu(dir.file(""));
  const auto r = nddr::apps::check_nyuv2_data(dir.file(""), kFixtureCounts);
  INFO(joined(r));
  CHECK(r.ok());
  CHECK(r.frames == 6);
  REQUIRE(r.notes.size() == 1);
  CHECK_THAT(r.notes[0], Contains("mean length"));
  // The real counts are 795 / 654: the fixture's are then problems, one per list.
  const auto real = nddr::apps::check_nyuv2_data(dir.file(""));
  CHECK(real.problems.size() == 4);
  CHECK_THAT(joined(real), Contains("training_seg.txt': 4 entries, expected 795"));
  CHECK_THAT(joined(real), Contains("testing_normal_mask.txt': 2 entries, expected 654"));
}

TEST_CASE("check-data reports every problem of a corrupted copy", "[nyu_check]") {
  nddr_test::TempDir dir("nddr_nyu_check_bad_");
  const std::string d = dir.file("");
  nddr_test::write_nyu(d);
  // 1. a seg label with out-of-range values, 2. a normal label of the wrong size, 3. an image
  // that is not a PNG, 4. a missing seg label, 5. the normal list naming another image,
  // 6. an all-invalid normal label, 7. a seg label with 3 channels.
  {
    nddr::io::Image8 seg = nddr::io::read_png(d + "/data/seg0.png");
    seg.at(3, 4) = 41;
    seg.at(5, 6) = 200;
    nddr::io::write_png(d + "/data/seg0.png", seg);
  }
  nddr::io::write_png(d + "/data/nrm1.png", nddr_test::image8(20, 48, 3));
  std::ofstream(d + "/data/img2.png") << "not a png";
  fs::remove(d + "/data/seg3.png");
  nddr_test::write_text(d + "/list/testing_normal_mask.txt",
                        "/data/img4.png /data/nrm4.png\n/data/img0.png /data/nrm5.png\n");
  {
    nddr::io::Image8 nrm = nddr_test::image8(40, 48, 3);
    nrm.pixels.assign(nrm.pixels.size(), 255);
    nddr::io::write_png(d + "/data/nrm4.png", nrm);
  }
  nddr::io::write_png(d + "/data/seg5.png", nddr_test::image8(40, 48, 3));

  const auto r = nddr::apps::check_nyuv2_data(d, kFixtureCounts);
  const std::string all = joined(r);
  INFO(all);
  CHECK_FALSE(r.ok());
  CHECK_THAT(all, Contains("seg0.png': 2 pixels not in 0..39 or 255 (first: value 41 at row 3, col 4)"));
  CHECK_THAT(all, Contains("normal label '" + d + "/data/nrm1.png' is 20x48 but image"));
  CHECK_THAT(all, Contains(d + "/data/img2.png"));
  CHECK_THAT(all, Contains(d + "/data/seg3.png"));
  CHECK_THAT(all, Contains("testing_seg.txt' line 2 names image '/data/img5.png' but"));
  CHECK_THAT(all, Contains("image '/data/img0.png' is listed twice (training and testing line 2)"));
  CHECK_THAT(all, Contains("nrm4.png': every pixel is invalid"));
  CHECK_THAT(all, Contains("seg label '" + d + "/data/seg5.png' has 3 channels, expected 1"));
  CHECK(r.problems.size() == 8);
  // A missing folder, and one without lists.
  CHECK_THAT(joined(nddr::apps::check_nyuv2_data(d + "/nope")), Contains("not a directory"));
  fs::remove_all(d + "/list");
  const auto no_lists = nddr::apps::check_nyuv2_data(d, kFixtureCounts);
  CHECK(no_lists.problems.size() == 4);
}
