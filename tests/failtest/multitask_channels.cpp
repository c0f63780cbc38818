// PATTERN: K = 1. B0 = ThreeStageNet. B = WideNet.*nddr::MultiTask: a stage of this backbone has other output channels
// Fusing backbones whose stage widths differ names both types and says a fusion layer cannot join them.
#include "mini_specs.hpp"
#include <nddr/fusion/none.hpp>

using Bad = nddr::MultiTask<ThreeStageNet, WideNet, nddr::None>;
static_assert(Bad::tasks == 2);
int main() {}
