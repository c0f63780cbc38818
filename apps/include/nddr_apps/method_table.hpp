#pragma once
/// \file
/// The compile-time method table of an experiment program: every `--method` value and every
/// `--backbone` value is one entry of a `ProgramTable`, and the program generates from it the
/// `--method` / `--backbone` choices of its command line, the "must be ..." messages, the table
/// labels, the `--loss-scales` rules and the dispatch from the names to
/// `run_spec<MultiTask<B, ..., F>, Tasks<...>>`. Adding a method is adding one line to a table.
///
/// - `Method<TaskList, Fusion>{name, label, loss_scales, slot}`: trains `TaskList` on one column
///   of the program's backbone per task, joined by `Fusion` (`None` for one column, or
///   `AllShared`: every stage shared, `Shared<stage_count_v<B>>`, whatever the backbone);
///   `loss_scales` are its default `--loss-scales`, one per task; `slot` is, for a single-task
///   method of a program whose single-task methods also take the full list, the position of its
///   own task in that list.
/// - `BackboneChoice<B>{name}`: `--backbone name` trains on backbone spec `B`.
/// - `make_program_table(methods, backbones, full_scales)`: two `boost::hana` tuples and the
///   task names of the full `--loss-scales` list ("seg,normal": a single-task method also takes
///   that list and uses entry `slot`), or "" (a method takes exactly one value per task).
///
/// Laws, for a table `t` and each method `m` of it with K tasks:
///   with_method(t, m.name, f) == f(m);   method_info(t, m.name).label == m.label;
///   loss_weights_of(m, {}) == m.loss_scales;  loss_weights_of(m, s) == s when |s| == K;
///   loss_weights_of(m, s) == {s[m.slot]} when K == 1 and |s| is the full list's length.
///
/// Example (nddr-nyuv2's table, nyuv2_experiment.hpp):
///   inline constexpr auto kNyuV2Table = make_program_table(
///       boost::hana::make_tuple(
///           Method<Tasks<NyuSeg>, None>{"st-seg", "Single-task (seg)", {1.0}, 0},
///           Method<Tasks<NyuSeg, SurfaceNormal>, NDDR>{"nddr", "NDDR (ours)", {1.0, 20.0}}),
///       boost::hana::make_tuple(BackboneChoice<VGG16>{"vgg16"}, BackboneChoice<TinyNet>{"tiny"}),
///       "seg,normal");
///   static_assert(names_unique(kNyuV2Table) && slots_in_range(kNyuV2Table));

#include <boost/hana.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "nddr/concepts/backbone.hpp"
#include "nddr/core/error.hpp"
#include "nddr/fusion/none.hpp"
#include "nddr/multitask/multitask.hpp"
#include "nddr/train/experiment.hpp"

namespace nddr::experiments {

/// The fusion tag of the split multi-task baseline: every stage of the backbone shared
/// (`Shared<stage_count_v<B>>`), task-specific heads.
struct AllShared {};

/// The fusion spec `F` on backbone `B` (`AllShared` resolved).
template <class F, class B>
using fusion_on_t =
    std::conditional_t<std::is_same_v<F, AllShared>, Shared<stage_count_v<B>>, F>;

namespace detail {

template <class Seq, class B, class F>
struct columns_of;
template <std::size_t... I, class B, class F>
struct columns_of<std::index_sequence<I...>, B, F> {
  template <std::size_t>
  using column = B;
  using type = MultiTask<column<I>..., F>;
};

template <class TaskList>
inline constexpr bool is_task_list_v = false;
template <class... X>
inline constexpr bool is_task_list_v<Tasks<X...>> = sizeof...(X) >= 1;

}  // namespace detail

/// One `--method`: see the file comment.
template <class TaskList, class Fusion>
struct Method {
  static_assert(detail::is_task_list_v<TaskList>,
                "nddr::experiments::Method: the first argument must be Tasks<X...> with at least "
                "one task; fix: Method<Tasks<Segmentation<40>, SurfaceNormal>, NDDR>");
  static_assert(TaskList::size > 1 || std::is_same_v<Fusion, None>,
                "nddr::experiments::Method: a single-task method has one column and nothing to "
                "fuse; fix: give it the fusion None");

  using tasks = TaskList;
  using fusion = Fusion;
  static constexpr std::size_t task_count = TaskList::size;

  std::string_view name;   ///< the `--method` value
  std::string_view label;  ///< the "Method" cell of the results table
  std::array<double, task_count> loss_scales{};  ///< default `--loss-scales`
  std::size_t slot = 0;  ///< single-task: its entry of the program's full `--loss-scales` list

  /// The network of this method: `task_count` columns of backbone `B`, joined by the fusion
  /// (wrapped in `Shortcut` with `shortcut`).
  template <class B, bool shortcut = false>
  using spec = typename detail::columns_of<
      std::make_index_sequence<task_count>, B,
      std::conditional_t<shortcut, Shortcut<fusion_on_t<Fusion, B>>, fusion_on_t<Fusion, B>>>::type;
};

/// `--backbone name` trains on backbone spec `B`.
template <class B>
struct BackboneChoice {
  using type = B;
  std::string_view name;
};

/// The methods and backbones of one program; see the file comment.
template <class Methods, class Backbones>
struct ProgramTable {
  Methods methods;      ///< a hana tuple of Method<...>
  Backbones backbones;  ///< a hana tuple of BackboneChoice<...>
  std::string_view full_scales;  ///< "seg,normal", or "": exactly one scale per task
};

template <class Methods, class Backbones>
constexpr ProgramTable<Methods, Backbones> make_program_table(Methods methods, Backbones backbones,
                                                              std::string_view full_scales) {
  return {methods, backbones, full_scales};
}

template <class T>
inline constexpr bool is_program_table_v = false;
template <class Methods, class Backbones>
inline constexpr bool is_program_table_v<ProgramTable<Methods, Backbones>> = true;

/// A `ProgramTable` (what every function below that takes a table requires).
template <class T>
concept ProgramTableType = is_program_table_v<std::remove_cvref_t<T>>;

/// The names of a hana tuple of entries, in order.
template <class Entries>
constexpr auto entry_names(const Entries& entries) {
  return boost::hana::unpack(entries, [](const auto&... e) {
    return std::array<std::string_view, sizeof...(e)>{e.name...};
  });
}

/// True when no two methods and no two backbones of `t` share a name (`static_assert` it).
template <ProgramTableType Table>
constexpr bool names_unique(const Table& t) {
  const auto unique = [](auto names) {
    std::sort(names.begin(), names.end());
    return std::adjacent_find(names.begin(), names.end()) == names.end();
  };
  return unique(entry_names(t.methods)) && unique(entry_names(t.backbones));
}

/// The names of `entries` as `--flag` choices.
template <class Entries>
std::vector<std::string> choice_list(const Entries& entries) {
  const auto names = entry_names(entries);
  return {names.begin(), names.end()};
}

/// "a, b or c": the names of `entries` as a "must be ..." message says them.
template <class Entries>
std::string one_of_text(const Entries& entries) {
  const auto names = entry_names(entries);
  std::string text;
  for (std::size_t i = 0; i < names.size(); ++i)
    text += std::string(i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") +
            std::string(names[i]);
  return text;
}

/// Calls `f(entry)` with the entry of `entries` named `name` and returns its result; OptionError
/// `what name` when there is none (the program's validation has refused such names before).
template <class Entries, class F>
auto with_entry(const Entries& entries, std::string_view name, std::string_view what, F&& f) {
  using R = decltype(f(boost::hana::front(entries)));
  std::optional<R> result;
  boost::hana::for_each(entries, [&](const auto& e) {
    if (!result && e.name == name) result.emplace(f(e));
  });
  check<OptionError>(result.has_value(), what, " '", name, "' is not in the program's table");
  return std::move(*result);
}

/// `with_entry` over the methods of `t`.
template <ProgramTableType Table, class F>
auto with_method(const Table& t, std::string_view name, F&& f) {
  return with_entry(t.methods, name, "--method", std::forward<F>(f));
}

/// `with_entry` over the backbones of `t`: `f` gets the `BackboneChoice<B>`.
template <ProgramTableType Table, class F>
auto with_backbone(const Table& t, std::string_view name, F&& f) {
  return with_entry(t.backbones, name, "--backbone", std::forward<F>(f));
}

/// A method's run-time facts (the table entry without its types).
struct MethodInfo {
  std::string label;
  std::size_t task_count = 0;
};

/// The run-time facts of method `name` of `t`; nullopt when `t` has no such method.
template <ProgramTableType Table>
std::optional<MethodInfo> method_info(const Table& t, std::string_view name) {
  std::optional<MethodInfo> info;
  boost::hana::for_each(t.methods, [&](const auto& m) {
    if (!info && m.name == name) info = MethodInfo{std::string(m.label), m.task_count};
  });
  return info;
}

/// The number of values of the full `--loss-scales` list of `t` (0 when it has none).
template <ProgramTableType Table>
constexpr std::size_t full_scale_count(const Table& t) {
  return t.full_scales.empty()
             ? 0
             : 1 + static_cast<std::size_t>(
                       std::count(t.full_scales.begin(), t.full_scales.end(), ','));
}

/// True when every single-task method's `slot` is an entry of the full `--loss-scales` list of
/// `t` (0 when it has none; `static_assert` it).
template <ProgramTableType Table>
constexpr bool slots_in_range(const Table& t) {
  const std::size_t full = std::max<std::size_t>(1, full_scale_count(t));
  return boost::hana::unpack(t.methods, [full](const auto&... m) {
    return ((m.task_count > 1 || m.slot < full) && ...);
  });
}

/// The most `--loss-scales` values any method of `t` takes.
template <ProgramTableType Table>
constexpr std::size_t max_scale_count(const Table& t) {
  const std::size_t most_tasks = boost::hana::unpack(
      t.methods, [](const auto&... m) { return std::max({std::size_t{0}, m.task_count...}); });
  return std::max(most_tasks, full_scale_count(t));
}

/// The numbers of `--loss-scales` values a method with `task_count` tasks takes in `t`: one per
/// task, or the full list.
template <ProgramTableType Table>
std::vector<std::size_t> scale_counts(const Table& t, std::size_t task_count) {
  const std::size_t full = full_scale_count(t);
  if (full > task_count) return {task_count, full};
  return {task_count};
}

/// What `scale_counts` accepts, as the usage error says it: "2 values", "1 value",
/// "1 or 2 values (seg,normal)".
template <ProgramTableType Table>
std::string scale_counts_text(const Table& t, std::size_t task_count) {
  const std::size_t full = full_scale_count(t);
  if (full > task_count)
    return std::to_string(task_count) + " or " + std::to_string(full) + " values (" +
           std::string(t.full_scales) + ")";
  return std::to_string(task_count) + (task_count == 1 ? " value" : " values");
}

/// What `scale_counts` accepts, as the validation error says it: "2", "1 (or 2: seg,normal)".
template <ProgramTableType Table>
std::string scale_counts_count(const Table& t, std::size_t task_count) {
  const std::size_t full = full_scale_count(t);
  if (full > task_count)
    return std::to_string(task_count) + " (or " + std::to_string(full) + ": " +
           std::string(t.full_scales) + ")";
  return std::to_string(task_count);
}

/// The loss weights of method `m` for `--loss-scales s` (already checked against
/// `scale_counts`): its defaults when `s` is empty, `s` when it has one value per task, else the
/// method's own entry of the full list.
template <class M>
std::vector<double> loss_weights_of(const M& m, const std::vector<double>& s) {
  if (s.empty()) return {m.loss_scales.begin(), m.loss_scales.end()};
  if (s.size() == M::task_count) return s;
  return {s.at(m.slot)};
}

}  // namespace nddr::experiments
