// PATTERN: F = ThreeStageNet.*nddr::MultiTask: the last argument must be a fusion spec
// Forgetting the fusion spec is diagnosed with the offending type and the list of fusion specs.
#include "mini_specs.hpp"

using Bad = nddr::MultiTask<ThreeStageNet, ThreeStageNet>;
static_assert(Bad::tasks == 1);
int main() {}
