// PATTERN: K = 1. B0 = ThreeStageNet. B = TwoStageNet.*nddr::MultiTask: this backbone has a different number of stages
// Fusing backbones with different stage counts names the task index, both types and the fix.
#include "mini_specs.hpp"
#include <nddr/fusion/none.hpp>

using Bad = nddr::MultiTask<ThreeStageNet, TwoStageNet, nddr::None>;
static_assert(Bad::tasks == 2);
int main() {}
