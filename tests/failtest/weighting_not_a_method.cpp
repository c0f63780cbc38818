// PATTERN: WeightingMethod<M>.*with M = NoState
// A user method without state()/set_state() cannot become an AnyWeighting: the constraint
// failure names the concept and the type.
#include <nddr/weighting/registry.hpp>

struct NoState : nddr::weighting::MethodBase {
  struct Options {
    void validate(const char*) const {}
  };
  static constexpr std::string_view kName = "nostate";
  const Options& options() const { return options_; }
  bool needs_gram() const { return false; }
  nddr::weighting::Combination combine(const nddr::weighting::StepInput&) { return {}; }
  std::string spec() const { return "nostate"; }
  Options options_;
};

int main() {
  nddr::weighting::AnyWeighting any(NoState{});
  (void)any;
}
