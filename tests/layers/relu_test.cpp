// ReLU op and layer: values, gradient (laws kit), shape errors.
#include <catch2/catch.hpp>

#include <nddr/nddr.hpp>
#include <nddr/testing/layer_laws.hpp>

#include <cmath>
#include <limits>

TEST_CASE("ReLU: forward values, accumulate backward, laws", "[ops][relu]") {
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Tensor<float> x(nddr::Shape::nchw(1, 1, 1, 4));
  x[0] = -2.f; x[1] = -0.f; x[2] = 0.5f; x[3] = 3.f;
  nddr::Tensor<float> y(x.shape()), dy(x.shape(), 1.f), dx(x.shape(), 10.f);
  nddr::ops::relu_forward(ctx, x.cview(), y.view());
  CHECK(y[0] == 0.f);
  CHECK(y[2] == 0.5f);
  nddr::Tensor<float> nan_in(nddr::Shape{1}, std::numeric_limits<float>::quiet_NaN()), nan_out(nddr::Shape{1});
  nddr::ops::relu_forward(ctx, nan_in.cview(), nan_out.view());
  CHECK(std::isnan(nan_out[0]));  // NaN propagates
  nddr::ops::relu_backward(ctx, x.cview(), dy.cview(), dx.view());
  CHECK(dx[0] == 10.f);
  CHECK(dx[3] == 11.f);
  nddr::Tensor<float> bad(nddr::Shape::nchw(1, 1, 1, 3));
  CHECK_THROWS_WITH(nddr::ops::relu_forward(ctx, x.cview(), bad.view()),
                    Catch::Contains("relu_forward") && Catch::Contains("(1, 1, 1, 3)"));
  nddr::ReLU<double> layer;
  auto r = nddr::testing::check_layer_laws(layer, nddr::Shape::nchw(2, 3, 4, 4));
  INFO(r.report);
  CHECK(r.ok);
}
