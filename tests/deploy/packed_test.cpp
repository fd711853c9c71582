#include "limpq/deploy/packed.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "limpq/models/quantized.h"
#include "limpq/train/trainer.h"
#include "limpq/util/atomic_file.h"
#include "support/test_support.h"

namespace limpq::deploy {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using limpq::testing::error_of;

class PackedTest : public limpq::testing::SeededTest {
 protected:
  // A full-precision model and a mixed-precision fine-tune of it.
  void SetUp() override {
    SeededTest::SetUp();
    limpq::testing::write_synthetic_mnist(temp_path("data"), 64, 16);
    train::TrainConfig c;
    c.data.dataset("mnist").root(temp_path("data")).batch_size(16).eval_batch_size(16).workers(1);
    c.model.arch("resnet20");
    c.optim.epochs(1).lr(0.05);
    c.run.out_dir(temp_path("fp")).threads(1).progress(false);
    fp_ = train::run_train(c, false).checkpoint;

    // A policy with every bit-width from 2 to 8 somewhere.
    models::Model model = models::make_model("resnet20", 1, 10);
    models::QuantModel qm(model, {1, 28, 28}, models::QuantizeOptions());
    quant::Policy policy = qm.uniform_policy({4, 4});
    for (size_t i = 0; i < policy.layers.size(); ++i) {
      const int64_t bits = 2 + static_cast<int64_t>(i % 7);
      policy.layers[i].second = {bits, std::max<int64_t>(2, 8 - static_cast<int64_t>(i % 7))};
    }
    quant::write_policy(temp_path("policy.json"), policy);
    c.model.weights(fp_);
    c.quant.policy(temp_path("policy.json"));
    c.optim.lr(0.01);
    c.run.out_dir(temp_path("ft"));
    ft_ = train::run_train(c, false).checkpoint;
  }

  torch::Tensor logits(const train::Checkpoint& ckpt) {
    train::LoadedModel loaded = train::load_model(ckpt, "test");
    loaded.model->eval();
    torch::NoGradGuard no_grad;
    torch::manual_seed(7);
    return loaded.model->forward(torch::randn({8, 1, 28, 28}));
  }

  std::string fp_, ft_;
};

TEST_F(PackedTest, RoundTripReproducesTheQuantizedModelExactly) {
  const train::Checkpoint original = train::load_checkpoint(ft_);
  const PackedSummary summary = write_packed(temp_path("model.lpq"), original);
  EXPECT_TRUE(is_packed_file(temp_path("model.lpq")));
  EXPECT_FALSE(is_packed_file(ft_));
  EXPECT_EQ(summary.file_bytes, static_cast<int64_t>(std::filesystem::file_size(temp_path("model.lpq"))));

  const train::Checkpoint restored = read_packed(temp_path("model.lpq"));
  EXPECT_EQ(restored.arch, "resnet20");
  EXPECT_TRUE(torch::equal(logits(restored), logits(original))) << "the quantized forward pass is bit-exact";

  // The packed weights take their bit-widths: sum of params * bits / 8, each
  // layer rounded up to whole (aligned) bytes.
  const train::LoadedModel loaded = train::load_model(original, "test");
  const auto cost = models::policy_cost(loaded.quant->layers(), loaded.quant->current_policy());
  EXPECT_GE(summary.packed_weight_bytes, static_cast<int64_t>(cost.size_bits / 8));
  EXPECT_LE(summary.packed_weight_bytes, static_cast<int64_t>(cost.size_bits / 8) + 22 * 8);
  EXPECT_LT(summary.file_bytes, cost.fp_size_bits / 8 / 3) << "far below the float32 weights";
}

TEST_F(PackedTest, DamagedFilesAreRefusedByName) {
  write_packed(temp_path("model.lpq"), train::load_checkpoint(ft_));
  const std::string good = util::read_file(temp_path("model.lpq"));
  limpq::testing::write_bytes(temp_path("cut.lpq"), good.substr(0, good.size() - 7));
  EXPECT_THAT(error_of([&] { read_packed(temp_path("cut.lpq")); }),
              AllOf(HasSubstr("cut.lpq"), HasSubstr("checksum mismatch")));
  std::string flipped = good;
  flipped[good.size() / 2] = static_cast<char>(flipped[good.size() / 2] ^ 0x01);
  limpq::testing::write_bytes(temp_path("flip.lpq"), flipped);
  EXPECT_THAT(error_of([&] { read_packed(temp_path("flip.lpq")); }), HasSubstr("checksum mismatch"));
  limpq::testing::write_bytes(temp_path("junk.lpq"), "not a model");
  EXPECT_THAT(error_of([&] { read_packed(temp_path("junk.lpq")); }), HasSubstr("no LIMPQPK1 magic"));
  EXPECT_THAT(error_of([&] { write_packed(temp_path("fp.lpq"), train::load_checkpoint(fp_)); }),
              HasSubstr("full-precision model"));
}

}  // namespace
}  // namespace limpq::deploy
