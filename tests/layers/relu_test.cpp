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

TEST_CASE("ReLU layer runs in place: backward reads its mask from the output",
          "[ops][relu][in_place]") {
  nddr::Context<nddr::Cpu> ctx(2);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  nddr::Tensor<float> x(nddr::Shape{6});
  x[0] = -2.f; x[1] = -0.f; x[2] = 0.f; x[3] = 0.5f; x[4] = 3.f; x[5] = nan;
  nddr::Tensor<float> buf = x, dy(x.shape(), 1.f), expected(x.shape()), dx(x.shape());
  nddr::ops::relu_backward(ctx, x.cview(), dy.cview(), expected.view());
  nddr::ReLU<float> layer;
  layer.forward(ctx, buf.cview(), buf.view());  // y over x
  CHECK(buf[0] == 0.f);
  CHECK(buf[4] == 3.f);
  CHECK(std::isnan(buf[5]));  // NaN propagates in place too
  layer.backward(ctx, buf.cview(), buf.cview(), dy.cview(), dx.view());
  for (std::int64_t i = 0; i < x.numel(); ++i) CHECK(dx[i] == expected[i]);
}
