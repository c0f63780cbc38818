// nddr-campaign end to end (label campaign): Tables 4 and 1 on a synthetic NDDR-format NYUv2
// folder with TinyNet columns, 20 steps, 2 seeds; killed once with SIGTERM mid-campaign and
// restarted, it ends with the same tables as an uninterrupted campaign, and a third start runs
// nothing. Also the plan (--dry-run) and Table 5, which this build cannot run.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../support/nyu_fixture.hpp"
#include "../support/process.hpp"
#include "../support/temp_dir.hpp"

#if defined(NDDR_CAMPAIGN_BINARY)

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t i = text.find(what); i != std::string::npos; i = text.find(what, i + 1)) ++n;
  return n;
}

const std::string kRunFlags =
    "--crop 33 --batch 2 --eval-limit 2 --loader-threads 0 --checkpoint-every 5 --quiet";

std::vector<std::string> campaign_args(const std::string& tables, const fs::path& nyu,
                                       const fs::path& out, const std::string& seeds = "2",
                                       const std::string& run_flags = kRunFlags) {
  return {"--table", tables, "--manifests", NDDR_CAMPAIGN_MANIFESTS, "--data-dir", nyu.string(),
          "--backbone", "tiny", "--steps", "20", "--seeds", seeds, "--threads", "1",
          "--output-dir", out.string(), "--run-flags", run_flags};
}

int run_campaign(const std::vector<std::string>& args, const fs::path& log) {
  const pid_t pid = nddr_test::spawn(NDDR_CAMPAIGN_BINARY, args, log.string());
  REQUIRE(pid > 0);
  return nddr_test::wait_exit_code(pid, 300);
}

}  // namespace

TEST_CASE("nddr-campaign: killed by SIGTERM and restarted, it ends with the same tables",
          "[campaign][e2e]") {
  nddr_test::TempDir tmp("nddr_campaign_e2e");
  const fs::path root(tmp.file(""));
  nddr_test::write_nyu(root / "nyu");
  const fs::path ref = root / "ref", out = root / "out";

  // The reference: one uninterrupted campaign.
  const int ref_code = run_campaign(campaign_args("t4,t1", root / "nyu", ref), root / "ref.txt");
  INFO(slurp(root / "ref.txt"));
  REQUIRE(ref_code == 0);

  // The same campaign, stopped by SIGTERM as soon as its third run has started.
  const pid_t pid = nddr_test::spawn(NDDR_CAMPAIGN_BINARY, campaign_args("t4,t1", root / "nyu", out),
                                     (root / "first.txt").string());
  REQUIRE(pid > 0);
  const fs::path third = out / "mt" / "seed-1234" / "campaign-run.txt";
  bool started = false;
  for (int i = 0; i < 60000 && !started; ++i) {  // up to 120 s
    started = fs::exists(third);
    if (!started) ::usleep(2000);
  }
  REQUIRE(::kill(pid, SIGTERM) == 0);
  const int first_code = nddr_test::wait_exit_code(pid, 120);
  const std::string first = slurp(root / "first.txt");
  INFO(first);
  REQUIRE(started);
  CHECK(first_code == 128 + SIGTERM);
  CHECK_THAT(first, Contains("nddr-campaign: stopped by SIGTERM"));
  CHECK_FALSE(fs::exists(out / "t4.md"));

  // Restarted: the finished runs are skipped, the stopped one resumes, the tables match.
  const int second_code = run_campaign(campaign_args("t4,t1", root / "nyu", out), root / "second.txt");
  const std::string second = slurp(root / "second.txt");
  INFO(second);
  REQUIRE(second_code == 0);
  CHECK_THAT(second, Contains("runs already done"));
  CHECK_THAT(second, Contains("| mt | 1234 | resume from step "));
  CHECK_THAT(second, Contains("mt (seed 1234) on cpu (resuming)"));
  CHECK(count(second, "nddr-campaign: started ") < 22);
  for (const char* file : {"t4.md", "t4.csv", "t1.md", "t1.csv"}) {
    INFO(file);
    CHECK(slurp(out / file) == slurp(ref / file));
  }
  CHECK(fs::file_size(out / "t4.png") > 1000);

  // Table 4 in the paper's layout: every row, the paper's numbers beside ours, Delta_m.
  const std::string t4 = slurp(out / "t4.md");
  for (const char* row : {"| Single-task |", "| Multi-task |", "| Cross-stitch |", "| Sluice |",
                          "| NDDR (ours) |"})
    CHECK_THAT(t4, Contains(row));
  CHECK_THAT(t4, Contains("(13.9) |") && Contains("(66.4) |") && Contains("Δm (%)") &&
                     Contains("baseline |") && Contains(" ± ") && Contains("task-balanced"));
  CHECK_THAT(slurp(out / "t1.md"), Contains("| Random (Xavier) |"));

  // A third start finds everything done and runs nothing.
  const int third_code = run_campaign(campaign_args("t4,t1", root / "nyu", out), root / "third.txt");
  const std::string again = slurp(root / "third.txt");
  INFO(again);
  CHECK(third_code == 0);
  CHECK_THAT(again, Contains("22 of 22 runs already done"));
  CHECK(count(again, "nddr-campaign: started ") == 0);
  CHECK(slurp(out / "t4.md") == slurp(ref / "t4.md"));
}

TEST_CASE("nddr-campaign: two device slots run two runs at a time, same table as one slot",
          "[campaign][e2e]") {
  nddr_test::TempDir tmp("nddr_campaign_slots");
  const fs::path root(tmp.file(""));
  nddr_test::write_nyu(root / "nyu");
  auto args = [&](const fs::path& out, const std::string& devices, const std::string& seeds) {
    auto a = campaign_args("t4", root / "nyu", out, seeds, kRunFlags + " --log-every 5");
    a.insert(a.end(), {"--device", devices});
    return a;
  };
  REQUIRE(run_campaign(args(root / "one", "cpu", "1"), root / "one.txt") == 0);
  const int code = run_campaign(args(root / "two", "cpu,cpu", "1"), root / "two.txt");
  const std::string two = slurp(root / "two.txt");
  INFO(two);
  REQUIRE(code == 0);
  CHECK(count(two, " on cpu;") + count(two, " on cpu (resuming);") == 6);
  CHECK(slurp(root / "two" / "t4.md") == slurp(root / "one" / "t4.md"));

  // The plan of one more seed estimates its time from the steps measured in the logs.
  auto more = args(root / "two", "cpu,cpu", "2");
  more.push_back("--dry-run");
  REQUIRE(run_campaign(more, root / "plan.txt") == 0);
  const std::string plan = slurp(root / "plan.txt");
  INFO(plan);
  CHECK_THAT(plan, Contains("| st_seg | 1234 | done (skipped) |"));
  CHECK_THAT(plan, Contains("| st_seg | 1235 | to run |"));
  CHECK_THAT(plan, Contains("6 of 12 runs to do, 120 training steps; estimated time at ") &&
                       Contains("(measured in the logs of 6 of these runs) on 2 devices"));
}

TEST_CASE("nddr-campaign: a failed run stops its dependents only, exit status 1",
          "[campaign][e2e]") {
  nddr_test::TempDir tmp("nddr_campaign_fail");
  const fs::path root(tmp.file(""));
  nddr_test::write_nyu(root / "nyu");
  // Every nddr-nyuv2 refuses --crop 0 (exit status 2).
  const int code =
      run_campaign(campaign_args("t4", root / "nyu", root / "out", "1", "--crop 0"),
                   root / "fail.txt");
  const std::string text = slurp(root / "fail.txt");
  INFO(text);
  CHECK(code == 1);
  CHECK_THAT(text, Contains("run st_seg (seed 1234) failed (exit status 2); see "));
  CHECK_THAT(text, Contains("run mt (seed 1234) failed (exit status 2)"));
  CHECK_THAT(text, Contains("not run: nddr (seed 1234) (a run it depends on failed)"));
  CHECK(count(text, "nddr-campaign: started ") == 3);
  CHECK_THAT(slurp(root / "out" / "t4.md"), Contains("| NDDR (ours) | — (13.9) |"));
}

TEST_CASE("nddr-campaign --dry-run: the plan in order with dependencies, nothing run",
          "[campaign][e2e]") {
  nddr_test::TempDir tmp("nddr_campaign_plan");
  const fs::path root(tmp.file(""));
  const fs::path out = root / "out";
  const int code = run_campaign({"--table", "t4", "--manifests", NDDR_CAMPAIGN_MANIFESTS,
                                 "--init-weights", "voc.safetensors", "--output-dir",
                                 out.string(), "--step-seconds", "5", "--dry-run"},
                                root / "plan.txt");
  const std::string plan = slurp(root / "plan.txt");
  INFO(plan);
  CHECK(code == 0);
  CHECK_THAT(plan, Contains("1 | st_seg | 1234 | to run | - | --init-weights voc.safetensors"));
  CHECK_THAT(plan, Contains("6 | nddr | 1234 | to run | st_seg, st_normal | checkpoints of "
                            "st_seg, st_normal (seed 1234)"));
  CHECK_THAT(plan, Contains("st_seg/seed-1234/checkpoints/ckpt-0000020001.safetensors"));
  CHECK_THAT(plan, Contains("6 of 6 runs to do, 120006 training steps; estimated time at 5 s per step "
                            "(given) on 1 device: 166.7 h (6.9 days)"));
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("nddr-campaign: an unsupported table is refused before anything runs, with why",
          "[campaign][e2e]") {
  nddr_test::TempDir tmp("nddr_campaign_t5");
  const fs::path root(tmp.file(""));
  nddr_test::write_nyu(root / "nyu");
  const fs::path out = root / "out";
  std::ofstream(root / "tx.txt")
      << "table tx\ncolumns seg:mIoU:higher\n"
         "unsupported nddr-nyuv2 has no such backbone in this build\n"
         "run r nddr-nyuv2 --method st-seg\nrow R | r | 1\nbaseline R\n";
  const int code = run_campaign({"--table", "t4," + (root / "tx.txt").string(), "--manifests",
                                 NDDR_CAMPAIGN_MANIFESTS, "--data-dir", (root / "nyu").string(),
                                 "--backbone", "tiny", "--steps", "2", "--output-dir",
                                 out.string()},
                                root / "t5.txt");
  const std::string text = slurp(root / "t5.txt");
  INFO(text);
  CHECK(code == 1);
  CHECK_THAT(text, Contains("nddr-campaign: table tx (") &&
                       Contains("cannot be run by this build: nddr-nyuv2 has no such backbone"));
  CHECK_FALSE(fs::exists(out));
  const int missing = run_campaign({"--table", "t4", "--manifests", NDDR_CAMPAIGN_MANIFESTS,
                                    "--data-dir", (root / "nyu").string(), "--init-weights",
                                    (root / "voc.safetensors").string(), "--output-dir",
                                    out.string()},
                                   root / "missing.txt");
  CHECK(missing == 1);
  CHECK_THAT(slurp(root / "missing.txt"), Contains("voc.safetensors' does not exist"));
  CHECK_FALSE(fs::exists(out));
  const int plan = run_campaign({"--table", (root / "tx.txt").string(), "--dry-run"},
                                root / "plan.txt");
  CHECK(plan == 0);
  CHECK_THAT(slurp(root / "plan.txt"), Contains("CANNOT RUN in this build") &&
                                           Contains("no such backbone"));
  // Table 5 runs on ResNet-101 (nddr-nyuv2 --backbone resnet101, docs/backbones.md).
  const int t5 = run_campaign({"--table", "t5", "--manifests", NDDR_CAMPAIGN_MANIFESTS,
                               "--dry-run"},
                              root / "t5plan.txt");
  CHECK(t5 == 0);
  const std::string t5plan = slurp(root / "t5plan.txt");
  CHECK_THAT(t5plan, Contains("--backbone resnet101") && Contains("--init-format torchvision"));
  CHECK_THAT(t5plan, !Contains("CANNOT RUN"));
}

TEST_CASE("nddr-campaign: a manifest error names file, line and field, exit status 1",
          "[campaign][e2e]") {
  nddr_test::TempDir tmp("nddr_campaign_bad");
  const fs::path root(tmp.file(""));
  std::ofstream(root / "bad.txt") << "table bad\ncolumns a:x:higher\nrun r nddr-nyuv2 --seed 3\n";
  const int code = run_campaign({"--table", (root / "bad.txt").string(), "--dry-run"},
                                root / "bad-out.txt");
  CHECK(code == 1);
  CHECK(slurp(root / "bad-out.txt") ==
        "nddr-campaign: " + (root / "bad.txt").string() +
            ":3: run r: expected no --seed (nddr-campaign sets it for every run), got '--seed'\n");
}

#endif  // NDDR_CAMPAIGN_BINARY
