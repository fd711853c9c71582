#include "limpq/models/quantized.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "limpq/models/state_dict.h"
#include "limpq/nn/batch_norm.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/quant/policy.h"
#include "support/test_support.h"

namespace limpq::models {
namespace {

class QuantizedTest : public limpq::testing::SeededTest {};

std::map<std::string, bool> signedness(const std::vector<LayerInfo>& layers) {
  std::map<std::string, bool> out;
  for (const auto& l : layers) out[l.name] = l.signed_input;
  return out;
}

TEST_F(QuantizedTest, Resnet20LayersInNetworkOrderWithTheirBatchNorms) {
  auto layers = analyze_layers(*make_model("resnet20", 1, 10), {1, 28, 28});
  ASSERT_EQ(layers.size(), 22u);  // 19 convs + 2 projections + fc
  EXPECT_EQ(layers.front().name, "conv1");
  EXPECT_EQ(layers.front().bn, "bn1");
  EXPECT_FALSE(layers.front().searchable);
  EXPECT_EQ(layers.back().name, "fc");
  EXPECT_FALSE(layers.back().searchable);
  EXPECT_EQ(layers[1].name, "layer1.0.conv1");
  EXPECT_EQ(layers[1].bn, "layer1.0.bn1");
  for (const auto& l : layers) {
    if (l.name == "layer2.0.downsample.0") {
      EXPECT_EQ(l.bn, "layer2.0.downsample.1");
    }
  }
  // MACs: conv1 is 1*16*9 weights over 28*28 outputs.
  EXPECT_EQ(layers.front().macs, 16 * 9 * 28 * 28);
  EXPECT_EQ(layers.front().params, 144);
  EXPECT_EQ(layers.back().macs, 640);
}

TEST_F(QuantizedTest, SignednessComesFromTheNetwork) {
  auto r20 = signedness(analyze_layers(*make_model("resnet20", 3, 10), {3, 32, 32}));
  EXPECT_TRUE(r20["conv1"]) << "the normalised image can be negative";
  EXPECT_FALSE(r20["layer1.0.conv1"]);
  EXPECT_FALSE(r20["layer1.0.conv2"]);
  EXPECT_FALSE(r20["layer2.0.downsample.0"]);
  EXPECT_FALSE(r20["fc"]);
  for (const char* arch : {"resnet18", "resnet50"}) {
    auto s = signedness(analyze_layers(*make_model(arch, 3, 10), {3, 64, 64}));
    int signed_count = 0;
    for (const auto& [name, is_signed] : s) signed_count += is_signed;
    EXPECT_EQ(signed_count, 1) << arch << ": only conv1 sees a signed input";
  }
  auto mv2 = signedness(analyze_layers(*make_model("mobilenet_v2", 3, 10), {3, 64, 64}));
  EXPECT_TRUE(mv2["features.0.0"]);
  EXPECT_FALSE(mv2["features.1.conv.1"]) << "projection after ReLU6";
  // Linear bottlenecks: the expansion conv of block 2 reads block 1's output, which has no ReLU.
  EXPECT_TRUE(mv2["features.2.conv.0.0"]);
  EXPECT_TRUE(mv2["features.3.conv.0.0"]) << "residual sum of linear bottlenecks";
  EXPECT_FALSE(mv2["features.2.conv.1.0"]) << "depthwise after ReLU6";
  EXPECT_TRUE(mv2["features.18.0"]);
  EXPECT_FALSE(mv2["classifier.1"]);
}

TEST_F(QuantizedTest, IndicatorPreparationLeavesFixedLayersAlone) {
  auto model = make_model("resnet20", 1, 10);
  const StateDict before = state_dict(*model);
  QuantModel qm(model, {1, 28, 28});
  qm.prepare_indicators({6, 4, 2});
  auto* conv1 = model->named_modules()["conv1"]->as<nn::QuantConv2dImpl>();
  auto* fc = model->named_modules()["fc"]->as<nn::QuantLinearImpl>();
  auto* inner = model->named_modules()["layer1.0.conv1"]->as<nn::QuantConv2dImpl>();
  EXPECT_FALSE(conv1->quantized());
  EXPECT_FALSE(fc->quantized());
  EXPECT_FALSE(model->named_modules()["bn1"]->as<nn::SwitchableBatchNorm2dImpl>()->switchable());
  ASSERT_TRUE(inner->quantized());
  EXPECT_EQ(inner->weight_quantizer->options.bits(), (std::vector<int64_t>{6, 4, 2}));
  EXPECT_FALSE(inner->input_quantizer->options.is_signed());
  EXPECT_TRUE(model->named_modules()["layer1.0.bn1"]->as<nn::SwitchableBatchNorm2dImpl>()->switchable());
  // Original parameters are untouched; new state is quantizer steps and BN branches.
  const StateDict after = state_dict(*model);
  for (const auto& [name, t] : before) EXPECT_TRUE(torch::equal(t, after.at(name))) << name;
  EXPECT_TRUE(after.count("layer1.0.conv1.weight_quantizer.steps"));
  EXPECT_TRUE(after.count("layer1.0.bn1.branches.4.running_var"));
  EXPECT_FALSE(after.count("conv1.weight_quantizer.steps"));
}

TEST_F(QuantizedTest, SwitchableBatchNormUsesTheBranchOfTheConvsBits) {
  auto model = make_model("resnet20", 1, 10);
  QuantModel qm(model, {1, 28, 28});
  qm.prepare_indicators({4, 2});
  auto* bn = model->named_modules()["layer1.0.bn1"]->as<nn::SwitchableBatchNorm2dImpl>();
  {
    torch::NoGradGuard no_grad;
    bn->branches->at<torch::nn::BatchNorm2dImpl>("4").bias.fill_(4.0);
    bn->branches->at<torch::nn::BatchNorm2dImpl>("2").bias.fill_(2.0);
  }
  bn->eval();
  const auto x = torch::zeros({1, 16, 2, 2});
  qm.set_uniform(4);
  EXPECT_FLOAT_EQ(bn->forward(x).mean().item<float>(), 4.0f);
  qm.set_layer_bits("layer1.0.conv1", 2, 2);
  EXPECT_EQ(bn->bits(), 2);
  EXPECT_FLOAT_EQ(bn->forward(x).mean().item<float>(), 2.0f);
}

TEST_F(QuantizedTest, PolicyPreparationQuantizesEveryLayerAtItsBits) {
  auto model = make_model("resnet20", 1, 10);
  QuantModel qm(model, {1, 28, 28}, QuantizeOptions().per_channel(true));
  quant::Policy p = qm.uniform_policy({3, 4});
  qm.prepare_policy(p);
  auto* conv1 = model->named_modules()["conv1"]->as<nn::QuantConv2dImpl>();
  auto* inner = model->named_modules()["layer3.2.conv2"]->as<nn::QuantConv2dImpl>();
  EXPECT_EQ(conv1->weight_bits(), 8);
  EXPECT_EQ(conv1->input_bits(), 8);
  EXPECT_TRUE(conv1->input_quantizer->options.is_signed());
  EXPECT_EQ(inner->weight_bits(), 3);
  EXPECT_EQ(inner->input_bits(), 4);
  EXPECT_EQ(inner->weight_quantizer->steps.sizes(), (std::vector<int64_t>{1, 64}));
  EXPECT_EQ(qm.current_policy().layers, p.layers);
  model->eval();
  auto y = model->forward(torch::randn({2, 1, 28, 28}));
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
}

TEST_F(QuantizedTest, RestoreRebuildsTheSameState) {
  auto a = make_model("resnet20", 1, 10);
  QuantModel qa(a, {1, 28, 28});
  qa.prepare_policy(qa.uniform_policy({4, 4}));
  a->train();
  a->forward(torch::randn({4, 1, 28, 28}));  // initialises activation steps
  auto b = make_model("resnet20", 1, 10);
  QuantModel qb = QuantModel::restore(b, {1, 28, 28}, nlohmann::json::parse(qa.describe().dump()));
  load_state_dict(*b, state_dict(*a), "a");
  a->eval();
  b->eval();
  const auto x = torch::randn({2, 1, 28, 28});
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
}

TEST_F(QuantizedTest, BadFixedLayerAndPolicyAreNamed) {
  EXPECT_THAT([] { QuantModel(make_model("resnet20", 1, 10), {1, 28, 28}, QuantizeOptions().fixed_layers({"conv9"})); },
              ::testing::ThrowsMessage<c10::Error>(::testing::HasSubstr("fixed layer 'conv9'")));
  QuantModel qm(make_model("resnet20", 1, 10), {1, 28, 28});
  quant::Policy p = qm.uniform_policy({4, 4});
  p.layers.pop_back();
  EXPECT_THAT([&] { qm.prepare_policy(p, "mine.json"); },
              ::testing::ThrowsMessage<c10::Error>(::testing::HasSubstr("searchable layer 'layer3.2.conv2' is missing")));
}

TEST_F(QuantizedTest, MacsMatchTheKnownFigures) {
  auto total_macs = [](const std::string& arch, int64_t c, int64_t classes, int64_t hw) {
    int64_t macs = 0;
    for (const auto& l : analyze_layers(*make_model(arch, c, classes), {c, hw, hw})) macs += l.macs;
    return macs;
  };
  // resnet18 at 224x224: 1.81 G MACs including the fc layer (torchvision's published figure).
  EXPECT_NEAR(total_macs("resnet18", 3, 1000, 224) / 1e9, 1.814, 0.001);
  // resnet20 at 32x32: about 41 M (40.55 M for the convs with identity
  // shortcuts, plus 0.26 M for the two 1x1 projections and 640 for fc).
  EXPECT_NEAR(total_macs("resnet20", 3, 10, 32) / 1e6, 40.81, 0.01);
  // resnet50 at 224: 4.09 G; mobilenet_v2: 0.30 G.
  EXPECT_NEAR(total_macs("resnet50", 3, 1000, 224) / 1e9, 4.09, 0.01);
  EXPECT_NEAR(total_macs("mobilenet_v2", 3, 1000, 224) / 1e9, 0.30, 0.01);
  // Depthwise convs count C_in * C_out * k * k / G.
  auto mv1 = analyze_layers(*make_model("mobilenet_v1", 3, 1000), {3, 224, 224});
  for (const auto& l : mv1) {
    if (l.name == "features.1.0") {
      EXPECT_EQ(l.groups, 32);
      EXPECT_EQ(l.params, 32 * 9);
      EXPECT_EQ(l.macs, 32 * 9 * 112 * 112);
    }
  }
}

TEST_F(QuantizedTest, PolicyCostCountsMacsTimesBits) {
  QuantModel qm(make_model("resnet20", 1, 10), {1, 28, 28});
  const auto cost = policy_cost(qm.layers(), qm.uniform_policy({4, 4}));
  double expect_bitops = 0, expect_size = 0;
  for (const auto& l : qm.layers()) {
    const int64_t bits = l.searchable ? 4 : 8;
    expect_bitops += static_cast<double>(l.macs) * bits * bits;
    expect_size += static_cast<double>(l.params) * bits;
  }
  EXPECT_DOUBLE_EQ(cost.bitops, expect_bitops);
  EXPECT_DOUBLE_EQ(cost.size_bits, expect_size);
}

// The ReLUs folded into the input quantizers (inside blocks, and between
// blocks with the ReLU's output kept for the shortcut) against ReLU plus the
// composed-op reference: forward bitwise, gradients to float order.
TEST_F(QuantizedTest, FoldedRelusMatchTheComposedNetwork) {
  for (const std::string arch : {"resnet20", "resnet18", "resnet50"}) {
    SCOPED_TRACE(arch);
    torch::manual_seed(3);
    Model fused = make_model(arch, 3, 10);
    Model reference = make_model(arch, 3, 10);
    load_state_dict(*reference, state_dict(*fused), "the fused model");
    QuantModel qf(fused, {3, 32, 32});
    QuantModel qr(reference, {3, 32, 32}, QuantizeOptions().fused(false));
    qf.prepare_policy(qf.uniform_policy(quant::parse_uniform("W4A4")));
    qr.prepare_policy(qr.uniform_policy(quant::parse_uniform("W4A4")));
    fused->train();
    reference->train();
    const auto x = torch::randn({4, 3, 32, 32});
    const auto y = torch::randint(0, 10, {4});
    const auto lf = torch::nn::functional::cross_entropy(fused->forward(x), y);
    const auto lr = torch::nn::functional::cross_entropy(reference->forward(x), y);
    EXPECT_EQ(lf.item<float>(), lr.item<float>());
    lf.backward();
    lr.backward();
    const auto fused_params = fused->named_parameters();
    int64_t checked = 0;
    for (const auto& p : reference->named_parameters()) {
      if (!p.value().grad().defined()) continue;
      const torch::Tensor want = p.value().grad();
      const torch::Tensor got = fused_params[p.key()].grad();
      ASSERT_TRUE(got.defined()) << p.key();
      // A step's gradient is a sum over a whole activation whose terms
      // largely cancel, so its float-order error is large relative to the
      // sum (at most 1.6e-4 seen, on resnet50).
      const bool step = p.key().size() > 6 && p.key().compare(p.key().size() - 6, 6, ".steps") == 0;
      const double tol = (step ? 1e-3 : 1e-4) * want.abs().max().item<double>() + 1e-7;
      EXPECT_LE((got - want).abs().max().item<double>(), tol) << p.key();
      ++checked;
    }
    EXPECT_GT(checked, 40);
  }
}

}  // namespace
}  // namespace limpq::models
