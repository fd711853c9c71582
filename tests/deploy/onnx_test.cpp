// ONNX export checked against a real runtime: a small mixed-precision
// resnet20 trained on real Fashion-MNIST images, exported in QDQ form and run
// in ONNX Runtime (onnxruntime-node, installed by scripts/setup.sh) on 1000
// test images.
#include "limpq/deploy/onnx.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "limpq/models/quantized.h"
#include "limpq/train/trainer.h"
#include "limpq/util/atomic_file.h"
#include "support/test_support.h"

namespace limpq::deploy {
namespace {

using ::testing::HasSubstr;

constexpr const char* kFashionMnist = "/usr/share/datasets/fashion-mnist";

class OnnxTest : public limpq::testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    ASSERT_TRUE(onnx_available()) << "limpq was built without libonnx-dev (scripts/setup.sh installs it)";
    ASSERT_TRUE(std::filesystem::exists(std::string(kFashionMnist) + "/t10k-images-idx3-ubyte.gz"))
        << "the dataset-fashion-mnist package is missing (scripts/setup.sh installs it)";
    runner_ = find_ort_runner();
    ASSERT_FALSE(runner_.empty()) << "tools/ort/run_onnx.js not found";
  }

  // One full-precision resnet20 for the suite, trained on first use (ctest
  // runs each test in its own process): 2 epochs on 4096 real images.
  static const std::string& fp_checkpoint() {
    if (fp_.empty()) {
      suite_dir_ = (std::filesystem::temp_directory_path() / ("limpq_onnx_test_" + std::to_string(::getpid())))
                       .string();
      train::TrainConfig c = base_config();
      c.optim.epochs(2).lr(0.1).warmup_epochs(0.2);
      c.run.out_dir(suite_dir_ + "/fp");
      fp_ = train::run_train(c, false).checkpoint;
    }
    return fp_;
  }
  static void TearDownTestSuite() {
    if (!suite_dir_.empty()) std::filesystem::remove_all(suite_dir_);
  }

  static train::TrainConfig base_config() {
    train::TrainConfig c;
    c.data.dataset("fashion-mnist").limit(4096).batch_size(64).eval_batch_size(250).workers(1).test_limit(250);
    c.model.arch("resnet20");
    c.run.threads(0).progress(false);
    return c;
  }

  // Fine-tuned under a mixed policy: weights at every bit-width from 2 to 8,
  // activations from 4 to 8 (per-channel weight steps when asked).
  std::string finetuned(bool per_channel) {
    models::Model model = models::make_model("resnet20", 1, 10);
    models::QuantModel qm(model, {1, 28, 28}, models::QuantizeOptions());
    quant::Policy policy = qm.uniform_policy({4, 4});
    for (size_t i = 0; i < policy.layers.size(); ++i) {
      policy.layers[i].second = {2 + static_cast<int64_t>(i % 7), 4 + static_cast<int64_t>(i % 5)};
    }
    quant::write_policy(temp_path("policy.json"), policy);
    train::TrainConfig c = base_config();
    c.model.weights(fp_checkpoint());
    c.quant.policy(temp_path("policy.json"));
    c.quant.quantize(models::QuantizeOptions().per_channel(per_channel));
    c.optim.epochs(1).lr(0.01).warmup_epochs(0);
    c.run.out_dir(temp_path("ft"));
    return train::run_train(c, false).checkpoint;
  }

  void expect_matches_runtime(const std::string& onnx, const train::Checkpoint& ckpt) {
    data::DataOptions data = train::data_options_of(ckpt);
    data.test_limit(0);  // training evaluated 250; compare on 1000
    const OnnxVerification v = verify_onnx(onnx, ckpt, data, 1000, runner_);
    for (const auto* a : {&v.exact, &v.deployed}) {
      std::cout << onnx << (a == &v.exact ? " (as written): " : " (deployed): ") << v.images
                << " images, within 1e-4 on " << a->within_tolerance << "%, median " << a->median_rel_diff << ", max "
                << a->max_rel_diff << ", top-1 agreement " << a->agreement << "%, top-1 " << v.limpq_top1 << "% / "
                << a->runtime_top1 << "%\n";
    }
    EXPECT_EQ(v.images, 1000);
    EXPECT_THAT(v.runtime, HasSubstr("onnxruntime-node"));
    // Almost every image matches to float rounding; the rest differ where a
    // pre-quantization value sits within rounding noise of a boundary, so
    // one activation moves by a step (different convolution summation order).
    // (At 8 bits a step is small and such moves are frequent but tiny: most
    // images stay within 1e-4 of the largest logit, none moves far.)
    for (const auto* a : {&v.exact, &v.deployed}) {
      EXPECT_LT(a->median_rel_diff, 1e-5);
      EXPECT_GE(a->within_tolerance, 80.0);
      EXPECT_LT(a->max_rel_diff, 0.2);
      EXPECT_GE(a->agreement, 99.9);
      EXPECT_NEAR(a->runtime_top1, v.limpq_top1, 0.2);
    }
    EXPECT_GT(v.limpq_top1, 50.0) << "the model learned something";
  }

  std::string runner_;
  static inline std::string suite_dir_, fp_;
};

TEST_F(OnnxTest, QdqExportMatchesOnnxRuntimeOnRealImages) {
  const train::Checkpoint ckpt = train::load_checkpoint(finetuned(/*per_channel=*/false));
  const std::string path = temp_path("model.onnx");
  const OnnxSummary s = write_onnx(path, ckpt);
  EXPECT_TRUE(s.checked) << "passed the ONNX checker";
  EXPECT_EQ(s.quantized_weights, 22) << "20 searchable layers + first conv + fc";
  EXPECT_EQ(s.quantized_activations, 22);
  EXPECT_EQ(s.int4_weights, 0);
  EXPECT_EQ(s.file_bytes, static_cast<int64_t>(std::filesystem::file_size(path)));
  expect_matches_runtime(path, ckpt);

  // Opset 21 stores the weights of <= 4 bits as INT4.
  const std::string int4 = temp_path("model_int4.onnx");
  const OnnxSummary s4 = write_onnx(int4, ckpt, OnnxOptions().opset(21));
  EXPECT_GT(s4.int4_weights, 0);
  EXPECT_LT(s4.file_bytes, s.file_bytes);
  expect_matches_runtime(int4, ckpt);
}

TEST_F(OnnxTest, PerChannelStepsExportWithAnAxis) {
  const train::Checkpoint ckpt = train::load_checkpoint(finetuned(/*per_channel=*/true));
  const std::string path = temp_path("model_pc.onnx");
  EXPECT_TRUE(write_onnx(path, ckpt).checked);
  expect_matches_runtime(path, ckpt);
}

TEST_F(OnnxTest, RefusesWhatItCannotExport) {
  // A full-precision checkpoint; its training barely matters.
  train::TrainConfig c = base_config();
  c.data.limit(64);
  c.optim.epochs(1);
  c.run.out_dir(temp_path("fp"));
  const train::Checkpoint fp = train::load_checkpoint(train::run_train(c, false).checkpoint);
  EXPECT_THAT([&] { write_onnx(temp_path("fp.onnx"), fp); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("takes a checkpoint fine-tuned under a policy")));
  EXPECT_FALSE(std::filesystem::exists(temp_path("fp.onnx")));
  EXPECT_THAT([&] { write_onnx(temp_path("x.onnx"), fp, OnnxOptions().opset(15)); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("opset must be 13")));
}

}  // namespace
}  // namespace limpq::deploy
