#pragma once
/// \file
/// Optional capabilities of a `Layer` that containers (`Sequential`) use to share activation
/// buffers. A layer declares them as static constexpr members:
///  - `static constexpr bool runs_in_place = true;`: `forward(ctx, x, y)` accepts a `y` that
///    views the same memory as `x` (the output shape equals the input shape), and `backward`
///    reads only `y` and `dy`, never `x`: after an in-place forward, `x` is `y`'s memory.
///  - `static constexpr bool backward_reads_output = false;`: `backward` never reads `y`, so the
///    layer after it may overwrite its output in place.
/// A layer that declares neither is treated conservatively: out of place, and its backward may
/// read its output.

namespace nddr {

/// True when layer `L` may run in place (see the file comment).
template <class L>
inline constexpr bool runs_in_place_v = requires { requires L::runs_in_place; };

/// False only when layer `L` declares that its backward never reads its output.
template <class L>
inline constexpr bool backward_reads_output_v = !requires { requires !L::backward_reads_output; };

}  // namespace nddr
