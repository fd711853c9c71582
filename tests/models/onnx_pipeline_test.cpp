// An imported network through limpq's own path: trained, fine-tuned under a
// policy named in its PyTorch module paths, exported back to ONNX and run
// in ONNX Runtime; and the refusals around it (a changed file, data that
// does not fit, --arch with --onnx).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "limpq/deploy/onnx.h"
#include "limpq/deploy/pytorch.h"
#include "limpq/models/onnx_model.h"
#include "limpq/quant/policy.h"
#include "limpq/train/checkpoint.h"
#include "limpq/train/evaluate.h"
#include "limpq/train/pipeline.h"
#include "limpq/train/trainer.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/subprocess.h"
#include "support/test_support.h"

namespace limpq::train {
namespace {

using ::testing::HasSubstr;

class OnnxPipelineTest : public limpq::testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    const char* dir = std::getenv("LIMPQ_ONNX_MODELS_DIR");
    ASSERT_NE(dir, nullptr) << "run through ctest: the onnx_models_export fixture sets LIMPQ_ONNX_MODELS_DIR";
    if (!models::onnx_import_available()) GTEST_SKIP() << "built without libonnx";
    // The network in a folder of the test's own, so that it can be changed.
    onnx_ = temp_path("tinynet.onnx");
    std::filesystem::copy_file(std::string(dir) + "/tinynet_preserve.onnx", onnx_);
    other_onnx_ = std::string(dir) + "/tinynet_eval.onnx";
  }

  // Synthetic MNIST (1x28x28) adapted to the network's 3x32x32 input.
  TrainConfig tiny_config(const std::string& out_dir) {
    const std::string data_dir = temp_path("data");
    if (!std::filesystem::exists(data_dir)) limpq::testing::write_synthetic_mnist(data_dir, 160, 40);
    TrainConfig c;
    c.data.dataset("mnist").root(data_dir).batch_size(16).eval_batch_size(20).workers(1).channels(3).image_size(32);
    c.model.onnx(onnx_);
    c.optim.epochs(1).lr(0.05);
    c.run.out_dir(out_dir).threads(1).progress(false);
    return c;
  }

  std::string onnx_, other_onnx_;
};

TEST_F(OnnxPipelineTest, FineTunedUnderAPolicyAndExportedBackToOnnxRuntime) {
  const TrainResult fp = run_train(tiny_config(temp_path("fp")), false);
  TrainConfig ft = tiny_config(temp_path("ft"));
  ft.model.weights(fp.checkpoint);
  // A policy in the network's own module paths.
  const std::string policy = temp_path("policy.json");
  util::write_file_atomic(policy, R"({"format": "limpq.policy/1", "layers": {
      "wide": {"weight_bits": 3, "act_bits": 4}, "dilated": {"weight_bits": 2, "act_bits": 4},
      "gate.1": {"weight_bits": 4, "act_bits": 4}, "gate.3": {"weight_bits": 4, "act_bits": 4},
      "down": {"weight_bits": 3, "act_bits": 3}},
      "fixed": {"stem.0": {"weight_bits": 8, "act_bits": 8}, "fc": {"weight_bits": 8, "act_bits": 8}}})");
  ft.quant.policy(policy);
  const Checkpoint ckpt = load_checkpoint(run_train(ft, false).checkpoint);
  EXPECT_EQ(ckpt.arch, "onnx");
  EXPECT_EQ(ckpt.onnx, onnx_);

  const std::string exported = temp_path("quantized.onnx");
  const deploy::OnnxSummary s = deploy::write_onnx(exported, ckpt);
  EXPECT_TRUE(s.checked);
  EXPECT_EQ(s.opset, 17);  // the file's own
  EXPECT_EQ(s.quantized_weights, 7);
  EXPECT_EQ(s.quantized_activations, 7);
  const deploy::OnnxVerification v =
      deploy::verify_onnx(exported, ckpt, data_options_of(ckpt), 40, deploy::find_ort_runner());
  EXPECT_EQ(v.images, 40);
  EXPECT_GE(v.exact.agreement, 97.5);
  EXPECT_LT(v.exact.median_rel_diff, 1e-4);
  EXPECT_GE(v.deployed.agreement, 97.5);
  // More images than the test set has are refused, not cut silently.
  EXPECT_THAT(limpq::testing::error_of([&] {
                deploy::verify_onnx(exported, ckpt, data_options_of(ckpt), 41, deploy::find_ort_runner());
              }),
              HasSubstr("--verify-images 41 is more than the 40 test images"));

  // The same network as a state_dict that the user's own PyTorch module
  // loads by its parameter names, with the learned steps beside the weights.
  const std::string state_dict = temp_path("tinynet.pt");
  const deploy::StateDictSummary sd = deploy::write_pytorch_state_dict(state_dict, ckpt);
  EXPECT_EQ(sd.quantized_layers, 7);
  const util::ProcessResult loaded = util::run_process(
      {LIMPQ_PYTHON, "-c",
       "import sys, torch; sys.path.insert(0, '" LIMPQ_TEST_TOOLS_DIR "'); from export_onnx_models import TinyNet; "
       "sd = torch.load('" + state_dict + "'); "
       "TinyNet().load_state_dict({k: v for k, v in sd.items() if not k.endswith(('_step', '_bits', '_signed'))}); "
       "print(int(sd['down.weight_bits']), int(sd['down.act_bits']), float(sd['down.weight_step']) > 0)"});
  EXPECT_EQ(loaded.exit_code, 0) << loaded.output;
  EXPECT_THAT(loaded.output, HasSubstr("3 3 True"));

  // The user's module under docs/onnx.md's formulas gives limpq's logits.
  LoadedModel limpq_model = load_model(ckpt);
  limpq_model.model->eval();
  const torch::Tensor x = torch::randn({16, 3, 32, 32});
  torch::Tensor ours;
  {
    torch::NoGradGuard no_grad;
    ours = limpq_model.model->forward(x).contiguous();
  }
  util::write_file_atomic(temp_path("x.f32"), {reinterpret_cast<const char*>(x.data_ptr<float>()),
                                               static_cast<size_t>(x.nbytes())});
  const util::ProcessResult torch_run =
      util::run_process({LIMPQ_PYTHON, LIMPQ_TEST_TOOLS_DIR "/quantized_state_dict.py", "export_onnx_models:TinyNet",
                         state_dict, temp_path("x.f32"), "16,3,32,32", temp_path("theirs.f32")});
  ASSERT_EQ(torch_run.exit_code, 0) << torch_run.output;
  const std::string bytes = util::read_file(temp_path("theirs.f32"));
  ASSERT_EQ(bytes.size(), static_cast<size_t>(ours.nbytes()));
  const torch::Tensor theirs = torch::from_blob(const_cast<char*>(bytes.data()), ours.sizes(), torch::kFloat32).clone();
  const deploy::LogitAgreement a = deploy::compare_logits(ours, theirs, theirs.argmax(1));
  EXPECT_GE(a.agreement, 15.0 / 16 * 100);
  EXPECT_GE(a.within_tolerance, 15.0 / 16 * 100);  // a rounding-boundary crossing may move one image
}

// The whole pipeline on a network of none of limpq's architectures, with
// batch norm kept and folded: the policy names the PyTorch module paths, and
// the fine-tuned network exports and runs in ONNX Runtime.
class OnnxRunTest : public OnnxPipelineTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(OnnxRunTest, PipelineAtW3A3LevelAndExportVerified) {
  const char* dir = std::getenv("LIMPQ_ONNX_MODELS_DIR");
  const std::string mode = GetParam();
  const nlohmann::json info = nlohmann::json::parse(util::read_file(std::string(dir) + "/" + mode + ".json"));
  PipelineConfig config;
  const TrainConfig tiny = tiny_config(temp_path("unused"));
  config.data = tiny.data;
  config.model.onnx(std::string(dir) + "/" + mode + ".onnx");
  config.train.epochs(1).lr(0.05);
  config.run.out_dir(temp_path("run")).threads(1).progress(false);
  config.indicators.indicators.candidates({4, 3, 2});
  config.indicators.optim.epochs(1);
  config.search.bitops("W3A3");
  config.finetune.optim.epochs(1).bn_recalibration_batches(2);
  const PipelineResult r = run_pipeline(config);
  ASSERT_EQ(r.rows.size(), 3u);
  const quant::Policy policy = quant::read_policy(r.policy);
  // The policy names the module paths, and the attention products besides.
  std::set<std::string> ours, theirs;
  int64_t products = 0;
  for (const auto* part : {&policy.layers, &policy.fixed}) {
    for (const auto& [name, bits] : *part) {
      if (name.find(".matmul") != std::string::npos) {
        ++products;
      } else {
        ours.insert(name);
      }
    }
  }
  for (const auto& n : info["layers"]) theirs.insert(n.get<std::string>());
  EXPECT_EQ(ours, theirs);
  EXPECT_EQ(products, info.value("attention_products", 0));
  EXPECT_LE(r.rows[2].test.cost->bitops, r.rows[1].test.cost->bitops);  // within the W3A3 budget

  const Checkpoint ckpt = load_checkpoint(r.rows[2].checkpoint);
  const std::string exported = temp_path("mixed.onnx");
  EXPECT_TRUE(deploy::write_onnx(exported, ckpt).checked);
  const deploy::OnnxVerification v =
      deploy::verify_onnx(exported, ckpt, data_options_of(ckpt), 40, deploy::find_ort_runner());
  EXPECT_GE(v.exact.agreement, 97.5) << mode;
  EXPECT_GE(v.exact.within_tolerance, 90.0) << mode;
}

// TinyNet exported both ways, and transformers: a ViT (attention products
// searched, class token and position embedding trained) and a Swin.
INSTANTIATE_TEST_SUITE_P(Networks, OnnxRunTest,
                         ::testing::Values("tinynet_preserve", "tinynet_eval", "vit_opset17", "swin_opset13"));

// Graphs whose initializers are shared: an untrained mobilenet_v3_small
// exported with README.md's command (PyTorch shares equal batch-norm and bias
// initializers through Identity nodes) and a conv applied twice (two Conv
// nodes read one initializer). The export gives every value one name, passes
// the ONNX checker and runs in ONNX Runtime.
class OnnxSharedInitializersTest : public OnnxPipelineTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(OnnxSharedInitializersTest, ExportGivesEveryValueOneName) {
  const std::string source = std::string(std::getenv("LIMPQ_ONNX_MODELS_DIR")) + "/" + GetParam() + ".onnx";
  TrainConfig c = tiny_config(temp_path("ft"));
  c.model.onnx(source);
  c.quant.uniform("W4A4");
  c.data.limit(32);
  const Checkpoint ckpt = load_checkpoint(run_train(c, false).checkpoint);
  const std::string exported = temp_path("mixed.onnx");
  const deploy::OnnxSummary s = deploy::write_onnx(exported, ckpt);
  EXPECT_TRUE(s.checked);  // the checker refuses a name given twice
  EXPECT_GT(s.quantized_weights, 0);
  const deploy::OnnxVerification v =
      deploy::verify_onnx(exported, ckpt, data_options_of(ckpt), 40, deploy::find_ort_runner());
  EXPECT_EQ(v.images, 40);
  // The graph as written reproduces limpq to float rounding on almost every image.
  EXPECT_GE(v.exact.agreement, 97.5) << GetParam();
  EXPECT_GE(v.exact.within_tolerance, 95.0) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Graphs, OnnxSharedInitializersTest,
                         ::testing::Values("shared_mobilenet_v3_small", "shared_conv"));

// The logits of `quantized_state_dict.py MODULE STATE_DICT` on `x` (the
// user's module with the state_dict loaded strictly and docs/onnx.md's
// quantizer formulas) against limpq's own on the checkpoint's network.
deploy::LogitAgreement state_dict_in_pytorch(const Checkpoint& ckpt, const std::string& module,
                                             const std::string& dir, const torch::Tensor& x) {
  const std::string state_dict = dir + "/net.pt", input = dir + "/x.f32", output = dir + "/theirs.f32";
  deploy::write_pytorch_state_dict(state_dict, ckpt);
  LoadedModel limpq_model = load_model(ckpt);
  limpq_model.model->eval();
  torch::Tensor ours;
  {
    torch::NoGradGuard no_grad;
    ours = limpq_model.model->forward(x).contiguous();
  }
  util::write_file_atomic(input, {reinterpret_cast<const char*>(x.data_ptr<float>()), static_cast<size_t>(x.nbytes())});
  std::string shape;
  for (int64_t d : x.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
  const util::ProcessResult run = util::run_process(
      {LIMPQ_PYTHON, LIMPQ_TEST_TOOLS_DIR "/quantized_state_dict.py", module, state_dict, input, shape, output});
  EXPECT_EQ(run.exit_code, 0) << run.output;
  const std::string bytes = util::read_file(output);
  EXPECT_EQ(bytes.size(), static_cast<size_t>(ours.nbytes()));
  if (bytes.size() != static_cast<size_t>(ours.nbytes())) return {};
  const torch::Tensor theirs = torch::from_blob(const_cast<char*>(bytes.data()), ours.sizes(), torch::kFloat32).clone();
  return deploy::compare_logits(ours, theirs, theirs.argmax(1));
}

// A trained imported transformer's state_dict in the user's own module:
// every trained tensor (class token, position embedding, LayerNorm scales
// and biases, the biases added after MatMuls, ConvNeXt's layer scale, the
// weights read through a transpose, in nn.Linear's layout) loads with
// load_state_dict(strict=True), and the module gives limpq's logits.
class OnnxTransformerStateDictTest : public OnnxPipelineTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(OnnxTransformerStateDictTest, LoadsStrictlyAndGivesLimpqsLogits) {
  const std::string name = GetParam();
  TrainConfig c = tiny_config(temp_path("fp"));
  c.model.onnx(std::string(std::getenv("LIMPQ_ONNX_MODELS_DIR")) + "/" + name + "_opset17.onnx");
  c.data.limit(64);
  const Checkpoint ckpt = load_checkpoint(run_train(c, false).checkpoint);
  const deploy::LogitAgreement a =
      state_dict_in_pytorch(ckpt, "fixture:" + name, temp_path(""), torch::randn({8, 3, 32, 32}));
  EXPECT_EQ(a.within_tolerance, 100.0) << name << ": max relative difference " << a.max_rel_diff;
}

INSTANTIATE_TEST_SUITE_P(Transformers, OnnxTransformerStateDictTest,
                         ::testing::Values("vit", "swin", "convnext", "tokennet"));

// Quantized: a linear layer over tokens (MatMul by a transposed weight) and
// one on pooled features (Gemm), at W4A4, reproduced in PyTorch.
TEST_F(OnnxPipelineTest, QuantizedMatMulAndGemmLinearsReproduceInPyTorch) {
  TrainConfig c = tiny_config(temp_path("fp"));
  c.model.onnx(std::string(std::getenv("LIMPQ_ONNX_MODELS_DIR")) + "/tokennet_opset17.onnx");
  c.data.limit(64);
  TrainConfig ft = c;
  ft.model.weights(run_train(c, false).checkpoint);
  ft.quant.uniform("W4A4");
  ft.run.out_dir(temp_path("ft"));
  const Checkpoint ckpt = load_checkpoint(run_train(ft, false).checkpoint);
  const deploy::LogitAgreement a =
      state_dict_in_pytorch(ckpt, "fixture:tokennet", temp_path(""), torch::randn({16, 3, 32, 32}));
  EXPECT_GE(a.agreement, 15.0 / 16 * 100);
  EXPECT_GE(a.within_tolerance, 15.0 / 16 * 100);  // a rounding-boundary crossing may move one image
}

TEST_F(OnnxPipelineTest, CheckpointRefusesAChangedFile) {
  const TrainResult fp = run_train(tiny_config(temp_path("fp")), false);
  const Checkpoint ckpt = load_checkpoint(fp.checkpoint);
  EXPECT_NO_THROW(load_model(ckpt, fp.checkpoint));
  std::filesystem::copy_file(other_onnx_, onnx_, std::filesystem::copy_options::overwrite_existing);
  EXPECT_THAT(limpq::testing::error_of([&] { load_model(ckpt, fp.checkpoint); }),
              HasSubstr("was trained from the ONNX file '" + onnx_ + "' with checksum"));
}

TEST_F(OnnxPipelineTest, DataThatDoesNotFitNamesBothShapesAndTheFix) {
  TrainConfig c = tiny_config(temp_path("run"));
  c.data.channels(0).image_size(0);
  const std::string message = limpq::testing::error_of([&] { run_train(c, false); });
  EXPECT_THAT(message, HasSubstr("takes 3x32x32 input but the data gives 1x28x28"));
  EXPECT_THAT(message, HasSubstr("--channels 3 --image-size 32"));
}

TEST_F(OnnxPipelineTest, ArchAndOnnxExcludeEachOther) {
  // The default architecture's name too: no --arch is silently ignored.
  for (const char* arch : {"resnet18", "resnet20"}) {
    TrainConfig c = tiny_config(temp_path("run"));
    c.model.arch(arch);
    EXPECT_THAT(limpq::testing::error_of([&] { run_train(c, false); }),
                HasSubstr("model.onnx (--onnx) and model.arch (--arch) exclude each other"));
    EXPECT_FALSE(std::filesystem::exists(temp_path("run")));
  }
}

// A missing file is named with the key that gave it, before anything is
// written, and before a leftover checkpoint is looked at.
TEST_F(OnnxPipelineTest, MissingOnnxFileNamesItsKeyAndWritesNothing) {
  const std::string config = temp_path("missing.yaml");
  util::write_file_atomic(config, "model:\n  onnx: missing.onnx\nrun:\n  out_dir: " + temp_path("run") + "\n");
  const std::string message = limpq::testing::error_of([&] { load_pipeline_config(config); });
  EXPECT_THAT(message, HasSubstr("config '" + config + "'"));
  EXPECT_THAT(message, HasSubstr("model.onnx (--onnx) names 'missing.onnx', which does not exist"));
  PipelineConfig direct;
  direct.model.onnx("missing.onnx");
  direct.run.out_dir(temp_path("run"));
  EXPECT_THAT(limpq::testing::error_of([&] { run_pipeline(direct); }), HasSubstr("'missing.onnx', which does not exist"));
  EXPECT_FALSE(std::filesystem::exists(temp_path("run")));

  TrainConfig c = tiny_config(temp_path("train"));
  util::make_directories(temp_path("train"));
  util::write_file_atomic(temp_path("train/checkpoint.pt"), "left over");
  c.model.onnx("missing.onnx");
  EXPECT_THAT(limpq::testing::error_of([&] { run_train(c, false); }), HasSubstr("'missing.onnx', which does not exist"));
}

// --weights: a checkpoint of the same file once it changed, or of another
// ONNX network, is refused naming the file it was trained from, before any
// list of parameter names.
TEST_F(OnnxPipelineTest, WeightsOfAnotherOnnxFileNameTheirFile) {
  const TrainResult fp = run_train(tiny_config(temp_path("fp")), false);
  TrainConfig other = tiny_config(temp_path("other"));
  other.model.onnx(other_onnx_).weights(fp.checkpoint);
  std::string message = limpq::testing::error_of([&] { run_train(other, false); });
  EXPECT_THAT(message, HasSubstr("was trained from the ONNX file '" + onnx_ + "'"));
  EXPECT_THAT(message, HasSubstr("give --onnx " + onnx_));
  EXPECT_THAT(message, ::testing::Not(HasSubstr("does not match the model")));

  std::filesystem::copy_file(other_onnx_, onnx_, std::filesystem::copy_options::overwrite_existing);
  TrainConfig changed = tiny_config(temp_path("changed"));
  changed.model.weights(fp.checkpoint);
  message = limpq::testing::error_of([&] { run_train(changed, false); });
  EXPECT_THAT(message, HasSubstr("the file changed since; restore the original file"));
  // Evaluation and export name the checkpoint, not a placeholder or their output.
  const Checkpoint ckpt = load_checkpoint(fp.checkpoint);
  EXPECT_THAT(limpq::testing::error_of([&] { run_eval(ckpt, EvalOptions().threads(1), data_options_of(ckpt)); }),
              HasSubstr("'" + fp.checkpoint + "' was trained from the ONNX file"));
  EXPECT_THAT(limpq::testing::error_of([&] { deploy::write_pytorch_state_dict(temp_path("out.pt"), ckpt); }),
              HasSubstr("'" + fp.checkpoint + "' was trained from the ONNX file"));
}

// `limpq eval --onnx`: the file's own weights, the data adapted to it.
TEST_F(OnnxPipelineTest, OnnxCheckpointEvaluatesTheFilesOwnWeights) {
  const Checkpoint ckpt = onnx_checkpoint(onnx_);
  EXPECT_EQ(ckpt.input_shape, (std::vector<int64_t>{3, 32, 32}));
  const data::DataOptions data = data_options_of(ckpt);
  EXPECT_EQ(data.channels(), 3);
  EXPECT_EQ(data.image_size(), 32);
  const models::OnnxModel model = models::import_onnx(onnx_);
  LoadedModel loaded = load_model(ckpt, onnx_);
  model->eval();
  loaded.model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(loaded.model->forward(x), model->forward(x)));
}

}  // namespace
}  // namespace limpq::train
