// nddr-nyuv2 --backbone resnet101 (paper Table 5): run_nyuv2_with<ResNet101> for the six
// methods of kNyuV2Table on the CPU and, in a CUDA build, the GPU (no --shortcut: Table 5 has no
// shortcut rows). Its own translation unit of the nddr_apps library, so that it compiles in
// parallel with apps/src/nyuv2_experiment.cpp (nyuv2_experiment.hpp declares it extern).
#include "nddr_apps/nyuv2_experiment.hpp"

namespace nddr::experiments {

template ExperimentResult run_nyuv2_with<ResNet101>(NyuV2Config c, std::ostream& out);

}  // namespace nddr::experiments
