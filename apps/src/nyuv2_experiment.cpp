// nddr-nyuv2's driver, instantiated once for every method and backbone of kNyuV2Table (the
// nddr_apps library, apps/CMakeLists.txt).
#include "nddr_apps/nyuv2_experiment.hpp"

namespace nddr::experiments {

ExperimentResult run_nyuv2(const NyuV2Config& c, std::ostream& out) {
  validate_nyuv2(c);
  return with_backbone(kNyuV2Table, c.backbone, [&](auto backbone) {
    return run_nyuv2_with<typename decltype(backbone)::type>(c, out);
  });
}

}  // namespace nddr::experiments
