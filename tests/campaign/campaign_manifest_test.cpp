// nddr-campaign's manifest parser and table assembly (apps/include/nddr_apps/campaign.hpp):
// every manifest in campaigns/ parses with the paper's numbers, errors name file, line and field,
// and the table's mean ± std and Delta_m are the hand-computed values.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "nddr_apps/campaign.hpp"

namespace cp = nddr::campaign;
using Catch::Matchers::Contains;

namespace {

const std::string kManifests = NDDR_CAMPAIGN_MANIFESTS;

std::string error_of(const std::string& text) {
  try {
    cp::parse_manifest("m.txt", text);
  } catch (const cp::ManifestError& e) {
    return e.what();
  }
  return "no error";
}

const char* const kSmall =
    "table t\n"
    "columns a:x:higher | a:y:lower | b:z:higher\n"
    "run st_a nddr-nyuv2 --method st-seg\n"
    "run st_b nddr-nyuv2 --method st-normal\n"
    "run mtl  nddr-nyuv2 --method nddr --init-weights-task0 {checkpoint:st_a}\n"
    "row Single | st_a st_b | 10 10 10\n"
    "row MTL | mtl | 11 9 -\n"
    "baseline Single\n";

}  // namespace

TEST_CASE("campaign manifest: Table 4 lists its runs, dependencies and the paper's numbers",
          "[campaign]") {
  const cp::Manifest m = cp::read_manifest(kManifests + "/t4.txt");
  CHECK(m.id == "t4");
  REQUIRE(m.columns.size() == 7);
  CHECK(m.columns[0].name == "Mean");
  CHECK_FALSE(m.columns[0].higher_is_better);
  CHECK(m.columns[5].task == "seg");
  CHECK(m.columns[5].higher_is_better);
  REQUIRE(m.runs.size() == 6);
  const cp::RunSpec* nddr = m.run("nddr");
  REQUIRE(nddr != nullptr);
  CHECK(nddr->program == "nddr-nyuv2");
  CHECK(nddr->deps == std::vector<std::string>{"st_seg", "st_normal"});
  CHECK(m.run("mt")->deps.empty());
  REQUIRE(m.rows.size() == 5);
  CHECK(m.rows[0].label == "Single-task");
  CHECK(m.rows[0].runs == std::vector<std::string>{"st_seg", "st_normal"});
  CHECK(m.rows[4].label == "NDDR (ours)");
  CHECK(m.rows[4].paper == std::vector<double>{13.9, 10.2, 53.5, 79.5, 88.8, 36.2, 66.4});
  CHECK(m.baseline == "Single-task");
  CHECK(m.unsupported.empty());
}

TEST_CASE("campaign manifest: every paper table parses, Table 5 on ResNet-101",
          "[campaign]") {
  const std::vector<std::pair<std::string, std::size_t>> tables = {
      {"t1", 7}, {"t2", 5}, {"t3", 3}, {"t4", 5}, {"t5", 5}, {"t6", 5}, {"t7", 5}};
  for (const auto& [id, rows] : tables) {
    const cp::Manifest m = cp::read_manifest(kManifests + "/" + id + ".txt");
    INFO(id);
    CHECK(m.id == id);
    CHECK(m.rows.size() == rows);
    CHECK_FALSE(m.baseline.empty());
    for (const auto& r : m.rows) CHECK(r.paper.size() == m.columns.size());
  }
  const cp::Manifest t5 = cp::read_manifest(kManifests + "/t5.txt");
  CHECK(t5.unsupported.empty());  // nddr-nyuv2 --backbone resnet101 runs it
  CHECK(t5.backbone == "resnet101");
  const cp::Manifest t7 = cp::read_manifest(kManifests + "/t7.txt");
  CHECK(t7.columns[0].name == "Age Mean AE");
  CHECK(t7.rows.back().paper == std::vector<double>{8.0, 6.2, 84.0});
}

TEST_CASE("campaign manifest: errors name the file, the line, the field and what was expected",
          "[campaign]") {
  CHECK(error_of(std::string(kSmall) + "bogus 1\n") ==
        "m.txt:9: directive: expected table, title, data, backbone, columns, run, row, baseline "
        "or unsupported, got 'bogus'");
  CHECK(error_of("table t\ncolumns a:x:higher\nrun r nddr-nyuv2\nrow R | r | 1 2\n") ==
        "m.txt:4: row R: expected 1 paper numbers (one per column, '-' for none), got ' 1 2'");
  CHECK_THAT(error_of("table t\ncolumns a:x:up\n"),
             Contains("m.txt:2: columns: expected TASK:NAME:higher or TASK:NAME:lower, got 'a:x:up'"));
  CHECK_THAT(error_of("table t\nrun r nddr-nyuv2 --init-weights-task0 {checkpoint:later}\n"),
             Contains("m.txt:2: run r: expected {checkpoint:RUN} naming a run listed above"));
  CHECK_THAT(error_of("table t\nrun r nddr-nyuv2 --steps 5\n"),
             Contains("m.txt:2: run r: expected no --steps (nddr-campaign sets it for every run)"));
  CHECK_THAT(error_of("table t\nrun r nddr-nyuv2 {weights}\n"),
             Contains("expected {data-dir}, {init-weights} or {checkpoint:RUN}, got '{weights}'"));
  CHECK_THAT(error_of("table t\nrun r nddr-nyuv2\nrun r nddr-nyuv2\n"),
             Contains("m.txt:3: run: expected a run name not used before, got 'r'"));
  CHECK_THAT(error_of("table t\ncolumns a:x:higher\nrun r nddr-nyuv2\nrow R | q | 1\n"),
             Contains("m.txt:4: row R: expected runs listed above, got 'q'"));
  CHECK_THAT(error_of("table t\ncolumns a:x:higher\nrun r nddr-nyuv2\nrow R | r | 1x\n"),
             Contains("m.txt:4: row R: expected a number or '-', got '1x'"));
  CHECK_THAT(error_of("table t\ncolumns a:x:higher\nbaseline S\nrun r nddr-nyuv2\nrow R | r | 1\n"),
             Contains("m.txt:3: baseline: expected the label of a row, got 'S'"));
  CHECK_THAT(error_of("columns a:x:higher\nrun r nddr-nyuv2\nrow R | r | 1\n"),
             Contains("m.txt:1: table: expected a 'table ID' line"));
  CHECK_THAT(error_of("table t\nrun r bash -c\n"),
             Contains("m.txt:2: run: expected a program name such as nddr-nyuv2, got 'bash'"));
  CHECK_THAT(error_of(std::string(kSmall) + "table u\n"),
             Contains("m.txt:9: table: expected one such line per manifest, got 'u'"));
}

TEST_CASE("campaign substitute: placeholders, checkpoints and an empty init-weights",
          "[campaign]") {
  const std::vector<std::string> flags = {"--data-dir", "{data-dir}",   "--init-weights",
                                          "{init-weights}", "--list", "{data-dir}/train.txt",
                                          "--w0", "{checkpoint:st}"};
  cp::Bindings b{"D", "", {{"st", "runs/st/ckpt.safetensors"}}};
  CHECK(cp::substitute(flags, b) ==
        std::vector<std::string>{"--data-dir", "D", "--list", "D/train.txt", "--w0",
                                 "runs/st/ckpt.safetensors"});
  b.init_weights = "voc.safetensors";
  CHECK(cp::substitute(flags, b)[3] == "voc.safetensors");
}

TEST_CASE("campaign table: mean and sample std over seeds, NaN skipped", "[campaign]") {
  const cp::MeanStd m = cp::mean_std({1.0, 2.0, 3.0, NAN});
  CHECK(m.n == 3);
  CHECK(m.mean == Approx(2.0));
  CHECK(m.std == Approx(1.0));  // sample std, n - 1
  const cp::MeanStd one = cp::mean_std({4.0});
  CHECK(one.mean == 4.0);
  CHECK(std::isnan(one.std));
  CHECK(cp::mean_std({}).n == 0);
}

TEST_CASE("campaign table: a row takes each column from the first run that has it",
          "[campaign]") {
  const cp::Manifest m = cp::parse_manifest("m.txt", kSmall);
  const std::map<std::string, double> a{{"x", 1.0}, {"y", NAN}}, b{{"x", 5.0}, {"y", 2.0}, {"z", 3.0}};
  CHECK(cp::row_values(m.columns, {&a, &b}) == cp::RowValues{1.0, 2.0, 3.0});
  const cp::RowValues missing = cp::row_values(m.columns, {&a, nullptr});
  CHECK(missing[0] == 1.0);
  CHECK(std::isnan(missing[1]));
}

TEST_CASE("campaign table: Delta_m is task-balanced against the baseline row, per seed",
          "[campaign]") {
  const cp::Manifest m = cp::parse_manifest("m.txt", kSmall);
  // Task a: x +10% (higher is better), y 10% lower (lower is better) -> +10%; task b: +100%.
  CHECK(cp::row_delta_m(m.columns, {11, 9, 20}, {10, 10, 10}) == Approx(55.0));
  CHECK(std::isnan(cp::row_delta_m(m.columns, {11, NAN, 20}, {10, 10, 10})));

  // Seed 1: +55%; seed 2: task a (+0 - 10%) / 2 = -5%, task b 0 -> -2.5%.
  const std::vector<std::vector<cp::RowValues>> values = {
      {{10, 10, 10}, {10, 10, 10}},   // Single
      {{11, 9, 20}, {10, 11, 10}}};   // MTL
  const cp::Table t = cp::assemble(m, {7, 8}, values);
  REQUIRE(t.rows.size() == 2);
  CHECK(t.rows[0].is_baseline);
  CHECK(t.rows[1].delta.n == 2);
  CHECK(t.rows[1].delta.mean == Approx((55.0 - 2.5) / 2));
  CHECK(t.rows[1].delta.std == Approx(std::sqrt(2.0) * 57.5 / 2));
  CHECK(t.rows[1].ours[0].mean == Approx(10.5));
  CHECK(t.rows[1].ours[0].std == Approx(std::sqrt(0.5)));
  // The paper's row has no z: its Delta_m is undefined.
  CHECK(std::isnan(t.rows[1].paper_delta));

  const std::string md = cp::markdown(t, "test setup");
  CHECK_THAT(md, Contains("| Method | x ↑ | y ↓ | z ↑ | Δm (%) ↑ |"));
  CHECK_THAT(md, Contains("| Single | 10.0 ± 0.0 (10.0) | 10.0 ± 0.0 (10.0) | 10.0 ± 0.0 (10.0) | baseline |"));
  CHECK_THAT(md, Contains("| MTL | 10.5 ± 0.7 (11.0) | 10.0 ± 1.4 (9.0) | 15.0 ± 7.1 | +26.3 ± 40.7 |"));
  CHECK_THAT(md, Contains("2 seeds (7, 8; test setup)"));
  CHECK_THAT(md, Contains("task-balanced"));
  const std::string csv = cp::csv(t);
  CHECK_THAT(csv, Contains("t,\"MTL\",a,x,true,10.5000,0.7071,2,11.00\n"));
  CHECK_THAT(csv, Contains("t,\"MTL\",all,delta_m_percent,true,26.2500,"));
  const nddr::io::Image8 png = cp::bar_chart(t);
  CHECK(png.width > 100);
  CHECK(png.channels == 3);
}
