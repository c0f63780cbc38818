#pragma once
/// \file
/// Optional capabilities of a `Layer` that containers (`Sequential`) use to share activation
/// buffers. A layer declares them as static constexpr members:
///  - `static constexpr bool runs_in_place = true;`: `forward(ctx, x, y)` accepts a `y` that
///    views the same memory as `x` (the output shape equals the input shape), and `backward`
///    reads only `y` and `dy`, never `x`: after an in-place forward, `x` is `y`'s memory.
///  - `static constexpr bool backward_reads_output = false;`: `backward` never reads `y`, so the
///    layer after it may overwrite its output in place.
///  - `bool reads_output_in_backward() const`: the same answer when it depends on the layer's
///    options (BatchNorm2d reads y only with its fused ReLU); it takes precedence.
/// A layer that declares neither is treated conservatively: out of place, and its backward may
/// read its output.

#include <concepts>

namespace nddr {

/// True when layer `L` may run in place (see the file comment).
template <class L>
inline constexpr bool runs_in_place_v = requires { requires L::runs_in_place; };

/// False only when layer `L` declares that its backward never reads its output.
template <class L>
inline constexpr bool backward_reads_output_v = !requires { requires !L::backward_reads_output; };

/// Whether `layer`'s backward reads its output: its `reads_output_in_backward()` when it has
/// one, else `backward_reads_output_v`.
template <class L>
bool reads_output_in_backward(const L& layer) {
  if constexpr (requires {
                  { layer.reads_output_in_backward() } -> std::convertible_to<bool>;
                })
    return layer.reads_output_in_backward();
  else
    return backward_reads_output_v<L>;
}

}  // namespace nddr
