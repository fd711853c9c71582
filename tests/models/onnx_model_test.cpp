// The ONNX importer against the runtimes that define ONNX's meaning: every
// network exported by tests/tools/export_onnx_models.py (torchvision's
// classifiers and a network of none of limpq's architectures, with batch
// norm folded and kept) must give ONNX Runtime's logits, PyTorch's parameter
// count and PyTorch's module paths, and train.
#include "limpq/models/onnx_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "limpq/deploy/onnx.h"
#include "limpq/models/quantized.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/util/atomic_file.h"
#include "support/test_support.h"

namespace limpq::models {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Logits may differ from ONNX Runtime's by this much of the largest |logit|.
constexpr double kLogitTolerance = 1e-4;

std::string fixture_dir() {
  const char* dir = std::getenv("LIMPQ_ONNX_MODELS_DIR");
  return dir ? dir : "";
}

// A raw float32 file as a tensor of `rows` rows.
torch::Tensor read_f32(const std::string& path, int64_t rows) {
  std::string bytes = util::read_file(path);
  const int64_t count = static_cast<int64_t>(bytes.size() / sizeof(float));
  return torch::from_blob(bytes.data(), {count}, torch::kFloat32).clone().reshape({rows, -1});
}

struct Fixture {
  std::string onnx;
  nlohmann::json info;
  torch::Tensor input, torch_logits;
};

Fixture load_fixture(const std::string& name) {
  Fixture f;
  const std::string base = fixture_dir() + "/" + name;
  f.onnx = base + ".onnx";
  f.info = nlohmann::json::parse(util::read_file(base + ".json"));
  std::vector<int64_t> shape = {3};
  for (const auto& d : f.info["input_shape"]) shape.push_back(d.get<int64_t>());
  f.input = read_f32(base + ".f32", 3).reshape(shape);
  f.torch_logits = read_f32(base + "_logits.f32", 3);
  return f;
}

int64_t parameter_count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

// The imported network's logits on the fixture's input against ONNX
// Runtime's and PyTorch's, and its parameter count against the export's.
void expect_logits_and_parameters_of(const Fixture& f, OnnxModel& model, const std::string& name) {
  model->eval();
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    logits = model->forward(f.input);
  }
  const auto runtime = deploy::run_onnx_runtime(f.onnx, f.input, deploy::find_ort_runner());
  EXPECT_LE(relative_difference(logits, runtime.outputs), kLogitTolerance) << name << " against " << runtime.runtime;
  EXPECT_LE(relative_difference(logits, f.torch_logits), kLogitTolerance) << name << " against PyTorch";
  EXPECT_EQ(parameter_count(*model), f.info["expected_parameters"].get<int64_t>()) << name;
}

class OnnxImportTest : public limpq::testing::SeededTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    ASSERT_FALSE(fixture_dir().empty()) << "run through ctest: the onnx_export fixture sets LIMPQ_ONNX_MODELS_DIR";
    if (!onnx_import_available()) GTEST_SKIP() << "built without libonnx";
  }
};

TEST_P(OnnxImportTest, SameLogitsAsOnnxRuntimeAndParametersAsPyTorch) {
  const Fixture f = load_fixture(GetParam());
  OnnxModel model = import_onnx(f.onnx);
  expect_logits_and_parameters_of(f, model, GetParam());
  EXPECT_EQ(model->num_classes(), 10);
  EXPECT_EQ(model->input_shape(), (std::vector<int64_t>{3, f.input.size(2), f.input.size(3)}));
  // Every GELU's five nodes run as one op (in eval mode PyTorch's constant
  // folding leaves the same five).
  EXPECT_EQ(model->fused_nodes(), 5 * f.info.value("gelus", 0)) << GetParam();
}

// Layers named as PyTorch named the modules, in both export modes; the
// attention products (two per attention module) besides.
TEST_P(OnnxImportTest, LayersCarryPyTorchModulePaths) {
  const Fixture f = load_fixture(GetParam());
  OnnxModel model = import_onnx(f.onnx);
  std::set<std::string> ours, theirs;
  int64_t products = 0;
  for (const auto& l : analyze_layers(*model, model->input_shape())) {
    if (l.kind == "matmul") {
      ++products;
    } else {
      ours.insert(l.name);
    }
  }
  for (const auto& n : f.info["layers"]) theirs.insert(n.get<std::string>());
  EXPECT_EQ(ours, theirs) << GetParam();
  EXPECT_EQ(products, f.info.value("attention_products", 0)) << GetParam();
}

// Every weight is a trainable parameter that the loss reaches, and one
// optimizer step moves it. (A step of sign(gradient): plain SGD's update of
// the first layers of a deep network without batch norm can be below a
// float's resolution at a random initialisation.)
TEST_P(OnnxImportTest, OneTrainingStepChangesEveryWeight) {
  const Fixture f = load_fixture(GetParam());
  OnnxModel model = import_onnx(f.onnx);
  model->train();
  const torch::Tensor loss = torch::cross_entropy_loss(model->forward(f.input), torch::tensor({0, 1, 2}));
  loss.backward();
  int64_t unchanged = 0;
  std::string first;
  auto named = model->named_parameters();
  for (auto& item : named) {
    torch::Tensor& p = item.value();
    const torch::Tensor before = p.detach().clone();
    if (p.grad().defined()) {
      torch::NoGradGuard no_grad;
      p.sub_(p.grad().sign() * 1e-2);
    }
    if (torch::equal(p, before) && unchanged++ == 0) first = item.key();
  }
  EXPECT_EQ(unchanged, 0) << GetParam() << ": " << unchanged << " of " << named.size()
                          << " parameters unchanged, first '" << first << "'";
}

// Built twice: the default suite's networks, and (LIMPQ_ONNX_SLOW_SET, label
// "slow") the large ones.
std::vector<std::string> fixtures() {
#ifdef LIMPQ_ONNX_SLOW_SET
  const std::vector<const char*> names = {"resnet50", "mobilenet_v3_large", "vgg11_bn"};
#else
  const std::vector<const char*> names = {"tinynet",        "resnet18",       "mobilenet_v2",       "mobilenet_v3_small",
                                          "efficientnet_b0", "regnet_x_400mf", "regnet_y_400mf",     "densenet121",
                                          "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet"};
#endif
  std::vector<std::string> out;
  for (const char* name : names) {
    out.push_back(std::string(name) + "_eval");
    out.push_back(std::string(name) + "_preserve");
  }
#ifndef LIMPQ_ONNX_SLOW_SET
  for (const char* name : {"vit", "swin", "convnext", "maxvit", "tokennet"}) {
    out.push_back(std::string(name) + "_opset13");
    out.push_back(std::string(name) + "_opset17");
  }
#endif
  return out;
}

INSTANTIATE_TEST_SUITE_P(Torchvision, OnnxImportTest, ::testing::ValuesIn(fixtures()),
                         [](const auto& info) { return info.param; });

#ifndef LIMPQ_ONNX_SLOW_SET

// The transformers exported with torch.onnx.export's defaults: constant
// folding takes the linear weights' names (a transposed `onnx::MatMul_N`),
// so a MultiheadAttention's projection is named by its scope, the module
// that also holds the attention products. The file imports (the products
// once put the importer in an endless search for a free name), computes
// what PyTorch and ONNX Runtime compute, and every layer has a path of its
// own, none inside another layer.
class OnnxFoldedExportTest : public OnnxImportTest {};

TEST_P(OnnxFoldedExportTest, ImportsWithLayersOfTheirOwnAndSameLogits) {
  const Fixture f = load_fixture(GetParam());
  OnnxModel model = import_onnx(f.onnx);
  expect_logits_and_parameters_of(f, model, GetParam());
  std::set<std::string> names;
  int64_t products = 0;
  for (const auto& l : analyze_layers(*model, model->input_shape())) {
    EXPECT_TRUE(names.insert(l.name).second) << GetParam() << ": two layers named '" << l.name << "'";
    products += l.kind == "matmul";
  }
  for (const auto& outer : names) {
    for (const auto& inner : names) {
      EXPECT_NE(inner.rfind(outer + ".", 0), 0u) << GetParam() << ": layer '" << inner << "' inside layer '" << outer
                                                 << "'";
    }
  }
  EXPECT_EQ(products, f.info.value("attention_products", 0)) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Torchvision, OnnxFoldedExportTest,
                         ::testing::Values("vit_folded", "swin_folded", "convnext_folded", "maxvit_folded",
                                           "tokennet_folded"),
                         [](const auto& info) { return info.param; });

#endif

#ifndef LIMPQ_ONNX_SLOW_SET

class OnnxFileTest : public OnnxImportTest {
 protected:
  // The one-line message importing `path` gives.
  std::string refusal(const std::string& path) {
    const std::string message = limpq::testing::error_of([&] { import_onnx(path); });
    EXPECT_THAT(message, HasSubstr(path));
    EXPECT_THAT(message, Not(HasSubstr("\n")));
    return message;
  }
};

TEST_F(OnnxFileTest, UnsupportedOpNamesTheNodeOpAndOpset) {
  const std::string message = refusal(fixture_dir() + "/bad_unsupported_op.onnx");
  EXPECT_THAT(message, HasSubstr("(CumSum, opset 13)"));
  EXPECT_THAT(message, HasSubstr("not supported"));
}

TEST_F(OnnxFileTest, SymbolicSpatialSize) {
  EXPECT_THAT(refusal(fixture_dir() + "/bad_dynamic_spatial.onnx"), HasSubstr("symbolic channel count, height or width"));
}

TEST_F(OnnxFileTest, TwoInputs) {
  EXPECT_THAT(refusal(fixture_dir() + "/bad_two_inputs.onnx"), HasSubstr("has 2 inputs (a, b)"));
}

TEST_F(OnnxFileTest, TruncatedFile) {
  const std::string bytes = util::read_file(fixture_dir() + "/tinynet_eval.onnx");
  const std::string path = temp_path("truncated.onnx");
  limpq::testing::write_bytes(path, bytes.substr(0, bytes.size() / 2));
  EXPECT_THAT(refusal(path), HasSubstr("is not an ONNX model"));
}

TEST_F(OnnxFileTest, NotAnOnnxFile) {
  const std::string path = temp_path("config.onnx");
  limpq::testing::write_bytes(path, "model:\n  arch: resnet20\n");
  EXPECT_THAT(refusal(path), HasSubstr("is not an ONNX model"));
}

// TrainingMode.TRAINING: batch norms also output running statistics, which
// nothing reads; the network imports with its batch norms and dropout.
TEST_F(OnnxFileTest, TrainingModeExportImports) {
  OnnxModel model = import_onnx(fixture_dir() + "/tinynet_training.onnx");
  std::set<std::string> layers;
  for (const auto& l : analyze_layers(*model, model->input_shape())) layers.insert(l.name);
  EXPECT_EQ(layers, (std::set<std::string>{"stem.0", "wide", "dilated", "gate.1", "gate.3", "down", "fc"}));
  EXPECT_EQ(layers.count("stem.0"), 1u);
  model->train();
  EXPECT_EQ(model->forward(torch::randn({4, 3, 32, 32})).sizes(), (std::vector<int64_t>{4, 10}));
}

TEST_F(OnnxFileTest, MissingFile) {
  EXPECT_THAT(limpq::testing::error_of([&] { import_onnx(temp_path("absent.onnx")); }), HasSubstr("absent.onnx"));
}

// The batch norm after each conv and the inputs' signs, as the quantizers need.
TEST_F(OnnxFileTest, AnalysisFindsBatchNormsAndUnsignedInputs) {
  OnnxModel model = import_onnx(fixture_dir() + "/resnet18_preserve.onnx");
  std::map<std::string, LayerInfo> layers;
  for (const auto& l : analyze_layers(*model, model->input_shape())) layers[l.name] = l;
  EXPECT_EQ(layers.at("layer1.0.conv1").bn, "layer1.0.bn1");
  EXPECT_EQ(layers.at("layer2.0.downsample.0").bn, "layer2.0.downsample.1");
  EXPECT_TRUE(layers.at("conv1").signed_input);           // the image
  EXPECT_FALSE(layers.at("layer1.0.conv2").signed_input); // after a ReLU
  EXPECT_FALSE(layers.at("fc").signed_input);             // pooled ReLU output
  EXPECT_FALSE(layers.at("conv1").searchable);
  EXPECT_FALSE(layers.at("fc").searchable);
}

// Non-square kernels, dilation and one-sided padding against torch's conv2d.
TEST(QuantConv2dGeometryTest, MatchesTorchConvolution) {
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({2, 4, 9, 7});
  nn::QuantConv2d conv(nn::QuantConv2dOptions(4, 6, {1, 3})
                           .stride({2, 1})
                           .dilation({1, 2})
                           .padding({0, 1})
                           .padding_end(torch::ExpandingArray<2>({1, 3}))
                           .groups(2)
                           .bias(true));
  const torch::Tensor padded = torch::constant_pad_nd(x, {1, 3, 0, 1});
  const torch::Tensor expected = torch::conv2d(padded, conv->weight, conv->bias, at::IntArrayRef({2, 1}),
                                                at::IntArrayRef({0, 0}), at::IntArrayRef({1, 2}), 2);
  EXPECT_TRUE(torch::allclose(conv(x), expected, 1e-5, 1e-6));
  EXPECT_EQ(conv(x).sizes(), expected.sizes());
}

#endif  // LIMPQ_ONNX_SLOW_SET

}  // namespace
}  // namespace limpq::models
