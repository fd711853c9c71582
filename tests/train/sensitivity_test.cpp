// The alternatives the accuracy study (bench/accuracy_study.py) compares
// limpq's indicators with: the Hessian-trace criterion, one-at-a-time
// indicator training, and post-training evaluation under a policy.
#include "limpq/train/sensitivity.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>
#include <filesystem>
#include <iterator>

#include "limpq/quant/indicators.h"
#include "limpq/search/search.h"
#include "limpq/train/trainer.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/signals.h"
#include "support/test_support.h"

namespace limpq::train {
namespace {

using ::testing::HasSubstr;

TEST(HutchinsonTest, ExactOnBlockDiagonalHessians) {
  // loss = sum(a x^2) + sum(b y^3) at y: Hessians diag(2a) and diag(6 b y);
  // a Rademacher probe's v^T D v is the trace of a diagonal D exactly.
  const torch::Tensor a = torch::rand({7, 3}) + 0.1;
  const torch::Tensor b = torch::rand({5});
  const torch::Tensor x = torch::randn({7, 3}).requires_grad_();
  const torch::Tensor y = torch::randn({5}).requires_grad_();
  const torch::Tensor loss = (a * x.pow(2)).sum() + (b * y.pow(3)).sum();
  const auto traces = hutchinson_traces(loss, {x, y}, 3, at::detail::createCPUGenerator(1));
  ASSERT_EQ(traces.size(), 2u);
  EXPECT_NEAR(traces[0], 2 * a.sum().item<double>(), 1e-4);
  EXPECT_NEAR(traces[1], (6 * b * y.detach()).sum().item<double>(), 1e-4);
}

TEST(HutchinsonTest, UnbiasedWithOffDiagonalTerms) {
  // loss = 0.5 z^T A z for a dense positive definite A, z split in two
  // tensors: each block's estimate converges to its trace.
  const int64_t n = 20;
  const torch::Tensor m = torch::randn({n, n}, torch::kFloat64);
  const torch::Tensor A = m.matmul(m.t()) + n * torch::eye(n, torch::kFloat64);
  const torch::Tensor x = torch::randn({12}, torch::kFloat64).requires_grad_();
  const torch::Tensor y = torch::randn({8}, torch::kFloat64).requires_grad_();
  const torch::Tensor z = torch::cat({x, y});
  const torch::Tensor loss = 0.5 * z.dot(A.matmul(z));
  const auto traces = hutchinson_traces(loss, {x, y}, 4000, at::detail::createCPUGenerator(7));
  const double tx = A.diagonal().slice(0, 0, 12).sum().item<double>();
  const double ty = A.diagonal().slice(0, 12).sum().item<double>();
  EXPECT_NEAR(traces[0], tx, 0.03 * tx);
  EXPECT_NEAR(traces[1], ty, 0.03 * ty);
}

TEST(HutchinsonTest, RejectsNonScalarLossAndZeroProbes) {
  const torch::Tensor x = torch::randn({3}).requires_grad_();
  EXPECT_THAT([&] { hutchinson_traces(x * x, {x}, 1, at::detail::createCPUGenerator(0)); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("must be a scalar")));
  EXPECT_THAT([&] { hutchinson_traces((x * x).sum(), {x}, 0, at::detail::createCPUGenerator(0)); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("probes must be positive")));
}

class StudyToolsTest : public limpq::testing::SeededTest {
 protected:
  data::DataOptions tiny_data() {
    const std::string dir = temp_path("data");
    if (!std::filesystem::exists(dir)) limpq::testing::write_synthetic_mnist(dir, 160, 40);
    data::DataOptions d;
    d.dataset("mnist").root(dir).batch_size(16).eval_batch_size(20).workers(1);
    return d;
  }
  // A small full-precision resnet20 trained on the synthetic bands.
  std::string fp_checkpoint() {
    TrainConfig c;
    c.data = tiny_data();
    c.model.arch("resnet20");
    c.optim.epochs(3).lr(0.05).warmup_epochs(0.5);
    c.run.out_dir(temp_path("fp")).threads(1).progress(false);
    return run_train(c, /*resume=*/false).checkpoint;
  }
};

TEST_F(StudyToolsTest, HessianCriterionShrinksWithBitsAndIsSearchable) {
  SensitivityConfig c;
  c.data = tiny_data();
  c.model.arch("resnet20").weights(fp_checkpoint());
  c.sensitivity.candidates({4, 3, 2}).batches(2).probes(4);
  c.threads = 1;
  const quant::Indicators ind = run_sensitivity(c);
  EXPECT_EQ(ind.provenance["method"], "hessian");
  EXPECT_EQ(ind.provenance["batches"].get<int64_t>(), 2);
  int searchable = 0, positive_weight_traces = 0;
  for (const auto& l : ind.layers) {
    if (!l.searchable) {
      EXPECT_TRUE(l.weight_steps.empty()) << l.name;
      continue;
    }
    ++searchable;
    positive_weight_traces += ind.provenance["traces"][l.name]["weight_trace"].get<double>() > 0;
    // One trace per tensor times an error that grows as bits shrink.
    EXPECT_LE(l.weight_steps.at(4), l.weight_steps.at(3)) << l.name;
    EXPECT_LE(l.weight_steps.at(3), l.weight_steps.at(2)) << l.name;
    EXPECT_LE(l.act_steps.at(4), l.act_steps.at(3)) << l.name;
    EXPECT_LE(l.act_steps.at(3), l.act_steps.at(2)) << l.name;
  }
  EXPECT_EQ(searchable, 20);
  EXPECT_GT(positive_weight_traces, searchable / 2) << "the loss is locally convex in most weights";

  // The same file format the search reads.
  const std::string path = temp_path("hessian.json");
  quant::write_indicators(path, ind);
  const auto r = search::run_search(quant::read_indicators(path), search::SearchOptions().bitops("W3A3").alpha(1));
  EXPECT_LE(r.achieved_bitops, r.target_bitops);

  c.sensitivity.method("curvature");
  EXPECT_THAT([&] { run_sensitivity(c); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("unknown method 'curvature' (expected hessian or drop)")));
}

// A stop request (SIGTERM, Ctrl-C) ends the Hessian estimate before its next
// batch, with the conventional exit status and saying that nothing is written.
TEST_F(StudyToolsTest, StoppedHessianEndsBeforeItsNextBatch) {
  SensitivityConfig c;
  c.data = tiny_data();
  c.model.arch("resnet20").weights(fp_checkpoint());
  c.sensitivity.method("hessian").candidates({4, 3, 2}).batches(2).probes(2);
  c.threads = 1;
  util::request_stop(SIGTERM);
  try {
    run_sensitivity(c);
    ADD_FAILURE() << "a stop request must end the run";
  } catch (const util::Interrupted& e) {
    EXPECT_THAT(e.what(), HasSubstr("stopped after 0 of 2 batches; nothing was written"));
    EXPECT_EQ(e.exit_status(), 128 + SIGTERM);
  }
  util::clear_stop();
}

TEST_F(StudyToolsTest, MeasuredDropQuantizesOneTensorAtATimeOnTheValidationSplit) {
  SensitivityConfig c;
  c.data = tiny_data();
  c.data.val_size(40);
  c.model.arch("resnet20").weights(fp_checkpoint());
  c.sensitivity.method("drop").candidates({4, 2}).bn_batches(2);
  c.threads = 1;
  const quant::Indicators ind = run_sensitivity(c);
  EXPECT_EQ(ind.provenance["method"], "drop");
  EXPECT_EQ(ind.provenance["variant"], "post-training");
  EXPECT_EQ(ind.provenance["split"], "val");
  EXPECT_EQ(ind.provenance["examples"].get<int64_t>(), 40);
  EXPECT_EQ(ind.provenance["search_alpha"].get<double>(), 1.0);
  const double fp_loss = ind.provenance["full_precision"]["loss"].get<double>();
  double drop4 = 0, drop2 = 0;
  int searchable = 0;
  for (const auto& l : ind.layers) {
    if (!l.searchable) continue;
    ++searchable;
    const auto& measured = ind.provenance["measured"][l.name];
    for (const char* tensor : {"weight", "act"}) {
      const auto& values = std::string(tensor) == "weight" ? l.weight_steps : l.act_steps;
      for (int64_t b : {4, 2}) {
        // The value is the measured loss increase, floored at a tiny positive.
        const double loss = measured[tensor][std::to_string(b)]["loss"].get<double>();
        EXPECT_NEAR(values.at(b), std::max(loss - fp_loss, 1e-30), 1e-12) << l.name << " " << tensor << b;
      }
      drop4 += values.at(4);
      drop2 += values.at(2);
    }
  }
  EXPECT_EQ(searchable, 20);
  EXPECT_GT(drop2, drop4) << "2-bit tensors cost more loss than 4-bit ones, summed over the network";
  // Searchable as it is (alpha 1 from the file).
  const auto r = search::run_search(ind, search::SearchOptions().bitops("W3A3"));
  EXPECT_EQ(r.alpha, 1.0);
  EXPECT_LE(r.achieved_bitops, r.target_bitops);

  // Without a validation split the default split cannot be measured.
  c.data.val_size(0);
  EXPECT_THAT([&] { run_sensitivity(c); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("--val-size N")));
  c.sensitivity.split("train");
  EXPECT_THAT([&] { run_sensitivity(c); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("split must be val or test, got 'train'")));
}

TEST_F(StudyToolsTest, StoppedDropContinuesFromItsKeptMeasurements) {
  SensitivityConfig c;
  c.data = tiny_data();
  c.data.val_size(40);
  c.model.arch("resnet20").weights(fp_checkpoint());
  c.sensitivity.method("drop").candidates({2}).bn_batches(1);
  c.threads = 1;
  c.partial_path = temp_path("drop.json.partial");
  const quant::Indicators whole = run_sensitivity(c);

  // As a run stopped after its second layer would have left it, with one
  // kept value marked so that its reuse shows.
  auto kept = nlohmann::ordered_json::parse(util::read_file(c.partial_path));
  ASSERT_EQ(kept["measured"].size(), 20u);
  const std::string first = kept["measured"].begin().key();
  while (kept["measured"].size() > 2) kept["measured"].erase(std::prev(kept["measured"].end()).key());
  kept["measured"][first]["weight"]["2"]["loss"] = kept["full_precision"]["loss"].get<double>() + 7;
  util::write_file_atomic(c.partial_path, kept.dump());

  // A stop request ends the run before its next measurement; nothing is lost.
  util::request_stop(SIGTERM);
  try {
    run_sensitivity(c);
    ADD_FAILURE() << "a stop request must end the run";
  } catch (const util::Interrupted& e) {
    EXPECT_THAT(e.what(), HasSubstr("5 measurements are kept in " + c.partial_path));
    EXPECT_EQ(e.exit_status(), 128 + SIGTERM);
  }
  util::clear_stop();
  EXPECT_EQ(nlohmann::ordered_json::parse(util::read_file(c.partial_path)), kept);

  // Continued, it measures only the rest: the kept values are used as they are.
  const quant::Indicators continued = run_sensitivity(c);
  ASSERT_EQ(continued.layers.size(), whole.layers.size());
  for (size_t i = 0; i < whole.layers.size(); ++i) {
    const auto& l = whole.layers[i];
    if (!l.searchable) continue;
    EXPECT_NEAR(continued.layers[i].weight_steps.at(2), l.name == first ? 7.0 : l.weight_steps.at(2), 1e-12) << l.name;
    EXPECT_DOUBLE_EQ(continued.layers[i].act_steps.at(2), l.act_steps.at(2)) << l.name;
  }

  // Kept measurements are continued only under the same settings.
  c.sensitivity.bn_batches(3);
  EXPECT_THAT([&] { run_sensitivity(c); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("holds measurements taken with bn_batches = 1, this run "
                                                             "has 3")));
  c.sensitivity.bn_batches(1);
  kept["measured"] = 3;
  util::write_file_atomic(c.partial_path, kept.dump());
  EXPECT_THAT([&] { run_sensitivity(c); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("'measured' must be an object of layers")));
  util::write_file_atomic(c.partial_path, "{\"settings\":");
  EXPECT_THAT([&] { run_sensitivity(c); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("is not valid JSON")));
}

TEST_F(StudyToolsTest, ShortQatDropTrainsBeforeMeasuring) {
  SensitivityConfig c;
  c.data = tiny_data();
  c.model.arch("resnet20").weights(fp_checkpoint());
  c.sensitivity.method("drop").candidates({2}).bn_batches(1).qat_steps(2).split("test").metric("top1");
  c.sensitivity.fixed_layers({"conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2",
                              "layer1.2.conv1", "layer1.2.conv2", "layer2.0.conv1", "layer2.0.conv2",
                              "layer2.0.downsample.0", "layer2.1.conv1", "layer2.1.conv2", "layer2.2.conv1",
                              "layer2.2.conv2", "layer3.0.conv1", "layer3.0.conv2", "layer3.0.downsample.0",
                              "layer3.1.conv1", "layer3.1.conv2", "layer3.2.conv1", "fc"});
  c.threads = 1;
  const quant::Indicators ind = run_sensitivity(c);
  EXPECT_EQ(ind.provenance["variant"], "short-qat");
  EXPECT_EQ(ind.provenance["metric"], "top1");
  EXPECT_EQ(ind.provenance["qat_steps"].get<int64_t>(), 2);
  const auto& measured = ind.provenance["measured"]["layer3.2.conv2"];
  const double fp_top1 = ind.provenance["full_precision"]["top1"].get<double>();
  const auto& l = ind.layers[ind.layers.size() - 2];
  ASSERT_EQ(l.name, "layer3.2.conv2");
  EXPECT_NEAR(l.weight_steps.at(2), std::max(fp_top1 - measured["weight"]["2"]["top1"].get<double>(), 1e-30), 1e-9);
}

TEST_F(StudyToolsTest, OneAtATimeIndicatorsTrainOneLayerAtOneBitWidth) {
  TrainConfig c;
  c.data = tiny_data();
  c.model.arch("resnet20").weights(fp_checkpoint());
  c.optim.epochs(1).lr(0.01).warmup_epochs(0);
  c.run.out_dir(temp_path("alone")).threads(1).progress(false);
  c.joint_indicators = true;
  c.indicators.candidates({3}).fraction(0.5).only_layer("layer2.0.conv1");
  const TrainResult r = run_train(c, false);
  const quant::Indicators ind = quant::read_indicators(r.indicators);
  EXPECT_EQ(ind.provenance["only_layer"], "layer2.0.conv1");
  EXPECT_EQ(ind.candidates, std::vector<int64_t>{3});
  std::vector<std::string> searchable;
  for (const auto& l : ind.layers) {
    if (l.searchable) searchable.push_back(l.name);
  }
  EXPECT_EQ(searchable, std::vector<std::string>{"layer2.0.conv1"});
  ASSERT_EQ(r.per_candidate.size(), 1u);
  // Every other layer stayed at full precision: 32-bit weights.
  ASSERT_TRUE(r.per_candidate[0].second.cost.has_value());
  const auto& cost = *r.per_candidate[0].second.cost;
  EXPECT_GT(cost.size_bits, 0.9 * cost.fp_size_bits);

  c.run.out_dir(temp_path("bad1"));
  c.indicators.only_layer("layer9.conv");
  EXPECT_THAT([&] { run_train(c, false); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("'layer9.conv' is not a searchable layer")));
  c.run.out_dir(temp_path("bad2"));
  c.indicators.only_layer("conv1");
  EXPECT_THAT([&] { run_train(c, false); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("'conv1' is not a searchable layer")));
  c.run.out_dir(temp_path("bad3"));
  c.indicators.only_layer("layer2.0.conv1").candidates({3, 2});
  EXPECT_THAT([&] { run_train(c, false); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("one bit-width")));
}

TEST_F(StudyToolsTest, PostTrainingQuantizationEvaluatesAFullPrecisionCheckpoint) {
  const Checkpoint fp = load_checkpoint(fp_checkpoint());
  const data::DataOptions data = data_options_of(fp);
  const EvalResult full = run_eval(fp, EvalOptions().threads(1), data);
  const EvalResult w8 = run_eval(fp, EvalOptions().threads(1).uniform("W8A8"), data);
  ASSERT_TRUE(w8.cost.has_value());
  EXPECT_DOUBLE_EQ(w8.cost->size_bits, w8.cost->fp_size_bits / 4) << "every layer at 8 bits";
  EXPECT_NEAR(w8.top1, full.top1, 10.0) << "8-bit post-training quantization keeps the accuracy";
  const EvalResult w2 = run_eval(fp, EvalOptions().threads(1).uniform("W2A2"), data);
  EXPECT_LT(w2.cost->bitops, w8.cost->bitops);
  // Deterministic: the calibration batch is fixed by the seed.
  EXPECT_DOUBLE_EQ(run_eval(fp, EvalOptions().threads(1).uniform("W2A2"), data).loss, w2.loss);

  EXPECT_THAT([&] { run_eval(fp, EvalOptions().threads(1).uniform("W4A4").policy("p.json"), data); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("not both")));
}

}  // namespace
}  // namespace limpq::train
