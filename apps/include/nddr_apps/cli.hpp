#pragma once
/// \file
/// `nddr::cli::ArgParser`: the one command-line parser of every nddr program (the experiment
/// binaries and the examples), on top of CLI11 (Debian's libcli11-dev). Application code
/// (apps/, CMake target `nddr_cli`, which brings `CLI11::CLI11`), not the installed library.
/// docs/cli.md describes the syntax and the errors for users.
///
/// Each flag is declared once, bound to the variable it sets (whose value is the default that
/// `--help` shows), with the values it accepts: `integer` (bounds of its type, never a wrap),
/// `real` (finite, in a `RealRange`), `reals` (a comma-separated list, each element checked),
/// `choice`, `text`/`path`, `device` (cpu | cuda | cuda:N) and `flag` (a switch).
///
/// Syntax: `--name value` or `--name=value`; a switch takes no value (`--resume`) or
/// `--resume=true|false`; a repeated flag keeps its last value; `-h`/`--help` prints the usage.
/// A bad command line throws `UsageError`, whose message is one line:
///   PROGRAM: --flag: expected WHAT, got 'VALUE'      (bad, out-of-range or missing value)
///   PROGRAM: unknown flag '--x' (--help lists the flags)
///   PROGRAM: unexpected argument 'x' (...)
/// with the echoed value cut to 60 bytes. `parse_or_exit` prints it on stderr and returns exit
/// status 2 (`kUsageExitCode`); after `--help` it returns 0.
///
/// Example:
///   std::int64_t steps = 20001;  // the defaults
///   double lr = 1e-3;
///   bool resume = false;
///   nddr::cli::ArgParser p("nddr-nyuv2", "NYUv2 experiments");
///   p.integer("steps", steps, "training steps", std::int64_t{1})
///       .real("lr", lr, "base learning rate", nddr::cli::RealRange::positive())
///       .flag("resume", resume, "continue from the last checkpoint");
///   if (const auto status = p.parse_or_exit(argc, argv)) return *status;

#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/core/error.hpp"

namespace nddr::cli {

/// The exit status of a program after a usage error (0 after `--help`).
inline constexpr int kUsageExitCode = 2;
/// Upper bound of every `--threads` flag (compute threads).
inline constexpr int kMaxThreads = 1024;
/// Upper bound of `--loader-threads` (data loading threads).
inline constexpr int kMaxLoaderThreads = 256;

/// A bad command line; the message is the one line the program prints before exiting with 2.
class UsageError : public OptionError {
 public:
  using OptionError::OptionError;
};

/// `value` as error messages echo it: control characters as '?', cut after `max_bytes` (at a
/// UTF-8 character boundary) with "..." appended.
inline std::string echo(std::string_view value, std::size_t max_bytes = 60) {
  std::size_t n = std::min(value.size(), max_bytes);
  while (n < value.size() && n > 0 && (static_cast<unsigned char>(value[n]) & 0xC0) == 0x80) --n;
  std::string out;
  for (const char ch : value.substr(0, n)) {
    const auto u = static_cast<unsigned char>(ch);
    out += u < 0x20 || u == 0x7f ? '?' : ch;
  }
  return n < value.size() ? out + "..." : out;
}

/// `PROGRAM: --flag: expected WHAT, got 'VALUE'` (`got nothing` without a value).
inline std::string bad_value_message(std::string_view program, std::string_view flag,
                                     std::string_view expected,
                                     std::optional<std::string_view> value) {
  std::string m = std::string(program) + ": --" + std::string(flag) + ": expected " +
                  std::string(expected) + ", got ";
  return value ? m + "'" + echo(*value) + "'" : m + "nothing";
}

/// `text` as a T: decimal digits with an optional leading '-', nothing else (no '+', spaces,
/// exponent or base prefix); nullopt when it is not one or T cannot represent it.
template <class T>
  requires std::integral<T> && (!std::same_as<T, bool>)
std::optional<T> parse_integer(std::string_view text) {
  T v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return v;
}

/// `text` as a finite double (decimal, optional exponent: `0.5`, `-1e-3`); nullopt for anything
/// else, also for nan, inf and values beyond the double range.
inline std::optional<double> parse_finite(std::string_view text) {
  double v = 0.0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(v))
    return std::nullopt;
  return v;
}

/// The finite values a real flag accepts: [min, max], or (min, max] with `exclusive_min`.
struct RealRange {
  double min = -std::numeric_limits<double>::max();
  double max = std::numeric_limits<double>::max();
  bool exclusive_min = false;

  /// (0, max]: learning rates, loss weights.
  static RealRange positive() { return {0.0, std::numeric_limits<double>::max(), true}; }
  /// [0, max]: weight decay, multipliers that may switch a group off.
  static RealRange non_negative() { return {0.0, std::numeric_limits<double>::max(), false}; }

  bool contains(double v) const { return (exclusive_min ? v > min : v >= min) && v <= max; }
  /// The bounds as text: " > 0", " in [0, 1]", "" (none).
  std::string describe() const {
    const bool low = min > -std::numeric_limits<double>::max();
    const bool high = max < std::numeric_limits<double>::max();
    std::ostringstream os;
    if (low && high)
      os << " in " << (exclusive_min ? "(" : "[") << min << ", " << max << "]";
    else if (low)
      os << (exclusive_min ? " > " : " >= ") << min;
    else if (high)
      os << " <= " << max;
    return os.str();
  }
};

/// A parsed `--device` value.
struct DeviceChoice {
  bool cuda = false;  ///< false: the CPU
  int index = 0;      ///< CUDA device index
};

/// `cpu`, `cuda` or `cuda:N` (N: 1 to 6 digits); nullopt for anything else.
inline std::optional<DeviceChoice> parse_device_value(std::string_view device) {
  if (device == "cpu") return DeviceChoice{};
  if (device == "cuda") return DeviceChoice{true, 0};
  if (!device.starts_with("cuda:") || device.size() > 11) return std::nullopt;
  const auto index = parse_integer<int>(device.substr(5));
  if (!index || *index < 0 || device[5] == '-') return std::nullopt;
  return DeviceChoice{true, *index};
}

/// Parses a `--device` value (`cpu`, `cuda` or `cuda:N`); OptionError naming the program and the
/// value otherwise. Whether this build can run on CUDA is checked by `require_cuda_backend`.
inline DeviceChoice parse_device(const std::string& program, const std::string& device) {
  const auto choice = parse_device_value(device);
  check<OptionError>(choice.has_value(),
                     bad_value_message(program, "device", "cpu, cuda or cuda:N", device));
  return *choice;
}

/// The command-line parser of one program; see the file comment. Declare every flag, then call
/// `parse` (or `parse_or_exit`) once; the bound variables must outlive the parse.
class ArgParser {
 public:
  ArgParser(std::string program, std::string description)
      : program_(std::move(program)), app_(std::move(description), program_) {
    app_.set_help_flag();  // replaced: --help wins even over bad values given before it
    app_.add_flag_callback(
            "-h,--help", [] { throw CLI::CallForHelp(); }, "print this help and exit")
        ->trigger_on_parse()
        ->check(switch_check(kSwitchExpected, [](bool) {}));
    app_.allow_extras();  // unknown flags and positionals are reported by `check_extras`
    app_.get_formatter()->column_width(36);
  }
  ArgParser(const ArgParser&) = delete;
  ArgParser& operator=(const ArgParser&) = delete;

  /// An integer flag in [min, max]; values T cannot represent are errors, never wrapped.
  template <class T>
    requires std::integral<T> && (!std::same_as<T, bool>)
  ArgParser& integer(const std::string& name, T& target, std::string help, T min,
                     T max = std::numeric_limits<T>::max()) {
    std::string expected = "an integer";
    if (max < std::numeric_limits<T>::max())
      expected += " in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
    else if (min > std::numeric_limits<T>::min() || std::is_unsigned_v<T>)
      expected += " >= " + std::to_string(min);
    return add(name, std::move(help), "N", std::to_string(target), std::move(expected),
               [&target, min, max](const std::string& s) {
                 const auto v = parse_integer<T>(s);
                 if (!v || *v < min || *v > max) return false;
                 target = *v;
                 return true;
               });
  }

  /// A finite real flag in `range`.
  ArgParser& real(const std::string& name, double& target, std::string help, RealRange range) {
    return add(name, std::move(help), "X", format(target), "a finite number" + range.describe(),
               [&target, range](const std::string& s) {
                 const auto v = parse_finite(s);
                 if (!v || !range.contains(*v)) return false;
                 target = *v;
                 return true;
               });
  }

  /// A comma-separated list of 1 to `max_count` finite reals, each in `range` (`--loss-scales
  /// 1,20`).
  ArgParser& reals(const std::string& name, std::vector<double>& target, std::string help,
                   RealRange range, std::size_t max_count) {
    std::string defaults;
    for (const double v : target) defaults += (defaults.empty() ? "" : ",") + format(v);
    return add(name, std::move(help), "X[,X...]", defaults,
               "1 to " + std::to_string(max_count) + " comma-separated finite numbers" +
                   range.describe(),
               [&target, range, max_count](const std::string& s) {
                 std::vector<double> out;
                 for (std::size_t begin = 0; out.size() <= max_count;) {
                   const std::size_t comma = std::min(s.find(',', begin), s.size());
                   const auto v = parse_finite(std::string_view(s).substr(begin, comma - begin));
                   if (!v || !range.contains(*v)) return false;
                   out.push_back(*v);
                   if (comma == s.size()) break;
                   begin = comma + 1;
                 }
                 if (out.size() > max_count) return false;
                 target = std::move(out);
                 return true;
               });
  }

  /// One of `choices`.
  ArgParser& choice(const std::string& name, std::string& target, std::string help,
                    std::vector<std::string> choices) {
    std::string expected = "one of ", type;
    for (std::size_t i = 0; i < choices.size(); ++i) {
      expected += (i ? ", " : "") + choices[i];
      type += (i ? "|" : "") + choices[i];
    }
    return add(name, std::move(help), std::move(type), target, std::move(expected),
               [&target, choices = std::move(choices)](const std::string& s) {
                 if (std::find(choices.begin(), choices.end(), s) == choices.end()) return false;
                 target = s;
                 return true;
               });
  }

  /// A string that `valid` accepts; `expected` says what it accepts ("'alpha,beta' or 'xavier'").
  ArgParser& text(const std::string& name, std::string& target, std::string help,
                  std::string expected, std::function<bool(const std::string&)> valid,
                  std::string type = "TEXT") {
    return add(name, std::move(help), std::move(type), target, std::move(expected),
               [&target, valid = std::move(valid)](const std::string& s) {
                 if (!valid(s)) return false;
                 target = s;
                 return true;
               });
  }

  /// A file or directory name (not checked for existence here; any non-empty string).
  ArgParser& path(const std::string& name, std::string& target, std::string help,
                  std::string type = "PATH") {
    return text(name, target, std::move(help), "a non-empty path",
                [](const std::string& s) { return !s.empty(); }, std::move(type));
  }

  /// `cpu`, `cuda` or `cuda:N` (see `parse_device`).
  ArgParser& device(const std::string& name, std::string& target, std::string help) {
    return text(name, target, std::move(help), "cpu, cuda or cuda:N",
                [](const std::string& s) { return parse_device_value(s).has_value(); }, "DEVICE");
  }

  /// A switch: `--name` or `--name=true` sets `target` to `when_given`, `--name=false` to its
  /// opposite (`flag("quiet", progress, "...", false)`).
  ArgParser& flag(const std::string& name, bool& target, const std::string& help,
                  bool when_given = true) {
    CLI::Option* opt = app_.add_flag("--" + name, std::as_const(help));
    opt->check(switch_check(kSwitchExpected, [&target, when_given](bool on) {
      target = on ? when_given : !when_given;
    }));
    specs_.push_back({name, std::string(kSwitchExpected), opt, false, false});
    return *this;
  }

  /// Makes the flag declared last required (a usage error when absent).
  ArgParser& required() {
    specs_.back().required = true;
    specs_.back().option->description(specs_.back().option->get_description() + " (required)");
    return *this;
  }
  /// Shows `text` as the default of the flag declared last (e.g. "per method").
  ArgParser& default_text(std::string text) {
    specs_.back().option->default_str(std::move(text));
    return *this;
  }

  /// Parses `args` (without the program name). Returns false after `-h`/`--help` (the usage is
  /// then written to `help_out`), true otherwise. Throws UsageError.
  bool parse(const std::vector<std::string>& args, std::ostream& help_out = std::cout) {
    std::vector<std::string> reversed = split_empty_values(args);
    std::reverse(reversed.begin(), reversed.end());
    try {
      app_.parse(std::move(reversed));
    } catch (const CLI::CallForHelp&) {
      help_out << help();
      return false;
    } catch (const CLI::ValidationError& e) {  // "--flag: expected ..., got '...'"
      throw UsageError(program_ + ": " + e.what());
    } catch (const CLI::ArgumentMismatch& e) {  // the last argument is a flag without its value
      const std::string_view what = e.what();
      for (const Spec& s : specs_)
        if (what.starts_with("--" + s.name + ":")) fail(s.name, s.expected, std::nullopt);
      throw UsageError(program_ + ": " + e.what());
    } catch (const CLI::ParseError& e) {  // not expected; still one short line
      throw UsageError(program_ + ": " + echo(e.what(), 200));
    }
    check_extras();
    for (const Spec& s : specs_)
      if (s.required && s.option->count() == 0) fail(s.name, s.expected, std::nullopt);
    return true;
  }
  /// Parses `argv[1..argc)`; see above.
  bool parse(int argc, const char* const* argv, std::ostream& help_out = std::cout) {
    return parse(std::vector<std::string>(argv + std::min(argc, 1), argv + argc), help_out);
  }

  /// For `main`: nullopt to go on; otherwise the exit status to return, 0 after `--help` (the
  /// usage on `out`), 2 after a usage error (its one line on `err`).
  std::optional<int> parse_or_exit(int argc, const char* const* argv, std::ostream& out = std::cout,
                                   std::ostream& err = std::cerr) {
    try {
      if (parse(argc, argv, out)) return std::nullopt;
      return 0;
    } catch (const UsageError& e) {
      err << e.what() << "\n";
      return kUsageExitCode;
    }
  }

  /// Whether the flag was on the command line.
  bool given(const std::string& name) const { return spec(name).option->count() > 0; }

  /// Throws UsageError `PROGRAM: --flag: expected WHAT, got 'VALUE'`: for rules that join flags
  /// (`--batch` against the data, `--tf32` against `--device`), checked after `parse`.
  [[noreturn]] void fail(std::string_view flag, std::string_view expected,
                         std::optional<std::string_view> value) const {
    throw UsageError(bad_value_message(program_, flag, expected, value));
  }

  /// For `main`, after `parse_or_exit`: prints the one line of `fail` on `err` and returns 2.
  int usage_error(std::string_view flag, std::string_view expected,
                  std::optional<std::string_view> value, std::ostream& err = std::cerr) const {
    err << bad_value_message(program_, flag, expected, value) << "\n";
    return kUsageExitCode;
  }

  const std::string& program() const { return program_; }
  /// The usage: the description, then one line per flag with its value type and default.
  std::string help() const { return app_.help(); }

 private:
  struct Spec {
    std::string name;
    std::string expected;
    CLI::Option* option = nullptr;
    bool takes_value = true;
    bool required = false;
  };

  static constexpr std::string_view kSwitchExpected = "no value, =true or =false";

  // The CLI11 check of a switch's value ("true" for `--name`): passes on/off to `set`.
  static std::function<std::string(const std::string&)> switch_check(
      std::string_view expected, std::function<void(bool)> set) {
    return [expected, set = std::move(set)](const std::string& s) -> std::string {
      if (s != "true" && s != "1" && s != "false" && s != "0")
        return "expected " + std::string(expected) + ", got '" + echo(s) + "'";
      set(s == "true" || s == "1");
      return {};
    };
  }

  ArgParser& add(const std::string& name, std::string help, std::string type,
                 std::string default_value, std::string expected,
                 std::function<bool(const std::string&)> accept) {
    CLI::Option* opt = app_.add_option("--" + name, CLI::callback_t{}, std::move(help));
    opt->type_name(std::move(type))
        ->default_str(std::move(default_value))
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    opt->check([expected, accept = std::move(accept)](const std::string& s) -> std::string {
      return accept(s) ? std::string{} : "expected " + expected + ", got '" + echo(s) + "'";
    });
    specs_.push_back({name, std::move(expected), opt, true, false});
    return *this;
  }

  const Spec& spec(std::string_view name) const {
    for (const Spec& s : specs_)
      if (s.name == name) return s;
    throw OptionError(program_ + ": no flag --" + std::string(name) + " was declared");
  }
  const Spec* find(std::string_view name) const {
    for (const Spec& s : specs_)
      if (s.name == name) return &s;
    return nullptr;
  }

  // CLI11 reads `--name=` as `--name` and takes the next argument as the value; here it is the
  // empty value (an error for every flag that needs one) and, for a switch, an error.
  std::vector<std::string> split_empty_values(const std::vector<std::string>& args) const {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a == "--") {  // the rest are positionals
        out.insert(out.end(), args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
        break;
      }
      const std::size_t eq = a.find('=');
      const Spec* s = a.starts_with("--") ? find(std::string_view(a).substr(2, eq - 2)) : nullptr;
      if (s == nullptr || (eq != std::string::npos && eq + 1 < a.size())) {
        out.push_back(a);
      } else if (eq == std::string::npos) {  // --name value: the value, whatever it looks like
        out.push_back(a);
        if (s->takes_value && i + 1 < args.size()) out.push_back(args[++i]);
      } else if (s->takes_value) {
        out.push_back(a.substr(0, eq));
        out.emplace_back();
      } else {
        fail(s->name, s->expected, "");
      }
    }
    return out;
  }

  // Unknown flags and positionals (CLI11's extras): the first one is the error.
  void check_extras() const {
    const std::vector<std::string> rest = app_.remaining();
    if (rest.empty()) return;
    const std::string& a = rest.front();
    if (a.size() < 2 || a[0] != '-' || a == "--")
      throw UsageError(program_ + ": unexpected argument '" + echo(a) +
                       "' (flags look like --name value; --help lists them)");
    const std::string name = a.substr(0, a.find('='));
    const std::string hint =
        suggestion(std::string_view(name).substr(name.starts_with("--") ? 2 : 1));
    throw UsageError(program_ + ": unknown flag '" + echo(name) + "'" +
                     (hint.empty() ? "" : "; did you mean --" + hint + "?") +
                     " (--help lists the flags)");
  }

  // The declared flag closest to `name` (optimal string alignment distance <= 2, and at most half
  // of the name's length), or "" when none is.
  std::string suggestion(std::string_view name) const {
    if (name.size() > 64) return {};
    std::string best;
    std::size_t best_distance = 3;
    for (const Spec& s : specs_) {
      const std::size_t d = edit_distance(name, s.name);
      if (d < best_distance && 2 * d <= name.size()) {
        best = s.name;
        best_distance = d;
      }
    }
    return best;
  }
  static std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i)
      for (std::size_t j = 1; j <= b.size(); ++j) {
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1,
                            d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    return d[a.size()][b.size()];
  }

  static std::string format(double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  }

  std::string program_;
  CLI::App app_;
  std::vector<Spec> specs_;
};

/// `open()` (the constructor of a device's context), its DeviceError (no such device, no
/// driver) rethrown naming the program and the flag: "PROGRAM: --device VALUE: what".
template <class Open>
auto open_device(const std::string& program, const std::string& device, Open&& open)
    -> decltype(open()) {
  try {
    return open();
  } catch (const DeviceError& e) {
    throw DeviceError(detail::concat(program, ": --device ", device, ": ", e.what()));
  }
}

/// Throws DeviceError for `--device cuda...` when this program was built without the CUDA
/// backend (it is compiled in where nvcc was found; the program links nddr::cuda).
inline void require_cuda_backend([[maybe_unused]] const std::string& program,
                                 [[maybe_unused]] const std::string& device) {
#if !defined(NDDR_WITH_CUDA)
  throw DeviceError(detail::concat(program, ": --device ", device,
                                   ": this build has no CUDA backend (NDDR_WITH_CUDA is not defined; "
                                   "configure with nvcc available and NDDR_ENABLE_CUDA=ON); use "
                                   "--device cpu"));
#endif
}

}  // namespace nddr::cli
