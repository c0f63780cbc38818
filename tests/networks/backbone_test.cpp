// Backbone specs: concepts, stage/head shapes, exact parameter counts and names, forward and
// backward passes on small inputs, Layer laws on the small building blocks.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nddr/backbones/resnet101.hpp>
#include <nddr/backbones/tiny.hpp>
#include <nddr/backbones/vgg16.hpp>
#include <nddr/backbones/vgg16_classifier.hpp>
#include <nddr/concepts/backbone.hpp>
#include <nddr/io/safetensors.hpp>
#include <nddr/io/weights.hpp>
#include <nddr/testing/layer_laws.hpp>

namespace {

using nddr::Shape;

static_assert(nddr::concepts::require_backbone<nddr::VGG16>());
static_assert(nddr::concepts::require_backbone<nddr::TinyNet>());
static_assert(nddr::concepts::require_backbone<nddr::TinyNet1>());
static_assert(nddr::concepts::require_backbone<nddr::VGG16Classifier>());
static_assert(nddr::concepts::require_backbone<nddr::ResNet101>());
static_assert(nddr::concepts::require_backbone<nddr::ResNetMini>());
static_assert(std::string_view(nddr::ResNet101::name) == "resnet101");
static_assert(nddr::stage_channels_v<nddr::ResNetMini, 4> == 128);
static_assert(nddr::concepts::Layer<nddr::Bottleneck<float>> && nddr::concepts::Layer<nddr::Aspp<double>>);
static_assert(nddr::concepts::Layer<nddr::SpatialLinear<float>>);
static_assert(nddr::stage_channels_v<nddr::ResNet101, 4> == 2048);
static_assert(nddr::concepts::Stage<nddr::VGG16::Stage1> && nddr::concepts::Stage<nddr::VGG16::Stage5>);
static_assert(nddr::concepts::Head<nddr::LargeFovHead> && nddr::concepts::Head<nddr::TinyHead>);
static_assert(nddr::stage_count_v<nddr::VGG16> == 5);
static_assert(nddr::stage_channels_v<nddr::VGG16, 2> == 256);
static_assert(nddr::stage_t<nddr::TinyNet1, 0>::in_channels == 1);
static_assert(nddr::concepts::Layer<nddr::OutputConv2d<float>>);

// Calls f(stage_index_0_based, Stage{}) for every stage of B.
template <class B, class F, std::size_t... I>
void for_each_stage_impl(F&& f, std::index_sequence<I...>) {
  (f(I, nddr::stage_t<B, I>{}), ...);
}
template <class B, class F>
void for_each_stage(F&& f) {
  for_each_stage_impl<B>(std::forward<F>(f), std::make_index_sequence<nddr::stage_count_v<B>>{});
}

// The (H, W) after each stage and after the head, from output_shape alone (no compute).
template <class B>
std::vector<Shape> column_shapes(Shape in, std::int64_t outputs) {
  std::vector<Shape> out;
  for_each_stage<B>([&](std::size_t, auto stage) {
    using S = decltype(stage);
    auto seq = S::template build<float, nddr::Cpu>();
    in = seq.output_shape(in);
    CHECK(in.c() == S::out_channels);
    out.push_back(in);
  });
  auto head = B::head::template build<float, nddr::Cpu>(in.c(), outputs);
  out.push_back(head.output_shape(in));
  return out;
}

struct Counts {
  std::int64_t trainable = 0;
  std::int64_t buffers = 0;
};

// Declares a whole column (stages under task0.stage{s}, head under task0.head) into `store`
// without allocating, so even the big backbones cost nothing to count.
template <class B, class T = float>
Counts declare_column(nddr::ParameterStore<T>& store, std::int64_t outputs) {
  std::int64_t channels = B::input_channels;
  for_each_stage<B>([&](std::size_t i, auto stage) {
    using S = decltype(stage);
    auto seq = S::template build<T, nddr::Cpu>();
    seq.declare(store, "task0.stage" + std::to_string(i + 1));
    channels = S::out_channels;
  });
  auto head = B::head::template build<T, nddr::Cpu>(channels, outputs);
  head.declare(store, "task0.head");
  return {store.parameter_count(), store.buffer_count()};
}

}  // namespace

TEST_CASE("VGG16: stage and head shapes", "[networks][backbones]") {
  auto s = column_shapes<nddr::VGG16>(Shape::nchw(2, 3, 321, 321), 40);
  REQUIRE(s.size() == 6);
  CHECK(s[0] == Shape::nchw(2, 64, 161, 161));
  CHECK(s[1] == Shape::nchw(2, 128, 81, 81));
  CHECK(s[2] == Shape::nchw(2, 256, 41, 41));
  CHECK(s[3] == Shape::nchw(2, 512, 41, 41));
  CHECK(s[4] == Shape::nchw(2, 512, 41, 41));
  CHECK(s[5] == Shape::nchw(2, 40, 41, 41));
  // NYUv2 frame (even sizes: TF SAME gives 240, not Caffe's 241).
  s = column_shapes<nddr::VGG16>(Shape::nchw(1, 3, 480, 640), 3);
  CHECK(s[0] == Shape::nchw(1, 64, 240, 320));
  CHECK(s[5] == Shape::nchw(1, 3, 60, 80));
  s = column_shapes<nddr::VGG16>(Shape::nchw(1, 3, 97, 130), 3);
  CHECK(s[0] == Shape::nchw(1, 64, 49, 65));
  CHECK(s[1] == Shape::nchw(1, 128, 25, 33));
  CHECK(s[2] == Shape::nchw(1, 256, 13, 17));
  CHECK(s[5] == Shape::nchw(1, 3, 13, 17));
  auto st1 = nddr::VGG16::Stage1::build<float, nddr::Cpu>();
  CHECK_THROWS_AS(st1.output_shape(Shape::nchw(1, 4, 9, 9)), nddr::ShapeError);
}

TEST_CASE("VGG16: exact parameter counts (paper-spec 9.3)", "[networks][backbones]") {
  {
    nddr::ParameterStore<float> store;
    auto c = declare_column<nddr::VGG16>(store, 40);
    CHECK(c.trainable == 20'531'176);
    CHECK(c.buffers == 12'544);
    std::int64_t kernels = 0;
    for (const auto& e : store.parameters())
      if (e.name.starts_with("task0.stage") && e.shape.rank() == 4) kernels += e.shape.numel();
    CHECK(kernels == 14'710'464);
  }
  nddr::ParameterStore<float> store;
  auto c = declare_column<nddr::VGG16>(store, 3);
  CHECK(c.trainable == 20'493'251);
  CHECK(c.buffers == 12'544);
}

TEST_CASE("VGG16: parameter names and groups", "[networks][backbones]") {
  nddr::ParameterStore<float> store;
  declare_column<nddr::VGG16>(store, 40);
  for (const char* n :
       {"task0.stage1.conv1_1.weight", "task0.stage1.conv1_1.bn.weight", "task0.stage1.conv1_2.bn.bias",
        "task0.stage3.conv3_3.weight", "task0.stage5.conv5_3.bn.weight", "task0.head.fc6.weight",
        "task0.head.fc6.bn.weight", "task0.head.fc7.weight", "task0.head.fc7.bn.bias",
        "task0.head.fc8.weight", "task0.head.fc8.bias"}) {
    INFO(n);
    CHECK(store.find(n).has_value());
  }
  CHECK(store.find_buffer("task0.stage5.conv5_1.bn.running_mean").has_value());
  CHECK(store.find_buffer("task0.head.fc7.bn.running_var").has_value());
  CHECK_FALSE(store.find("task0.stage1.conv1_1.bias").has_value());
  CHECK_FALSE(store.find("task0.head.fc6.bias").has_value());
  CHECK_FALSE(store.find("task0.stage1.conv1_3.weight").has_value());
  const auto& params = store.parameters();
  const auto& groups = store.groups();
  auto group_of = [&](const std::string& name) {
    return groups[params[store.find(name)->index].group].name;
  };
  CHECK(group_of("task0.head.fc8.weight") == "fc8.weight");
  CHECK(group_of("task0.head.fc8.bias") == "fc8.bias");
  CHECK(group_of("task0.head.fc7.weight") == "default");
  CHECK(group_of("task0.stage2.conv2_1.bn.weight") == "default");
  auto& fc8 = store.parameters()[store.find("task0.head.fc8.weight")->index];
  CHECK(fc8.shape == Shape::nchw(40, 1024, 1, 1));
  auto& fc6 = store.parameters()[store.find("task0.head.fc6.weight")->index];
  CHECK(fc6.shape == Shape::nchw(1024, 512, 3, 3));

  auto st5 = nddr::VGG16::Stage5::build<float, nddr::Cpu>();
  CHECK(st5.names() == std::vector<std::string>{"conv5_1", "conv5_1.bn", "conv5_2", "conv5_2.bn",
                                                "conv5_3", "conv5_3.bn", "pool5", "pool5a"});
  CHECK(st5.child<nddr::Conv2d<float>>("conv5_2").options().dilation_h == 2);
  CHECK(st5.child<nddr::BatchNorm2d<float>>("conv5_2.bn").options().relu());  // ReLU fused
  CHECK(st5.child<nddr::MaxPool2d<float>>("pool5").options().stride_h == 1);
  auto st2 = nddr::VGG16::Stage2::build<float, nddr::Cpu>();
  CHECK(st2.names().back() == "pool2");
  CHECK(st2.child<nddr::MaxPool2d<float>>("pool2").options().stride_h == 2);
  auto head = nddr::LargeFovHead::build<float, nddr::Cpu>(512, 40);
  CHECK(head.names() == std::vector<std::string>{"fc6", "fc6.bn", "drop6", "fc7", "fc7.bn", "drop7",
                                                 "fc8"});
  CHECK(head.child<nddr::Conv2d<float>>("fc6").options().dilation_h == 12);
  CHECK_THROWS_WITH((nddr::LargeFovHead::build<float, nddr::Cpu>(512, 0)),
                    Catch::Contains("OutputConv2d") && Catch::Contains("got 0"));
}

TEST_CASE("VGG16: one stage runs forward and backward on a small input", "[networks][backbones]") {
  nddr::Context<nddr::Cpu> ctx(2);
  auto st = nddr::VGG16::Stage2::build<float, nddr::Cpu>();
  nddr::ParameterStore<float> store;
  st.declare(store, "task0.stage2");
  store.allocate();
  nddr::Rng rng(3);
  st.initialize(rng);
  nddr::Tensor<float> x(Shape::nchw(2, 64, 9, 9));
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  nddr::Tensor<float> y(st.output_shape(x.shape()));
  REQUIRE(y.shape() == Shape::nchw(2, 128, 5, 5));
  st.forward(ctx, x.cview(), y.view());
  // Each channel of the last conv is batch-normalised then rectified and max-pooled: >= 0 and
  // not all zero.
  double sum = 0.0;
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    REQUIRE(y[i] >= 0.f);
    sum += y[i];
  }
  CHECK(sum > 0.0);
  nddr::Tensor<float> dy(y.shape(), 1.f), dx(x.shape());
  st.backward(ctx, x.cview(), y.cview(), dy.cview(), dx.view());
  double g = 0.0;
  for (std::int64_t i = 0; i < dx.numel(); ++i) g += std::abs(dx[i]);
  CHECK(std::isfinite(g));
}

TEST_CASE("TinyNet: shapes, counts, names", "[networks][backbones]") {
  auto s = column_shapes<nddr::TinyNet>(Shape::nchw(2, 3, 33, 33), 5);
  CHECK(s[0] == Shape::nchw(2, 8, 17, 17));
  CHECK(s[1] == Shape::nchw(2, 16, 9, 9));
  CHECK(s[2] == Shape::nchw(2, 32, 5, 5));
  CHECK(s[3] == Shape::nchw(2, 32, 5, 5));
  CHECK(s[4] == Shape::nchw(2, 32, 5, 5));
  CHECK(s[5] == Shape::nchw(2, 5, 5, 5));
  s = column_shapes<nddr::TinyNet1>(Shape::nchw(1, 1, 28, 28), 10);
  CHECK(s[2] == Shape::nchw(1, 32, 4, 4));
  CHECK(s[5] == Shape::nchw(1, 10, 4, 4));

  nddr::ParameterStore<float> store;
  auto c = declare_column<nddr::TinyNet>(store, 5);
  // kernels 3*8*9 + 8*16*9 + 16*32*9 + 2*32*32*9 + fc6 32*16*9 + fc8 16*5 + 5;
  // BN gamma/beta 2 * (8 + 16 + 32 + 32 + 32 + 16).
  const std::int64_t kernels = 216 + 1152 + 4608 + 2 * 9216 + 4608 + 80;
  CHECK(c.trainable == kernels + 5 + 2 * 136);
  CHECK(c.buffers == 2 * 136);
  for (const char* n : {"task0.stage1.conv1_1.weight", "task0.stage4.conv4_1.bn.bias",
                        "task0.head.fc6.weight", "task0.head.fc6.bn.weight", "task0.head.fc8.bias"}) {
    INFO(n);
    CHECK(store.find(n).has_value());
  }
  auto st = nddr::TinyNet::Stage3::build<float, nddr::Cpu>();
  CHECK(st.names() == std::vector<std::string>{"conv3_1", "conv3_1.bn", "pool3"});
  auto head = nddr::TinyHead::build<float, nddr::Cpu>(32, 5);
  CHECK(head.names() == std::vector<std::string>{"fc6", "fc6.bn", "drop6", "fc8"});
}

TEST_CASE("TinyNet: column + head forward and backward", "[networks][backbones]") {
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Sequential<double> net;
  for_each_stage<nddr::TinyNet>([&](std::size_t i, auto stage) {
    net.add("stage" + std::to_string(i + 1), decltype(stage)::template build<double, nddr::Cpu>());
  });
  net.add("head", nddr::TinyHead::build<double, nddr::Cpu>(32, 4));
  nddr::ParameterStore<double> store;
  net.declare(store, "task0");
  store.allocate();
  CHECK(store.find("task0.stage5.conv5_1.weight").has_value());
  nddr::Rng rng(11);
  net.initialize(rng);
  nddr::Tensor<double> x(Shape::nchw(2, 3, 19, 23));
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0);
  nddr::Tensor<double> y(net.output_shape(x.shape()));
  REQUIRE(y.shape() == Shape::nchw(2, 4, 3, 3));
  net.forward(ctx, x.cview(), y.view());
  nddr::Tensor<double> dy(y.shape(), 1.0), dx(x.shape());
  net.backward(ctx, x.cview(), y.cview(), dy.cview(), dx.view());
  // d(sum y)/d(fc8.bias) = number of output pixels per channel.
  auto db = store.grad(*store.find("task0.head.fc8.bias"));
  for (std::int64_t i = 0; i < db.numel(); ++i) CHECK(db[i] == Approx(2 * 3 * 3));
  double g = 0.0;
  for (std::int64_t i = 0; i < dx.numel(); ++i) g += std::abs(dx[i]);
  CHECK(std::isfinite(g));
  CHECK(g > 0.0);
  // Inference mode: dropout off, BN running statistics; deterministic.
  net.set_training(false);
  nddr::Tensor<double> y1(y.shape()), y2(y.shape());
  net.forward(ctx, x.cview(), y1.view());
  net.forward(ctx, x.cview(), y2.view());
  for (std::int64_t i = 0; i < y1.numel(); ++i) REQUIRE(y1[i] == y2[i]);
}

TEST_CASE("TinyNet: Layer laws on every stage and the head", "[networks][backbones]") {
  // Stages in training mode (BN with batch statistics); no stage is stochastic.
  for_each_stage<nddr::TinyNet>([&](std::size_t i, auto stage) {
    using S = decltype(stage);
    auto seq = S::template build<double, nddr::Cpu>();
    auto r = nddr::testing::check_layer_laws(seq, Shape::nchw(2, S::in_channels, 6, 5));
    INFO("stage " << i + 1 << "\n" << r.report);
    CHECK(r.ok);
  });
  // The head in inference mode, where dropout is the identity.
  auto head = nddr::TinyHead::build<double, nddr::Cpu>(4, 3);
  head.set_training(false);
  auto r = nddr::testing::check_layer_laws(head, Shape::nchw(2, 4, 5, 4));
  INFO(r.report);
  CHECK(r.ok);
  nddr::OutputConv2d<double> fc8(3, 2, 3, nddr::Conv2dOptions{}.same().dilation(2));
  r = nddr::testing::check_layer_laws(fc8, Shape::nchw(2, 3, 5, 6));
  INFO(r.report);
  CHECK(r.ok);
}

TEST_CASE("VGG16Classifier: shapes, exact counts, names, size check", "[networks][backbones]") {
  auto s = column_shapes<nddr::VGG16Classifier>(Shape::nchw(2, 3, 224, 224), 100);
  CHECK(s[0] == Shape::nchw(2, 64, 112, 112));
  CHECK(s[3] == Shape::nchw(2, 512, 14, 14));
  CHECK(s[4] == Shape::nchw(2, 512, 7, 7));
  CHECK(s[5] == Shape::nchw(2, 100, 1, 1));
  // Odd sizes follow TF SAME (ceil); the head then rejects anything but 7 x 7.
  auto st1 = nddr::VGG16Classifier::Stage1::build<float, nddr::Cpu>();
  CHECK(st1.output_shape(Shape::nchw(1, 3, 31, 30)) == Shape::nchw(1, 64, 16, 15));
  CHECK_THROWS_WITH(column_shapes<nddr::VGG16Classifier>(Shape::nchw(1, 3, 256, 256), 2),
                    Catch::Contains("(1, 512, 8, 8)") && Catch::Contains("224 x 224"));

  {
    nddr::ParameterStore<float> store;
    auto c = declare_column<nddr::VGG16Classifier>(store, 100);
    CHECK(c.trainable == 134'674'468);
    CHECK(c.buffers == 8'448);
    auto group_of = [&](const std::string& name) {
      return store.groups()[store.parameters()[store.find(name)->index].group].name;
    };
    CHECK(group_of("task0.head.fc8.weight") == "fc8.weight");
    CHECK(group_of("task0.head.fc8.bias") == "fc8.bias");
    CHECK(group_of("task0.head.fc6.weight") == "default");
    CHECK(store.parameters()[store.find("task0.head.fc6.weight")->index].shape ==
          Shape{4096, 25088});
    for (const char* n : {"task0.stage1.conv1_2.weight", "task0.stage5.conv5_3.bn.bias",
                          "task0.head.fc6.bias", "task0.head.fc7.weight"}) {
      INFO(n);
      CHECK(store.find(n).has_value());
    }
  }
  nddr::ParameterStore<float> store;
  CHECK(declare_column<nddr::VGG16Classifier>(store, 2).trainable == 134'272'962);
  auto head = nddr::VGG16ClassifierHead::build<float, nddr::Cpu>(512, 2);
  CHECK(head.names() == std::vector<std::string>{"fc6", "fc6.relu", "drop6", "fc7", "fc7.relu",
                                                 "drop7", "fc8"});
  auto st5 = nddr::VGG16Classifier::Stage5::build<float, nddr::Cpu>();
  CHECK(st5.names().back() == "pool5");
  CHECK(st5.child<nddr::MaxPool2d<float>>("pool5").options().kernel_h == 2);

  nddr::SpatialLinear<double> lin(2, 3, 2, 4, "needs a small image");
  auto r = nddr::testing::check_layer_laws(lin, Shape::nchw(3, 2, 3, 2));
  INFO(r.report);
  CHECK(r.ok);
  CHECK_THROWS_WITH(lin.output_shape(Shape::nchw(3, 2, 2, 3)),
                    Catch::Contains("(3, 2, 2, 3)") && Catch::Contains("needs a small image"));
}

TEST_CASE("ResNet101: shapes, exact counts, names", "[networks][backbones]") {
  auto s = column_shapes<nddr::ResNet101>(Shape::nchw(1, 3, 321, 321), 40);
  CHECK(s[0] == Shape::nchw(1, 64, 81, 81));
  CHECK(s[1] == Shape::nchw(1, 256, 81, 81));
  CHECK(s[2] == Shape::nchw(1, 512, 41, 41));
  CHECK(s[3] == Shape::nchw(1, 1024, 41, 41));
  CHECK(s[4] == Shape::nchw(1, 2048, 41, 41));
  CHECK(s[5] == Shape::nchw(1, 40, 41, 41));
  s = column_shapes<nddr::ResNet101>(Shape::nchw(1, 3, 480, 640), 3);
  CHECK(s[0] == Shape::nchw(1, 64, 120, 160));
  CHECK(s[5] == Shape::nchw(1, 3, 60, 80));

  // Checked against PyTorch (tools/reference/param_counts.py; torchvision's resnet101 without
  // fc has the same 42,500,160).
  nddr::ParameterStore<float> store;
  auto c = declare_column<nddr::ResNet101>(store, 40);
  CHECK(c.buffers == 105'344);
  CHECK(c.trainable == 42'500'160 + 4 * (2048 * 9 * 40 + 40));
  std::int64_t stages = 0;
  for (const auto& e : store.parameters())
    if (e.name.starts_with("task0.stage")) stages += e.shape.numel();
  CHECK(stages == 42'500'160);
  for (const char* n :
       {"task0.stage1.conv1.weight", "task0.stage1.conv1.bn.weight", "task0.stage2.res2.unit1.conv1.weight",
        "task0.stage2.res2.unit1.proj.weight", "task0.stage2.res2.unit1.proj.bn.bias",
        "task0.stage2.res2.unit3.conv3.bn.weight", "task0.stage3.res3.unit4.conv2.weight",
        "task0.stage4.res4.unit23.conv3.weight", "task0.stage5.res5.unit1.proj.weight",
        "task0.head.fc8.c0.weight", "task0.head.fc8.c3.bias"}) {
    INFO(n);
    CHECK(store.find(n).has_value());
  }
  CHECK_FALSE(store.find("task0.stage2.res2.unit2.proj.weight").has_value());
  CHECK_FALSE(store.find("task0.stage4.res4.unit24.conv1.weight").has_value());
  CHECK(store.groups()[store.parameters()[store.find("task0.head.fc8.c2.bias")->index].group].name ==
        "fc8.bias");
  CHECK(store.parameters()[store.find("task0.stage5.res5.unit2.conv2.weight")->index].shape ==
        Shape::nchw(512, 512, 3, 3));
  auto st4 = nddr::ResNet101::Stage4::build<float, nddr::Cpu>();
  CHECK(st4.size() == 23);
  CHECK(st4.child<nddr::Bottleneck<float>>("res4.unit1").has_projection());
  CHECK_FALSE(st4.child<nddr::Bottleneck<float>>("res4.unit2").has_projection());
}

TEST_CASE("ResNet101: Bottleneck and Aspp obey the Layer laws", "[networks][backbones]") {
  SECTION("projection, stride 2") {
    nddr::Bottleneck<double> b(3, 2, 6, 2, 1);
    REQUIRE(b.has_projection());
    CHECK(b.output_shape(Shape::nchw(2, 3, 7, 6)) == Shape::nchw(2, 6, 4, 3));
    auto r = nddr::testing::check_layer_laws(b, Shape::nchw(2, 3, 7, 6));
    INFO(r.report);
    CHECK(r.ok);
  }
  SECTION("identity shortcut, dilation 2") {
    nddr::Bottleneck<double> b(4, 2, 4, 1, 2);
    REQUIRE_FALSE(b.has_projection());
    auto r = nddr::testing::check_layer_laws(b, Shape::nchw(2, 4, 5, 5));
    INFO(r.report);
    CHECK(r.ok);
    CHECK_THROWS_WITH(b.output_shape(Shape::nchw(2, 3, 5, 5)),
                      Catch::Contains("Bottleneck") && Catch::Contains("(2, 3, 5, 5)"));
  }
  SECTION("identity shortcut adds the input") {
    // With every main-branch BN gamma and beta at 0 the unit is relu(x).
    nddr::Context<nddr::Cpu> ctx(1);
    nddr::Bottleneck<double> b(2, 1, 2);
    nddr::ParameterStore<double> store;
    b.declare(store, "u");
    store.allocate();
    nddr::Rng rng(1);
    b.initialize(rng);
    for (const char* n : {"u.conv3.bn.weight", "u.conv3.bn.bias"}) store.value(*store.find(n))[0] = 0.0;
    for (const char* n : {"u.conv3.bn.weight", "u.conv3.bn.bias"}) store.value(*store.find(n))[1] = 0.0;
    nddr::Tensor<double> x(Shape::nchw(1, 2, 2, 2)), y(x.shape());
    for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = i % 3 == 0 ? -1.0 - i : 0.5 * i;
    b.forward(ctx, x.cview(), y.view());
    for (std::int64_t i = 0; i < x.numel(); ++i) CHECK(y[i] == Approx(std::max(x[i], 0.0)));
  }
  SECTION("Aspp") {
    nddr::Aspp<double> a(3, 2, {1, 2, 3});
    auto r = nddr::testing::check_layer_laws(a, Shape::nchw(2, 3, 5, 4));
    INFO(r.report);
    CHECK(r.ok);
    CHECK(a.branches() == 3);
  }
  SECTION("Aspp sums its branches") {
    // Two branches with equal parameters give twice one OutputConv2d with those parameters.
    nddr::Context<nddr::Cpu> ctx(1);
    nddr::Aspp<double> a(2, 3, {2, 2});
    nddr::OutputConv2d<double> one(2, 3, 3, nddr::Conv2dOptions{}.same().dilation(2));
    nddr::ParameterStore<double> store;
    a.declare(store, "aspp");
    one.declare(store, "one");
    store.allocate();
    nddr::Rng rng(9);
    for (const char* p : {"weight", "bias"}) {
      auto c0 = store.value(*store.find(std::string("aspp.c0.") + p));
      auto c1 = store.value(*store.find(std::string("aspp.c1.") + p));
      auto o = store.value(*store.find(std::string("one.") + p));
      for (std::int64_t i = 0; i < c0.numel(); ++i) c0[i] = c1[i] = o[i] = rng.uniform(-1.0, 1.0);
    }
    nddr::Tensor<double> x(Shape::nchw(1, 2, 4, 5)), y(Shape::nchw(1, 3, 4, 5)), y1(y.shape());
    for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = rng.uniform(-1.0, 1.0);
    a.forward(ctx, x.cview(), y.view());
    one.forward(ctx, x.cview(), y1.view());
    for (std::int64_t i = 0; i < y.numel(); ++i) CHECK(y[i] == Approx(2.0 * y1[i]));
  }
}

TEST_CASE("ResNet101: the stem and one residual stage run forward and backward",
          "[networks][backbones]") {
  nddr::Context<nddr::Cpu> ctx(2);
  nddr::Sequential<float> net;
  net.add("stage1", nddr::ResNet101::Stage1::build<float, nddr::Cpu>());
  net.add("stage2", nddr::ResNet101::Stage2::build<float, nddr::Cpu>());
  nddr::ParameterStore<float> store;
  net.declare(store, "task0");
  store.allocate();
  nddr::Rng rng(5);
  net.initialize(rng);
  nddr::Tensor<float> x(Shape::nchw(2, 3, 17, 15));
  for (std::int64_t i = 0; i < x.numel(); ++i) x[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  nddr::Tensor<float> y(net.output_shape(x.shape()));
  REQUIRE(y.shape() == Shape::nchw(2, 256, 5, 4));
  net.forward(ctx, x.cview(), y.view());
  nddr::Tensor<float> dy(y.shape(), 1.f), dx(x.shape());
  net.backward(ctx, x.cview(), y.cview(), dy.cview(), dx.view());
  double g = 0.0;
  for (std::int64_t i = 0; i < dx.numel(); ++i) g += std::abs(dx[i]);
  CHECK(std::isfinite(g));
  CHECK(g > 0.0);
}

namespace {

// One ResNet column of backbone B as a network names it (`<prefix>.stage{s}.<layer>`), the
// stages only: the torchvision import loads no head.
template <class B>
nddr::Sequential<double> resnet_column() {
  nddr::Sequential<double> net;
  for_each_stage<B>([&](std::size_t i, auto stage) {
    net.add("stage" + std::to_string(i + 1), decltype(stage)::template build<double, nddr::Cpu>());
  });
  return net;
}

const std::string kResNetMini = NDDR_TEST_DATA_DIR "/resnet_mini.safetensors";
const std::string kResNetMiniRef = NDDR_TEST_DATA_DIR "/resnet_mini_ref.safetensors";

// A store holding one column "task0" of backbone B (allocated unless told otherwise).
template <class B>
struct ResNetStore {
  nddr::ParameterStore<double> store;
  nddr::Sequential<double> column = resnet_column<B>();
  explicit ResNetStore(bool allocate = true) {
    column.declare(store, "task0");
    if (allocate) store.allocate();
  }
  nddr::io::LoadReport import(const std::vector<std::string>& prefixes = {"task0"},
                              bool strict = true) {
    return nddr::io::import_torchvision_resnet(kResNetMini, store, prefixes,
                                               nddr::io::ImportOptions{}.with_strict(strict));
  }
};

}  // namespace

TEST_CASE("import_torchvision_resnet: a torch-written state_dict gives PyTorch's forward",
          "[networks][backbones][weights]") {
  // tools/reference/resnet_weights.py: torchvision's key names at ResNetMini's size, and the
  // DeepLab-v2 forward (stride in conv1, TF SAME, dilations, BN eps 1e-3) of those weights.
  nddr::ParameterStore<double> store;
  auto col0 = resnet_column<nddr::ResNetMini>(), col1 = resnet_column<nddr::ResNetMini>();
  col0.declare(store, "task0");
  col1.declare(store, "task1");
  store.allocate();
  nddr::Rng rng(3);
  col0.initialize(rng);
  col1.initialize(rng);
  const auto r = nddr::io::import_torchvision_resnet(kResNetMini, store, {"task0", "task1"});
  CHECK(r.complete());
  CHECK(r.loaded.size() == 2 * 100);        // 20 convs, 20 BNs x 4 tensors, 2 columns
  CHECK(r.skipped.size() == 22);            // 20 num_batches_tracked, fc.weight, fc.bias
  CHECK(r.loaded.size() == store.parameters().size() + store.buffers().size());
  const auto f = nddr::io::SafetensorsFile::read(kResNetMiniRef);
  const nddr::Tensor<double> x = f.tensor<double>("ref.x"), ref = f.tensor<double>("ref.y");
  nddr::Context<nddr::Cpu> ctx(2);
  for (auto* col : {&col0, &col1}) {
    col->set_training(false);
    nddr::Tensor<double> y(col->output_shape(x.shape()));
    REQUIRE(y.shape() == ref.shape());
    col->forward(ctx, x.cview(), y.view());
    double err = 0.0, scale = 0.0;
    for (std::int64_t i = 0; i < y.numel(); ++i) {
      err = std::max(err, std::abs(y[i] - ref[i]));
      scale = std::max(scale, std::abs(ref[i]));
    }
    CHECK(scale > 0.1);
    CHECK(err <= 1e-10 * scale);
  }
}

TEST_CASE("import_torchvision_resnet lists missing, unexpected and misshapen tensors",
          "[networks][backbones][weights]") {
  SECTION("a network with fewer units: the file's extra unit is unexpected") {
    ResNetStore<nddr::BasicResNet<4, 1, 1, 1, 1>> s;
    CHECK_THROWS_WITH(s.import(),
                      Catch::Contains("import_torchvision_resnet") &&
                          Catch::Contains("resnet_mini") &&
                          Catch::Contains("layer3.1.conv1.weight") &&
                          Catch::Contains("layer3.1.bn3.running_var"));
    const auto r = s.import({"task0"}, false);
    CHECK(r.missing.empty());
    CHECK(r.unexpected.size() == 3 * 5 + 3);  // 3 convs + 3 BNs x 4, 3 num_batches_tracked
  }
  SECTION("a network with more units: its missing tensors are listed") {
    ResNetStore<nddr::BasicResNet<4, 2, 1, 2, 1>> s;
    CHECK_THROWS_WITH(s.import(),
                      Catch::Contains("task0.stage2.res2.unit2.conv1.weight") &&
                          Catch::Contains("task0.stage2.res2.unit2.conv3.bn.running_mean"));
  }
  SECTION("another width: every misshapen tensor is named with both shapes") {
    ResNetStore<nddr::BasicResNet<2, 1, 1, 2, 1>> s;
    CHECK_THROWS_WITH(s.import(),
                      Catch::Contains("conv1.weight") && Catch::Contains("(4, 3, 7, 7)") &&
                          Catch::Contains("(2, 3, 7, 7)"));
  }
  SECTION("a wrong column prefix, no prefix, an unallocated store") {
    CHECK_THROWS_AS(ResNetStore<nddr::ResNetMini>(false).import(), nddr::IoError);
    ResNetStore<nddr::ResNetMini> s;
    CHECK_THROWS_WITH(s.import({"task1"}), Catch::Contains("task1.stage1.conv1.weight") &&
                                               Catch::Contains("column prefixes"));
    CHECK_THROWS_WITH(s.import({}), Catch::Contains("no column prefixes"));
  }
}

TEST_CASE("import_torchvision_resnet: torchvision resnet101's 626 keys map onto ResNet101",
          "[networks][backbones][weights]") {
  // tests/data/resnet101_torchvision_keys.txt: every key of torchvision's resnet101 state_dict
  // with its shape (written by tools/reference/resnet_weights.py). The mapping must know each
  // one, and each target must be declared by a ResNet101 column with that shape.
  std::ifstream in(NDDR_TEST_DATA_DIR "/resnet101_torchvision_keys.txt");
  REQUIRE(in);
  std::map<std::string, std::vector<std::int64_t>> keys;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string key, dims;
    ls >> key >> dims;
    std::vector<std::int64_t> shape;
    std::istringstream ds(dims);
    for (std::string d; std::getline(ds, d, ',');) shape.push_back(std::stoll(d));
    keys[key] = shape;
  }
  REQUIRE(keys.size() == 626);
  nddr::ParameterStore<float> store;  // declared only: no 170 MB allocation
  auto col = nddr::Sequential<float>();
  for_each_stage<nddr::ResNet101>([&](std::size_t i, auto stage) {
    col.add("stage" + std::to_string(i + 1), decltype(stage)::template build<float, nddr::Cpu>());
  });
  col.declare(store, "task0");
  const auto rules = nddr::io::detail::torchvision_resnet_rules(store, {"task0"});
  REQUIRE(rules.size() == keys.size());
  std::size_t targets = 0;
  for (const auto& rule : rules) {
    INFO(rule.file_key);
    REQUIRE(keys.count(rule.file_key) == 1);
    for (const auto& t : rule.targets) {
      const auto slot = nddr::io::detail::find_slot(store, t);
      REQUIRE(slot);
      CHECK(nddr::io::detail::same_extents(keys[rule.file_key],
                                           nddr::io::detail::slot_shape(store, *slot)));
      ++targets;
    }
  }
  // Every parameter and BN statistic of the column has a source (no head here).
  CHECK(targets == store.parameters().size() + store.buffers().size());
  CHECK(targets == 626 - 104 - 2);
}
