#include "limpq/search/criterion.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "limpq/search/search.h"
#include "support/test_support.h"

namespace limpq::search {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// Two searchable layers with steps ~ rms / 2^b, given Fisher traces, and
// Fisher-weighted errors that grow 5x per bit removed.
quant::Indicators with_stats(double scale_a = 1.0) {
  quant::Indicators ind;
  ind.model = "toy";
  ind.candidates = {4, 3, 2};
  ind.layers.push_back({"first", "conv", false, 1000, 10, {}, {}, {}});
  for (const auto& [name, rms, fisher] : {std::tuple{"a", 0.1 * scale_a, 50.0 / (scale_a * scale_a)},
                                          std::tuple{"b", 0.02, 4000.0}}) {
    quant::IndicatorLayer l{name, "conv", true, 100000, 2000, {}, {}, {}};
    for (int64_t b : ind.candidates) {
      l.weight_steps[b] = 3 * rms / static_cast<double>(1 << (b - 1));
      l.act_steps[b] = 4 * rms / static_cast<double>(1 << b);
    }
    l.stats = quant::TensorStats{rms, 2 * rms, fisher, fisher / 4, 64, {}, {}};
    for (int64_t b : ind.candidates) {
      l.stats->weight_error[b] = fisher * rms * rms * std::pow(5.0, -b);
      l.stats->act_error[b] = 0.5 * fisher * rms * rms * std::pow(5.0, -b);
    }
    ind.layers.push_back(l);
  }
  ind.provenance = {{"epochs", 3}};
  return ind;
}

class CriterionTest : public limpq::testing::SeededTest {};

TEST_F(CriterionTest, NamesRoundTripAndUnknownOnesAreRejected) {
  for (const char* name : {"step", "relative", "noise", "fisher", "fisher-error"}) {
    EXPECT_EQ(to_string(parse_criterion(name)), name);
  }
  EXPECT_THAT([] { parse_criterion("hessian"); },
              ThrowsMessage<c10::Error>(HasSubstr(
                  "criterion must be one of step, relative, noise, fisher, fisher-error, got 'hessian'")));
  EXPECT_FALSE(find_criterion("drop").has_value());
}

TEST_F(CriterionTest, FormsByHand) {
  const quant::Indicators ind = with_stats();
  const auto& a = ind.layers[1];  // weight rms 0.1, act rms 0.2, Fisher 50 and 12.5
  const double s = a.weight_steps.at(2), t = a.act_steps.at(2);
  EXPECT_EQ(apply_criterion(ind, Criterion::kStep).layers[1].weight_steps.at(2), s);
  EXPECT_DOUBLE_EQ(apply_criterion(ind, Criterion::kRelative).layers[1].weight_steps.at(2), s / 0.1);
  EXPECT_DOUBLE_EQ(apply_criterion(ind, Criterion::kRelative).layers[1].act_steps.at(2), t / 0.2);
  EXPECT_DOUBLE_EQ(apply_criterion(ind, Criterion::kNoise).layers[1].weight_steps.at(2), s * s / (12 * 0.01));
  EXPECT_DOUBLE_EQ(apply_criterion(ind, Criterion::kFisher).layers[1].weight_steps.at(2), 50 * s * s / 24);
  EXPECT_DOUBLE_EQ(apply_criterion(ind, Criterion::kFisher).layers[1].act_steps.at(2), 12.5 * t * t / 24);
  const auto error = apply_criterion(ind, Criterion::kFisherError);
  EXPECT_DOUBLE_EQ(error.layers[1].weight_steps.at(2), 50 * 0.01 / 25);
  EXPECT_DOUBLE_EQ(error.layers[1].act_steps.at(3), 0.5 * 50 * 0.01 / 125);
  EXPECT_EQ(error.provenance["criterion"], "fisher-error");
  const auto fisher = apply_criterion(ind, Criterion::kFisher);
  EXPECT_EQ(fisher.provenance["criterion"], "fisher");
  EXPECT_EQ(fisher.provenance["from"]["epochs"], 3);
  EXPECT_TRUE(fisher.layers[0].weight_steps.empty()) << "fixed layers carry no values";
}

TEST_F(CriterionTest, ScaleFreeFormsIgnoreATensorsScale) {
  // Layer a's tensors 100x larger: steps and rms scale with them, the Fisher
  // trace with the inverse square. Only the paper's raw step sees it.
  const quant::Indicators base = with_stats(1.0);
  quant::Indicators scaled = with_stats(100.0);
  for (Criterion c : {Criterion::kRelative, Criterion::kNoise, Criterion::kFisher}) {
    const auto x = apply_criterion(base, c), y = apply_criterion(scaled, c);
    for (int64_t b : base.candidates) {
      EXPECT_NEAR(y.layers[1].weight_steps.at(b), x.layers[1].weight_steps.at(b), 1e-9 * x.layers[1].weight_steps.at(b))
          << to_string(c);
      EXPECT_NEAR(y.layers[1].act_steps.at(b), x.layers[1].act_steps.at(b), 1e-9 * x.layers[1].act_steps.at(b));
    }
  }
  EXPECT_NE(apply_criterion(scaled, Criterion::kStep).layers[1].weight_steps.at(2),
            apply_criterion(base, Criterion::kStep).layers[1].weight_steps.at(2));
}

TEST_F(CriterionTest, SearchUsesTheCriterionAndItsDefaultAlpha) {
  const quant::Indicators ind = with_stats();
  const SearchResult step = run_search(ind, SearchOptions().bitops("W3A3").criterion("step"));
  EXPECT_EQ(step.criterion, "step");
  EXPECT_EQ(step.alpha, 2.0);
  const SearchResult fisher = run_search(ind, SearchOptions().bitops("W3A3").criterion("fisher"));
  EXPECT_EQ(fisher.criterion, "fisher");
  EXPECT_EQ(fisher.alpha, 0.25);
  EXPECT_EQ(fisher.to_json()["criterion"], "fisher");
  EXPECT_EQ(run_search(ind, SearchOptions().bitops("W3A3").criterion("fisher").alpha(3)).alpha, 3.0);
  // Layer b: 80x the Fisher trace at a fifth of the rms; under the Fisher
  // criterion it keeps more bits than layer a.
  const auto* a = fisher.policy.find("a");
  const auto* b = fisher.policy.find("b");
  EXPECT_GT(b->weight + b->act, a->weight + a->act);
}

TEST_F(CriterionTest, DefaultIsFisherErrorThenRelativeThenThePapersStep) {
  quant::Indicators ind = with_stats();
  EXPECT_EQ(default_criterion(ind), Criterion::kFisherError);
  const SearchResult chosen = run_search(ind, SearchOptions().bitops("W3A3"));
  EXPECT_EQ(chosen.criterion, "fisher-error");
  EXPECT_EQ(chosen.alpha, 0.25);
  // A file written before the per-bit errors were recorded.
  for (auto& l : ind.layers) {
    if (l.stats) l.stats->act_error.clear();
  }
  EXPECT_EQ(default_criterion(ind), Criterion::kRelative);
  EXPECT_EQ(run_search(ind, SearchOptions().bitops("W3A3")).criterion, "relative");
  ind.layers[2].stats.reset();  // a file written before the statistics, or made elsewhere
  EXPECT_EQ(default_criterion(ind), Criterion::kStep);
  const SearchResult old_file = run_search(ind, SearchOptions().bitops("W3A3"));
  EXPECT_EQ(old_file.criterion, "step");
  EXPECT_EQ(old_file.alpha, 2.0);
}

TEST_F(CriterionTest, ScaleFreeFormsNeedTheStatistics) {
  quant::Indicators ind = with_stats();
  ind.layers[2].stats.reset();
  EXPECT_THAT([&] { apply_criterion(ind, Criterion::kNoise); },
              ThrowsMessage<c10::Error>(HasSubstr("layer 'b' has no 'stats'")));
  EXPECT_NO_THROW(apply_criterion(ind, Criterion::kStep));
  ind = with_stats();
  ind.layers[2].stats->act_error.erase(3);
  EXPECT_NO_THROW(apply_criterion(ind, Criterion::kFisher));
  EXPECT_THAT([&] { apply_criterion(ind, Criterion::kFisherError); },
              ThrowsMessage<c10::Error>(HasSubstr("layer 'b' has none for 3 bits")));
  ind = with_stats();
  ind.layers[1].stats->act_rms = 0;
  EXPECT_THAT([&] { apply_criterion(ind, Criterion::kRelative); },
              ThrowsMessage<c10::Error>(HasSubstr("layer 'a' has weight_rms 0.1 and act_rms 0")));
}

TEST_F(CriterionTest, StatsSurviveTheFileAndBadOnesAreNamed) {
  const quant::Indicators ind = with_stats();
  const std::string path = temp_path("ind.json");
  quant::write_indicators(path, ind);
  const quant::Indicators back = quant::read_indicators(path);
  ASSERT_TRUE(back.layers[1].stats.has_value());
  EXPECT_DOUBLE_EQ(back.layers[1].stats->weight_fisher, 50.0);
  EXPECT_EQ(back.layers[1].stats->samples, 64);
  EXPECT_EQ(back.layers[1].stats->weight_error, ind.layers[1].stats->weight_error);
  EXPECT_EQ(back.layers[2].stats->act_error, ind.layers[2].stats->act_error);
  EXPECT_FALSE(back.layers[0].stats.has_value());

  auto json = quant::indicators_to_json(ind);
  json["layers"][1]["stats"]["act_fisher"] = -1.0;
  EXPECT_THAT([&] { quant::indicators_from_json(json, "x.json"); },
              ThrowsMessage<c10::Error>(HasSubstr("layer 'a': stats.act_fisher must be finite and >= 0, got -1")));
  json = quant::indicators_to_json(ind);
  json["layers"][2]["stats"]["weight_error"].erase("2");
  EXPECT_THAT([&] { quant::indicators_from_json(json, "x.json"); },
              ThrowsMessage<c10::Error>(HasSubstr("layer 'b': stats.weight_error has no number for 2 bits")));
  json = quant::indicators_to_json(ind);
  json["layers"][1]["stats"].erase("act_error");  // a file written before the errors were recorded
  EXPECT_TRUE(quant::indicators_from_json(json, "x.json").layers[1].stats->act_error.empty());
}

TEST_F(CriterionTest, EveryCriterionSearchesALearnedFile) {
  // resnet20 on Fashion-MNIST: 3 epochs of joint training on half the
  // training set (bench/criterion_ranking.py), with its tensors' statistics.
  const auto ind = quant::read_indicators(std::string(LIMPQ_SEARCH_TESTDATA) + "/resnet20_fashion_mnist_indicators.json");
  int with_stats = 0;
  for (const auto& l : ind.layers) with_stats += l.stats.has_value();
  EXPECT_EQ(with_stats, 20);
  for (const char* criterion : {"step", "relative", "noise", "fisher"}) {
    const SearchResult r = run_search(ind, SearchOptions().bitops("W3A3").criterion(criterion));
    EXPECT_EQ(r.solve.status, MckpStatus::kOptimal) << criterion;
    EXPECT_LE(r.achieved_bitops, r.target_bitops) << criterion;
    EXPECT_GT(r.achieved_bitops, 0.95 * r.target_bitops) << criterion << ": the budget is spent";
  }
  // The measured drop of the same network is searchable as it is, alpha 1.
  const auto drop = quant::read_indicators(std::string(LIMPQ_SEARCH_TESTDATA) + "/resnet20_fashion_mnist_drop.json");
  EXPECT_EQ(run_search(drop, SearchOptions().bitops("W3A3")).alpha, 1.0);
}

}  // namespace
}  // namespace limpq::search
