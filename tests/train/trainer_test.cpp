#include "limpq/train/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "limpq/quant/indicators.h"
#include "limpq/train/pipeline.h"
#include "limpq/util/atomic_file.h"
#include "support/test_support.h"

namespace limpq::train {
namespace {

using ::testing::HasSubstr;

class TrainerTest : public limpq::testing::SeededTest {
 protected:
  TrainConfig tiny_config(const std::string& out_dir) {
    const std::string data_dir = temp_path("data");
    if (!std::filesystem::exists(data_dir)) limpq::testing::write_synthetic_mnist(data_dir, 160, 40);
    TrainConfig c;
    c.data.dataset("mnist").root(data_dir).batch_size(16).eval_batch_size(20).workers(1);
    c.model.arch("resnet20");
    c.optim.epochs(2).lr(0.05).warmup_epochs(0.5);
    c.run.out_dir(out_dir).threads(1).progress(false);
    return c;
  }
};

TEST_F(TrainerTest, LearnsASeparableTaskAndWritesItsFiles) {
  TrainConfig c = tiny_config(temp_path("run"));
  c.optim.epochs(4);
  const TrainResult r = run_train(c, /*resume=*/false);
  EXPECT_EQ(r.test.count, 40);
  EXPECT_GT(r.test.top1, 60.0) << "synthetic bands are easy to separate";
  EXPECT_GT(r.images_per_second, 0);
  for (const char* f : {"checkpoint.pt", "metrics.jsonl", "config.json"}) {
    EXPECT_TRUE(util::file_exists(temp_path("run/") + f)) << f;
  }
  std::ifstream log(temp_path("run/metrics.jsonl"));
  int lines = 0;
  for (std::string line; std::getline(log, line);) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["epoch"].get<int>(), ++lines);
    EXPECT_TRUE(j.contains("test"));
  }
  EXPECT_EQ(lines, 4);

  const Checkpoint ckpt = load_checkpoint(r.checkpoint);
  EXPECT_EQ(ckpt.epoch, 4);
  EXPECT_EQ(ckpt.step, 4 * 10);
  EXPECT_EQ(ckpt.arch, "resnet20");
  const EvalResult again = run_eval(ckpt, EvalOptions().threads(1), data_options_of(ckpt));
  EXPECT_DOUBLE_EQ(again.top1, r.test.top1) << "eval reproduces the training run's test accuracy";
  EXPECT_NEAR(again.loss, r.test.loss, 1e-6);
}

TEST_F(TrainerTest, ResumeEqualsAnUninterruptedRun) {
  const TrainResult straight = run_train(tiny_config(temp_path("straight")), /*resume=*/false);
  EXPECT_TRUE(straight.completed);

  TrainConfig interrupted = tiny_config(temp_path("split"));
  TrainHooks stop_after_first;
  stop_after_first.should_stop = [](int64_t epochs_done) { return epochs_done == 1; };
  const TrainResult partial = run_train(interrupted, /*resume=*/false, stop_after_first);
  EXPECT_FALSE(partial.completed);
  EXPECT_EQ(load_checkpoint(partial.checkpoint).epoch, 1);

  const TrainResult resumed = run_train(interrupted, /*resume=*/true);
  EXPECT_TRUE(resumed.completed);
  const Checkpoint a = load_checkpoint(straight.checkpoint);
  const Checkpoint b = load_checkpoint(resumed.checkpoint);
  EXPECT_EQ(a.step, b.step);
  for (const auto& [name, t] : a.model) {
    EXPECT_TRUE(torch::equal(t, b.model.at(name))) << "resumed run differs at " << name;
  }
  EXPECT_DOUBLE_EQ(straight.test.loss, resumed.test.loss);
}

TEST_F(TrainerTest, FinetunesUnderAPolicyAndResumesIt) {
  TrainConfig fp = tiny_config(temp_path("fp"));
  fp.optim.epochs(3);
  const TrainResult base = run_train(fp, false);

  TrainConfig ft = tiny_config(temp_path("ft"));
  ft.model.weights(base.checkpoint);
  ft.quant.uniform("W4A4");
  ft.optim.lr(0.01);
  TrainHooks stop_after_first;
  stop_after_first.should_stop = [](int64_t epochs_done) { return epochs_done == 1; };
  run_train(ft, false, stop_after_first);
  const TrainResult resumed = run_train(ft, /*resume=*/true);

  TrainConfig straight = ft;
  straight.run.out_dir(temp_path("ft_straight"));
  const TrainResult once = run_train(straight, false);
  ASSERT_TRUE(once.test.cost.has_value());
  EXPECT_DOUBLE_EQ(resumed.test.loss, once.test.loss) << "quantizer steps survive the resume";
  EXPECT_GT(once.test.top1, 50.0);

  const Checkpoint ckpt = load_checkpoint(once.checkpoint);
  EXPECT_THAT(ckpt.quantization, HasSubstr("\"mode\":\"policy\""));
  EXPECT_TRUE(ckpt.model.count("layer1.0.conv1.weight_quantizer.steps"));
  const EvalResult again = run_eval(ckpt, EvalOptions().threads(1), data_options_of(ckpt));
  EXPECT_DOUBLE_EQ(again.top1, once.test.top1);
  ASSERT_TRUE(again.cost.has_value());
  EXPECT_LT(again.cost->bitops, again.cost->fp_bitops / 40) << "W4A4 with 8-bit ends is ~60x below 32-bit";

  // Resuming under another policy is refused.
  TrainConfig other = ft;
  other.quant.uniform("W2A2");
  EXPECT_THAT([&] { run_train(other, true); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("trained under another quantization")));
}

TEST_F(TrainerTest, JointIndicatorTrainingWritesFiniteMonotoneIndicators) {
  TrainConfig fp = tiny_config(temp_path("fp"));
  fp.optim.epochs(3);
  const TrainResult base = run_train(fp, false);

  TrainConfig c = tiny_config(temp_path("ind"));
  c.model.weights(base.checkpoint);
  c.joint_indicators = true;
  c.indicators.candidates({4, 3, 2}).fraction(0.5);
  c.optim.epochs(2).lr(0.01).warmup_epochs(0);
  const TrainResult r = run_train(c, false);
  ASSERT_EQ(r.per_candidate.size(), 3u);
  const quant::Indicators ind = quant::read_indicators(r.indicators);
  EXPECT_EQ(ind.input_shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(ind.provenance["fraction"].get<double>(), 0.5);
  ASSERT_EQ(ind.layers.size(), 22u);
  EXPECT_FALSE(ind.layers.front().searchable);
  int monotone = 0, searchable = 0;
  for (const auto& l : ind.layers) {
    if (!l.searchable) continue;
    ++searchable;
    for (int64_t b : {4, 3, 2}) {
      EXPECT_TRUE(std::isfinite(l.weight_steps.at(b)) && l.weight_steps.at(b) > 0) << l.name;
      EXPECT_TRUE(std::isfinite(l.act_steps.at(b)) && l.act_steps.at(b) > 0) << l.name;
    }
    monotone += l.weight_steps.at(4) < l.weight_steps.at(3) && l.weight_steps.at(3) < l.weight_steps.at(2);
  }
  EXPECT_GT(monotone, searchable * 3 / 4) << "steps shrink as bits grow for most layers";

  // Resumable like any training run.
  TrainConfig again = c;
  again.optim.epochs(2);
  EXPECT_NO_THROW(run_train(again, /*resume=*/true));
}

TEST_F(TrainerTest, PipelineRunsEveryStageAndReusesThem) {
  const TrainConfig tiny = tiny_config(temp_path("unused"));
  PipelineConfig p;
  p.data = tiny.data;
  p.model.arch("resnet20");
  p.train.epochs(2).lr(0.05).warmup_epochs(0.5);
  p.run.out_dir(temp_path("pipe")).threads(1).progress(false);
  p.indicators.indicators.candidates({4, 3, 2}).fraction(0.5);
  p.indicators.optim.epochs(1);
  p.search.bitops = "W3A3";
  p.finetune.optim.epochs(1);
  const PipelineResult r = run_pipeline(p);
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[0].name, "full precision");
  EXPECT_FALSE(r.rows[0].test.cost.has_value());
  ASSERT_TRUE(r.rows[2].test.cost.has_value());
  EXPECT_LE(r.rows[2].test.cost->bitops, r.search.target_bitops);
  EXPECT_TRUE(util::file_exists(temp_path("pipe/summary.json")));
  EXPECT_TRUE(util::file_exists(temp_path("pipe/policy.json")));
  // A second run reuses every stage: same results.
  const PipelineResult again = run_pipeline(p);
  EXPECT_DOUBLE_EQ(again.rows[2].test.top1, r.rows[2].test.top1);
  // Another budget gives another policy: the finished fine-tuning stage is not reused silently.
  p.search.bitops = "W2A2";
  EXPECT_THAT([&] { run_pipeline(p); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("finetune_policy' was run with another")));
}

TEST_F(TrainerTest, ExistingCheckpointIsNeverOverwrittenWithoutResume) {
  TrainConfig c = tiny_config(temp_path("run"));
  c.optim.epochs(1);
  run_train(c, false);
  const std::string before = util::read_file(temp_path("run/checkpoint.pt"));
  try {
    run_train(c, false);
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), HasSubstr("already exists; pass --resume"));
  }
  EXPECT_EQ(util::read_file(temp_path("run/checkpoint.pt")), before);
}

TEST_F(TrainerTest, CorruptCheckpointIsRefusedByName) {
  limpq::testing::write_bytes(temp_path("bad.pt"), "PK\x03\x04 not really a zip");
  try {
    load_checkpoint(temp_path("bad.pt"));
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), HasSubstr("bad.pt"));
  }
}

TEST_F(TrainerTest, BadRecipeValuesAreNamed) {
  TrainConfig c = tiny_config(temp_path("run"));
  c.optim.epochs(0);
  EXPECT_THAT([&] { run_train(c, false); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("epochs must be positive")));
  c.optim.epochs(1);
  c.run.device("tpu");
  EXPECT_THAT([&] { run_train(c, false); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("device must be cpu")));
}

}  // namespace
}  // namespace limpq::train
