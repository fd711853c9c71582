// Every converter on its own against ONNX Runtime: a graph of the one node
// (with constant inputs as initializers, and a Flatten so that the output is
// N x rest), imported by limpq and run by both on the same random input.
// An OpCase names the node and its attributes, and prints them on failure.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "limpq/deploy/onnx.h"
#include "limpq/models/onnx_model.h"
#include "limpq/models/quantized.h"
#include "limpq/util/atomic_file.h"
#include "support/onnx_builder.h"
#include "support/test_support.h"

namespace limpq::models {
namespace {

using limpq::testing::OnnxAttribute;
using limpq::testing::OnnxGraphBuilder;

// One node's output may differ from ONNX Runtime's by this much of its
// largest |value| (float rounding; Erf, Softplus and Resize's sampling
// included).
constexpr double kTolerance = 1e-5;

// A graph around one op under test: its node and the few nodes that feed it
// or turn its output into floats (chained), then check() against ONNX
// Runtime with the runtime's graph optimizations off.
class OpCase {
 public:
  explicit OpCase(std::string op, std::vector<int64_t> chw = {3, 4, 5}, int64_t opset = 17)
      : op_(std::move(op)), chw_(chw), builder_(opset, chw), opset_(opset) {}
  OpCase& init(const std::string& name, const torch::Tensor& value) {
    builder_.initializer(name, value);
    return *this;
  }
  OpCase& node(const std::string& op, std::vector<std::string> inputs, std::vector<std::string> outputs,
               std::map<std::string, OnnxAttribute> attributes = {}) {
    if (op == op_) ++under_test_;
    builder_.node(op, std::move(inputs), std::move(outputs), std::move(attributes));
    return *this;
  }
  // The op under test on the graph input, with these further inputs, into "y".
  OpCase& on_input(std::vector<std::string> more = {}, std::map<std::string, OnnxAttribute> attributes = {}) {
    more.insert(more.begin(), "input");
    return node(op_, std::move(more), {"y"}, std::move(attributes));
  }
  OpCase& output(std::string name) {
    output_ = std::move(name);
    return *this;
  }
  // Positive inputs (Sqrt, a fractional Pow).
  OpCase& positive() {
    positive_ = true;
    return *this;
  }
  const std::string& op() const { return op_; }

  void check(const std::string& dir) const {
    SCOPED_TRACE(op_ + " at opset " + std::to_string(opset_) + ", case " + std::to_string(++count_[op_]));
    ASSERT_EQ(under_test_, 1) << "the case must hold one " << op_ << " node";
    const std::string path = dir + "/" + op_ + "_" + std::to_string(count_[op_]) + ".onnx";
    util::write_file_atomic(path, builder_.flattened(output_));
    OnnxModel imported = import_onnx(path);
    imported->eval();
    std::vector<int64_t> shape = {2};
    shape.insert(shape.end(), chw_.begin(), chw_.end());
    torch::Tensor x = torch::randn(shape);
    if (positive_) x = x.abs() + 0.1;
    torch::Tensor ours;
    {
      torch::NoGradGuard no_grad;
      ours = imported->forward(x).to(torch::kFloat32);
    }
    const torch::Tensor theirs = deploy::run_onnx_runtime(path, x, deploy::find_ort_runner(), "disabled").outputs;
    ASSERT_EQ(ours.sizes(), theirs.sizes());
    const double scale = std::max(theirs.abs().max().item<double>(), 1e-6);
    EXPECT_LE((ours - theirs).abs().max().item<double>() / scale, kTolerance);
  }

 private:
  std::string op_;
  std::vector<int64_t> chw_;
  OnnxGraphBuilder builder_;
  int64_t opset_;
  int under_test_ = 0;
  std::string output_ = "y";
  bool positive_ = false;
  static inline std::map<std::string, int> count_;
};

torch::Tensor ints(std::vector<int64_t> v) { return torch::tensor(v, torch::kInt64); }
torch::Tensor floats(std::vector<float> v) { return torch::tensor(v, torch::kFloat32); }
torch::Tensor scalar(float v) { return torch::tensor(v, torch::kFloat32); }
using Ints = std::vector<int64_t>;
using Str = std::string;

// The cases of an element-wise op on the input.
OpCase unary(const std::string& op, std::map<std::string, OnnxAttribute> a = {}, int64_t opset = 17) {
  return OpCase(op, {3, 4, 5}, opset).on_input({}, std::move(a));
}

// Every op of the registry, with the variants its converter handles.
std::vector<OpCase> cases() {
  torch::manual_seed(0);
  const int64_t to_float = 1, to_bool = 9;
  return {
      // Layers: convolutions of every geometry, Gemm both ways, MatMul by a
      // weight and of two activations, batch norm.
      OpCase("Conv").init("w", torch::randn({6, 3, 3, 2})).init("b", torch::randn({6}))
          .on_input({"w", "b"}, {{"pads", Ints{1, 0, 0, 1}}, {"strides", Ints{2, 1}}}),
      OpCase("Conv").init("w", torch::randn({3, 1, 3, 3}))
          .on_input({"w"}, {{"group", int64_t{3}}, {"dilations", Ints{1, 2}}, {"pads", Ints{1, 2, 1, 2}}}),
      OpCase("Gemm").init("w", torch::randn({60, 7})).init("b", torch::randn({7}))
          .node("Flatten", {"input"}, {"x"}, {{"axis", int64_t{1}}}).node("Gemm", {"x", "w", "b"}, {"y"}),
      OpCase("Gemm").init("w", torch::randn({7, 60})).init("b", scalar(0.5))
          .node("Flatten", {"input"}, {"x"}, {{"axis", int64_t{1}}})
          .node("Gemm", {"x", "w", "b"}, {"y"}, {{"transB", int64_t{1}}}),
      OpCase("MatMul").init("shape", ints({0, 12, 5})).init("w", torch::randn({5, 6}))
          .node("Reshape", {"input", "shape"}, {"x"}).node("MatMul", {"x", "w"}, {"y"}),
      OpCase("MatMul").init("w", torch::randn({6, 5}))
          .node("Transpose", {"w"}, {"wt"}, {{"perm", Ints{1, 0}}}).node("MatMul", {"input", "wt"}, {"y"}),
      OpCase("MatMul").node("Transpose", {"input"}, {"t"}, {{"perm", Ints{0, 1, 3, 2}}})
          .node("MatMul", {"input", "t"}, {"y"}),
      OpCase("BatchNormalization").init("s", torch::rand({3}) + 0.5).init("b", torch::randn({3}))
          .init("m", torch::randn({3})).init("v", torch::rand({3}) + 0.5)
          .on_input({"s", "b", "m", "v"}, {{"epsilon", 1e-3}}),
      // Normalisations.
      OpCase("LayerNormalization").init("s", torch::randn({5})).init("b", torch::randn({5})).on_input({"s", "b"}),
      OpCase("LayerNormalization").init("s", torch::randn({4, 5}))
          .on_input({"s"}, {{"axis", int64_t{-2}}, {"epsilon", 1e-3}}),
      OpCase("InstanceNormalization").init("s", torch::randn({3})).init("b", torch::randn({3})).on_input({"s", "b"}),
      OpCase("GroupNormalization", {4, 3, 5}, 18).init("s", torch::randn({2})).init("b", torch::randn({2}))
          .on_input({"s", "b"}, {{"num_groups", int64_t{2}}}),
      // Activations and element-wise functions.
      unary("Relu"), unary("Sigmoid"), unary("HardSwish"), unary("HardSigmoid", {{"alpha", 0.3}, {"beta", 0.4}}),
      unary("LeakyRelu", {{"alpha", 0.2}}), unary("Elu", {{"alpha", 0.7}}), unary("Selu"), unary("Softplus"),
      unary("Mish", {}, 18), unary("Erf"), unary("Tanh"), unary("Exp"), unary("Abs"), unary("Neg"),
      unary("Sqrt").positive(), unary("Softmax", {{"axis", int64_t{-1}}}), unary("Softmax", {{"axis", int64_t{1}}}),
      unary("Identity"), unary("Cast", {{"to", to_float}}),
      OpCase("PRelu").init("slope", torch::randn({3, 1, 1})).on_input({"slope"}),
      OpCase("Clip").init("lo", scalar(-0.5)).init("hi", scalar(0.7)).on_input({"lo", "hi"}),
      OpCase("Clip").init("hi", scalar(0.2)).on_input({"", "hi"}),
      // Bounds computed at run time: the batch's mean.
      OpCase("Clip").node("ReduceMean", {"input"}, {"mean"}, {{"keepdims", int64_t{0}}})
          .on_input({"mean"}),
      OpCase("Pow").init("e", scalar(2.0)).on_input({"e"}),
      OpCase("Pow").init("e", scalar(0.5)).on_input({"e"}).positive(),
      OpCase("Add").init("c", torch::randn({4, 1})).on_input({"c"}),
      OpCase("Sub").init("c", torch::randn({5})).on_input({"c"}),
      OpCase("Mul").node("Mul", {"input", "input"}, {"y"}),
      OpCase("Div").init("c", torch::rand({3, 1, 1}) + 1).on_input({"c"}),
      OpCase("Mod").init("c", scalar(0.7)).on_input({"c"}, {{"fmod", int64_t{1}}}),
      OpCase("Equal").node("Relu", {"input"}, {"r"}).init("zero", scalar(0)).node("Equal", {"r", "zero"}, {"e"})
          .node("Cast", {"e"}, {"y"}, {{"to", to_float}}),
      OpCase("Not").node("Cast", {"input"}, {"b"}, {{"to", to_bool}}).node("Not", {"b"}, {"n"})
          .node("Cast", {"n"}, {"y"}, {{"to", to_float}}),
      OpCase("Where").init("cond", torch::rand({4, 5}) > 0.5).init("other", scalar(-1))
          .node("Where", {"cond", "input", "other"}, {"y"}),
      OpCase("Dropout").init("ratio", scalar(0.3)).on_input({"ratio"}),
      // Einsum: a product of two activations as MaxViT exports it (capital
      // letters and spaces), a weight with the output implied, an ellipsis.
      OpCase("Einsum").node("Einsum", {"input", "input"}, {"y"}, {{"equation", Str("B C I D, B C J D -> B C I J")}}),
      OpCase("Einsum").init("w", torch::randn({5, 6})).on_input({"w"}, {{"equation", Str("bchw,wk")}}),
      OpCase("Einsum").init("w", torch::randn({2, 5})).on_input({"w"}, {{"equation", Str("...ij,kj->...ik")}}),
      // Tensor ops.
      OpCase("Transpose").on_input({}, {{"perm", Ints{0, 3, 1, 2}}}),
      OpCase("Reshape").init("shape", ints({0, -1, 2})).on_input({"shape"}),
      OpCase("Flatten").on_input({}, {{"axis", int64_t{-3}}}),
      OpCase("Concat").node("Concat", {"input", "input"}, {"y"}, {{"axis", int64_t{1}}}),
      OpCase("Split").init("sizes", ints({1, 2})).node("Split", {"input", "sizes"}, {"a", "y"}, {{"axis", int64_t{1}}}),
      OpCase("Split", {7, 4, 5}, 18).node("Split", {"input"}, {"a", "b", "y"}, {{"axis", int64_t{1}},
                                                                                  {"num_outputs", int64_t{3}}}),
      OpCase("Slice").init("starts", ints({3, 0})).init("ends", ints({0, 10})).init("axes", ints({2, 3}))
          .init("steps", ints({-1, 2})).on_input({"starts", "ends", "axes", "steps"}),
      OpCase("Slice").init("starts", ints({-1})).init("ends", ints({-100})).init("axes", ints({1}))
          .init("steps", ints({-2})).on_input({"starts", "ends", "axes", "steps"}),
      OpCase("Gather").init("i", ints({2, 0, -1})).on_input({"i"}, {{"axis", int64_t{3}}}),
      OpCase("Unsqueeze").init("axes", ints({1})).on_input({"axes"}),
      OpCase("Squeeze").init("axes", ints({2})).node("Unsqueeze", {"input", "axes"}, {"u"})
          .node("Squeeze", {"u", "axes"}, {"y"}),
      OpCase("Expand").init("shape", ints({1, 3, 1, 1}))
          .node("ReduceMean", {"input"}, {"m"}, {{"axes", Ints{1}}}).node("Expand", {"m", "shape"}, {"y"}),
      OpCase("Pad").init("pads", ints({0, 0, 1, 2, 0, 0, 2, 1})).init("value", scalar(0.5)).on_input({"pads", "value"}),
      OpCase("Pad").init("pads", ints({0, 0, 1, 2, 0, 0, 2, 1})).on_input({"pads"}, {{"mode", Str("reflect")}}),
      OpCase("Pad").init("pads", ints({0, 0, 1, 2, 0, 0, 2, 1})).on_input({"pads"}, {{"mode", Str("edge")}}),
      OpCase("Pad", {3, 4, 5}, 18).init("pads", ints({1, 2, 2, 1})).init("axes", ints({2, 3}))
          .on_input({"pads", "", "axes"}),
      // Shapes computed from the input, used by the next node: Shape,
      // ConstantOfShape, Range, Constant, ScatterND.
      OpCase("Shape").node("Shape", {"input"}, {"s"}).node("Reshape", {"input", "s"}, {"y"}),
      OpCase("ConstantOfShape").node("Shape", {"input"}, {"s"})
          .node("ConstantOfShape", {"s"}, {"c"}).node("Add", {"input", "c"}, {"y"}),
      OpCase("Range").init("start", ints({1})).init("delta", ints({2})).init("limit_axes", ints({3}))
          .node("Shape", {"input"}, {"s"}).node("Gather", {"s", "limit_axes"}, {"limit"})
          .init("zero", ints({0})).node("Squeeze", {"limit", "zero"}, {"lim"})
          .node("Squeeze", {"start", "zero"}, {"st"}).node("Squeeze", {"delta", "zero"}, {"de"})
          .node("Range", {"st", "lim", "de"}, {"r"}).node("Gather", {"input", "r"}, {"y"}, {{"axis", int64_t{3}}}),
      OpCase("Constant").node("Constant", {}, {"c"}, {{"value_float", 1.5}}).node("Mul", {"input", "c"}, {"y"}),
      OpCase("ScatterND").init("i", ints({0, 1, 1, 0})).init("shape", ints({2, 2})).init("u", torch::randn({2, 4, 5}))
          .node("Reshape", {"i", "shape"}, {"idx"}).node("ScatterND", {"input", "idx", "u"}, {"y"}),
      OpCase("Resize").init("roi", floats({})).init("scales", floats({1, 1, 2, 2}))
          .on_input({"roi", "scales"}, {{"mode", Str("nearest")}, {"coordinate_transformation_mode", Str("asymmetric")},
                                        {"nearest_mode", Str("floor")}}),
      OpCase("Resize").init("roi", floats({})).init("scales", floats({1, 1, 1.5, 2}))
          .on_input({"roi", "scales"}, {{"mode", Str("linear")},
                                        {"coordinate_transformation_mode", Str("pytorch_half_pixel")}}),
      // Sizes as F.interpolate(size=...) exports them: the input's batch and channels, then the size.
      OpCase("Resize").init("roi", floats({})).init("hw", ints({7, 9})).init("zero", ints({0})).init("two", ints({2}))
          .node("Shape", {"input"}, {"s"}).node("Slice", {"s", "zero", "two"}, {"nc"})
          .node("Concat", {"nc", "hw"}, {"sizes"}, {{"axis", int64_t{0}}})
          .node("Resize", {"input", "roi", "", "sizes"}, {"y"}, {{"mode", Str("linear")},
                                                                {"coordinate_transformation_mode", Str("align_corners")}}),
      // Pooling and reductions.
      OpCase("MaxPool").on_input({}, {{"kernel_shape", Ints{2, 3}}, {"pads", Ints{0, 1, 1, 0}},
                                      {"ceil_mode", int64_t{1}}}),
      OpCase("AveragePool").on_input({}, {{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}}),
      unary("GlobalAveragePool"), unary("GlobalMaxPool"),
      unary("ReduceMean", {{"axes", Ints{2, 3}}}),
      OpCase("ReduceMean", {3, 4, 5}, 18).init("axes", ints({1})).on_input({"axes"}, {{"keepdims", int64_t{0}}}),
  };
}

class OnnxOpsTest : public limpq::testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    if (!onnx_import_available() || !limpq::testing::onnx_builder_available()) GTEST_SKIP() << "built without libonnx";
  }
};

TEST_F(OnnxOpsTest, EveryConverterMatchesOnnxRuntime) {
  std::set<std::string> covered;
  for (const OpCase& c : cases()) {
    c.check(temp_path(""));
    covered.insert(c.op());
  }
  for (const auto& op : onnx_supported_ops()) EXPECT_TRUE(covered.count(op)) << op << " has no single-node case";
}

// GELU as PyTorch exports it (Div by sqrt 2, Erf, Add 1, Mul by x, Mul by
// 0.5) runs as one op; the same nodes with a value in between read
// elsewhere run node by node. Both give ONNX Runtime's outputs, and the same
// gradient as the nodes computed one by one.
TEST_F(OnnxOpsTest, GeluNodesRunAsOneOpUnlessAValueInBetweenIsReadElsewhere) {
  auto import_gelu = [&](bool shared) {
    OnnxGraphBuilder g(17, {3, 4, 5});
    // Named as PyTorch names constants: a module's tensor would be trained.
    g.initializer("onnx::Div_1", scalar(std::sqrt(2.0f))).initializer("onnx::Add_2", scalar(1));
    g.initializer("onnx::Mul_3", scalar(0.5));
    g.node("Div", {"input", "onnx::Div_1"}, {"d"}).node("Erf", {"d"}, {"e"}).node("Add", {"e", "onnx::Add_2"}, {"a"});
    g.node("Mul", {"input", "a"}, {"m"}).node("Mul", {"m", "onnx::Mul_3"}, {shared ? "g" : "y"});
    if (shared) g.node("Add", {"g", "d"}, {"y"});
    const std::string path = temp_path(shared ? "gelu_shared.onnx" : "gelu.onnx");
    util::write_file_atomic(path, g.flattened("y"));
    return std::make_pair(path, import_onnx(path));
  };
  auto [fused_path, fused] = import_gelu(false);
  auto [shared_path, shared] = import_gelu(true);
  EXPECT_EQ(fused->fused_nodes(), 5);
  EXPECT_EQ(shared->fused_nodes(), 0);
  const torch::Tensor x = torch::randn({2, 3, 4, 5}) * 3;
  for (auto [path, model] : {std::make_pair(fused_path, fused), std::make_pair(shared_path, shared)}) {
    torch::NoGradGuard no_grad;
    const torch::Tensor theirs = deploy::run_onnx_runtime(path, x, deploy::find_ort_runner(), "disabled").outputs;
    EXPECT_LE(((model->forward(x) - theirs).abs().max() / theirs.abs().max()).item<double>(), kTolerance) << path;
  }
  const torch::Tensor input = x.clone().requires_grad_();
  fused->forward(input).sum().backward();
  const torch::Tensor by_nodes = x.clone().requires_grad_();
  const torch::Tensor d = by_nodes / std::sqrt(2.0f);
  (by_nodes * (torch::erf(d) + 1) * 0.5).sum().backward();
  EXPECT_TRUE(torch::allclose(input.grad(), by_nodes.grad(), 1e-5, 1e-6));
}

// What a converter does not read is refused by name: an input beyond those
// it reads, an attribute of another opset's form (ReduceMean's axes became
// an input in opset 18). At opset 18, which libonnx 1.12's checker does not
// know, these checks are the only ones.
TEST_F(OnnxOpsTest, UnreadInputsAndAttributesAreRefusedByName) {
  const std::string extra_input = temp_path("extra.onnx");
  util::write_file_atomic(extra_input,
                          OnnxGraphBuilder(18, {3, 4, 5}).node("Relu", {"input", "input"}, {"y"}).flattened("y"));
  const std::string message = limpq::testing::error_of([&] { import_onnx(extra_input); });
  EXPECT_THAT(message, ::testing::HasSubstr("(Relu, opset 18): input 1 ('input') is not handled"));
  const std::string old_form = temp_path("old_form.onnx");
  util::write_file_atomic(old_form, OnnxGraphBuilder(18, {3, 4, 5})
                                        .node("ReduceMean", {"input"}, {"y"}, {{"axes", std::vector<int64_t>{1}}})
                                        .flattened("y"));
  EXPECT_THAT(limpq::testing::error_of([&] { import_onnx(old_form); }),
              ::testing::HasSubstr("(ReduceMean, opset 18): attribute 'axes' is not handled"));
}

// Pads that would allocate more than the importer allows are refused at
// import (the probe) with the node named, not attempted (first found by
// fuzz_onnx: a mutated file asked for 4e17 bytes).
TEST_F(OnnxOpsTest, AbsurdPadsAreRefusedBeforeAllocating) {
  auto refusal = [&](std::vector<int64_t> pads) {
    const std::string path = temp_path("pad.onnx");
    util::write_file_atomic(
        path, OnnxGraphBuilder(17, {3, 4, 5}).initializer("pads", ints(pads)).node("Pad", {"input", "pads"}, {"y"})
                  .flattened("y"));
    return limpq::testing::error_of([&] { import_onnx(path); });
  };
  EXPECT_THAT(refusal({0, 0, 0, 0, 0, 0, 0, int64_t{1} << 40}), ::testing::HasSubstr("Pad: pad 1099511627776 is out of range"));
  EXPECT_THAT(refusal({0, 0, 0, 0, 0, 0, 0, int64_t{1} << 27}), ::testing::HasSubstr("more than 268435456 elements"));
  EXPECT_THAT(refusal({0, 0, 0, -3, 0, 0, 0, -3}), ::testing::HasSubstr("give a negative size"));
  EXPECT_THAT(refusal({0, 0, 0, 0, 0, 0, 0, int64_t{1} << 27}), ::testing::HasSubstr("(Pad, opset 17)"));
}

// Constants computed at import are bounded in all, not only one by one
// (fuzz_onnx's second finding: ConstantOfShape and Concat folded into 8 GB
// before a later node was refused).
TEST_F(OnnxOpsTest, ValuesComputedAtImportAreBoundedInAll) {
  const std::string path = temp_path("folded.onnx");
  OnnxGraphBuilder g(17, {3, 4, 5});
  g.initializer("shape", ints({1 << 12, 1 << 12}));  // 16 Mi elements, within ConstantOfShape's own bound
  g.node("ConstantOfShape", {"shape"}, {"c"});
  g.node("Concat", {"c", "c", "c", "c"}, {"cc"}, {{"axis", int64_t{0}}});
  g.node("Concat", {"cc", "c"}, {"ccc"}, {{"axis", int64_t{0}}});
  g.node("Relu", {"input"}, {"y"});
  util::write_file_atomic(path, g.flattened("y"));
  EXPECT_THAT(limpq::testing::error_of([&] { import_onnx(path); }),
              ::testing::HasSubstr("(Concat, opset 17): the values computed at import from constants hold more than "
                                   "67108864 elements in all"));
}

// docs/onnx.md's table of what is imported lists exactly the registry's ops
// (the op names in backquotes in its first column).
TEST(OnnxOpsDocsTest, TheTableListsTheRegistry) {
  std::istringstream doc(util::read_file(LIMPQ_SOURCE_DIR "/docs/onnx.md"));
  std::string line;
  while (std::getline(doc, line) && line != "## What is imported") {
  }
  ASSERT_EQ(line, "## What is imported") << "docs/onnx.md has no section 'What is imported'";
  std::set<std::string> documented;
  const std::regex op_name("`([A-Z][A-Za-z]*)`");
  bool in_table = false;
  while (std::getline(doc, line)) {
    if (line.rfind("|", 0) != 0) {
      if (in_table) break;
      continue;
    }
    in_table = true;
    const std::string first = line.substr(1, line.find('|', 1) - 1);
    for (std::sregex_iterator it(first.begin(), first.end(), op_name), end; it != end; ++it) documented.insert((*it)[1]);
  }
  const std::vector<std::string> ops = onnx_supported_ops();
  EXPECT_EQ(documented, std::set<std::string>(ops.begin(), ops.end()));
}

}  // namespace
}  // namespace limpq::models
