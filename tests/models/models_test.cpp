#include "limpq/models/model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "limpq/models/mobilenet.h"
#include "limpq/models/state_dict.h"
#include "support/test_support.h"

namespace limpq::models {
namespace {

class ModelsTest : public limpq::testing::SeededTest {};

int64_t count_parameters(const ModelImpl& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.numel();
  return n;
}

struct ArchCase {
  std::string arch;
  int64_t in_channels, classes, size;
  int64_t parameters;  // torchvision's figure at 1000 classes where it exists
};

TEST_F(ModelsTest, ParameterCountsMatchTheReferenceArchitectures) {
  // torchvision's published counts (3 input channels, 1000 classes); the
  // MobileNetV1 figure is the paper's 4.2 M network.
  const ArchCase cases[] = {{"resnet18", 3, 1000, 0, 11689512},
                            {"resnet50", 3, 1000, 0, 25557032},
                            {"mobilenet_v2", 3, 1000, 0, 3504872},
                            {"mobilenet_v2_stem1", 3, 1000, 0, 3504872},
                            {"mobilenet_v1", 3, 1000, 0, 4231976}};
  for (const auto& c : cases) {
    EXPECT_EQ(count_parameters(*make_model(c.arch, c.in_channels, c.classes)), c.parameters) << c.arch;
  }
  // resnet20 with 1x1 projection shortcuts: the 269,722-parameter network of
  // He et al. (identity/zero-padding shortcuts) plus two projections
  // (16*32 + 32*64 weights and their batch norms).
  EXPECT_EQ(count_parameters(*make_model("resnet20", 3, 10)), 269722 + 512 + 64 + 2048 + 128);
}

TEST_F(ModelsTest, ForwardShapesForEveryArchitecture) {
  const ArchCase cases[] = {{"resnet20", 1, 10, 28, 0},     {"resnet32", 3, 100, 32, 0},
                            {"resnet56", 3, 10, 16, 0},     {"resnet18", 3, 7, 64, 0},
                            {"resnet50", 3, 5, 64, 0},      {"mobilenet_v2", 3, 10, 64, 0},
                            {"mobilenet_v1", 1, 10, 64, 0},  {"mobilenet_v2_stem1", 1, 10, 28, 0}};
  for (const auto& c : cases) {
    auto model = make_model(c.arch, c.in_channels, c.classes);
    model->eval();
    torch::NoGradGuard no_grad;
    auto y = model->forward(torch::randn({2, c.in_channels, c.size, c.size}));
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, c.classes})) << c.arch;
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << c.arch;
  }
}

TEST_F(ModelsTest, MobilenetV2Stem1KeepsFourTimesTheSpatialSize) {
  // The same layers and names; only the stem's stride differs, so every
  // feature map is 2x wider and higher: 28x28 ends at 2x2 instead of 1x1.
  auto original = make_model("mobilenet_v2", 1, 10);
  auto stem1 = make_model("mobilenet_v2_stem1", 1, 10);
  EXPECT_EQ(stem1->arch(), "mobilenet_v2_stem1");
  const StateDict a = state_dict(*original), b = state_dict(*stem1);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_EQ(b.at(name).sizes(), t.sizes()) << name;
  torch::NoGradGuard no_grad;
  auto* o = dynamic_cast<MobileNetV2Impl*>(original.get());
  auto* s = dynamic_cast<MobileNetV2Impl*>(stem1.get());
  ASSERT_TRUE(o && s);
  o->eval();
  s->eval();
  const auto x = torch::randn({1, 1, 28, 28});
  EXPECT_EQ(o->features->forward(x).sizes(), (std::vector<int64_t>{1, 1280, 1, 1}));
  EXPECT_EQ(s->features->forward(x).sizes(), (std::vector<int64_t>{1, 1280, 2, 2}));
}

TEST_F(ModelsTest, NamesFollowTorchvision) {
  auto has = [](const StateDict& sd, const std::string& name) { return sd.count(name) == 1; };
  const StateDict r18 = state_dict(*make_model("resnet18", 3, 10));
  for (const char* name : {"conv1.weight", "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                           "layer2.0.downsample.0.weight", "layer2.0.downsample.1.bias", "layer4.1.bn2.weight",
                           "fc.weight", "fc.bias"}) {
    EXPECT_TRUE(has(r18, name)) << name;
  }
  const StateDict mv2 = state_dict(*make_model("mobilenet_v2", 3, 10));
  for (const char* name : {"features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight",
                           "features.1.conv.1.weight", "features.1.conv.2.weight", "features.2.conv.0.0.weight",
                           "features.2.conv.1.0.weight", "features.2.conv.3.bias", "features.18.0.weight",
                           "classifier.1.weight"}) {
    EXPECT_TRUE(has(mv2, name)) << name;
  }
  const StateDict mv1 = state_dict(*make_model("mobilenet_v1", 3, 10));
  EXPECT_TRUE(has(mv1, "features.13.3.weight"));
  EXPECT_EQ(mv1.at("features.13.0.weight").size(1), 1) << "depthwise";
}

TEST_F(ModelsTest, UnknownArchitectureAndBadSizesAreNamed) {
  try {
    make_model("resnet19", 3, 10);
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), ::testing::HasSubstr("unknown architecture 'resnet19'"));
  }
  EXPECT_THROW(make_model("resnet20", 3, 0), c10::Error);
}

}  // namespace
}  // namespace limpq::models
