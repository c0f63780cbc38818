// PATTERN: F = NoOptionsFusion.*nddr::FusionSpec: missing `using options
// A fusion spec without `using options = ...` is rejected by MultiTask naming the type.
#include <nddr/fusion/none.hpp>

#include "mini_specs.hpp"

struct NoOptionsFusion {
  static constexpr const char* name = "no_options";
  static constexpr std::size_t shared_stages = 0;
  static constexpr bool shortcut = false;
  template <class T, class D>
  using layer = nddr::IdentityFusion<T, D>;
};
using Bad = nddr::MultiTask<ThreeStageNet, ThreeStageNet, NoOptionsFusion>;
static_assert(Bad::tasks == 2);
int main() {}
