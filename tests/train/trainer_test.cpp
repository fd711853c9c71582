#include "limpq/train/trainer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <vector>

#include "limpq/nn/batch_norm.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/nn/trace.h"
#include "limpq/quant/indicators.h"
#include "limpq/quant/lsq.h"
#include "limpq/train/layer_stats.h"
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

  // Fine-tuning under uniform `bits` (into `out_dir`) of a network trained
  // one epoch in full precision.
  TrainConfig finetune_config(const std::string& out_dir, const std::string& bits) {
    TrainConfig fp = tiny_config(temp_path("fp"));
    fp.optim.epochs(1);
    TrainConfig ft = tiny_config(out_dir);
    ft.model.weights(run_train(fp, false).checkpoint);
    ft.quant.uniform(bits);
    return ft;
  }
};

TEST_F(TrainerTest, LearnsASeparableTaskAndWritesItsFiles) {
  TrainConfig c = tiny_config(temp_path("run"));
  const int epochs = 6;  // 4 ended at 60% or 82.5% depending on the layout's float rounding
  c.optim.epochs(epochs);
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
    if (lines == epochs) {
      EXPECT_FALSE(j.contains("warning")) << j.dump();
    }
  }
  EXPECT_EQ(lines, epochs);

  const Checkpoint ckpt = load_checkpoint(r.checkpoint);
  EXPECT_EQ(ckpt.epoch, epochs);
  EXPECT_EQ(ckpt.step, epochs * 10);
  EXPECT_EQ(ckpt.arch, "resnet20");
  const EvalResult again = run_eval(ckpt, EvalOptions().threads(1), data_options_of(ckpt));
  EXPECT_DOUBLE_EQ(again.top1, r.test.top1) << "eval reproduces the training run's test accuracy";
  EXPECT_NEAR(again.loss, r.test.loss, 1e-6);
}

TEST_F(TrainerTest, AnEpochNearChanceIsWarnedAbout) {
  TrainConfig c = tiny_config(temp_path("run"));
  c.optim.epochs(1).lr(1e-9);  // an untrained network that does not learn
  run_train(c, /*resume=*/false);
  std::ifstream log(temp_path("run/metrics.jsonl"));
  std::string line;
  ASSERT_TRUE(std::getline(log, line));
  const auto entry = nlohmann::json::parse(line);
  EXPECT_LT(entry.at("train_top1").get<double>(), 15.0);
  EXPECT_THAT(entry.value("warning", ""), HasSubstr("after 10 steps is near chance (10.00% for 10 classes)"));
  // A full-precision run: nothing is said of quantizers.
  EXPECT_THAT(entry.value("warning", ""), HasSubstr("the network has not learned yet"));
  EXPECT_THAT(entry.value("warning", ""), ::testing::Not(HasSubstr("quantized")));
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

// A high rate drives LSQ steps through zero (8-bit steps are small and their
// gradients carry Qp = 127); each update projects them back into
// [min_step, max_step], where the forward pass uses them and they learn.
TEST_F(TrainerTest, FinetuneKeepsEveryStepWithinItsBounds) {
  TrainConfig ft = finetune_config(temp_path("ft"), "W8A8");
  ft.quant.quantize().max_step_change(0);  // unlimited: the projection alone keeps them in bounds
  ft.optim.epochs(1).lr(2.0).warmup_epochs(0);
  ft.run.on_nonfinite("skip");
  const Checkpoint ckpt = load_checkpoint(run_train(ft, false).checkpoint);
  int64_t quantizers = 0;
  for (const auto& [name, value] : ckpt.model) {
    if (name.find("quantizer.steps") == std::string::npos) continue;
    ++quantizers;
    EXPECT_GE(value.min().item<float>(), static_cast<float>(1e-5)) << name;
  }
  EXPECT_GT(quantizers, 20);
}

TEST_F(TrainerTest, BatchNormRecalibrationWeighsEveryBatchEqually) {
  TrainConfig c = tiny_config(temp_path("unused"));
  data::DataBundle d = data::make_data(c.data, 0);
  data::DataLoader loader(d.train, d.eval_transform, data::LoaderOptions().batch_size(16).workers(1));
  auto model = models::make_model("resnet20", 1, 10);
  auto named = model->named_modules();
  auto& conv1 = *named["conv1"]->as<nn::QuantConv2dImpl>();
  auto& bn1 = *named["bn1"]->as<nn::SwitchableBatchNorm2dImpl>();
  // Two switchable branches: 4 bits in use, 2 bits reached by no batch.
  auto& bn2 = *named["layer1.0.bn1"]->as<nn::SwitchableBatchNorm2dImpl>();
  bn2.make_switchable({4, 2});
  bn2.set_bits(4);
  auto& unused = bn2.branches->at<torch::nn::BatchNorm2dImpl>("2");
  {
    torch::NoGradGuard no_grad;
    unused.running_mean.fill_(7);
  }
  auto poison = [&](double mean, double var) {
    torch::NoGradGuard no_grad;
    for (auto& b : model->named_buffers()) {
      if (b.key().find("branches.2.") != std::string::npos) continue;
      if (b.key().size() > 12 && b.key().rfind("running_mean") == b.key().size() - 12) b.value().fill_(mean);
      if (b.key().size() > 11 && b.key().rfind("running_var") == b.key().size() - 11) b.value().fill_(var);
    }
  };

  poison(1e3, 1e-3);
  EXPECT_EQ(recalibrate_batch_norm(*model, loader, torch::kCPU, 3), 3);
  // bn1 by hand: the mean of the three batches' means and unbiased variances.
  torch::Tensor want_mean = torch::zeros({16}), want_var = torch::zeros({16});
  {
    torch::NoGradGuard no_grad;
    loader.start_epoch(0);
    for (int i = 0; i < 3; ++i) {
      const auto y = conv1.forward(loader.next()->images);
      want_mean += y.mean({0, 2, 3}) / 3;
      want_var += y.var({0, 2, 3}, /*unbiased=*/true) / 3;
    }
  }
  EXPECT_TRUE(torch::allclose(bn1.running_mean, want_mean, 1e-4, 1e-6)) << bn1.running_mean << want_mean;
  EXPECT_TRUE(torch::allclose(bn1.running_var, want_var, 1e-4, 1e-6));
  EXPECT_EQ(bn1.num_batches_tracked.item<int64_t>(), 3);
  EXPECT_DOUBLE_EQ(bn1.options.momentum(), 0.1) << "momentum restored";
  EXPECT_DOUBLE_EQ(bn2.branches->at<torch::nn::BatchNorm2dImpl>("4").options.momentum().value(), 0.1);
  EXPECT_TRUE(torch::all(unused.running_mean == 7).item<bool>()) << "an unreached branch keeps its statistics";
  EXPECT_FALSE(torch::equal(bn2.branches->at<torch::nn::BatchNorm2dImpl>("4").running_mean, unused.running_mean));
  EXPECT_TRUE(model->is_training());

  // Nothing of the old statistics remains: other poison, same result.
  std::map<std::string, torch::Tensor> first;
  for (const auto& b : model->named_buffers()) first[b.key()] = b.value().clone();
  poison(-5, 50);
  model->eval();
  recalibrate_batch_norm(*model, loader, torch::kCPU, 3);
  EXPECT_FALSE(model->is_training()) << "the training flag is restored";
  for (const auto& b : model->named_buffers()) {
    if (b.key().find("num_batches_tracked") != std::string::npos) continue;
    if (b.key() == "layer1.0.bn1.running_mean" || b.key() == "layer1.0.bn1.running_var") {
      // The base set of a switchable batch norm running its 4-bit branch.
      EXPECT_TRUE(torch::all(b.value() == (b.key().back() == 'n' ? -5 : 50)).item<bool>()) << "unreached";
      continue;
    }
    EXPECT_TRUE(torch::equal(b.value(), first.at(b.key()))) << b.key();
  }
  EXPECT_THAT([&] { recalibrate_batch_norm(*model, loader, torch::kCPU, 0); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("batches must be positive")));
}

TEST_F(TrainerTest, FinetuneRecalibratesBatchNormAndEvalReproducesIt) {
  TrainConfig ft = finetune_config(temp_path("ft"), "W2A2");
  ft.optim.epochs(1).lr(0.01).bn_recalibration_batches(4);
  const TrainResult r = run_train(ft, false);
  std::ifstream log(temp_path("ft/metrics.jsonl"));
  std::string line, last;
  while (std::getline(log, line)) last = line;
  EXPECT_EQ(nlohmann::json::parse(last).at("bn_recalibration_batches").get<int>(), 4);

  // The same batches give the same statistics: eval's recalibration of the
  // saved checkpoint reproduces the run's accuracy; without it, too.
  const Checkpoint ckpt = load_checkpoint(r.checkpoint);
  const EvalResult plain = run_eval(ckpt, EvalOptions().threads(1), data_options_of(ckpt));
  const EvalResult again = run_eval(ckpt, EvalOptions().threads(1).bn_recalibration_batches(4), data_options_of(ckpt));
  EXPECT_DOUBLE_EQ(plain.loss, r.test.loss);
  EXPECT_NEAR(again.loss, r.test.loss, 1e-6);

  TrainConfig joint = tiny_config(temp_path("joint"));
  joint.model.weights(ft.model.weights());
  joint.joint_indicators = true;
  joint.optim.bn_recalibration_batches(2);
  EXPECT_THAT([&] { run_train(joint, false); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("not to indicator training")));
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
  int monotone = 0, searchable = 0, error_grows = 0;
  for (const auto& l : ind.layers) {
    if (!l.searchable) continue;
    ++searchable;
    for (int64_t b : {4, 3, 2}) {
      EXPECT_TRUE(std::isfinite(l.weight_steps.at(b)) && l.weight_steps.at(b) > 0) << l.name;
      EXPECT_TRUE(std::isfinite(l.act_steps.at(b)) && l.act_steps.at(b) > 0) << l.name;
    }
    monotone += l.weight_steps.at(4) < l.weight_steps.at(3) && l.weight_steps.at(3) < l.weight_steps.at(2);
    // The statistics the scale-free criteria need: up to 256 examples, here
    // all 80 of the half of the training set the run used.
    ASSERT_TRUE(l.stats.has_value()) << l.name;
    EXPECT_GT(l.stats->weight_rms, 0) << l.name;
    EXPECT_GT(l.stats->act_rms, 0) << l.name;
    EXPECT_GT(l.stats->weight_fisher, 0) << l.name;
    EXPECT_GT(l.stats->act_fisher, 0) << l.name;
    EXPECT_EQ(l.stats->samples, 80) << l.name;
    ASSERT_EQ(l.stats->weight_error.size(), 3u) << l.name << ": a Fisher-weighted error per candidate";
    ASSERT_EQ(l.stats->act_error.size(), 3u) << l.name;
    error_grows += l.stats->weight_error.at(2) > l.stats->weight_error.at(4);
  }
  EXPECT_GT(monotone, searchable * 3 / 4) << "steps shrink as bits grow for most layers";
  EXPECT_GT(error_grows, searchable * 3 / 4) << "2 bits cost more than 4 for most layers";

  // Without the other candidates' test passes (as in `limpq run`): the first
  // candidate's result and the same indicators.
  TrainConfig lean_config = c;
  lean_config.run.out_dir(temp_path("ind_first_only"));
  TrainHooks first_only;
  first_only.evaluate_every_candidate = false;
  const TrainResult lean = run_train(lean_config, false, first_only);
  ASSERT_EQ(lean.per_candidate.size(), 1u);
  EXPECT_EQ(lean.per_candidate[0].first, 4);
  EXPECT_DOUBLE_EQ(lean.test.loss, r.test.loss);
  const quant::Indicators lean_ind = quant::read_indicators(lean.indicators);
  ASSERT_EQ(lean_ind.layers.size(), ind.layers.size());
  for (size_t i = 0; i < ind.layers.size(); ++i) {
    EXPECT_EQ(lean_ind.layers[i].weight_steps, ind.layers[i].weight_steps) << ind.layers[i].name;
    EXPECT_EQ(lean_ind.layers[i].act_steps, ind.layers[i].act_steps) << ind.layers[i].name;
  }

  // Resumable like any training run.
  TrainConfig again = c;
  again.optim.epochs(2);
  EXPECT_NO_THROW(run_train(again, /*resume=*/true));
}

TEST_F(TrainerTest, LayerStatsAreTheFisherOfPerExampleGradientsAtDrawnLabels) {
  TrainConfig fp = tiny_config(temp_path("fp"));
  const TrainResult base = run_train(fp, false);
  const Checkpoint ckpt = load_checkpoint(base.checkpoint);
  models::Model model = load_model(ckpt, "fp").model;
  models::QuantModel qm(model, {1, 28, 28});
  qm.prepare_indicators({4});
  const data::DataBundle data = data::make_data(fp.data, 0);
  auto loader = [&] {
    return data::DataLoader(data.train, data.eval_transform, data::LoaderOptions().batch_size(16));
  };
  {
    // The activation steps initialise on a first batch, as in a joint run.
    torch::NoGradGuard no_grad;
    model->forward(loader().next()->images);
  }
  data::DataLoader three = loader();
  const auto stats = measure_layer_stats(qm, three, torch::kCPU, 3, /*seed=*/7);

  // By hand: each example's gradients at a label drawn from its softmax by
  // the same generator; the Fisher trace is their squares averaged; the
  // weight error the block form 1/2 mean_n (g_n . delta)^2, the activation
  // error the diagonal 1/2 mean_n sum_i g_i^2 delta_i^2, at the 4-bit steps.
  data::DataLoader again = loader();
  const auto batch = again.next();
  auto* conv = model->named_modules()["layer2.1.conv1"]->as<nn::QuantConv2dImpl>();
  auto delta_of = [](const quant::LsqQuantizerImpl& q, const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    const torch::Tensor xd = x.detach();
    return (quant::lsq_fake_quant(xd, q.effective_step(4).detach(), q.range(4), 1.0) - xd).to(torch::kFloat64);
  };
  const torch::Tensor weight_delta = delta_of(*conv->weight_quantizer, conv->weight);
  std::mt19937_64 rng = label_rng(7);
  double trace = 0, weight_error = 0, act_error = 0, diagonal = 0;
  for (int64_t i = 0; i < 3; ++i) {
    nn::LayerTracer tracer(/*keep_inputs=*/true);
    const torch::Tensor logits = model->forward(batch->images.slice(0, i, i + 1));
    const torch::Tensor label = torch::full({1}, sample_label(logits, rng), torch::kLong);
    const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, label);
    torch::Tensor input;
    for (const auto& e : tracer.events()) {
      if (e.module == conv && !input.defined()) input = e.input;
    }
    const auto grads = torch::autograd::grad({loss}, {conv->weight, input});
    const torch::Tensor g = grads[0].to(torch::kFloat64);
    trace += g.pow(2).sum().item<double>();
    weight_error += 0.5 * (g * weight_delta).sum().pow(2).item<double>();
    diagonal += 0.5 * (g.pow(2) * weight_delta.pow(2)).sum().item<double>();
    act_error += 0.5 * (grads[1].to(torch::kFloat64).pow(2) * delta_of(*conv->input_quantizer, input).pow(2))
                           .sum()
                           .item<double>();
  }
  const quant::TensorStats& s = stats.at("layer2.1.conv1");
  EXPECT_EQ(s.samples, 3);
  EXPECT_NEAR(s.weight_fisher, trace / 3, 1e-6 * trace);
  ASSERT_EQ(s.weight_error.size(), 1u);
  EXPECT_GT(weight_error, 0);
  EXPECT_GT(act_error, 0);
  EXPECT_NEAR(s.weight_error.at(4), weight_error / 3, 1e-6 * weight_error);
  EXPECT_GT(std::abs(weight_error - diagonal), 1e-3 * weight_error) << "the block form is not the diagonal";
  EXPECT_NEAR(s.act_error.at(4), act_error / 3, 1e-6 * act_error);
  EXPECT_NEAR(s.weight_rms, std::sqrt(conv->weight.detach().to(torch::kFloat64).pow(2).mean().item<double>()), 1e-12);
  EXPECT_EQ(stats.size(), 20u) << "every searchable layer";
  EXPECT_THAT([&] { measure_layer_stats(qm, three, torch::kCPU, 0, 7); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("samples must be positive, got 0")));
}

TEST(LayerStatsTest, DrawnLabelsFollowTheSoftmax) {
  // p = (0.7, 0.2, 0.1): over 20000 draws each class within 1.5% of it.
  const torch::Tensor logits = torch::tensor({0.7, 0.2, 0.1}, torch::kFloat64).log().view({1, 3});
  std::mt19937_64 rng = label_rng(3);
  std::vector<int64_t> counts(3, 0);
  for (int i = 0; i < 20000; ++i) ++counts.at(static_cast<size_t>(sample_label(logits, rng)));
  EXPECT_NEAR(counts[0] / 20000.0, 0.7, 0.015);
  EXPECT_NEAR(counts[1] / 20000.0, 0.2, 0.015);
  EXPECT_NEAR(counts[2] / 20000.0, 0.1, 0.015);
  std::mt19937_64 a = label_rng(3), b = label_rng(3), c = label_rng(4);
  std::vector<int64_t> da, db, dc;
  for (int i = 0; i < 50; ++i) {
    da.push_back(sample_label(logits, a));
    db.push_back(sample_label(logits, b));
    dc.push_back(sample_label(logits, c));
  }
  EXPECT_EQ(da, db) << "the same seed draws the same labels";
  EXPECT_NE(da, dc);
  EXPECT_THAT([&] { sample_label(torch::zeros({2, 3}), a); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("expects one example's logits [1, classes]")));
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
  p.search.bitops("W3A3");
  p.finetune.optim.epochs(1);
  const PipelineResult r = run_pipeline(p);
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[0].name, "full precision");
  EXPECT_FALSE(r.rows[0].test.cost.has_value());
  ASSERT_TRUE(r.rows[2].test.cost.has_value());
  EXPECT_LE(r.rows[2].test.cost->bitops, r.search.target_bitops);
  EXPECT_TRUE(util::file_exists(temp_path("pipe/summary.json")));
  EXPECT_TRUE(util::file_exists(temp_path("pipe/policy.json")));
  // The table takes each stage's own final test evaluation: what evaluating
  // its checkpoint afresh gives.
  for (const auto& row : r.rows) {
    const Checkpoint ckpt = load_checkpoint(row.checkpoint);
    const EvalResult fresh = run_eval(ckpt, EvalOptions().threads(1), data_options_of(ckpt));
    EXPECT_GT(row.test.count, 0) << row.name;
    EXPECT_EQ(row.test.count, fresh.count) << row.name;
    EXPECT_NEAR(row.test.loss, fresh.loss, 1e-6) << row.name;
    EXPECT_DOUBLE_EQ(row.test.top1, fresh.top1) << row.name;
    EXPECT_DOUBLE_EQ(row.test.top5, fresh.top5) << row.name;
    ASSERT_EQ(row.test.cost.has_value(), fresh.cost.has_value()) << row.name;
    if (fresh.cost) {
      EXPECT_DOUBLE_EQ(row.test.cost->bitops, fresh.cost->bitops) << row.name;
    }
  }
  // Every stage is timed, in the order it ran, and known by its identity.
  const std::vector<Stage> order = {Stage::kFullPrecision, Stage::kCriterion, Stage::kSearch,
                                    Stage::kFinetunePolicy, Stage::kFinetuneUniform, Stage::kEvaluation};
  ASSERT_EQ(r.stages.size(), order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(r.stages[i].stage, order[i]) << r.stages[i].name;
    EXPECT_FALSE(r.stages[i].reused) << r.stages[i].name;
  }
  EXPECT_DOUBLE_EQ(r.rows[0].train_seconds, r.stages[0].seconds);
  EXPECT_DOUBLE_EQ(r.rows[2].train_seconds, r.stages[1].seconds + r.stages[2].seconds + r.stages[3].seconds);
  // A stage's file that cannot be read is an error naming it, not a zero.
  const std::string seconds = temp_path("pipe/fp/seconds");
  const std::string kept = util::read_file(seconds);
  util::write_file_atomic(seconds, "not a number\n");
  EXPECT_THAT([&] { run_pipeline(p); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr(seconds)));
  util::write_file_atomic(seconds, kept);
  // A stage finished by a limpq without some option (its key lacks the
  // field) is reused while the option is at its default.
  const std::string fp_done = temp_path("pipe/fp/done");
  auto key = nlohmann::json::parse(util::read_file(fp_done));
  key["config"]["model"].erase("onnx");
  util::write_file_atomic(fp_done, key.dump(2));
  // A second run reuses every stage: same results.
  const PipelineResult again = run_pipeline(p);
  ASSERT_EQ(again.rows.size(), r.rows.size());
  for (size_t i = 0; i < 4; ++i) {  // the training stages, as recorded when they ran
    EXPECT_TRUE(again.stages[i].reused || again.stages[i].stage == Stage::kSearch) << again.stages[i].name;
  }
  EXPECT_DOUBLE_EQ(again.stages[0].seconds, std::stod(kept));
  for (size_t i = 0; i < r.rows.size(); ++i) {
    EXPECT_DOUBLE_EQ(again.rows[i].test.loss, r.rows[i].test.loss) << r.rows[i].name;
    EXPECT_DOUBLE_EQ(again.rows[i].test.top1, r.rows[i].test.top1) << r.rows[i].name;
  }
  // Another budget gives another policy: the finished fine-tuning stage is not reused silently.
  p.search.bitops("W2A2");
  EXPECT_THAT([&] { run_pipeline(p); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("finetune_policy' was run with another")));
  // A field the stored key lacks while the option is not at its default now:
  // refused (the stage cannot have run with it).
  key["config"]["train"].erase("epochs");
  util::write_file_atomic(fp_done, key.dump(2));
  EXPECT_THAT([&] { run_pipeline(p); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("fp' was run with another")));
  // A stored value that differs: refused.
  key["config"]["train"]["epochs"] = 3;
  util::write_file_atomic(fp_done, key.dump(2));
  EXPECT_THAT([&] { run_pipeline(p); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("fp' was run with another")));

  // A measured criterion replaces the joint run (searched with its own alpha).
  PipelineConfig h = p;
  h.search.bitops("W3A3");
  h.search.criterion("hessian");
  h.model.weights(r.rows[0].checkpoint);
  h.run.out_dir(temp_path("pipe_hessian"));
  const PipelineResult rh = run_pipeline(h);
  EXPECT_EQ(rh.rows.back().name, "hessian policy");
  // The measured criterion is a timed stage too, and no full-precision stage runs.
  ASSERT_FALSE(rh.stages.empty());
  EXPECT_EQ(rh.stages[0].stage, Stage::kCriterion);
  EXPECT_EQ(rh.stages[0].name, "sensitivity criterion (hessian)");
  EXPECT_GT(rh.stages[0].seconds, 0);
  EXPECT_EQ(rh.search.alpha, 1.0);
  EXPECT_TRUE(util::file_exists(temp_path("pipe_hessian/hessian.json")));
  h.search.criterion("curvature");
  h.run.out_dir(temp_path("pipe_bad"));
  EXPECT_THAT([&] { run_pipeline(h); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("criterion must be one of step, relative, noise, fisher")));
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

// `limpq run` on an empty config would start the whole default pipeline.
TEST_F(TrainerTest, PipelineConfigWithoutASectionIsRefused) {
  const std::string empty = temp_path("empty.yaml");
  util::write_file_atomic(empty, "# nothing yet\n");
  EXPECT_THAT(limpq::testing::error_of([&] { load_pipeline_config(empty); }),
              ::testing::AllOf(HasSubstr("run: config '" + empty + "' has no section"), HasSubstr("data, model, train")));
  const std::string one = temp_path("one.yaml");
  util::write_file_atomic(one, "run:\n  out_dir: somewhere\n");
  EXPECT_EQ(load_pipeline_config(one).run.out_dir(), "somewhere");
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
