#pragma once
/// \file
/// `nddr-campaign`'s model of a paper table (docs/experiments.md, "Reproducing a table"): the
/// manifest (`campaigns/t4.txt`: the runs with their flags and dependencies, the table's rows
/// with the paper's numbers), its parser, and the assembly of the table from the runs'
/// `results.json` (mean ± std over seeds, Delta_m against the single-task row) as Markdown, CSV
/// and a PNG bar chart. No network is instantiated here: the runs are the experiment programs,
/// started as child processes by examples/nddr_campaign.cpp. Application code (apps/, target
/// `nddr_cli` + `nddr::image_io`), not the installed library.
///
/// Manifest syntax, one directive per line, `#` starts a comment, tokens are separated by blanks:
///
///   table    t4                          the id (--table t4)
///   title    Table 4: ...                the rest of the line
///   data     --data-dir {data-dir}       flags every run gets first
///   backbone resnet101                   optional: the backbone the table needs (else --backbone)
///   columns  normal:Mean:lower | ... | seg:PAcc:higher  TASK:NAME:higher|lower per column, '|'
///                                                       between columns (NAME as in results.json)
///   run      NAME PROGRAM FLAGS...       one training run (NAME: [a-z0-9_-]+)
///   row      LABEL | RUN [RUN...] | PAPER...           a table row; one paper number (or '-')
///                                                       per column; each cell comes from the
///                                                       first listed run with a value for it
///   baseline LABEL                       the row Delta_m is computed against (single-task)
///   unsupported REASON                   the table cannot be run by this build, and why
///
/// Placeholders in flags: `{data-dir}`, `{init-weights}` (a flag followed by an empty
/// `{init-weights}` is dropped: training from scratch), and `{checkpoint:RUN}`, the final
/// checkpoint of RUN with the same seed, which makes RUN a dependency.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/io/file.hpp"
#include "nddr/io/json.hpp"
#include "nddr/metrics/delta.hpp"
#include "nddr/viz/plot.hpp"

namespace nddr::campaign {

/// A manifest error: `FILE:LINE: FIELD: expected WHAT, got 'VALUE'`.
class ManifestError : public ValueError {
 public:
  using ValueError::ValueError;
};

/// One column of the table: metric `name` of `task`.
struct Column {
  std::string task;
  std::string name;
  bool higher_is_better = true;
};

/// One training run of a table (a `run` line).
struct RunSpec {
  std::string name;
  std::string program;
  std::vector<std::string> flags;  ///< with placeholders
  std::vector<std::string> deps;   ///< runs named by `{checkpoint:RUN}`, in order
  std::string file;
  int line = 0;
};

/// One row of the table (a `row` line).
struct RowSpec {
  std::string label;
  std::vector<std::string> runs;
  std::vector<double> paper;  ///< one per column; NaN = not published
  int line = 0;
};

/// A parsed manifest.
struct Manifest {
  std::string file;
  std::string id;
  std::string title;
  std::string backbone;  ///< empty: the campaign's --backbone
  std::string unsupported;
  std::vector<std::string> data_flags;
  std::vector<Column> columns;
  std::vector<RunSpec> runs;
  std::vector<RowSpec> rows;
  std::string baseline;

  const RunSpec* run(std::string_view name) const {
    for (const RunSpec& r : runs)
      if (r.name == name) return &r;
    return nullptr;
  }
};

/// Flags the campaign sets itself; a manifest or --run-flags may not give them.
inline const std::vector<std::string>& reserved_flags() {
  static const std::vector<std::string> k = {"--steps",  "--seed",   "--device",
                                             "--output-dir", "--resume", "--backbone",
                                             "--threads", "--help"};
  return k;
}

namespace detail {

inline std::vector<std::string> split_blanks(std::string_view s) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t') ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

inline std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(" \t") - b + 1));
}

inline bool valid_name(std::string_view s) {
  return !s.empty() && s.size() <= 64 &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
         });
}

/// Reads a manifest's text line by line and raises errors that point at the line.
class ManifestParser {
 public:
  ManifestParser(std::string file, std::string_view text) : file_(std::move(file)), text_(text) {
    m_.file = file_;
  }

  Manifest parse() {
    std::size_t pos = 0;
    while (pos <= text_.size()) {
      const std::size_t end = std::min(text_.find('\n', pos), text_.size());
      ++line_;
      std::string_view l = text_.substr(pos, end - pos);
      if (const auto hash = l.find('#'); hash != std::string_view::npos) l = l.substr(0, hash);
      if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
      directive(l);
      if (end == text_.size()) break;
      pos = end + 1;
    }
    finish();
    return std::move(m_);
  }

 private:
  [[noreturn]] void fail(std::string_view field, std::string_view expected,
                         std::string_view value) const {
    throw ManifestError(nddr::detail::concat(file_, ":", line_, ": ", field, ": expected ",
                                             expected, ", got '", io::excerpt(value), "'"));
  }
  [[noreturn]] void fail_at(int line, std::string_view field, std::string_view expected,
                            std::string_view value) {
    line_ = line;
    fail(field, expected, value);
  }

  void directive(std::string_view l) {
    const std::string line = trim(l);
    if (line.empty()) return;
    const std::size_t sp = line.find_first_of(" \t");
    const std::string key = line.substr(0, sp);
    const std::string rest = sp == std::string::npos ? "" : trim(line.substr(sp));
    const auto tokens = split_blanks(rest);
    if (key == "table") {
      if (tokens.size() != 1 || !valid_name(tokens[0]))
        fail("table", "one id of [a-z0-9_-] characters", rest);
      once(m_.id, tokens[0], "table");
    } else if (key == "title") {
      if (rest.empty()) fail("title", "a title", rest);
      once(m_.title, rest, "title");
    } else if (key == "backbone") {
      if (tokens.size() != 1 || !valid_name(tokens[0])) fail("backbone", "one backbone name", rest);
      once(m_.backbone, tokens[0], "backbone");
    } else if (key == "unsupported") {
      if (rest.empty()) fail("unsupported", "the reason the table cannot run", rest);
      once(m_.unsupported, rest, "unsupported");
    } else if (key == "baseline") {
      if (rest.empty()) fail("baseline", "the label of a row", rest);
      once(m_.baseline, rest, "baseline");
      baseline_line_ = line_;
    } else if (key == "data") {
      if (tokens.empty()) fail("data", "flags", rest);
      m_.data_flags.insert(m_.data_flags.end(), tokens.begin(), tokens.end());
      check_flags(tokens, "data");
    } else if (key == "columns") {
      columns(rest);
    } else if (key == "run") {
      run(tokens, rest);
    } else if (key == "row") {
      row(rest);
    } else {
      fail("directive",
           "table, title, data, backbone, columns, run, row, baseline or unsupported", key);
    }
  }

  void once(std::string& field, const std::string& value, std::string_view name) {
    if (!field.empty()) fail(name, "one such line per manifest", value);
    field = value;
  }

  void columns(const std::string& rest) {
    if (!m_.columns.empty()) fail("columns", "one such line per manifest", rest);
    if (rest.empty()) fail("columns", "TASK:NAME:higher|lower per column, separated by '|'", rest);
    for (std::size_t begin = 0;;) {
      const std::size_t end = std::min(rest.find('|', begin), rest.size());
      const std::string t = trim(std::string_view(rest).substr(begin, end - begin));
      const auto a = t.find(':'), b = t.rfind(':');
      const std::string dir = b == std::string::npos ? "" : t.substr(b + 1);
      if (a == std::string::npos || a == b || a == 0 || b == a + 1 ||
          (dir != "higher" && dir != "lower"))
        fail("columns", "TASK:NAME:higher or TASK:NAME:lower", t);
      m_.columns.push_back({t.substr(0, a), t.substr(a + 1, b - a - 1), dir == "higher"});
      if (end == rest.size()) break;
      begin = end + 1;
    }
  }

  void check_flags(const std::vector<std::string>& flags, std::string_view field) {
    for (const std::string& f : flags) {
      const std::string name = f.substr(0, f.find('='));
      for (const std::string& r : reserved_flags())
        if (name == r)
          fail(field, "no " + r + " (nddr-campaign sets it for every run)", f);
      placeholders(f, field);
    }
  }

  // Checks the placeholders of `token`; returns the runs named by {checkpoint:RUN}.
  std::vector<std::string> placeholders(const std::string& token, std::string_view field) {
    std::vector<std::string> deps;
    for (std::size_t i = token.find('{'); i != std::string::npos; i = token.find('{', i + 1)) {
      const std::size_t j = token.find('}', i);
      if (j == std::string::npos) fail(field, "a placeholder closed by '}'", token);
      const std::string p = token.substr(i + 1, j - i - 1);
      if (p.starts_with("checkpoint:") && valid_name(p.substr(11)))
        deps.push_back(p.substr(11));
      else if (p != "data-dir" && p != "init-weights")
        fail(field, "{data-dir}, {init-weights} or {checkpoint:RUN}", "{" + p + "}");
    }
    return deps;
  }

  void run(const std::vector<std::string>& tokens, const std::string& rest) {
    if (tokens.size() < 2) fail("run", "NAME PROGRAM FLAGS...", rest);
    if (!valid_name(tokens[0])) fail("run", "a run name of [a-z0-9_-] characters", tokens[0]);
    if (m_.run(tokens[0])) fail("run", "a run name not used before", tokens[0]);
    if (!valid_name(tokens[1]) || !tokens[1].starts_with("nddr-"))
      fail("run", "a program name such as nddr-nyuv2", tokens[1]);
    RunSpec r{tokens[0], tokens[1], {tokens.begin() + 2, tokens.end()}, {}, file_, line_};
    check_flags(r.flags, "run " + r.name);
    for (const std::string& f : r.flags)
      for (std::string& d : placeholders(f, "run " + r.name)) {
        if (!m_.run(d)) fail("run " + r.name, "{checkpoint:RUN} naming a run listed above", f);
        if (std::find(r.deps.begin(), r.deps.end(), d) == r.deps.end()) r.deps.push_back(d);
      }
    m_.runs.push_back(std::move(r));
  }

  void row(const std::string& rest) {
    const auto a = rest.find('|');
    const auto b = a == std::string::npos ? a : rest.find('|', a + 1);
    if (b == std::string::npos || rest.find('|', b + 1) != std::string::npos)
      fail("row", "LABEL | RUN [RUN...] | PAPER NUMBERS", rest);
    if (m_.columns.empty()) fail("row", "a columns line before the first row", rest);
    RowSpec r{trim(rest.substr(0, a)), split_blanks(rest.substr(a + 1, b - a - 1)), {}, line_};
    if (r.label.empty()) fail("row", "a label before the first '|'", rest);
    for (const RowSpec& o : m_.rows)
      if (o.label == r.label) fail("row", "a label not used before", r.label);
    if (r.runs.empty()) fail("row " + r.label, "at least one run", rest);
    for (const std::string& name : r.runs)
      if (!m_.run(name)) fail("row " + r.label, "runs listed above", name);
    const auto numbers = split_blanks(rest.substr(b + 1));
    if (numbers.size() != m_.columns.size())
      fail("row " + r.label,
           std::to_string(m_.columns.size()) + " paper numbers (one per column, '-' for none)",
           rest.substr(b + 1));
    for (const std::string& n : numbers) {
      if (n == "-") {
        r.paper.push_back(NAN);
        continue;
      }
      double v = 0.0;
      std::istringstream in(n);
      if (!(in >> v) || !in.eof() || !std::isfinite(v))
        fail("row " + r.label, "a number or '-'", n);
      r.paper.push_back(v);
    }
    m_.rows.push_back(std::move(r));
  }

  void finish() {
    line_ = 0;
    if (m_.id.empty()) fail_at(1, "table", "a 'table ID' line", "");
    if (m_.columns.empty()) fail_at(1, "columns", "a 'columns' line", "");
    if (m_.runs.empty()) fail_at(1, "run", "at least one 'run' line", "");
    if (m_.rows.empty()) fail_at(1, "row", "at least one 'row' line", "");
    if (m_.title.empty()) m_.title = m_.id;
    if (!m_.baseline.empty() &&
        std::none_of(m_.rows.begin(), m_.rows.end(),
                     [&](const RowSpec& r) { return r.label == m_.baseline; }))
      fail_at(baseline_line_, "baseline", "the label of a row", m_.baseline);
  }

  std::string file_;
  std::string_view text_;
  Manifest m_;
  int line_ = 0;
  int baseline_line_ = 0;
};

}  // namespace detail

/// Parses a manifest's `text`; `file` names it in errors. Throws ManifestError
/// (`FILE:LINE: FIELD: expected WHAT, got 'VALUE'`).
inline Manifest parse_manifest(const std::string& file, std::string_view text) {
  return detail::ManifestParser(file, text).parse();
}

/// Reads and parses the manifest at `path` (at most 1 MiB of text).
inline Manifest read_manifest(const std::string& path) {
  const auto bytes = io::read_regular_file("nddr-campaign", path, std::uint64_t{1} << 20);
  return parse_manifest(path, std::string_view(reinterpret_cast<const char*>(bytes.data()),
                                               bytes.size()));
}

/// What a placeholder stands for in one run of one seed.
struct Bindings {
  std::string data_dir;
  std::string init_weights;  ///< empty: the flag before `{init-weights}` is dropped
  /// run name -> its final checkpoint for this seed
  std::map<std::string, std::string> checkpoints;
};

/// `flags` with the placeholders replaced (see the file comment).
inline std::vector<std::string> substitute(const std::vector<std::string>& flags,
                                           const Bindings& b) {
  std::vector<std::string> out;
  for (const std::string& f : flags) {
    if (f == "{init-weights}" && b.init_weights.empty()) {
      if (!out.empty() && out.back().starts_with("--")) out.pop_back();
      continue;
    }
    std::string s;
    for (std::size_t i = 0; i < f.size();) {
      const std::size_t j = f.find('}', i);
      if (f[i] != '{' || j == std::string::npos) {
        s += f[i++];
        continue;
      }
      const std::string p = f.substr(i + 1, j - i - 1);
      if (p == "data-dir") s += b.data_dir;
      else if (p == "init-weights") s += b.init_weights;
      else if (auto it = b.checkpoints.find(p.substr(11)); it != b.checkpoints.end()) s += it->second;
      i = j + 1;
    }
    out.push_back(std::move(s));
  }
  return out;
}

/// Our numbers of one row for one seed: one value per column, NaN where missing.
using RowValues = std::vector<double>;

/// What a finished run's `results.json` says: its training steps and its table cells.
struct RunResults {
  std::int64_t steps = -1;
  std::map<std::string, double> table;  ///< column -> value; NaN where the file has null
};

/// Reads `dir/results.json`; nullopt when the file does not exist. Throws IoError for a
/// malformed file.
inline std::optional<RunResults> read_results(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "results.json").string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  const auto bytes = io::read_regular_file("nddr-campaign", path, std::uint64_t{16} << 20);
  const auto doc = io::json::parse(
      std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  const io::json::Value* table = doc.find("table");
  check<IoError>(table != nullptr && table->is_object(), "nddr-campaign: '", path,
                 "': no \"table\" object");
  RunResults out;
  for (const auto& [k, v] : table->as_object()) out.table[k] = v.is_number() ? v.as_double() : NAN;
  if (const io::json::Value* steps = doc.find("steps"); steps && steps->is_int())
    out.steps = steps->as_int();
  return out;
}

/// A row's values from its runs' results: each column from the first run that has it.
inline RowValues row_values(const std::vector<Column>& columns,
                            const std::vector<const std::map<std::string, double>*>& runs) {
  RowValues v(columns.size(), NAN);
  for (std::size_t c = 0; c < columns.size(); ++c)
    for (const auto* r : runs) {
      if (r == nullptr) continue;
      const auto it = r->find(columns[c].name);
      if (it != r->end() && std::isfinite(it->second)) {
        v[c] = it->second;
        break;
      }
    }
  return v;
}

/// Mean and sample standard deviation (n - 1; NaN for n < 2) of the finite values.
struct MeanStd {
  double mean = NAN;
  double std = NAN;
  std::size_t n = 0;
};

inline MeanStd mean_std(const std::vector<double>& values) {
  MeanStd m;
  double sum = 0.0;
  for (double v : values)
    if (std::isfinite(v)) {
      sum += v;
      ++m.n;
    }
  if (m.n == 0) return m;
  m.mean = sum / static_cast<double>(m.n);
  if (m.n < 2) return m;
  double ss = 0.0;
  for (double v : values)
    if (std::isfinite(v)) ss += (v - m.mean) * (v - m.mean);
  m.std = std::sqrt(ss / static_cast<double>(m.n - 1));
  return m;
}

/// The Delta_m convention of the tables: task-balanced, in percent (nddr::describe).
inline DeltaOptions delta_options() { return DeltaOptions{}.balancing(DeltaBalancing::kTask); }

/// Delta_m (%) of `row` against `baseline` over the columns both have; NaN when a value is
/// missing or a baseline value is 0.
inline double row_delta_m(const std::vector<Column>& columns, const RowValues& row,
                          const RowValues& baseline) {
  std::vector<MetricValue> m, b;
  for (std::size_t c = 0; c < columns.size(); ++c) {
    if (!std::isfinite(row[c]) || !std::isfinite(baseline[c]) || baseline[c] == 0.0) return NAN;
    m.push_back({columns[c].task, columns[c].name, row[c], columns[c].higher_is_better});
    b.push_back({columns[c].task, columns[c].name, baseline[c], columns[c].higher_is_better});
  }
  return delta_m(m, b, delta_options());
}

/// One assembled row: ours over seeds, the paper's numbers, Delta_m.
struct TableRow {
  std::string label;
  std::vector<MeanStd> ours;  ///< per column
  std::vector<double> paper;  ///< per column
  MeanStd delta;              ///< ours, per seed against that seed's baseline row
  double paper_delta = NAN;   ///< the paper's numbers against the paper's baseline row
  bool is_baseline = false;
};

/// The assembled table.
struct Table {
  const Manifest* manifest = nullptr;
  std::vector<std::uint64_t> seeds;
  std::vector<TableRow> rows;
};

/// Assembles `m`'s table from `values[row][seed]` (RowValues per row and seed).
inline Table assemble(const Manifest& m, const std::vector<std::uint64_t>& seeds,
                      const std::vector<std::vector<RowValues>>& values) {
  check<ValueError>(values.size() == m.rows.size(), "nddr::campaign::assemble: ", values.size(),
                    " rows of values for ", m.rows.size(), " rows");
  Table t{&m, seeds, {}};
  std::optional<std::size_t> base;
  for (std::size_t r = 0; r < m.rows.size(); ++r)
    if (m.rows[r].label == m.baseline) base = r;
  for (std::size_t r = 0; r < m.rows.size(); ++r) {
    TableRow row{m.rows[r].label, {}, m.rows[r].paper, {}, NAN, base == r};
    for (std::size_t c = 0; c < m.columns.size(); ++c) {
      std::vector<double> per_seed;
      for (const RowValues& v : values[r]) per_seed.push_back(v[c]);
      row.ours.push_back(mean_std(per_seed));
    }
    if (base && *base != r) {
      std::vector<double> d;
      for (std::size_t s = 0; s < values[r].size() && s < values[*base].size(); ++s)
        d.push_back(row_delta_m(m.columns, values[r][s], values[*base][s]));
      row.delta = mean_std(d);
      row.paper_delta = row_delta_m(m.columns, m.rows[r].paper, m.rows[*base].paper);
    }
    t.rows.push_back(std::move(row));
  }
  return t;
}

namespace detail {

inline std::string fixed(double v, int digits = 1, bool sign = false) {
  if (!std::isfinite(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, sign ? "%+.*f" : "%.*f", digits, v);
  return buf;
}

inline std::string cell(const MeanStd& m, bool sign = false) {
  if (m.n == 0) return "—";
  std::string s = fixed(m.mean, 1, sign);
  if (m.n >= 2) s += " ± " + fixed(m.std, 1);
  return s;
}

inline std::string seed_list(const std::vector<std::uint64_t>& seeds) {
  std::string s;
  for (std::size_t i = 0; i < seeds.size(); ++i) s += (i ? ", " : "") + std::to_string(seeds[i]);
  return s;
}

}  // namespace detail

/// The line that states the Delta_m convention, printed under every table.
inline std::string delta_convention(const Manifest& m) {
  return describe(delta_options()) + "; over the table's columns, against the '" + m.baseline +
         "' row: ours per seed against the same seed's row, then mean ± std; the paper's against "
         "the paper's row";
}

/// The table in Markdown: the paper's layout, each cell "ours (paper)".
inline std::string markdown(const Table& t, const std::string& setup) {
  const Manifest& m = *t.manifest;
  std::ostringstream md;
  md << "### " << m.title << "\n\n"
     << "Each cell: ours, mean ± sample std over " << t.seeds.size() << " seed"
     << (t.seeds.size() == 1 ? "" : "s") << " (" << detail::seed_list(t.seeds) << "; " << setup
     << "), then (the paper's number). ↑ higher is better, ↓ lower is better.\n\n| Method |";
  for (const Column& c : m.columns) md << " " << c.name << (c.higher_is_better ? " ↑" : " ↓") << " |";
  if (!m.baseline.empty()) md << " Δm (%) ↑ |";
  md << "\n|---|";
  for (std::size_t c = 0; c < m.columns.size(); ++c) md << "---|";
  if (!m.baseline.empty()) md << "---|";
  md << "\n";
  for (const TableRow& r : t.rows) {
    md << "| " << r.label << " |";
    for (std::size_t c = 0; c < r.ours.size(); ++c) {
      md << " " << detail::cell(r.ours[c]);
      if (std::isfinite(r.paper[c])) md << " (" << detail::fixed(r.paper[c]) << ")";
      md << " |";
    }
    if (!m.baseline.empty()) {
      if (r.is_baseline)
        md << " baseline |";
      else
        md << " " << detail::cell(r.delta, true)
           << (std::isfinite(r.paper_delta) ? " (" + detail::fixed(r.paper_delta, 1, true) + ")"
                                            : "")
           << " |";
    }
    md << "\n";
  }
  if (!m.baseline.empty()) md << "\n" << delta_convention(m) << ".\n";
  return md.str();
}

/// The table as CSV, one line per (row, column): ours' mean, std and seed count, the paper's
/// number; Delta_m as the column "delta_m_percent".
inline std::string csv(const Table& t) {
  const Manifest& m = *t.manifest;
  std::ostringstream out;
  out << "table,method,task,column,higher_is_better,ours_mean,ours_std,seeds,paper\n";
  const auto line = [&](const TableRow& r, const std::string& task, const std::string& col,
                        bool higher, const MeanStd& ours, double paper) {
    out << m.id << ",\"" << r.label << "\"," << task << "," << col << ","
        << (higher ? "true" : "false") << "," << detail::fixed(ours.mean, 4) << ","
        << detail::fixed(ours.std, 4) << "," << ours.n << "," << detail::fixed(paper, 2) << "\n";
  };
  for (const TableRow& r : t.rows) {
    for (std::size_t c = 0; c < m.columns.size(); ++c)
      line(r, m.columns[c].task, m.columns[c].name, m.columns[c].higher_is_better, r.ours[c],
           r.paper[c]);
    if (!m.baseline.empty() && !r.is_baseline)
      line(r, "all", "delta_m_percent", true, r.delta, r.paper_delta);
  }
  return out.str();
}

/// A bar chart: one panel per column, in each one pair of bars per row (ours, filled, with a
/// whisker of ± std; the paper's, hollow).
inline io::Image8 bar_chart(const Table& t) {
  const Manifest& m = *t.manifest;
  constexpr int kScale = 2, kPanelW = 170, kPanelH = 220, kTop = 34, kBottom = 20, kLegend = 16;
  const int n_rows = static_cast<int>(t.rows.size());
  const int width = std::max(1, static_cast<int>(m.columns.size())) * kPanelW + 20;
  const int height = kTop + kPanelH + kBottom + kLegend * (n_rows + 1) + 10;
  viz::Canvas canvas(width, height);
  canvas.text(10, 8, m.id + ": OURS (FILLED, +- STD) VS PAPER (HOLLOW)", viz::kBlack, kScale);
  for (std::size_t c = 0; c < m.columns.size(); ++c) {
    const int x0 = 10 + static_cast<int>(c) * kPanelW, y_axis = kTop + kPanelH;
    double hi = 0.0;
    for (const TableRow& r : t.rows) {
      if (std::isfinite(r.ours[c].mean))
        hi = std::max(hi, r.ours[c].mean + (std::isfinite(r.ours[c].std) ? r.ours[c].std : 0.0));
      if (std::isfinite(r.paper[c])) hi = std::max(hi, r.paper[c]);
    }
    if (hi <= 0.0) hi = 1.0;
    const auto y_of = [&](double v) {
      return y_axis - static_cast<int>(std::lround(std::max(0.0, v) / hi * (kPanelH - 20)));
    };
    canvas.text(x0, kTop - 14, m.columns[c].name + (m.columns[c].higher_is_better ? " +" : " -"),
                viz::kBlack, kScale);
    canvas.line(x0, y_axis, x0 + kPanelW - 20, y_axis, viz::kBlack);
    canvas.text(x0, y_axis + 6, detail::fixed(hi, 1) + " MAX", viz::kBlack, 1);
    const int slot = (kPanelW - 24) / std::max(1, n_rows);
    const int bar = std::max(2, slot / 2 - 2);
    for (int r = 0; r < n_rows; ++r) {
      const TableRow& row = t.rows[static_cast<std::size_t>(r)];
      const viz::Rgb color = viz::series_color(static_cast<std::size_t>(r));
      const int x = x0 + 2 + r * slot;
      if (std::isfinite(row.ours[c].mean)) {
        const int y = y_of(row.ours[c].mean);
        canvas.fill_rect(x, y, bar, y_axis - y, color);
        if (std::isfinite(row.ours[c].std)) {
          const int xm = x + bar / 2;
          canvas.line(xm, y_of(row.ours[c].mean - row.ours[c].std), xm,
                      y_of(row.ours[c].mean + row.ours[c].std), viz::kBlack);
        }
      }
      if (std::isfinite(row.paper[c])) {
        const int y = y_of(row.paper[c]), xp = x + bar + 1;
        canvas.line(xp, y, xp + bar - 1, y, color);
        canvas.line(xp, y, xp, y_axis, color);
        canvas.line(xp + bar - 1, y, xp + bar - 1, y_axis, color);
      }
    }
  }
  for (int r = 0; r < n_rows; ++r) {
    const int y = kTop + kPanelH + kBottom + kLegend * r + 6;
    canvas.fill_rect(10, y, 12, 10, viz::series_color(static_cast<std::size_t>(r)));
    canvas.text(28, y, t.rows[static_cast<std::size_t>(r)].label, viz::kBlack, kScale);
  }
  return canvas.image();
}

}  // namespace nddr::campaign
