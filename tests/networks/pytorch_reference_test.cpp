// The whole two-task NDDR-VGG16 network (segmentation 40 + normals 3) against an independent
// float64 PyTorch implementation (tools/reference/nddr_vgg16.py): outputs, both task losses, the
// input gradient, every parameter's gradient (sum, sum of squares, 8 samples) and the running
// statistics of BN layers after one training step. Both sides compute the 43.5M weights from
// the same closed form, so only the results are committed (docs/pytorch-reference.md).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nddr/backbones/vgg16.hpp>
#include <nddr/fusion/nddr.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/layers/dropout.hpp>
#include <nddr/multitask/network.hpp>
#include <nddr/tasks/tasks.hpp>

namespace {

using Net = nddr::Network<nddr::MultiTask<nddr::VGG16, nddr::VGG16, nddr::NDDR>, nddr::Cpu, double>;

constexpr std::int64_t kSamples = 8;
// 633 / 1024: the argument kStep * i + seed is exact, so FMA contraction cannot change it.
constexpr double kStep = 0.6181640625;

// The script's weight formula; see tools/reference/nddr_vgg16.py.
int seed_of(const std::string& name) {
  long s = 0;
  for (std::size_t j = 0; j < name.size(); ++j)
    s += static_cast<long>(j + 1) * static_cast<unsigned char>(name[j]);
  return static_cast<int>(s % 9973);
}

void set_formula_weights(nddr::ParameterStore<double>& store) {
  const auto& entries = store.parameters();
  for (std::size_t p = 0; p < entries.size(); ++p) {
    const auto& e = entries[p];
    auto v = store.value(nddr::ParamId{p});
    const double seed = seed_of(e.name);
    double scale = 0.1, shift = 0.0;  // BN beta, fc8 bias
    if (e.shape.rank() >= 2) {
      scale = std::sqrt(3.0 / static_cast<double>(e.shape.numel() / e.shape[0]));
    } else if (e.name.ends_with(".bn.weight")) {
      shift = 1.0;
    }
    for (std::int64_t i = 0; i < v.numel(); ++i)
      v[i] = shift + scale * std::sin(kStep * static_cast<double>(i) + seed);
  }
}

// max_i |a_i - b_i| / max_i |b_i|: the error relative to the tensor's magnitude.
double tensor_error(const double* a, const std::vector<double>& b) {
  double err = 0.0, mag = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    mag = std::max(mag, std::abs(b[i]));
  }
  return err / mag;
}

}  // namespace

TEST_CASE("NDDR-VGG16 matches an independent PyTorch implementation", "[networks][pytorch]") {
  const auto f = nddr::io::SafetensorsFile::read(NDDR_TEST_DATA_DIR "/nddr_vgg16.safetensors");

  Net net({40, 3});
  // The reference runs without dropout; p = 0 makes both Dropout layers exact copies.
  for (std::size_t k = 0; k < 2; ++k)
    for (const char* d : {"drop6", "drop7"})
      net.head(k).child<nddr::Dropout<double>>(d) = nddr::Dropout<double>(nddr::DropoutOptions{}.p(0.0));
  auto& store = net.parameters();
  set_formula_weights(store);

  // Same parameters, in the same order, with the same sizes as the script's.
  const auto numel = f.values<std::int64_t>("param_numel");
  REQUIRE(store.parameters().size() == numel.size());
  for (std::size_t p = 0; p < numel.size(); ++p) {
    const auto& e = store.parameters()[p];
    INFO(e.name);
    REQUIRE(f.contains("grad_sum." + e.name));
    REQUIRE(e.shape.numel() == numel[p]);
  }

  nddr::Context<nddr::Cpu> ctx;
  const nddr::Tensor<double> x = f.tensor<double>("x");  // (1, 3, 65, 65)
  const auto seg_target = f.tensor<std::int32_t>("seg_target");  // (1, 9, 9)
  const nddr::Tensor<double> normal_target = f.tensor<double>("normal_target");  // (1, 3, 9, 9)

  auto out = net.forward(ctx, x.cview());
  REQUIRE(out[0].shape() == nddr::Shape::nchw(1, 40, 9, 9));
  REQUIRE(out[1].shape() == nddr::Shape::nchw(1, 3, 9, 9));
  nddr::Tensor<double> d0(out[0].shape()), d1(out[1].shape());  // (1, K, 9, 9) zeroed
  const double loss0 =
      nddr::task_loss<nddr::Segmentation<40>>(ctx, out[0], seg_target.cview(), d0.view(), 1.0);
  const double loss1 =
      nddr::task_loss<nddr::SurfaceNormal>(ctx, out[1], normal_target.cview(), d1.view(), 20.0);
  nddr::Tensor<double> dx(x.shape());  // (1, 3, 65, 65) zeroed: backward accumulates
  const std::vector<nddr::TensorView<const double>> douts{d0.cview(), d1.cview()};
  net.backward(ctx, x.cview(), douts, dx.view());

  // Both sides are exact up to rounding, but this deep, randomly weighted BN-ReLU network
  // amplifies a 1e-15 relative weight perturbation to 1.5e-8 in its outputs (and more in the
  // gradients), so rounding alone gives the observed errors: <= 6e-9 for outputs, losses, dx and
  // running statistics, <= 6e-8 for gradient statistics. About 100x margin on each.
  constexpr double kTol = 5e-7;
  constexpr double kGradTol = 5e-6;

  const double out0_err = tensor_error(out[0].data(), f.values<double>("out0"));
  const double out1_err = tensor_error(out[1].data(), f.values<double>("out1"));
  const double dx_err = tensor_error(dx.data(), f.values<double>("dx"));
  const double loss0_ref = f.values<double>("loss0")[0];
  const double loss1_ref = f.values<double>("loss1")[0];
  const double loss0_err = std::abs(loss0 - loss0_ref) / std::abs(loss0_ref);
  const double loss1_err = std::abs(loss1 - loss1_ref) / std::abs(loss1_ref);
  CHECK(out0_err < kTol);
  CHECK(out1_err < kTol);
  CHECK(loss0_err < kTol);
  CHECK(loss1_err < kTol);
  CHECK(dx_err < kTol);

  // Gradients: the sum relative to its Cauchy-Schwarz bound sqrt(n * sum g^2), the sum of
  // squares relative to itself, samples relative to the gradient's RMS.
  double sum_err = 0.0, sq_err = 0.0, sample_err = 0.0;
  std::string worst_sum, worst_sq, worst_sample;
  for (std::size_t p = 0; p < store.parameters().size(); ++p) {
    const auto& e = store.parameters()[p];
    const auto g = store.grad(nddr::ParamId{p});
    const std::int64_t n = g.numel();
    double sum = 0.0, sq = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      sum += g[i];
      sq += g[i] * g[i];
    }
    const double sum_ref = f.values<double>("grad_sum." + e.name)[0];
    const double sq_ref = f.values<double>("grad_sq." + e.name)[0];
    const auto samples_ref = f.values<double>("grad_sample." + e.name);
    INFO(e.name);
    REQUIRE(sq_ref > 0.0);  // every parameter receives a gradient in this set-up
    const double rms = std::sqrt(sq_ref / static_cast<double>(n));
    const double es = std::abs(sum - sum_ref) / std::sqrt(static_cast<double>(n) * sq_ref);
    const double eq = std::abs(sq - sq_ref) / sq_ref;
    double ep = 0.0;
    for (std::int64_t k = 0; k < kSamples; ++k)
      ep = std::max(ep, std::abs(g[(k * 7919 + 13) % n] - samples_ref[k]) / rms);
    CHECK(es < kGradTol);
    CHECK(eq < kGradTol);
    CHECK(ep < kGradTol);
    if (es > sum_err) sum_err = es, worst_sum = e.name;
    if (eq > sq_err) sq_err = eq, worst_sq = e.name;
    if (ep > sample_err) sample_err = ep, worst_sample = e.name;
  }

  // Running statistics after one training forward (momentum 0.05, unbiased running variance).
  double running_err = 0.0;
  for (const char* bn : {"task0.stage1.conv1_1.bn", "fusion.stage5.task1.bn", "task1.head.fc7.bn"})
    for (const char* stat : {"running_mean", "running_var"}) {
      const std::string name = std::string(bn) + "." + stat;
      const auto id = store.find_buffer(name);
      INFO(name);
      REQUIRE(id.has_value());
      const double e = tensor_error(store.buffer(*id).data(), f.values<double>(std::string(stat) + "." + bn));
      CHECK(e < kTol);
      running_err = std::max(running_err, e);
    }

  // The largest errors, shown with -s (docs/pytorch-reference.md quotes them).
  CAPTURE(out0_err, out1_err, loss0_err, loss1_err, dx_err, sum_err, worst_sum, sq_err, worst_sq,
          sample_err, worst_sample, running_err);
  CHECK(std::max({out0_err, out1_err, loss0_err, loss1_err, dx_err, running_err}) < kTol);
  CHECK(std::max({sum_err, sq_err, sample_err}) < kGradTol);
}
