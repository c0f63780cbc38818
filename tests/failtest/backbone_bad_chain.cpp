// PATTERN: B = BrokenChain.*nddr::Backbone: stage channels do not chain
// A backbone whose stages do not chain channels is rejected naming the type.
#include "mini_specs.hpp"

struct BrokenChain {
  static constexpr const char* name = "broken";
  static constexpr std::int64_t input_channels = 3;
  using stages = nddr::StageList<FtStage<3, 8, 2>, FtStage<16, 16, 2>>;
  using head = FtHead;
};
static_assert(nddr::concepts::require_backbone<BrokenChain>());
int main() {}
