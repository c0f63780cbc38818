#pragma once
/// \file
/// `nddr::cli::ArgParser`: the small command-line parser of the experiment binaries. Flags are
/// `--name value` or `--name=value`; switches (`flag`) take no value (`--resume`) or an explicit
/// `--resume=true|false`. Unknown flags, missing values and values of the wrong type throw
/// `OptionError` naming the flag (and, for unknown flags, listing the valid ones); `--help`
/// sets `help_requested()` and `help()` renders the flag table.
///
/// Example:
///   nddr::cli::ArgParser p("nddr-nyuv2", "NYUv2 experiments");
///   p.option("steps", "20001", "training steps").flag("resume", "continue from the last checkpoint");
///   p.parse(argc, argv);
///   if (p.help_requested()) { std::cout << p.help(); return 0; }
///   std::int64_t steps = p.get_int("steps");

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nddr/core/error.hpp"

namespace nddr::cli {

class ArgParser {
 public:
  ArgParser(std::string program, std::string description)
      : program_(std::move(program)), description_(std::move(description)) {}

  /// A flag with a value; `default_value` is returned when the flag is absent.
  ArgParser& option(const std::string& name, std::string default_value, std::string help) {
    add(name, Spec{std::move(default_value), std::move(help), false});
    return *this;
  }
  /// A switch: false unless given (`--name` or `--name=true`).
  ArgParser& flag(const std::string& name, std::string help) {
    add(name, Spec{"false", std::move(help), true});
    return *this;
  }

  /// Parses `argv[1..argc)`.
  void parse(int argc, const char* const* argv) {
    std::vector<std::string> args;
    for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
    parse(args);
  }

  /// Parses the arguments (without the program name). Throws OptionError.
  void parse(const std::vector<std::string>& args) {
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      check<OptionError>(a.size() > 2 && a.starts_with("--"), program_, ": unexpected argument '",
                         a, "' (flags look like --name value or --name=value)");
      std::string name = a.substr(2);
      std::optional<std::string> value;
      if (const std::size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      if (name == "help") {
        help_ = true;
        continue;
      }
      auto it = specs_.find(name);
      check<OptionError>(it != specs_.end(), program_, ": unknown flag '--", name,
                         "'; valid flags: ", valid_flags());
      if (it->second.is_switch) {
        const std::string v = value.value_or("true");
        check<OptionError>(v == "true" || v == "false" || v == "1" || v == "0", program_,
                           ": flag --", name, " takes no value or true/false, got '", v, "'");
        values_[name] = (v == "true" || v == "1") ? "true" : "false";
        continue;
      }
      if (!value) {
        check<OptionError>(i + 1 < args.size(), program_, ": flag --", name, " needs a value");
        value = args[++i];
      }
      values_[name] = *value;
    }
  }

  bool help_requested() const { return help_; }
  /// Whether the flag was given on the command line.
  bool given(const std::string& name) const {
    spec(name);
    return values_.count(name) != 0;
  }

  std::string get_string(const std::string& name) const {
    auto it = values_.find(name);
    return it != values_.end() ? it->second : spec(name).default_value;
  }
  std::int64_t get_int(const std::string& name) const {
    const std::string s = get_string(name);
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    check<OptionError>(!s.empty() && end == s.c_str() + s.size() && errno == 0, program_,
                       ": flag --", name, " needs an integer, got '", s, "'");
    return v;
  }
  double get_double(const std::string& name) const { return parse_double(name, get_string(name)); }
  bool get_bool(const std::string& name) const {
    const std::string s = get_string(name);
    check<OptionError>(s == "true" || s == "false", program_, ": flag --", name,
                       " needs true or false, got '", s, "'");
    return s == "true";
  }
  /// A comma-separated list of numbers, e.g. `--loss-scales 1,20`.
  std::vector<double> get_doubles(const std::string& name) const {
    std::vector<double> out;
    const std::string s = get_string(name);
    if (s.empty()) return out;
    std::size_t begin = 0;
    for (;;) {
      const std::size_t comma = s.find(',', begin);
      out.push_back(parse_double(name, s.substr(begin, comma - begin)));
      if (comma == std::string::npos) break;
      begin = comma + 1;
    }
    return out;
  }

  /// Usage text: one line per flag with its default and help.
  std::string help() const {
    std::ostringstream os;
    os << "Usage: " << program_ << " [--flag value | --flag=value ...]\n" << description_ << "\n\n";
    for (const auto& name : order_) {
      const Spec& s = specs_.at(name);
      std::string left = "  --" + name + (s.is_switch ? "" : " <value>");
      if (left.size() < 30) left.resize(30, ' ');
      os << left << " " << s.help;
      if (!s.is_switch && !s.default_value.empty()) os << " (default: " << s.default_value << ")";
      os << "\n";
    }
    os << "  --help                         print this text\n";
    return os.str();
  }

 private:
  struct Spec {
    std::string default_value;
    std::string help;
    bool is_switch = false;
  };

  void add(const std::string& name, Spec s) {
    check<OptionError>(!name.empty() && specs_.count(name) == 0 && name != "help", program_,
                       ": flag --", name, " declared twice or reserved");
    specs_.emplace(name, std::move(s));
    order_.push_back(name);
  }
  const Spec& spec(const std::string& name) const {
    auto it = specs_.find(name);
    check<OptionError>(it != specs_.end(), program_, ": no flag --", name, " was declared");
    return it->second;
  }
  double parse_double(const std::string& name, const std::string& s) const {
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    check<OptionError>(!s.empty() && end == s.c_str() + s.size() && errno == 0, program_,
                       ": flag --", name, " needs a number, got '", s, "'");
    return v;
  }
  std::string valid_flags() const {
    std::string out;
    for (const auto& n : order_) out += (out.empty() ? "--" : ", --") + n;
    return out + ", --help";
  }

  std::string program_;
  std::string description_;
  std::map<std::string, Spec> specs_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

/// Writes `text` to `path` atomically: to a temporary file beside it, then renamed over it, so
/// readers never see a half-written results file. Throws IoError naming the path.
inline void write_text_atomic(const std::string& path, const std::string& text) {
  const std::filesystem::path target(path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp" + std::to_string(reinterpret_cast<std::uintptr_t>(&text));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    check<IoError>(static_cast<bool>(out), "nddr::cli::write_text_atomic: cannot write '", tmp, "'");
    out << text;
    out.flush();
    check<IoError>(static_cast<bool>(out), "nddr::cli::write_text_atomic: writing '", tmp,
                   "' failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, target, ec);
  if (ec) std::filesystem::remove(tmp);
  check<IoError>(!ec, "nddr::cli::write_text_atomic: cannot rename '", tmp, "' to '", path,
                 "': ", ec.message());
}

/// A parsed `--device` value.
struct DeviceChoice {
  bool cuda = false;  ///< false: the CPU
  int index = 0;      ///< CUDA device index
};

/// Parses a `--device` value (`cpu`, `cuda` or `cuda:N`); OptionError naming the program and the
/// value otherwise. Whether this build can run on CUDA is checked by `require_cuda_backend`.
inline DeviceChoice parse_device(const std::string& program, const std::string& device) {
  if (device == "cpu") return {};
  const bool cuda = device == "cuda" || (device.starts_with("cuda:") && device.size() > 5 &&
                                         device.size() < 12 &&
                                         device.find_first_not_of("0123456789", 5) == std::string::npos);
  check<OptionError>(cuda, program, ": --device must be cpu, cuda or cuda:N, got '", device, "'");
  return {true, device == "cuda" ? 0 : std::stoi(device.substr(5))};
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
