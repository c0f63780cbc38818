// Multi-task weighting methods (include/nddr/weighting/): every method's combined update against
// an independent implementation on explicit gradient vectors (tests/data/weighting.safetensors,
// tools/reference/weighting.py), the closed forms and hand-checked vectors of the fact sheet,
// UW's gradient by finite differences, one GradNorm update, exact resume mid-sequence, and the
// errors of the NAME:key=value parser.
#include <Eigen/Core>
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstddef>
#include <nddr/io/safetensors.hpp>
#include <nddr/weighting/weighting.hpp>
#include <string>
#include <variant>
#include <vector>

namespace {

namespace nw = nddr::weighting;
using Eigen::MatrixXd;
using Eigen::VectorXd;

const char* const kRefFile = NDDR_TEST_DATA_DIR "/weighting.safetensors";

const nddr::io::SafetensorsFile& reference() {
  static const nddr::io::SafetensorsFile f = nddr::io::SafetensorsFile::read(kRefFile);
  return f;
}

MatrixXd matrix(const std::string& name) {
  const auto& f = reference();
  const auto& shape = f.shape(name);
  const std::vector<double> v = f.values<double>(name);
  const Eigen::Index rows = shape.size() == 2 ? shape[0] : 1;
  const Eigen::Index cols = shape.empty() ? 1 : shape.back();
  return Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
      v.data(), rows, cols);
}

VectorXd vector(const std::string& name) {
  const std::vector<double> v = reference().values<double>(name);
  return Eigen::Map<const VectorXd>(v.data(), static_cast<Eigen::Index>(v.size()));
}

std::vector<double> to_std(const VectorXd& v) { return {v.data(), v.data() + v.size()}; }

/// max |a - b| / (1 + max |b|); infinity on a size mismatch.
double rel_error(const VectorXd& a, const VectorXd& b) {
  if (a.size() != b.size()) return INFINITY;
  return (a - b).cwiseAbs().maxCoeff() / (1.0 + b.cwiseAbs().maxCoeff());
}

VectorXd vec2(double a, double b) {
  VectorXd v(2);
  v << a, b;
  return v;
}

MatrixXd rows2(double a, double b, double c, double d) {
  MatrixXd g(2, 2);
  g << a, b, c, d;
  return g;
}

/// The shared update sum_k w_k g_k of `c`, clipped as the trainer will.
VectorXd shared_update(const MatrixXd& g, const nw::Combination& c) {
  VectorXd d = g.transpose() * c.shared;
  return d * nw::clip_factor(d.norm(), c.max_shared_norm);
}

/// One step of `method` on the gradients `g` (rows) with losses `losses`.
template <class M>
nw::Combination step(M& method, const MatrixXd& g, const std::vector<double>& losses) {
  const MatrixXd gram = nw::gram_matrix(g);
  return method.combine({losses, &gram});
}

/// Reference tolerance per method: exact algorithms (same arithmetic up to summation order) are
/// held to 1e-11; the iterative solvers to their stopping rules.
double tolerance(const std::string& spec) {
  if (spec.rfind("cagrad", 0) == 0) return 1e-7;  // SLSQP (ftol 1e-15) vs nddr's solver
  if (spec.rfind("nash", 0) == 0) return 1e-10;   // two exact fixed-point solvers
  if (spec.rfind("mgda", 0) == 0) return 1e-5;    // K >= 3: MOO's stop rule, L1 change < 1e-5
  return 1e-11;
}

}  // namespace

TEST_CASE("weighting: every method's update equals the independent reference") {
  const auto& f = reference();
  const int cases = std::stoi(f.metadata().at("cases"));
  const int methods = std::stoi(f.metadata().at("methods"));
  REQUIRE(cases >= 10);
  for (int j = 0; j < methods; ++j) {
    const std::string method = 'm' + std::to_string(j);
    const std::string spec = f.metadata().at(method);
    for (int i = 0; i < cases; ++i) {
      const std::string c = 'c' + std::to_string(i);
      const MatrixXd g = matrix(c + ".G");
      const std::vector<double> losses = to_std(vector(c + ".losses"));
      nw::AnyWeighting m = nw::make_weighting(spec, losses.size());
      const nw::Combination out = step(m, g, losses);
      INFO(spec << " on case " << i << " (K = " << g.rows() << ", P = " << g.cols() << ")");
      CHECK(rel_error(shared_update(g, out), vector(c + '.' + method + ".d")) < tolerance(spec));
      CHECK(rel_error(out.heads, vector(c + '.' + method + ".heads")) < tolerance(spec));
    }
  }
}

TEST_CASE("weighting: sequences equal the reference (DWA, RLW, PCGrad orders, GradNorm)") {
  SECTION("DWA over five epochs, K = 3, T = 2") {
    const MatrixXd hist = matrix("seq.dwa.history");
    const MatrixXd expected = matrix("seq.dwa.weights");
    nw::Dwa dwa(3);
    const std::vector<double> losses{1.0, 1.0, 1.0};
    for (Eigen::Index e = 0; e < expected.rows(); ++e) {
      INFO("epoch " << e);
      CHECK(rel_error(dwa.combine({losses}).shared, expected.row(e).transpose()) < 1e-14);
      if (e < hist.rows()) dwa.end_epoch(to_std(hist.row(e).transpose()));
    }
  }
  SECTION("RLW: five steps from seed 11") {
    const MatrixXd expected = matrix("seq.rlw.weights");
    nw::Rlw rlw(4, {.seed = 11});
    const std::vector<double> losses{1.0, 2.0, 3.0, 4.0};
    for (Eigen::Index s = 0; s < expected.rows(); ++s) {
      const nw::Combination c = rlw.combine({losses});
      CHECK(rel_error(c.shared, expected.row(s).transpose()) < 1e-14);
      CHECK(c.shared.sum() == Approx(1.0));
    }
  }
  SECTION("PCGrad: four steps from seed 5 draw fresh orders, K = 3") {
    const MatrixXd g = matrix("c7.G");
    const MatrixXd expected = matrix("seq.pcgrad.d");
    nw::PcGrad pc(3, {.seed = 5});
    for (Eigen::Index s = 0; s < expected.rows(); ++s)
      CHECK(rel_error(shared_update(g, step(pc, g, {1, 1, 1})), expected.row(s).transpose()) <
            1e-12);
  }
  SECTION("GradNorm (LibMTL form): three SGD steps of the logits, K = 3") {
    const MatrixXd g = matrix("c6.G");
    const MatrixXd losses = matrix("seq.gradnorm.losses");
    const MatrixXd weights = matrix("seq.gradnorm.weights");
    const MatrixXd grads = matrix("seq.gradnorm.grad");
    nw::GradNorm gn(3, {.alpha = 1.5});
    CHECK_FALSE(gn.needs_gram());  // epoch 0 is EW
    CHECK(gn.combine({to_std(losses.row(0).transpose())}).shared == VectorXd::Ones(3));
    gn.end_epoch(to_std(vector("seq.gradnorm.L0")));
    CHECK(gn.needs_gram());
    for (Eigen::Index s = 0; s < losses.rows(); ++s) {
      const nw::Combination c = step(gn, g, to_std(losses.row(s).transpose()));
      const Eigen::Map<const VectorXd> grad(gn.parameter_gradient().data(), 3);
      INFO("step " << s);
      CHECK(rel_error(c.shared, weights.row(s).transpose()) < 1e-7);  // z from FD gradients
      CHECK(rel_error(grad, grads.row(s).transpose()) < 1e-7);        // central differences
      for (int k = 0; k < 3; ++k) gn.parameters()[k] -= 0.1 * gn.parameter_gradient()[k];
      gn.after_parameter_update();
    }
  }
}

TEST_CASE("weighting: PCGrad closed form on two 2-D gradients with negative cosine") {
  const MatrixXd g = rows2(1, 0, -1, 1);  // g1.g2 = -1
  nw::PcGrad pc(2, {.eps = 0.0});
  const nw::Combination c = step(pc, g, {1, 1});
  // gpc1 = g1 + 0.5 g2 = (0.5, 0.5), gpc2 = g2 + g1 = (0, 1): weights (2, 1.5), d = (0.5, 1.5)
  CHECK(c.shared[0] == Approx(2.0).epsilon(1e-15));
  CHECK(c.shared[1] == Approx(1.5).epsilon(1e-15));
  CHECK(rel_error(shared_update(g, c), vec2(0.5, 1.5)) < 1e-15);
  CHECK(c.heads == VectorXd::Ones(2));
  nw::PcGrad mean(2, {.eps = 0.0, .mean = true});
  CHECK(rel_error(shared_update(g, step(mean, g, {1, 1})), vec2(0.25, 0.75)) < 1e-15);
  // no conflict: plain sum
  const MatrixXd h = rows2(1, 0, 1, 1);
  CHECK(rel_error(step(pc, h, {1, 1}).shared, VectorXd::Ones(2)) == 0.0);
}

TEST_CASE("weighting: two-task MGDA equals clip(((g2-g1).g2)/|g1-g2|^2, 0, 1)") {
  Eigen::Matrix<double, 2, 5> g;
  nddr::Rng rng(3);
  int interior = 0;
  for (int trial = 0; trial < 200; ++trial) {
    for (Eigen::Index i = 0; i < g.size(); ++i) g.data()[i] = rng.uniform(-1.0, 1.0);
    const VectorXd g1 = g.row(0), g2 = g.row(1);
    const double gamma = (g2 - g1).dot(g2) / (g1 - g2).squaredNorm();
    nw::Mgda mgda(2);
    const nw::Combination c = step(mgda, g, {1, 1});
    INFO("trial " << trial << " gamma " << gamma);
    if (gamma >= 1.0) {  // MOO's clips: 0.999 / 0.001, not 1 / 0
      CHECK(c.shared[0] == 0.999);
    } else if (gamma <= 0.0) {
      CHECK(c.shared[0] == Approx(0.001).epsilon(1e-15));
    } else {
      ++interior;
      CHECK(c.shared[0] == Approx(gamma).epsilon(1e-13));
      CHECK(c.shared[1] == Approx(1.0 - gamma).epsilon(1e-13));
      // the interior min-norm point has equal inner products with both gradients
      const VectorXd d = g.transpose() * c.shared;
      CHECK(d.dot(g1) == Approx(d.dot(g2)).margin(1e-12));
    }
  }
  CHECK(interior > 20);
  SECTION("the fact sheet's vectors") {
    nw::Mgda mgda(2);
    const nw::Combination c = step(mgda, rows2(1, 0, -1, 1), {1, 1});
    CHECK(c.shared[0] == Approx(0.6));
    CHECK(rel_error(shared_update(rows2(1, 0, -1, 1), c), vec2(0.2, 0.4)) < 1e-15);
    nw::Mgda l2(2, {.normalization = nw::MgdaOptions::Normalization::kL2});
    CHECK(rel_error(shared_update(rows2(1, 0, -1, 1), step(l2, rows2(1, 0, -1, 1), {1, 1})),
                    vec2(0.146447, 0.353553)) < 1e-6);
    const nw::Combination same_dir = step(mgda, rows2(1, 0, 2, 0), {1, 1});
    CHECK(same_dir.shared[0] == 0.999);
    CHECK(rel_error(shared_update(rows2(1, 0, 2, 0), same_dir), vec2(1.001, 0)) < 1e-15);
  }
  SECTION("K = 3: the Frank-Wolfe and projected-gradient solvers reach the same min-norm point") {
    MatrixXd g3(3, 4);
    for (Eigen::Index i = 0; i < g3.size(); ++i) g3.data()[i] = rng.uniform(-1.0, 1.0);
    nw::Mgda pg(3), fw(3, {.solver = nw::MinNormSolver::kFrankWolfe});
    const VectorXd a = shared_update(g3, step(pg, g3, {1, 1, 1}));
    const VectorXd b = shared_update(g3, step(fw, g3, {1, 1, 1}));
    CHECK(std::abs(a.squaredNorm() - b.squaredNorm()) < 1e-4);
  }
}

TEST_CASE("weighting: UW values, weights and the gradient w.r.t. log-variances") {
  SECTION("the fact sheet's vectors, L = 2") {
    nw::Uw reg0(1, {.init = 0.0});
    nw::Combination c = reg0.combine({std::vector<double>{2.0}});
    CHECK(c.loss == Approx(1.0).epsilon(1e-15));
    CHECK(c.shared[0] == Approx(0.5).epsilon(1e-15));
    CHECK(reg0.parameter_gradient()[0] == Approx(-0.5).epsilon(1e-15));
    nw::Uw libmtl(1);
    c = libmtl.combine({std::vector<double>{2.0}});
    CHECK(c.loss == Approx(1.398721).epsilon(1e-6));
    CHECK(c.shared[0] == Approx(0.824361).epsilon(1e-6));
    CHECK(libmtl.parameter_gradient()[0] == Approx(-1.148721).epsilon(1e-6));
    nw::Uw cls(1, {.init = 0.0, .classification = true});
    c = cls.combine({std::vector<double>{2.0}});
    CHECK(c.loss == Approx(2.0).epsilon(1e-15));
    CHECK(cls.parameter_gradient()[0] == Approx(-1.5).epsilon(1e-15));
  }
  SECTION("d objective / d s by central differences in double") {
    for (const bool classification : {false, true}) {
      nw::Uw uw(3, {.init = 0.3, .classification = classification});
      uw.parameters()[1] = -1.2;
      uw.parameters()[2] = 2.0;
      const std::vector<double> losses{0.7, 3.5, 0.01};
      (void)uw.combine({losses});
      const std::vector<double> grad(uw.parameter_gradient().begin(),
                                     uw.parameter_gradient().end());
      for (std::size_t k = 0; k < 3; ++k) {
        const double s = uw.parameters()[k], h = 1e-5;
        uw.parameters()[k] = s + h;
        const double up = uw.combine({losses}).loss;
        uw.parameters()[k] = s - h;
        const double down = uw.combine({losses}).loss;
        uw.parameters()[k] = s;
        INFO("task " << k << " classification " << classification);
        CHECK(grad[k] == Approx((up - down) / (2 * h)).epsilon(1e-8));
      }
    }
  }
}

TEST_CASE("weighting: DWA from a loss history") {
  nw::Dwa dwa(2);
  CHECK(dwa.weights() == VectorXd::Ones(2));
  dwa.end_epoch(std::vector<double>{1.0, 1.0});
  CHECK(dwa.weights() == VectorXd::Ones(2));  // epochs 0 and 1: weights 1
  dwa.end_epoch(std::vector<double>{0.8, 1.2});
  const nw::Combination c = dwa.combine({std::vector<double>{1.0, 1.0}});
  CHECK(c.shared[0] == Approx(0.900332).epsilon(1e-6));
  CHECK(c.shared[1] == Approx(1.099668).epsilon(1e-6));
  CHECK(c.heads == c.shared);
  SECTION("a zero epoch loss falls back to ratio 1 for that task") {
    nw::Dwa guarded(2);
    guarded.end_epoch(std::vector<double>{0.0, 1.0});
    guarded.end_epoch(std::vector<double>{0.5, 1.0});
    CHECK(guarded.weights().allFinite());
    CHECK(guarded.weights()[0] == Approx(1.0));
  }
}

TEST_CASE("weighting: GradNorm, one update on the fact sheet's problem") {
  // K = 2, alpha = 1.5, w = (1, 1), ||grad L_k|| = (2, 1), L(0) = (1, 1), L(t) = (0.5, 1).
  const MatrixXd g = rows2(2, 0, 0, 1);
  SECTION("paper form: dL_grad/dw = (2, -1); SGD lr 0.025 then renormalise") {
    nw::GradNorm gn(2, {.alpha = 1.5, .logits = false});
    gn.end_epoch(std::vector<double>{1.0, 1.0});
    const nw::Combination c = step(gn, g, {0.5, 1.0});
    CHECK(c.shared == VectorXd::Ones(2));
    CHECK(gn.parameter_gradient()[0] == 2.0);
    CHECK(gn.parameter_gradient()[1] == -1.0);
    for (int k = 0; k < 2; ++k) gn.parameters()[k] -= 0.025 * gn.parameter_gradient()[k];
    CHECK(gn.parameters()[0] == Approx(0.95));
    gn.after_parameter_update();
    CHECK(gn.parameters()[0] == Approx(0.962025).epsilon(1e-6));
    CHECK(gn.parameters()[1] == Approx(1.037975).epsilon(1e-6));
    CHECK(gn.weights().sum() == Approx(2.0));
  }
  SECTION("LibMTL form at z = 0: dL_grad/dz = (1.5, -1.5)") {
    nw::GradNorm gn(2);
    gn.end_epoch(std::vector<double>{1.0, 1.0});
    (void)step(gn, g, {0.5, 1.0});
    CHECK(gn.parameter_gradient()[0] == Approx(1.5));
    CHECK(gn.parameter_gradient()[1] == Approx(-1.5));
  }
  SECTION("step form takes L(0) from the first step") {
    nw::GradNorm gn(2, {.epoch_initial_loss = false});
    CHECK(gn.needs_gram());
    (void)step(gn, g, {1.0, 1.0});
    (void)step(gn, g, {0.5, 1.0});
    CHECK(gn.parameter_gradient()[0] == Approx(1.5));
  }
}

TEST_CASE("weighting: the fact sheet's vectors for CAGrad, IMTL-G, Aligned-MTL and Nash-MTL") {
  const MatrixXd conflict = rows2(1, 0, -1, 1);
  const MatrixXd orthogonal = rows2(1, 0, 0, 2);
  SECTION("CAGrad, c = 0.5") {
    const double kD[3][2] = {{0.25, 0.5}, {0.2, 0.4}, {1.0 / 6, 1.0 / 3}};
    for (int r = 0; r < 3; ++r) {
      nw::CaGrad ca(2, {.c = 0.5, .rescale = r});
      CHECK(rel_error(shared_update(conflict, step(ca, conflict, {1, 1})),
                      vec2(kD[r][0], kD[r][1])) < 1e-7);
    }
    nw::CaGrad ca(2);
    CHECK(rel_error(shared_update(orthogonal, step(ca, orthogonal, {1, 1})), vec2(0.847214, 0.8)) <
          1e-6);
    nw::CaGrad plain(2, {.c = 0.0});  // c = 0: the mean gradient
    CHECK(rel_error(shared_update(conflict, step(plain, conflict, {1, 1})), vec2(0, 0.5)) < 1e-7);
  }
  SECTION("IMTL-G: equal projections on the unit gradients") {
    nw::ImtlG imtl(2);
    const nw::Combination c = step(imtl, conflict, {1, 1});
    CHECK(c.shared[0] == Approx(2 - std::sqrt(2.0)).epsilon(1e-14));
    CHECK(c.shared[1] == Approx(std::sqrt(2.0) - 1).epsilon(1e-14));
    CHECK(rel_error(shared_update(conflict, c), vec2(0.171573, 0.414214)) < 1e-6);
  }
  SECTION("Aligned-MTL, min and rmse scales") {
    nw::AlignedMtl min_scale(2);
    const nw::Combination c = step(min_scale, conflict, {1, 1});
    CHECK(rel_error(c.shared, vec2(1.105573, 0.829180)) < 1e-6);
    CHECK(rel_error(shared_update(conflict, c), vec2(0.276393, 0.829180)) < 1e-6);
    nw::AlignedMtl rmse(2, {.scale = nw::AlignedMtlOptions::Scale::kRmse});
    CHECK(rel_error(step(rmse, conflict, {1, 1}).shared, vec2(2.190890, 1.643168)) < 1e-6);
    nw::AlignedMtl median(2, {.scale = nw::AlignedMtlOptions::Scale::kMedian});
    CHECK(step(median, conflict, {1, 1}).shared == c.shared);  // K = 2: median = min
  }
  SECTION("Nash-MTL: alpha = (1, 0.5) for orthogonal gradients") {
    nw::NashMtl nash(2, {.max_norm = 0.0});
    const nw::Combination c = step(nash, orthogonal, {1, 1});
    CHECK(rel_error(c.shared, vec2(1, 0.5)) < 1e-14);
    CHECK(c.heads == c.shared);  // weights on the losses
    CHECK(rel_error(shared_update(orthogonal, c), vec2(1, 1)) < 1e-14);
    nw::NashMtl clipped(2);
    const nw::Combination cc = step(clipped, orthogonal, {1, 1});
    CHECK(cc.max_shared_norm == 1.0);
    CHECK(shared_update(orthogonal, cc).norm() == Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("weighting: saving the state mid-sequence and resuming equals the uninterrupted run") {
  constexpr std::size_t kTasks = 3;
  const char* const specs[] = {"ew",
                               "dwa",
                               "uw",
                               "gradnorm",
                               "gradnorm:param=weights,initial=step",
                               "rlw:seed=9",
                               "mgda",
                               "pcgrad:seed=4",
                               "cagrad",
                               "imtl",
                               "aligned",
                               "nash:update_every=2"};
  for (const char* spec : specs) {
    INFO(spec);
    // A stream of inputs: Gram matrices of random gradients and losses.
    nddr::Rng rng(17);
    std::vector<MatrixXd> grams;
    std::vector<std::vector<double>> losses;
    for (int s = 0; s < 12; ++s) {
      MatrixXd g(kTasks, 6);
      for (Eigen::Index i = 0; i < g.size(); ++i) g.data()[i] = rng.uniform(-1.0, 1.0);
      grams.push_back(nw::gram_matrix(g));
      losses.push_back({rng.uniform(0.1, 2.0), rng.uniform(0.1, 2.0), rng.uniform(0.1, 2.0)});
    }
    // One training step as a trainer would drive it: combine, step the method's own
    // parameters, every third step end an epoch.
    const auto run = [&](nw::AnyWeighting& m, int s) {
      const nw::Combination c = m.combine({losses[s], m.needs_gram() ? &grams[s] : nullptr});
      for (std::size_t k = 0; k < m.parameters().size(); ++k)
        m.parameters()[k] -= 0.05 * m.parameter_gradient()[k];
      m.after_parameter_update();
      if (s % 3 == 2) m.end_epoch(losses[s]);
      return to_std(c.shared);
    };
    nw::AnyWeighting straight = nw::make_weighting(spec, kTasks);
    std::vector<std::vector<double>> expected;
    for (int s = 0; s < 12; ++s) expected.push_back(run(straight, s));
    nw::AnyWeighting first = nw::make_weighting(spec, kTasks);
    for (int s = 0; s < 7; ++s) (void)run(first, s);
    const nw::MethodState saved = first.state();
    nw::AnyWeighting resumed = nw::make_weighting(spec, kTasks);
    resumed.set_state(saved);
    CHECK(resumed.state() == saved);
    for (int s = 7; s < 12; ++s) CHECK(run(resumed, s) == expected[static_cast<std::size_t>(s)]);
  }
}

TEST_CASE("weighting: the gradient methods' weights do not depend on the gradients' scale") {
  // Scaling every g_k by s scales M by s^2; MGDA, PCGrad (eps 0), IMTL-G, Aligned-MTL and
  // CAGrad (up to its 1e-8 terms) give the same weights, Nash-MTL's scale by 1/s. This holds the
  // solvers' stopping rules to relative, not absolute, tolerances.
  nddr::Rng rng(23);
  MatrixXd g(4, 9);
  for (Eigen::Index i = 0; i < g.size(); ++i) g.data()[i] = rng.uniform(-1.0, 1.0);
  g.row(1) -= 0.8 * g.row(0);
  const std::vector<double> losses{1, 1, 1, 1};
  for (const double s : {1e-3, 1e3}) {
    for (const char* spec : {"mgda", "mgda:solver=fw", "pcgrad:eps=0", "imtl", "aligned", "cagrad",
                             "nash:max_norm=0"}) {
      INFO(spec << " at scale " << s);
      const bool cagrad = std::string(spec) == "cagrad";
      if (cagrad && s < 1.0) continue;  // the 1e-8 terms are not negligible against s^2 M
      nw::AnyWeighting a = nw::make_weighting(spec, 4), b = nw::make_weighting(spec, 4);
      VectorXd wa = step(a, g, losses).shared, wb = step(b, MatrixXd(s * g), losses).shared;
      if (std::string(spec).rfind("nash", 0) == 0) wb *= s;
      CHECK(rel_error(wb, wa) < (cagrad ? 1e-7 : 1e-9));
    }
  }
}

TEST_CASE("weighting: zero task gradients give finite weights or a ValueError, never NaN") {
  MatrixXd one_zero_rows(3, 4);
  one_zero_rows << 1, 2, -1, 0.5, 0, 0, 0, 0, -1, 0.5, 1, 2;
  const MatrixXd one_zero = one_zero_rows;
  const MatrixXd all_zero = MatrixXd::Zero(3, 4);
  const std::vector<double> losses{1, 2, 3};
  for (const char* spec : {"gradnorm:initial=step", "mgda", "mgda:norm=l2", "mgda:solver=fw",
                           "pcgrad", "cagrad", "imtl", "aligned", "nash"}) {
    for (const MatrixXd* g : {&one_zero, &all_zero}) {
      INFO(spec << (g == &all_zero ? " with all gradients zero" : " with g_2 = 0"));
      nw::AnyWeighting m = nw::make_weighting(spec, 3);
      try {
        const nw::Combination c = step(m, *g, losses);
        CHECK(c.shared.allFinite());
        CHECK(c.heads.allFinite());
        CHECK(shared_update(*g, c).allFinite());
      } catch (const nddr::ValueError& e) {
        CHECK_THAT(e.what(), Catch::Matchers::Contains("imtl"));  // the only one that refuses
      }
    }
  }
  SECTION("Nash-MTL keeps the previous weights when no bargaining solution exists") {
    nw::NashMtl nash(3);
    CHECK(step(nash, one_zero, losses).shared == VectorXd::Ones(3));
  }
}

TEST_CASE("weighting: MethodState as checkpoint text round-trips exactly") {
  const nw::MethodState s{{0.1, -2.5e-300, 1.0 / 3.0, 12345678.0, 0.0}, {42, 7}};
  const std::string text = nw::state_to_text(s);
  CHECK(text.rfind("42 7 0.1 ", 0) == 0);
  CHECK(nw::state_from_text(text) == s);
  CHECK(nw::state_from_text("0 0").values.empty());
  CHECK_THROWS_AS(nw::state_from_text("1 2 x"), nddr::ValueError);
  CHECK_THROWS_AS(nw::state_from_text("1"), nddr::ValueError);
  CHECK_THROWS_AS(nw::state_from_text("1  2"), nddr::ValueError);
}

TEST_CASE("weighting: names, options and errors of the registry") {
  SECTION("spec() round-trips through make_weighting for every method") {
    std::string names = nw::weighting_names();
    CHECK(names == "ew, dwa, uw, gradnorm, rlw, mgda, pcgrad, cagrad, imtl, aligned, nash");
    std::size_t pos = 0;
    while (pos < names.size()) {
      const std::size_t end = std::min(names.find(", ", pos), names.size());
      const std::string name = names.substr(pos, end - pos);
      const nw::AnyWeighting m = nw::make_weighting(name, 2);
      CHECK(m.name() == name);
      CHECK(nw::make_weighting(m.spec(), 2).spec() == m.spec());
      pos = end + 2;
    }
  }
  SECTION("options reach the method") {
    const nw::AnyWeighting m = nw::make_weighting("cagrad:c=0.4,rescale=2", 3);
    const auto* ca = std::get_if<nw::CaGrad>(&m.variant());
    REQUIRE(ca != nullptr);
    CHECK(ca->options().c == 0.4);
    CHECK(ca->options().rescale == 2);
    CHECK(m.spec() == "cagrad:c=0.4,rescale=2");
  }
  const auto message = [](const std::string& spec) {
    try {
      (void)nw::make_weighting(spec, 2, "--weighting");
    } catch (const nddr::OptionError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  using Catch::Matchers::Contains;
  CHECK_THAT(message("cagard"), Contains("--weighting") && Contains("'cagard'") &&
                                    Contains("ew, dwa, uw, gradnorm, rlw, mgda, pcgrad, cagrad"));
  CHECK_THAT(message("cagrad:x=1"),
             Contains("--weighting") && Contains("'x'") && Contains("valid options: c, rescale"));
  CHECK_THAT(message("cagrad:c=abc"), Contains("cagrad:c=abc") && Contains("not a finite number"));
  CHECK_THAT(message("cagrad:c=-1"), Contains("c=-1") && Contains("must be in [0"));
  CHECK_THAT(message("cagrad:c"), Contains("'c' is not key=value"));
  // An empty item: a trailing ',' or ':', or two ',' in a row.
  for (const char* spec : {"cagrad:c=0.4,", "cagrad:", "cagrad:c=0.4,,rescale=1", "mgda:,"}) {
    INFO(spec);
    CHECK_THAT(message(spec), Contains("--weighting: ") && Contains("an empty key=value item"));
  }
  CHECK_THAT(message("cagrad:rescale=3"), Contains("is not one of 0, 1, 2"));
  CHECK_THAT(message("mgda:norm=l3"), Contains("'l3' is not one of none, l2, loss, loss+"));
  CHECK_THAT(message("dwa:T=0"), Contains("dwa:T=0") && Contains("must be in"));
  CHECK_THAT(message("nash:update_every=0"), Contains("must be >= 1"));
  CHECK_THAT(message("imtl:eps=1"), Contains("valid options: (none)"));
  CHECK_THAT(message("ew:reduction=avg"), Contains("'avg' is not one of sum, mean"));
}

TEST_CASE("weighting: bad inputs are refused") {
  nw::Mgda mgda(2);
  const std::vector<double> losses{1.0, 2.0};
  CHECK_THROWS_AS(mgda.combine({losses}), nddr::ValueError);  // no Gram matrix
  const MatrixXd wrong = MatrixXd::Identity(3, 3);
  CHECK_THROWS_AS(mgda.combine({losses, &wrong}), nddr::ShapeError);
  nw::Ew ew(3);
  CHECK_THROWS_AS(ew.combine({losses}), nddr::ShapeError);  // 2 losses for 3 tasks
  const std::vector<double> nan{1.0, NAN};
  CHECK_THROWS_AS(nw::Ew(2).combine({nan}), nddr::ValueError);
  nw::Dwa dwa(2);
  CHECK_THROWS_AS(dwa.set_state(nw::MethodState{{1.0, 2.0}, {}}), nddr::ValueError);
  CHECK_THROWS_AS(nw::Dwa(2, {.temperature = 0.0}), nddr::OptionError);
  CHECK_THROWS_AS(nw::make_weighting("ew", 0), nddr::OptionError);
}
