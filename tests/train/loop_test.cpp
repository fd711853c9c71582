// The training loop driven by a fake strategy on a one-layer network: what
// the loop promises any TrainStep (passes, loss and optimizer hooks, the
// training set it keeps, metrics, non-finite handling, stop and resume),
// without a real network's cost.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <set>
#include <sstream>

#include "limpq/data/dataset.h"
#include "limpq/data/datasets.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/train/loop.h"
#include "limpq/train/step.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/signals.h"
#include "support/test_support.h"

namespace limpq::train {
namespace {

using ::testing::HasSubstr;

class OneLayerNet : public models::ModelImpl {
 public:
  OneLayerNet() : ModelImpl("one-layer") { fc_ = register_module("fc", torch::nn::Linear(28 * 28, 10)); }
  torch::Tensor forward(torch::Tensor x) override { return fc_->forward(x.flatten(1)); }

 private:
  torch::nn::Linear fc_{nullptr};
};

// A quantizable layer next to parameters that are not layer weights: a
// norm's scale and shift, a learned token, the layer's bias.
class LayerAndTokenNet : public models::ModelImpl {
 public:
  LayerAndTokenNet() : ModelImpl("layer-and-token") {
    norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({28 * 28})));
    token_ = register_parameter("token", torch::zeros({1, 28 * 28}));
    fc_ = register_module("fc", nn::QuantLinear(28 * 28, 10));
  }
  torch::Tensor forward(torch::Tensor x) override { return fc_->forward(norm_->forward(x.flatten(1)) + token_); }

 private:
  torch::nn::LayerNorm norm_{nullptr};
  torch::Tensor token_;
  nn::QuantLinear fc_{nullptr};
};

// What the loop asked of the strategy.
struct Calls {
  int64_t passes = 0, losses = 0, before_update = 0, after_update = 0, finish = 0, optimizers = 0;
};

class FakeStep : public TrainStep {
 public:
  FakeStep(const OptimOptions& optim, Calls& calls) : TrainStep(optim), calls_(calls) {}

  int64_t nan_at_step = -1;  // the optimizer step whose loss is NaN
  bool adam = false;         // make Adam instead of the default SGD
  mutable torch::optim::Optimizer* made = nullptr;

  std::string record() const override { return ""; }
  bool decays(const std::string& /*parameter_name*/) const override { return true; }
  int64_t passes() const override { return 2; }
  void configure_pass(int64_t /*pass*/, int64_t step) override {
    ++calls_.passes;
    step_ = step;
  }
  std::vector<PassLabel> tracked_passes() const override { return {{"first", "first"}}; }
  // Half the training set, as the joint step keeps a fraction.
  std::shared_ptr<const data::Dataset> training_set(std::shared_ptr<const data::Dataset> train) const override {
    return data::take_subset(train, train->size() / 2, 7);
  }
  torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& labels) const override {
    ++calls_.losses;
    const torch::Tensor l = TrainStep::loss(logits, labels);
    return step_ == nan_at_step ? l * std::numeric_limits<float>::quiet_NaN() : l;
  }
  std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& decayed,
                                                          const std::vector<torch::Tensor>& undecayed) const override {
    ++calls_.optimizers;
    auto optimizer = adam ? std::make_unique<torch::optim::Adam>(decayed, torch::optim::AdamOptions(1e-3))
                          : TrainStep::make_optimizer(decayed, undecayed);
    made = optimizer.get();
    return optimizer;
  }
  void before_update(std::vector<torch::Tensor>& /*parameters*/) override { ++calls_.before_update; }
  void after_update() override { ++calls_.after_update; }
  void finish(FinishContext& /*context*/, TrainResult& /*result*/) override { ++calls_.finish; }

 private:
  Calls& calls_;
  int64_t step_ = -1;
};

class LoopTest : public limpq::testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    // 48 training images; the strategy keeps 24: 3 steps of 8 per epoch.
    const std::string root = limpq::testing::write_synthetic_mnist(temp_path("data"), 48, 16);
    config_.data = data::DataOptions().dataset("mnist").root(root).batch_size(8).workers(1).augment(false);
    config_.optim = OptimOptions().epochs(2).lr(0.05).warmup_epochs(0);
    config_.run.out_dir(temp_path("run")).threads(1).progress(false);
    data_ = std::make_unique<data::DataBundle>(data::make_data(config_.data, 0));
  }
  void TearDown() override {
    util::clear_stop();
    SeededTest::TearDown();
  }

  models::Model fresh_model() {
    torch::manual_seed(0);
    return std::make_shared<OneLayerNet>();
  }

  // Trains a fresh network with `step`; returns its final weights.
  torch::Tensor train(FakeStep& step, bool resume = false, const TrainHooks& hooks = {}) {
    models::Model model = fresh_model();
    TrainingLoop loop(config_, model, *data_, step, torch::kCPU);
    loop.run(resume, hooks);
    return model->named_parameters()["fc.weight"].detach().clone();
  }

  std::vector<nlohmann::json> metrics() const {
    std::vector<nlohmann::json> out;
    std::istringstream in(util::read_file(temp_path("run/metrics.jsonl")));
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  // Trains once whole and once stopped in the second epoch and resumed:
  // the same weights.
  void expect_resumed_run_equals_uninterrupted() {
    Calls whole_calls;
    FakeStep whole(config_.optim, whole_calls);
    config_.run.out_dir(temp_path("whole"));
    const torch::Tensor uninterrupted = train(whole);

    config_.run.out_dir(temp_path("stopped"));
    Calls first_calls;
    FakeStep first(config_.optim, first_calls);
    TrainHooks hooks;
    hooks.after_step = [](int64_t steps_done) {
      if (steps_done == 4) util::request_stop();  // inside the second epoch
    };
    EXPECT_THROW(train(first, /*resume=*/false, hooks), util::Interrupted);
    EXPECT_EQ(first_calls.before_update, 4);
    EXPECT_TRUE(util::file_exists(temp_path("stopped/checkpoint.pt")));
    util::clear_stop();

    Calls rest_calls;
    FakeStep rest(config_.optim, rest_calls);
    const torch::Tensor resumed = train(rest, /*resume=*/true);
    EXPECT_EQ(rest_calls.before_update, 2) << "the two steps left";
    EXPECT_TRUE(torch::allclose(resumed, uninterrupted, 0, 1e-6)) << "same weights as without the stop";
  }

  TrainConfig config_;
  std::unique_ptr<data::DataBundle> data_;
};

TEST_F(LoopTest, RunsTheStrategysPassesLossAndOptimizerOnTheTrainingSetItKeeps) {
  Calls calls;
  FakeStep step(config_.optim, calls);
  step.adam = true;
  models::Model model = fresh_model();
  const torch::Tensor before = model->named_parameters()["fc.weight"].detach().clone();
  TrainingLoop loop(config_, model, *data_, step, torch::kCPU);
  const TrainResult result = loop.run(/*resume=*/false, {});

  EXPECT_TRUE(result.completed);
  EXPECT_EQ(calls.optimizers, 1);
  EXPECT_EQ(calls.before_update, 6) << "3 steps of 8 over the 24 images kept, 2 epochs";
  EXPECT_EQ(calls.after_update, 6);
  EXPECT_EQ(calls.passes, 12);
  EXPECT_EQ(calls.losses, 12) << "every pass's loss is the strategy's";
  EXPECT_EQ(calls.finish, 1);
  auto* adam = dynamic_cast<torch::optim::Adam*>(step.made);
  ASSERT_NE(adam, nullptr);
  EXPECT_FALSE(adam->state().empty()) << "the strategy's optimizer took the updates";
  EXPECT_FALSE(torch::equal(before, model->named_parameters()["fc.weight"]));

  const auto m = metrics();
  ASSERT_EQ(m.size(), 2u);
  for (int64_t e = 0; e < 2; ++e) {
    EXPECT_EQ(m[e]["epoch"], e + 1);
    EXPECT_EQ(m[e]["step"], 3 * (e + 1));
    EXPECT_TRUE(std::isfinite(m[e]["train_loss"].get<double>()));
    EXPECT_TRUE(m[e].contains("train_first")) << "the tracked pass is reported";
  }
  EXPECT_EQ(result.test.count, 16);
}

TEST_F(LoopTest, NonFiniteLossStopsWithTheStepNamedOrIsSkipped) {
  Calls calls;
  FakeStep step(config_.optim, calls);
  step.nan_at_step = 1;
  const std::string error = limpq::testing::error_of([&] { train(step); });
  EXPECT_THAT(error, HasSubstr("non-finite loss"));
  EXPECT_THAT(error, HasSubstr("epoch 1, batch 2/3, step 2"));
  EXPECT_THAT(error, HasSubstr("no checkpoint was written yet"));
  EXPECT_EQ(calls.after_update, 1) << "nothing updated after the bad step";

  Calls skipped;
  FakeStep skipping(config_.optim, skipped);
  skipping.nan_at_step = 1;
  config_.run.on_nonfinite("skip").out_dir(temp_path("skip"));
  train(skipping);
  EXPECT_EQ(skipped.before_update, 5) << "the NaN step's update is dropped, the others taken";
  EXPECT_EQ(skipped.finish, 1);
}

TEST_F(LoopTest, StopRequestCheckpointsAndTheResumedRunEqualsAnUninterruptedOne) {
  expect_resumed_run_equals_uninterrupted();
}

// optim.optimizer adamw: torch's AdamW with the decay on the decayed group
// only (decoupled: a parameter without gradient shrinks by lr * decay), its
// moments checkpointed, so that a resumed run equals an uninterrupted one.
TEST_F(LoopTest, AdamWDecaysTheDecayedGroupAndResumesExactly) {
  config_.optim.optimizer("adamw").lr(1e-2).weight_decay(0.05);
  Calls calls;
  FakeStep step(config_.optim, calls);
  const torch::Tensor decayed = torch::ones({2, 2}, torch::requires_grad());
  const torch::Tensor undecayed = torch::ones({2}, torch::requires_grad());
  const auto optimizer = step.make_optimizer({decayed}, {undecayed});
  ASSERT_NE(dynamic_cast<torch::optim::AdamW*>(optimizer.get()), nullptr);
  decayed.mutable_grad() = torch::zeros_like(decayed);
  undecayed.mutable_grad() = torch::zeros_like(undecayed);
  optimizer->step();
  EXPECT_TRUE(torch::allclose(decayed, torch::full({2, 2}, 1.0 - 1e-2 * 0.05)));
  EXPECT_TRUE(torch::equal(undecayed, torch::ones({2})));

  expect_resumed_run_equals_uninterrupted();
}

// An SGD checkpoint resumed under AdamW: refused by name, not a torch
// error from loading SGD's momentum buffers into AdamW.
TEST_F(LoopTest, ResumingUnderAnotherOptimizerIsRefused) {
  Calls first_calls;
  FakeStep first(config_.optim, first_calls);
  TrainHooks hooks;
  hooks.after_step = [](int64_t steps_done) {
    if (steps_done == 2) util::request_stop();
  };
  EXPECT_THROW(train(first, /*resume=*/false, hooks), util::Interrupted);
  util::clear_stop();
  config_.optim.optimizer("adamw");
  Calls calls;
  FakeStep step(config_.optim, calls);
  const std::string error = limpq::testing::error_of([&] { train(step, /*resume=*/true); });
  EXPECT_THAT(error, HasSubstr("it was trained with the sgd optimizer, this run uses adamw"));
}

TEST_F(LoopTest, AnUnknownOptimizerIsRefusedByName) {
  config_.optim.optimizer("adam");
  Calls calls;
  FakeStep step(config_.optim, calls);
  const std::string error = limpq::testing::error_of([&] { train(step); });
  EXPECT_THAT(error, HasSubstr("unknown optimizer 'adam' (known: sgd, adamw)"));
}

// optim.decay_layer_weights_only: the conv and linear weights decay;
// biases, norms and free tensors (class tokens, position embeddings) do not.
TEST_F(LoopTest, DecayOfLayerWeightsOnlyLeavesBiasesNormsAndTokens) {
  const auto groups_of = [&](bool layer_weights_only) {
    config_.optim.decay_layer_weights_only(layer_weights_only);
    Calls calls;
    FakeStep step(config_.optim, calls);
    torch::manual_seed(0);
    models::Model model = std::make_shared<LayerAndTokenNet>();
    TrainingLoop loop(config_, model, *data_, step, torch::kCPU);
    std::vector<std::set<std::string>> groups;
    const auto params = model->named_parameters();
    for (const auto& group : step.made->param_groups()) {
      std::set<std::string> names;
      for (const auto& t : group.params()) {
        for (const auto& p : params) {
          if (p.value().is_same(t)) names.insert(p.key());
        }
      }
      groups.push_back(names);
    }
    return groups;
  };
  const auto only = groups_of(true);
  ASSERT_EQ(only.size(), 2u);
  EXPECT_EQ(only[0], (std::set<std::string>{"fc.weight"}));
  EXPECT_EQ(only[1], (std::set<std::string>{"fc.bias", "norm.weight", "norm.bias", "token"}));
  const auto all = groups_of(false);
  ASSERT_EQ(all.size(), 1u) << "FakeStep decays every parameter";
  EXPECT_EQ(all[0].size(), 5u);
}

}  // namespace
}  // namespace limpq::train
