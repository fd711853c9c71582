// Reliability of training runs: stop requests and mid-epoch resume, corrupt
// and wrong-version files, non-finite losses and gradients.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "limpq/models/state_dict.h"
#include "limpq/quant/indicators.h"
#include "limpq/quant/policy.h"
#include "limpq/train/trainer.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/signals.h"
#include "support/test_support.h"

namespace limpq::train {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using limpq::testing::error_of;

class ReliabilityTest : public limpq::testing::SeededTest {
 protected:
  void TearDown() override {
    util::clear_stop();
    SeededTest::TearDown();
  }
  TrainConfig tiny_config(const std::string& out_dir) {
    const std::string data_dir = temp_path("data");
    if (!std::filesystem::exists(data_dir)) limpq::testing::write_synthetic_mnist(data_dir, 96, 24);
    TrainConfig c;
    c.data.dataset("mnist").root(data_dir).batch_size(16).eval_batch_size(24).workers(1);
    c.model.arch("resnet20");
    c.optim.epochs(2).lr(0.05).warmup_epochs(0.5);
    c.run.out_dir(out_dir).threads(1).progress(false);
    return c;
  }
  // Runs `c` with a stop request after optimizer step `stop_step`; checks
  // that it throws Interrupted after writing a mid-epoch checkpoint.
  void run_interrupted(const TrainConfig& c, int64_t stop_step) {
    TrainHooks hooks;
    hooks.after_step = [stop_step](int64_t step) {
      if (step == stop_step) util::request_stop(SIGINT);
    };
    try {
      run_train(c, /*resume=*/false, hooks);
      FAIL() << "expected Interrupted";
    } catch (const util::Interrupted& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr("checkpoint written to"), HasSubstr("--resume")));
      EXPECT_EQ(e.exit_status(), 130);
    }
    util::clear_stop();
  }
};

void expect_same_parameters(const std::string& a_path, const std::string& b_path) {
  const Checkpoint a = load_checkpoint(a_path);
  const Checkpoint b = load_checkpoint(b_path);
  EXPECT_EQ(a.step, b.step);
  ASSERT_EQ(a.model.size(), b.model.size());
  for (const auto& [name, t] : a.model) {
    EXPECT_TRUE(torch::equal(t, b.model.at(name))) << "differs at " << name;
  }
}

TEST_F(ReliabilityTest, StopRequestCheckpointsMidEpochAndResumeMatchesAStraightRun) {
  const TrainResult straight = run_train(tiny_config(temp_path("straight")), false);
  const TrainConfig c = tiny_config(temp_path("split"));
  run_interrupted(c, /*stop_step=*/3);  // 6 steps per epoch: inside epoch 1
  const Checkpoint mid = load_checkpoint(temp_path("split/checkpoint.pt"));
  EXPECT_EQ(mid.epoch, 0);
  EXPECT_EQ(mid.batch, 3);
  EXPECT_EQ(mid.step, 3);
  const TrainResult resumed = run_train(c, /*resume=*/true);
  EXPECT_TRUE(resumed.completed);
  expect_same_parameters(straight.checkpoint, resumed.checkpoint);
  EXPECT_DOUBLE_EQ(straight.test.loss, resumed.test.loss);
  // The epoch statistics continue across the interruption.
  const auto line = [](const std::string& path) {
    std::ifstream in(path);
    std::string first;
    std::getline(in, first);
    auto j = nlohmann::json::parse(first);
    j.erase("images_per_second");
    j.erase("train_seconds");
    return j;
  };
  EXPECT_EQ(line(temp_path("straight/metrics.jsonl")), line(temp_path("split/metrics.jsonl")));
}

TEST_F(ReliabilityTest, JointIndicatorTrainingResumesMidEpochIdentically) {
  TrainConfig fp = tiny_config(temp_path("fp"));
  fp.optim.epochs(1);
  const TrainResult base = run_train(fp, false);
  auto joint = [&](const std::string& dir) {
    TrainConfig c = tiny_config(temp_path(dir));
    c.model.weights(base.checkpoint);
    c.joint_indicators = true;
    c.indicators.candidates({4, 2});
    c.optim.epochs(2).lr(0.01).warmup_epochs(0);
    return c;
  };
  const TrainResult straight = run_train(joint("straight"), false);
  run_interrupted(joint("split"), /*stop_step=*/4);  // 3 steps per epoch (fraction 0.5): inside epoch 2
  const TrainResult resumed = run_train(joint("split"), true);
  expect_same_parameters(straight.checkpoint, resumed.checkpoint);
  EXPECT_EQ(util::read_file(straight.indicators), util::read_file(resumed.indicators));
}

TEST_F(ReliabilityTest, PeriodicCheckpointsInsideTheEpoch) {
  TrainConfig c = tiny_config(temp_path("run"));
  c.optim.epochs(1);
  c.run.checkpoint_every(2);
  std::vector<int64_t> batches;
  TrainHooks hooks;
  hooks.after_step = [&](int64_t step) {
    // The checkpoint of the previous multiple of 2 is on disk.
    if (step > 2 && step % 2 == 1) batches.push_back(load_checkpoint(temp_path("run/checkpoint.pt")).batch);
  };
  run_train(c, false, hooks);
  EXPECT_EQ(batches, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(load_checkpoint(temp_path("run/checkpoint.pt")).batch, 0) << "the last one is at the epoch's end";
}

TEST_F(ReliabilityTest, CorruptTruncatedAndWrongVersionCheckpointsAreRefused) {
  TrainConfig c = tiny_config(temp_path("run"));
  c.optim.epochs(1);
  const TrainResult r = run_train(c, false);
  const std::string good = util::read_file(r.checkpoint);

  // Truncated.
  limpq::testing::write_bytes(temp_path("truncated.pt"), good.substr(0, good.size() / 2));
  EXPECT_THAT(error_of([&] { load_checkpoint(temp_path("truncated.pt")); }),
              AllOf(HasSubstr("truncated.pt"), HasSubstr("truncated or corrupt")));

  // A valid pickle whose content no longer matches its checksum (one weight changed).
  auto value = torch::pickle_load(std::vector<char>(good.begin(), good.end()));
  auto dict = value.toGenericDict();
  auto model = dict.at("model").toGenericDict();
  model.at("fc.weight").toTensor()[0][0] += 1e-3;
  auto tampered = torch::pickle_save(dict);
  limpq::testing::write_bytes(temp_path("tampered.pt"), std::string(tampered.begin(), tampered.end()));
  EXPECT_THAT(error_of([&] { load_checkpoint(temp_path("tampered.pt")); }),
              AllOf(HasSubstr("tampered.pt"), HasSubstr("checksum mismatch")));
  EXPECT_THAT(error_of([&] { models::read_state_dict_file(temp_path("tampered.pt")); }),
              HasSubstr("checksum mismatch"));

  // Bit flips anywhere in the file: refused (zip or pickle error, or checksum), never accepted.
  for (size_t pos : {good.size() / 3, good.size() / 2, good.size() * 3 / 4}) {
    std::string flipped = good;
    flipped[pos] = static_cast<char>(flipped[pos] ^ 0x10);
    limpq::testing::write_bytes(temp_path("flipped.pt"), flipped);
    EXPECT_THAT(error_of([&] { load_checkpoint(temp_path("flipped.pt")); }), HasSubstr("flipped.pt"))
        << "flip at byte " << pos;
  }

  // Another format version.
  dict = torch::pickle_load(std::vector<char>(good.begin(), good.end())).toGenericDict();
  dict.insert_or_assign("format", std::string("limpq.checkpoint/9"));
  auto future = torch::pickle_save(dict);
  limpq::testing::write_bytes(temp_path("future.pt"), std::string(future.begin(), future.end()));
  EXPECT_THAT(error_of([&] { load_checkpoint(temp_path("future.pt")); }),
              AllOf(HasSubstr("future.pt"), HasSubstr("format 'limpq.checkpoint/9' is not supported")));

  // Resuming from a corrupt checkpoint refuses and leaves it as it was.
  limpq::testing::write_bytes(r.checkpoint, good.substr(0, good.size() - 100));
  EXPECT_THAT(error_of([&] { run_train(c, /*resume=*/true); }), HasSubstr("checkpoint.pt"));
  EXPECT_EQ(util::read_file(r.checkpoint).size(), good.size() - 100);
}

TEST_F(ReliabilityTest, PolicyAndIndicatorFilesCarryAVerifiedChecksum) {
  quant::Policy p;
  p.model = "resnet20";
  p.layers = {{"layer1.0.conv1", {4, 3}}};
  p.fixed = {{"conv1", {8, 8}}};
  quant::write_policy(temp_path("p.json"), p);
  const std::string text = util::read_file(temp_path("p.json"));
  EXPECT_THAT(text, HasSubstr("\"checksum\": \"crc32:"));
  EXPECT_EQ(quant::read_policy(temp_path("p.json")).layers, p.layers);

  std::string edited = text;
  edited.replace(edited.find("\"weight_bits\": 4"), 16, "\"weight_bits\": 5");
  limpq::testing::write_bytes(temp_path("edited.json"), edited);
  EXPECT_THAT(error_of([&] { quant::read_policy(temp_path("edited.json")); }),
              AllOf(HasSubstr("edited.json"), HasSubstr("checksum mismatch")));
  limpq::testing::write_bytes(temp_path("cut.json"), text.substr(0, text.size() / 2));
  EXPECT_THAT(error_of([&] { quant::read_policy(temp_path("cut.json")); }),
              AllOf(HasSubstr("cut.json"), HasSubstr("not valid JSON")));
  std::string version = text;
  version.replace(version.find("limpq.policy/1"), 14, "limpq.policy/7");
  auto j = nlohmann::ordered_json::parse(version);
  j.erase("checksum");
  limpq::testing::write_bytes(temp_path("v7.json"), j.dump());
  EXPECT_THAT(error_of([&] { quant::read_policy(temp_path("v7.json")); }),
              HasSubstr("format 'limpq.policy/7' is not supported"));

  quant::Indicators ind;
  ind.model = "resnet20";
  ind.candidates = {4, 2};
  quant::IndicatorLayer layer;
  layer.name = "layer1.0.conv1";
  layer.searchable = true;
  layer.macs = 100;
  layer.params = 10;
  layer.weight_steps = {{4, 0.04}, {2, 0.1}};
  layer.act_steps = {{4, 0.2}, {2, 0.4}};
  ind.layers = {layer};
  quant::write_indicators(temp_path("ind.json"), ind);
  std::string bad = util::read_file(temp_path("ind.json"));
  bad.replace(bad.find("0.04"), 4, "0.05");
  limpq::testing::write_bytes(temp_path("ind_bad.json"), bad);
  EXPECT_THAT(error_of([&] { quant::read_indicators(temp_path("ind_bad.json")); }),
              AllOf(HasSubstr("ind_bad.json"), HasSubstr("checksum mismatch")));
}

TEST_F(ReliabilityTest, WeightsOfAnotherArchitectureNameTheFlagToPass) {
  TrainConfig fp = tiny_config(temp_path("fp"));
  fp.optim.epochs(1);
  const TrainResult base = run_train(fp, false);
  Checkpoint other = load_checkpoint(base.checkpoint);
  other.arch = "mobilenet_v2_stem1";
  const std::string weights = temp_path("other_arch.pt");
  save_checkpoint(weights, other);
  TrainConfig c = tiny_config(temp_path("ft"));
  c.model.weights(weights);
  EXPECT_THAT(error_of([&] { run_train(c, false); }),
              AllOf(HasSubstr("other_arch.pt' is a limpq checkpoint of a mobilenet_v2_stem1, but the model to load it "
                              "into is a resnet20"),
                    HasSubstr("pass --arch mobilenet_v2_stem1")));
}

TEST_F(ReliabilityTest, NonFiniteLossStopsNamingTheStepAndTheLayer) {
  TrainConfig fp = tiny_config(temp_path("fp"));
  fp.optim.epochs(1);
  const TrainResult base = run_train(fp, false);
  models::StateDict sd = load_checkpoint(base.checkpoint).model;
  sd.at("layer2.0.conv1.weight")[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  const std::string weights = temp_path("nan_weights.pt");
  Checkpoint poisoned = load_checkpoint(base.checkpoint);
  poisoned.model = sd;
  save_checkpoint(weights, poisoned);

  TrainConfig c = tiny_config(temp_path("ft"));
  c.model.weights(weights);
  const std::string message = error_of([&] { run_train(c, false); });
  EXPECT_THAT(message, AllOf(HasSubstr("non-finite loss"), HasSubstr("epoch 1, batch 1/6, step 1"),
                             HasSubstr("first non-finite output at layer 'layer2.0.conv1'")));
  EXPECT_FALSE(util::file_exists(temp_path("ft/checkpoint.pt"))) << "nothing was saved";
  // No checkpoint exists, so none is named.
  EXPECT_THAT(message, HasSubstr("no checkpoint was written yet"));
  EXPECT_THAT(message, Not(HasSubstr("the last good checkpoint is")));

  // Skipping cannot help here: batch norm statistics after the layer turned NaN too.
  c.run.on_nonfinite("skip");
  EXPECT_THAT(error_of([&] { run_train(c, false); }), HasSubstr("cannot be skipped"));
}

TEST_F(ReliabilityTest, SkipModeDropsNonFiniteStepsAndKeepsGoing) {
  TrainConfig fp = tiny_config(temp_path("fp"));
  fp.optim.epochs(1);
  const TrainResult base = run_train(fp, false);
  Checkpoint poisoned = load_checkpoint(base.checkpoint);
  // NaN in the classifier: the loss is NaN but no batch norm follows it.
  poisoned.model.at("fc.weight")[3][5] = std::numeric_limits<float>::infinity();
  poisoned.model.at("fc.weight")[4][5] = -std::numeric_limits<float>::infinity();
  save_checkpoint(temp_path("inf.pt"), poisoned);

  TrainConfig c = tiny_config(temp_path("ft"));
  c.model.weights(temp_path("inf.pt"));
  c.optim.epochs(1);
  c.run.on_nonfinite("skip");
  const TrainResult r = run_train(c, false);
  EXPECT_TRUE(r.completed);
  const Checkpoint after = load_checkpoint(r.checkpoint);
  EXPECT_TRUE(torch::equal(after.model.at("layer1.0.conv1.weight"), poisoned.model.at("layer1.0.conv1.weight")))
      << "every step was skipped, so no weight moved";
}

}  // namespace
}  // namespace limpq::train
