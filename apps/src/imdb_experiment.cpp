// nddr-imdb-wiki's driver, instantiated once for every method and backbone of kImdbTable (the
// nddr_apps library, apps/CMakeLists.txt).
#include "nddr_apps/imdb_experiment.hpp"

namespace nddr::experiments {

ExperimentResult run_imdb(const ImdbConfig& c, std::ostream& out) {
  validate_imdb(c);
  return with_backbone(kImdbTable, c.backbone, [&](auto backbone) {
    return run_imdb_with<typename decltype(backbone)::type>(c, out);
  });
}

}  // namespace nddr::experiments
