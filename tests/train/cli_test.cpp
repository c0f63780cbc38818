// nddr::cli::ArgParser, the command-line parser of every nddr program (docs/cli.md): typed flags
// bound to variables, ranges, lists, choices, switches, and one error format for every bad
// command line.
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "nddr_apps/cli.hpp"

using Catch::Contains;
using Catch::EndsWith;
using Catch::StartsWith;
namespace cli = nddr::cli;

namespace {

/// Every kind of flag, bound to its fields; the field values are the defaults.
struct Flags {
  std::int64_t steps = 10;
  int threads = 0;
  std::uint64_t seed = 1234;
  double lr = 0.5;
  double decay = -1.0;  // "not given": the default is derived elsewhere
  std::vector<double> scales{1.0, 20.0};
  std::string method = "nddr";
  std::string init = "a";
  std::string out;
  std::string device = "cpu";
  bool resume = false;
  bool progress = true;
  std::string data;

  explicit Flags(cli::ArgParser& p, bool data_required = false) {
    p.integer("steps", steps, "training steps", std::int64_t{1})
        .integer("threads", threads, "threads", 0, 64)
        .integer("seed", seed, "seed", std::uint64_t{0})
        .real("lr", lr, "learning rate", cli::RealRange::positive())
        .real("decay", decay, "weight decay", cli::RealRange::non_negative())
        .default_text("per method")
        .reals("scales", scales, "loss scales", cli::RealRange::non_negative(), 2)
        .choice("method", method, "method", {"mt", "nddr"})
        .text("init", init, "a letter", "one letter a-z",
              [](const std::string& s) { return s.size() == 1 && s[0] >= 'a' && s[0] <= 'z'; })
        .path("out", out, "output directory", "DIR")
        .device("device", device, "device")
        .flag("resume", resume, "resume")
        .flag("quiet", progress, "no progress lines", false);
    if (data_required) p.path("data", data, "data directory").required();
  }
};

/// The message of the UsageError that parsing `args` throws ("" when it does not throw).
std::string error_of(const std::vector<std::string>& args, bool data_required = false) {
  cli::ArgParser p("prog", "A test program.");
  Flags f(p, data_required);
  try {
    p.parse(args);
  } catch (const cli::UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("cli value parsers: strict integers and finite reals, device names, echoed values",
          "[train][cli]") {
  CHECK(cli::parse_integer<int>("-42") == -42);
  CHECK(cli::parse_integer<std::uint64_t>("18446744073709551615") ==
        std::numeric_limits<std::uint64_t>::max());
  for (const char* s : {"", " 5", "5 ", "+5", "5abc", "1e3", "1.5", "0x10", "abc", "-"})
    CHECK_FALSE(cli::parse_integer<std::int64_t>(s).has_value());
  CHECK_FALSE(cli::parse_integer<int>("4294967297").has_value());  // no wrap to 1
  CHECK_FALSE(cli::parse_integer<std::uint64_t>("-1").has_value());
  CHECK_FALSE(cli::parse_integer<std::uint64_t>("18446744073709551616").has_value());

  CHECK(cli::parse_finite("0.5") == 0.5);
  CHECK(cli::parse_finite("-1e-3") == -1e-3);
  CHECK(cli::parse_finite("2.5e-4") == 2.5e-4);
  for (const char* s : {"", "nan", "NaN", "inf", "-inf", "infinity", "1e999", "0.5abc", "0x1p3",
                        " 1", "1,2"})
    CHECK_FALSE(cli::parse_finite(s).has_value());

  CHECK_FALSE(cli::parse_device_value("cpu")->cuda);
  CHECK(cli::parse_device_value("cuda")->index == 0);
  CHECK(cli::parse_device_value("cuda:3")->index == 3);
  for (const char* s : {"", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda:1234567",
                        "cpu "})
    CHECK_FALSE(cli::parse_device_value(s).has_value());
  CHECK_THROWS_WITH(cli::parse_device("prog", "gpu"),
                    "prog: --device: expected cpu, cuda or cuda:N, got 'gpu'");

  CHECK(cli::echo("abc") == "abc");
  CHECK(cli::echo("a\nb\tc") == "a?b?c");
  CHECK(cli::echo(std::string(1000, 'x')) == std::string(60, 'x') + "...");
  // A cut never splits a UTF-8 character: 59 ASCII bytes, then a 2-byte character.
  CHECK(cli::echo(std::string(59, 'x') + "\xc3\xa9" + "tail") == std::string(59, 'x') + "...");
}

TEST_CASE("open_device: a context's DeviceError names the program and --device",
          "[train][cli]") {
  CHECK(cli::open_device("prog", "cuda:1", [] { return 7; }) == 7);
  CHECK_THROWS_AS(cli::open_device("prog", "cuda:3",
                                   []() -> int { throw nddr::DeviceError("no device 3"); }),
                  nddr::DeviceError);
  CHECK_THROWS_WITH(cli::open_device("prog", "cuda:3",
                                     []() -> int { throw nddr::DeviceError("no device 3"); }),
                    "prog: --device cuda:3: no device 3");
  // Other errors pass through unchanged.
  CHECK_THROWS_WITH(cli::open_device("prog", "cuda", []() -> int { throw nddr::Error("x"); }),
                    "x");
}

TEST_CASE("ArgParser: defaults, both value forms, the last repeat wins, switches",
          "[train][cli]") {
  SECTION("nothing given: the bound defaults stay") {
    cli::ArgParser p("prog", "A test program.");
    Flags f(p);
    CHECK(p.parse(std::vector<std::string>{}));
    CHECK(f.steps == 10);
    CHECK(f.seed == 1234u);
    CHECK(f.decay == -1.0);
    CHECK(f.scales == std::vector<double>{1.0, 20.0});
    CHECK_FALSE(f.resume);
    CHECK(f.progress);
    CHECK_FALSE(p.given("steps"));
  }
  SECTION("every kind of value") {
    cli::ArgParser p("prog", "A test program.");
    Flags f(p);
    CHECK(p.parse(std::vector<std::string>{
        "--steps", "7", "--threads=64", "--seed", "18446744073709551615", "--lr=1e-3", "--decay",
        "0", "--scales", "0.5", "--method", "mt", "--init=z", "--out", "a=b", "--device",
        "cuda:1", "--resume", "--quiet", "--steps", "8"}));
    CHECK(f.steps == 8);  // the last of a repeated flag
    CHECK(f.threads == 64);
    CHECK(f.seed == std::numeric_limits<std::uint64_t>::max());
    CHECK(f.lr == 1e-3);
    CHECK(f.decay == 0.0);
    CHECK(f.scales == std::vector<double>{0.5});
    CHECK(f.method == "mt");
    CHECK(f.init == "z");
    CHECK(f.out == "a=b");
    CHECK(f.device == "cuda:1");
    CHECK(f.resume);
    CHECK_FALSE(f.progress);
    CHECK(p.given("steps"));
    CHECK(p.given("lr"));
  }
  SECTION("values that look like flags or numbers are values") {
    cli::ArgParser p("prog", "A test program.");
    Flags f(p);
    CHECK(p.parse(std::vector<std::string>{"--out", "--steps", "--scales", "1,20"}));
    CHECK(f.out == "--steps");
    CHECK(f.steps == 10);
  }
  SECTION("switches take =true / =false / =1 / =0") {
    cli::ArgParser p("prog", "A test program.");
    Flags f(p);
    CHECK(p.parse(std::vector<std::string>{"--resume=true", "--resume=0", "--quiet=false"}));
    CHECK_FALSE(f.resume);
    CHECK(f.progress);
  }
}

TEST_CASE("ArgParser: every bad command line is one line naming the flag", "[train][cli]") {
  // Bad values: the flag, what it takes, the value as given.
  CHECK(error_of({"--steps", "3x"}) == "prog: --steps: expected an integer >= 1, got '3x'");
  CHECK(error_of({"--steps=0"}) == "prog: --steps: expected an integer >= 1, got '0'");
  CHECK(error_of({"--steps", "1e3"}) == "prog: --steps: expected an integer >= 1, got '1e3'");
  CHECK(error_of({"--steps", "99999999999999999999"}) ==
        "prog: --steps: expected an integer >= 1, got '99999999999999999999'");
  CHECK(error_of({"--threads", "4294967297"}) ==
        "prog: --threads: expected an integer in [0, 64], got '4294967297'");
  CHECK(error_of({"--threads", "-5"}) ==
        "prog: --threads: expected an integer in [0, 64], got '-5'");
  CHECK(error_of({"--seed", "-1"}) == "prog: --seed: expected an integer >= 0, got '-1'");
  CHECK(error_of({"--lr", "0"}) == "prog: --lr: expected a finite number > 0, got '0'");
  CHECK(error_of({"--lr", "0.5abc"}) == "prog: --lr: expected a finite number > 0, got '0.5abc'");
  CHECK(error_of({"--decay", "nan"}) == "prog: --decay: expected a finite number >= 0, got 'nan'");
  CHECK(error_of({"--decay=-1"}) == "prog: --decay: expected a finite number >= 0, got '-1'");
  CHECK(error_of({"--scales", "1,nan"}) ==
        "prog: --scales: expected 1 to 2 comma-separated finite numbers >= 0, got '1,nan'");
  for (const char* s : {"1,2,3", "1,,2", ",1", "1,", "", "1;2", "-1,2", "1,inf"})
    CHECK_THAT(error_of({"--scales", s}), StartsWith("prog: --scales: expected 1 to 2"));
  CHECK(error_of({"--method", "cross"}) ==
        "prog: --method: expected one of mt, nddr, got 'cross'");
  CHECK(error_of({"--init", "ab"}) == "prog: --init: expected one letter a-z, got 'ab'");
  CHECK(error_of({"--out", ""}) == "prog: --out: expected a non-empty path, got ''");
  CHECK(error_of({"--device", "gpu"}) ==
        "prog: --device: expected cpu, cuda or cuda:N, got 'gpu'");
  CHECK(error_of({"--resume=maybe"}) ==
        "prog: --resume: expected no value, =true or =false, got 'maybe'");
  CHECK(error_of({"--help=2"}) == "prog: --help: expected no value, =true or =false, got '2'");
  CHECK(error_of({"--help=false"}).empty());
  // Empty and missing values.
  CHECK(error_of({"--steps="}) == "prog: --steps: expected an integer >= 1, got ''");
  CHECK(error_of({"--steps=", "5"}) == "prog: --steps: expected an integer >= 1, got ''");
  CHECK(error_of({"--resume="}) == "prog: --resume: expected no value, =true or =false, got ''");
  CHECK(error_of({"--lr"}) == "prog: --lr: expected a finite number > 0, got nothing");
  CHECK(error_of({"--resume", "--lr"}) == "prog: --lr: expected a finite number > 0, got nothing");
  CHECK(error_of({}, true) == "prog: --data: expected a non-empty path, got nothing");
  CHECK(error_of({"--data", "d"}, true).empty());
  // Unknown flags (with the nearest declared one, if close) and positionals.
  CHECK(error_of({"--stpes", "3"}) ==
        "prog: unknown flag '--stpes'; did you mean --steps? (--help lists the flags)");
  CHECK(error_of({"--bogus=1"}) == "prog: unknown flag '--bogus' (--help lists the flags)");
  CHECK(error_of({"-x"}) == "prog: unknown flag '-x' (--help lists the flags)");
  CHECK(error_of({"steps"}) ==
        "prog: unexpected argument 'steps' (flags look like --name value; --help lists them)");
  CHECK_THAT(error_of({"--resume", "5"}), StartsWith("prog: unexpected argument '5'"));
  CHECK_THAT(error_of({"--", "--steps", "3"}), StartsWith("prog: unexpected argument '--'"));
  // Bad values are reported before unknown flags and missing required flags.
  CHECK_THAT(error_of({"--bogus", "--steps", "x"}, true), StartsWith("prog: --steps:"));
  CHECK_THAT(error_of({"--bogus"}, true), StartsWith("prog: unknown flag '--bogus'"));
  // One short line, whatever was given.
  const std::string huge(1 << 20, '7');
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--steps", huge}, {"--scales=" + huge}, {"--" + huge}, {huge}, {"--out", "a\nb"}}) {
    const std::string e = error_of(args);
    CHECK(e.size() < 200);
    CHECK(e.find('\n') == std::string::npos);
  }
  CHECK_THAT(error_of({"--steps", huge}), EndsWith(std::string(60, '7') + "...'"));
}

TEST_CASE("ArgParser: help, exit statuses and rules that join flags", "[train][cli]") {
  SECTION("-h and --help print the usage and win over bad values") {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--help"}, {"-h"}, {"--steps", "x", "--help"}, {"--bogus", "-h"}}) {
      cli::ArgParser p("prog", "A test program.");
      Flags f(p, true);
      std::ostringstream out;
      CHECK_FALSE(p.parse(args, out));
      CHECK_THAT(out.str(), Contains("Usage: prog") && Contains("A test program.") &&
                                Contains("--steps N=10") && Contains("--method mt|nddr=nddr") &&
                                Contains("--decay X=per method") && Contains("(required)") &&
                                Contains("--resume") && Contains("--help"));
    }
  }
  SECTION("parse_or_exit: go on, 0 after --help, 2 and one line after a usage error") {
    const auto status = [](std::vector<const char*> argv, std::string& out, std::string& err) {
      argv.insert(argv.begin(), "prog");
      cli::ArgParser p("prog", "A test program.");
      Flags f(p);
      std::ostringstream o, e;
      const auto s = p.parse_or_exit(static_cast<int>(argv.size()), argv.data(), o, e);
      out = o.str();
      err = e.str();
      return s;
    };
    std::string out, err;
    CHECK_FALSE(status({"--steps", "3"}, out, err).has_value());
    CHECK(status({"--help"}, out, err) == 0);
    CHECK_THAT(out, Contains("Usage: prog"));
    CHECK(err.empty());
    CHECK(status({"--steps", "-3"}, out, err) == cli::kUsageExitCode);
    CHECK(err == "prog: --steps: expected an integer >= 1, got '-3'\n");
    CHECK(out.empty());
  }
  SECTION("fail and usage_error: the same format for rules checked after parsing") {
    cli::ArgParser p("prog", "A test program.");
    Flags f(p);
    REQUIRE(p.parse(std::vector<std::string>{"--steps", "3"}));
    CHECK_THROWS_AS(p.fail("steps", "at most --threads", "3"), nddr::OptionError);
    CHECK_THROWS_WITH(p.fail("steps", "at most --threads", "3"),
                      "prog: --steps: expected at most --threads, got '3'");
    std::ostringstream err;
    CHECK(p.usage_error("lr", "a smaller rate", std::nullopt, err) == 2);
    CHECK(err.str() == "prog: --lr: expected a smaller rate, got nothing\n");
  }
}
