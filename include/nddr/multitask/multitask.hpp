#pragma once
/// \file
/// `MultiTask<B1, ..., BK, F>`: the compile-time description of a K-task network: one backbone
/// spec per task (heterogeneous backbones allowed where stage channels and strides match) and a
/// fusion spec F applied after every stage. `MultiTask<VGG16, VGG16, NDDR>` is NDDR-CNN;
/// `MultiTask<VGG16, None>` a single-task column; `MultiTask<VGG16, VGG16, Shared<5>>` the
/// split-style baseline; `Shortcut<F>` adds the NDDR-CNN-Shortcut fusion of all stage outputs;
/// `At<F, 3, 4, 5>` fuses after the listed stages only.
///
/// The spec is an empty struct: `Spec::tasks`, `Spec::stages`, `Spec::backbone<k>`,
/// `Spec::fusion`, `Spec::channels(s)`; every requirement is checked one backbone at a time with
/// a static_assert whose message starts "nddr::MultiTask:" and whose "required from" line names
/// the offending type.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "nddr/concepts/backbone.hpp"
#include "nddr/concepts/fusion_layer.hpp"

namespace nddr {

/// Wraps a fusion spec so that, per task, the fused outputs of all stages are resized to the last
/// stage's size, concatenated and reduced by a 1x1 conv + BN + ReLU (NDDR-CNN-Shortcut, paper §3.3).
template <class F>
struct Shortcut : F {
  static constexpr bool shortcut = true;
};

/// Wraps a fusion spec so that its layers follow only the listed stages (1-based, as in the
/// parameter names `fusion.stage3...`): `MultiTask<VGG16, VGG16, At<NDDR, 3, 4, 5>>` fuses after
/// stages 3, 4 and 5, and the columns run unfused through stages 1 and 2 (the paper's "which
/// layers to fuse" question). `At<NDDR>` fuses nowhere: two single-task columns. Composes with
/// `Shortcut`: `Shortcut<At<NDDR, 4, 5>>`.
template <class F, std::size_t... Stages>
struct At : F {
  static_assert(((Stages >= 1) && ...), "nddr::At: stages are numbered from 1");
  static_assert(F::shared_stages == 0,
                "nddr::At: choose fusion stages of a fusion spec without shared stages (Shared<S> "
                "already says where the columns join)");
  /// Whether a fusion layer follows stage `s` (0-based).
  static constexpr bool fused_at(std::size_t s) { return ((s + 1 == Stages) || ...); }
  /// The largest listed stage (0 for none): checked against the backbone's stage count.
  static constexpr std::size_t last_listed_stage = std::max({std::size_t{0}, Stages...});
};

namespace detail {

template <class... A>
struct last_of {
  using type = std::tuple_element_t<sizeof...(A) - 1, std::tuple<A...>>;
};

template <std::size_t... I, class Tuple>
auto drop_last_impl(std::index_sequence<I...>, Tuple*) -> std::tuple<std::tuple_element_t<I, Tuple>...>;
template <class... A>
using drop_last_t =
    decltype(drop_last_impl(std::make_index_sequence<sizeof...(A) - 1>{}, (std::tuple<A...>*)nullptr));

/// Checks backbone `B` (task `K`) against backbone `B0`; a failure's "required from" line shows
/// `check_task_backbone<K, B0, B>`, naming the task index and both types.
template <std::size_t K, class B0, class B>
constexpr bool check_task_backbone() {
  static_assert(concepts::require_backbone<B>(),
                "nddr::MultiTask: every argument but the last must model nddr::Backbone");
  if constexpr (concepts::Backbone<B> && concepts::Backbone<B0>) {
    static_assert(stage_count_v<B> == stage_count_v<B0>,
                  "nddr::MultiTask: this backbone has a different number of stages than task 0's; "
                  "fix: fuse backbones with the same stage count");
    if constexpr (stage_count_v<B> == stage_count_v<B0>) {
      constexpr bool same = []<std::size_t... S>(std::index_sequence<S...>) {
        return ((stage_t<B, S>::out_channels == stage_t<B0, S>::out_channels) && ...);
      }(std::make_index_sequence<stage_count_v<B>>{});
      static_assert(same,
                    "nddr::MultiTask: a stage of this backbone has other output channels than the "
                    "same stage of task 0's backbone, so a fusion layer cannot join them; fix: use "
                    "backbones whose stage widths match");
      constexpr bool strides = []<std::size_t... S>(std::index_sequence<S...>) {
        return ((stage_t<B, S>::stride == stage_t<B0, S>::stride) && ...);
      }(std::make_index_sequence<stage_count_v<B>>{});
      static_assert(strides,
                    "nddr::MultiTask: a stage of this backbone down-samples by another factor than "
                    "task 0's, so the feature maps to fuse differ in size");
    }
  }
  return true;
}

template <class F>
constexpr bool check_fusion_spec() {
  static_assert(concepts::FusionSpec<F>,
                "nddr::MultiTask: the last argument must be a fusion spec (nddr::NDDR, CrossStitch, "
                "Sluice, None, Shared<S> or Shortcut<...>)");
  if constexpr (!concepts::FusionSpec<F> && !concepts::Backbone<F>)
    concepts::require_fusion_spec<F>();  // says which member is missing
  return concepts::FusionSpec<F>;
}

/// `F::last_listed_stage` of an `At<F, ...>` spec, 0 for other specs.
template <class F>
constexpr std::size_t last_listed_stage_of() {
  if constexpr (requires { F::last_listed_stage; })
    return F::last_listed_stage;
  else
    return 0;
}

template <class Backbones, class F, class Seq>
struct check_all;
template <class... B, class F, std::size_t... K>
struct check_all<std::tuple<B...>, F, std::index_sequence<K...>> {
  using B0 = std::tuple_element_t<0, std::tuple<B...>>;
  static constexpr bool value = (check_task_backbone<K, B0, B>() && ...) && check_fusion_spec<F>();
};

}  // namespace detail

template <class... Args>
struct MultiTask {
  static_assert(sizeof...(Args) >= 2,
                "nddr::MultiTask: needs at least one backbone and a fusion spec, e.g. "
                "nddr::MultiTask<nddr::VGG16, nddr::VGG16, nddr::NDDR>");

  using backbones = detail::drop_last_t<Args...>;
  using fusion = typename detail::last_of<Args...>::type;
  static constexpr std::size_t tasks = sizeof...(Args) - 1;

  static_assert(
      detail::check_all<backbones, fusion, std::make_index_sequence<tasks>>::value);

  template <std::size_t K>
  using backbone = std::tuple_element_t<K, backbones>;
  static constexpr std::size_t stages = stage_count_v<backbone<0>>;
  static constexpr std::size_t shared_stages = fusion::shared_stages;
  static constexpr bool shortcut = fusion::shortcut;
  static_assert(shared_stages <= stages,
                "nddr::MultiTask: Shared<S> shares more stages than the backbones have");

  /// Whether a fusion layer follows stage `s` (0-based): every unshared stage, or the stages an
  /// `At<F, ...>` lists.
  static constexpr bool fused(std::size_t s) {
    if (s < shared_stages || s >= stages) return false;
    if constexpr (requires { fusion::fused_at(s); })
      return fusion::fused_at(s);
    else
      return true;
  }
  static_assert(detail::last_listed_stage_of<fusion>() <= stages,
                "nddr::MultiTask: At<F, ...> lists a stage beyond the backbones' stage count");

  /// Output channels of stage `s` (0-based), equal for every task.
  static constexpr std::int64_t channels(std::size_t s) {
    return []<std::size_t... S>(std::index_sequence<S...>, std::size_t i) {
      constexpr std::array<std::int64_t, sizeof...(S)> c{stage_t<backbone<0>, S>::out_channels...};
      return c[i];
    }(std::make_index_sequence<stages>{}, s);
  }
};

}  // namespace nddr
