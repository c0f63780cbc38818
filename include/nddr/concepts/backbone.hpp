#pragma once
/// \file
/// Concept `Backbone`: the compile-time description of one task column: a flat list of stages
/// and the head that follows them.
///
/// Minimal complete definition (a stateless struct `B`):
///  - `static constexpr const char* name`;
///  - `static constexpr std::int64_t input_channels` (3 for RGB);
///  - `using stages = nddr::StageList<S1, ..., Sn>` with every `Si` a `Stage` and
///    `S(i+1)::in_channels == Si::out_channels`, `S1::in_channels == input_channels`;
///  - `using head = H`, a `Head`.
/// Helpers: `stage_count_v<B>`, `stage_t<B, i>` (0-based), `stage_channels_v<B, i>`.
/// Models: `VGG16`, `ResNet101`, `VGG16Classifier`, `TinyNet` in nddr/backbones/.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "nddr/concepts/head.hpp"
#include "nddr/concepts/stage.hpp"

namespace nddr {

/// A flat compile-time list of stage specs.
template <class... S>
struct StageList {
  static constexpr std::size_t size = sizeof...(S);
};

namespace detail {
template <class L>
struct is_stage_list : std::false_type {};
template <class... S>
struct is_stage_list<StageList<S...>> : std::true_type {};

template <class L>
struct stage_list_ok : std::false_type {};
template <class... S>
struct stage_list_ok<StageList<S...>> : std::bool_constant<(concepts::Stage<S> && ...)> {};

template <std::size_t I, class L>
struct stage_at;
template <std::size_t I, class... S>
struct stage_at<I, StageList<S...>> {
  using type = std::tuple_element_t<I, std::tuple<S...>>;
};

template <class In, class L>
struct chain_ok;
template <class In, class... S>
struct chain_ok<In, StageList<S...>> {
  static constexpr bool value = [] {
    std::int64_t c = In::value;
    return ((S::in_channels == std::exchange(c, S::out_channels)) && ...);
  }();
};
}  // namespace detail

namespace concepts {

template <class B>
concept Backbone = requires {
  { B::name } -> std::convertible_to<const char*>;
  { B::input_channels } -> std::convertible_to<std::int64_t>;
  typename B::stages;
  typename B::head;
} && nddr::detail::is_stage_list<typename B::stages>::value &&
    nddr::detail::stage_list_ok<typename B::stages>::value && (B::stages::size > 0) &&
    Head<typename B::head> &&
    nddr::detail::chain_ok<std::integral_constant<std::int64_t, B::input_channels>,
                     typename B::stages>::value;

/// Diagnoses why `B` is not a `Backbone`; the compiler's "required from" line names `B`.
template <class B>
constexpr bool require_backbone() {
  static_assert(requires {
    typename B::stages;
    typename B::head;
  }, "nddr::Backbone: missing `using stages = nddr::StageList<...>` or `using head = ...`");
  if constexpr (requires { typename B::stages; typename B::head; }) {
    static_assert(nddr::detail::is_stage_list<typename B::stages>::value,
                  "nddr::Backbone: `stages` must be nddr::StageList<S1, ..., Sn>");
    static_assert(nddr::detail::stage_list_ok<typename B::stages>::value,
                  "nddr::Backbone: every element of `stages` must model nddr::Stage; "
                  "diagnose one with nddr::concepts::require_stage<S>()");
    static_assert(Head<typename B::head>, "nddr::Backbone: `head` does not model nddr::Head");
    static_assert(requires { { B::input_channels } -> std::convertible_to<std::int64_t>; },
                  "nddr::Backbone: missing `static constexpr std::int64_t input_channels`");
    if constexpr (nddr::detail::stage_list_ok<typename B::stages>::value &&
                  requires { { B::input_channels } -> std::convertible_to<std::int64_t>; })
      static_assert(nddr::detail::chain_ok<std::integral_constant<std::int64_t, B::input_channels>,
                                     typename B::stages>::value,
                    "nddr::Backbone: stage channels do not chain (stage i+1's in_channels must "
                    "equal stage i's out_channels, the first must equal input_channels)");
  }
  return Backbone<B>;
}

}  // namespace concepts

template <class B>
inline constexpr std::size_t stage_count_v = B::stages::size;
template <class B, std::size_t I>
using stage_t = typename nddr::detail::stage_at<I, typename B::stages>::type;
template <class B, std::size_t I>
inline constexpr std::int64_t stage_channels_v = stage_t<B, I>::out_channels;

}  // namespace nddr
