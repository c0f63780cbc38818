#pragma once
/// \file
/// The one table of network names of the programs that build a whole network by name
/// (`nddr-export`, `nddr-summary`, `nddr-forward`): `BACKBONE-METHOD[-shortcut]`, with
///   BACKBONE  tiny | vgg16 | resnet101 (each program says which it builds)
///   METHOD    st (single-task) | mt (split: every stage shared) | cross-stitch | sluice | nddr
///   -shortcut the Shortcut variant (paper Table 6; `nddr-export` only has nddr-shortcut).
/// Two tasks except `-st`. The networks are those of nddr-nyuv2's `--method` x `--backbone`
/// x `--shortcut` (nyuv2_experiment.hpp), without the task types.
///
/// Example:
///   const auto n = nddr::apps::parse_network_name("vgg16-nddr-shortcut", kAllBackbones, true);
///   nddr::apps::with_network_spec<nddr::VGG16, true>(*n, [](auto spec) {
///     using Spec = typename decltype(spec)::type;   // MultiTask<VGG16, VGG16, Shortcut<NDDR>>
///   });

#include <array>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "nddr/concepts/backbone.hpp"
#include "nddr/core/error.hpp"
#include "nddr/fusion/cross_stitch.hpp"
#include "nddr/fusion/nddr.hpp"
#include "nddr/fusion/none.hpp"
#include "nddr/fusion/sluice.hpp"
#include "nddr/multitask/multitask.hpp"

namespace nddr::apps {

inline constexpr std::array<std::string_view, 3> kAllBackbones = {"tiny", "vgg16", "resnet101"};
inline constexpr std::array<std::string_view, 5> kNetworkMethods = {"st", "mt", "cross-stitch",
                                                                    "sluice", "nddr"};

/// A parsed network name.
struct NetworkName {
  std::string backbone;  ///< one of kAllBackbones
  std::string method;    ///< one of kNetworkMethods
  bool shortcut = false;
  std::size_t tasks() const { return method == "st" ? 1 : 2; }
  std::string text() const { return backbone + "-" + method + (shortcut ? "-shortcut" : ""); }
};

/// Every name of `backbones` x kNetworkMethods, each also with "-shortcut" when
/// `every_shortcut` (else only nddr-shortcut), in table order.
inline std::vector<std::string> network_names(std::span<const std::string_view> backbones,
                                              bool every_shortcut) {
  std::vector<std::string> names;
  for (const auto b : backbones)
    for (const auto m : kNetworkMethods) {
      names.push_back(std::string(b) + "-" + std::string(m));
      if (every_shortcut || m == "nddr") names.push_back(names.back() + "-shortcut");
    }
  return names;
}

/// "BACKBONE-METHOD[-shortcut] (BACKBONE a|b; METHOD ...)": what a `--network` flag accepts.
inline std::string network_names_text(std::span<const std::string_view> backbones,
                                      bool every_shortcut) {
  std::string text = "BACKBONE-METHOD" + std::string(every_shortcut ? "[-shortcut]" : "") +
                     " (BACKBONE ";
  for (std::size_t i = 0; i < backbones.size(); ++i)
    text += (i ? "|" : "") + std::string(backbones[i]);
  text += "; METHOD ";
  for (std::size_t i = 0; i < kNetworkMethods.size(); ++i)
    text += (i ? "|" : "") + std::string(kNetworkMethods[i]);
  return text + (every_shortcut ? ")" : "|nddr-shortcut)");
}

/// The name `s` split into its parts; nullopt when it is not in `network_names(backbones,
/// every_shortcut)`.
inline std::optional<NetworkName> parse_network_name(std::string_view s,
                                                     std::span<const std::string_view> backbones,
                                                     bool every_shortcut) {
  for (const auto b : backbones)
    for (const auto m : kNetworkMethods)
      for (const bool sc : {false, true}) {
        if (sc && !every_shortcut && m != "nddr") continue;
        NetworkName n{std::string(b), std::string(m), sc};
        if (n.text() == s) return n;
      }
  return std::nullopt;
}

namespace detail {

template <class B, class F, bool Shortcut>
using network_spec_t = std::conditional_t<
    std::is_same_v<F, None>, MultiTask<B, std::conditional_t<Shortcut, nddr::Shortcut<F>, F>>,
    MultiTask<B, B, std::conditional_t<Shortcut, nddr::Shortcut<F>, F>>>;

}  // namespace detail

/// Calls `f(std::type_identity<Spec>{})` with the MultiTask spec of `n` on backbone `B`
/// (n.backbone names B; the caller dispatches on it) and returns its result. Without
/// `EveryShortcut` only nddr-shortcut is instantiated; another shortcut name is then an
/// OptionError (parse_network_name with every_shortcut = false refuses it before).
template <class B, bool EveryShortcut, class F>
decltype(auto) with_network_spec(const NetworkName& n, F&& f) {
  const auto pick = [&]<class Fusion>(std::type_identity<Fusion>) -> decltype(auto) {
    if (n.shortcut) {
      if constexpr (EveryShortcut || std::is_same_v<Fusion, NDDR>)
        return f(std::type_identity<detail::network_spec_t<B, Fusion, true>>{});
      else
        throw OptionError("nddr::apps::with_network_spec: no shortcut variant of '" + n.method +
                          "' in this program");
    }
    return f(std::type_identity<detail::network_spec_t<B, Fusion, false>>{});
  };
  if (n.method == "st") return pick(std::type_identity<None>{});
  if (n.method == "mt") return pick(std::type_identity<Shared<stage_count_v<B>>>{});
  if (n.method == "cross-stitch") return pick(std::type_identity<CrossStitch>{});
  if (n.method == "sluice") return pick(std::type_identity<Sluice>{});
  return pick(std::type_identity<NDDR>{});
}

}  // namespace nddr::apps
