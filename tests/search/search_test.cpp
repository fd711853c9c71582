#include "limpq/search/search.h"

#include <fmt/core.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "support/test_support.h"

namespace limpq::search {
namespace {

using ::testing::HasSubstr;

class SearchTest : public limpq::testing::SeededTest {
 protected:
  // Three searchable layers between two fixed ones; steps shrink with bits
  // (step ~ scale / 2^b), layer "b" is the most important.
  static quant::Indicators toy() {
    quant::Indicators ind;
    ind.model = "toy";
    ind.input_shape = {1, 8, 8};
    ind.candidates = {4, 3, 2};
    ind.layers.push_back({"first", "conv", false, 1000, 10, {}, {}, {}});
    const std::vector<std::tuple<std::string, int64_t, int64_t, double>> layers = {
        {"a", 100000, 2000, 1.0}, {"b", 50000, 8000, 4.0}, {"c", 200000, 500, 0.5}};
    for (const auto& [name, macs, params, scale] : layers) {
      quant::IndicatorLayer l{name, "conv", true, macs, params, {}, {}, {}};
      for (int64_t b : ind.candidates) {
        l.weight_steps[b] = scale / static_cast<double>(1 << b);
        l.act_steps[b] = 2 * scale / static_cast<double>(1 << b);
      }
      ind.layers.push_back(l);
    }
    ind.layers.push_back({"last", "linear", false, 640, 640, {}, {}, {}});
    return ind;
  }
};

TEST_F(SearchTest, UniformEquivalentBudgetAndExactCosts) {
  const auto ind = toy();
  const SearchResult r = run_search(ind, SearchOptions().bitops("W3A3"));
  // Target: sum of searchable MACs * 9, plus the fixed layers at 8/8.
  const double fixed = (1000 + 640) * 64.0;
  EXPECT_DOUBLE_EQ(r.target_bitops, (100000 + 50000 + 200000) * 9.0 + fixed);
  EXPECT_LE(r.achieved_bitops, r.target_bitops);
  EXPECT_EQ(r.solve.status, MckpStatus::kOptimal);
  ASSERT_EQ(r.policy.layers.size(), 3u);
  ASSERT_EQ(r.policy.fixed.size(), 2u);
  EXPECT_EQ(r.policy.fixed[0].second, (quant::LayerBits{8, 8}));
  // The important layer keeps at least as many bits as the others.
  const auto* b = r.policy.find("b");
  const auto* c = r.policy.find("c");
  EXPECT_GE(b->weight + b->act, c->weight + c->act);
  // Same answer from CBC.
  const SearchResult cbc = run_search(ind, SearchOptions().bitops("W3A3").solver("cbc"));
  EXPECT_NEAR(cbc.solve.objective, r.solve.objective, 1e-9);
}

TEST_F(SearchTest, BudgetsBindAndLooseBudgetsPickTheTop) {
  const auto ind = toy();
  const SearchResult loose = run_search(ind, SearchOptions().bitops("W4A4"));
  for (const auto& [name, bits] : loose.policy.layers) EXPECT_EQ(bits, (quant::LayerBits{4, 4})) << name;
  const SearchResult size = run_search(ind, SearchOptions().cr(12));
  EXPECT_LE(size.achieved_size_bits, size.target_size_bits);
  EXPECT_DOUBLE_EQ(size.target_size_bits, std::floor(32.0 * (10 + 2000 + 8000 + 500 + 640) / 12));
}

TEST_F(SearchTest, RandomObjectivesAreMonotoneSeededAndMeetTheBudget) {
  const auto ind = toy();
  const auto r1 = random_indicators(ind, 1);
  EXPECT_EQ(r1.provenance["method"], "random");
  EXPECT_EQ(r1.provenance["seed"].get<uint64_t>(), 1u);
  for (size_t i = 0; i < ind.layers.size(); ++i) {
    const auto& l = r1.layers[i];
    EXPECT_EQ(l.name, ind.layers[i].name);
    EXPECT_EQ(l.macs, ind.layers[i].macs) << "costs are kept";
    if (!l.searchable) continue;
    for (const auto* values : {&l.weight_steps, &l.act_steps}) {
      EXPECT_GT(values->at(2), values->at(3)) << l.name << ": more bits never look worse";
      EXPECT_GT(values->at(3), values->at(4)) << l.name;
      for (const auto& [bits, v] : *values) EXPECT_TRUE(v > 0 && v < 1) << l.name << "@" << bits;
    }
  }
  // Same seed, same values; another seed, other values.
  EXPECT_EQ(random_indicators(ind, 1).layers[1].weight_steps, r1.layers[1].weight_steps);
  EXPECT_NE(random_indicators(ind, 2).layers[1].weight_steps, r1.layers[1].weight_steps);
  // Random policies meet the budget, and differ with the seed.
  std::set<std::vector<int64_t>> policies;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    const SearchResult r = run_search(random_indicators(ind, seed), SearchOptions().bitops("W3A3"));
    EXPECT_LE(r.achieved_bitops, r.target_bitops) << "seed " << seed;
    EXPECT_EQ(r.criterion, "step") << "random values are searched as they are";
    EXPECT_EQ(r.alpha, 1.0) << "weights and activations drawn alike";
    std::vector<int64_t> bits;
    for (const auto& [name, b] : r.policy.layers) bits.insert(bits.end(), {b.weight, b.act});
    policies.insert(bits);
  }
  EXPECT_GT(policies.size(), 1u);
}

TEST_F(SearchTest, NonMonotonePointsAreErasedAndReported) {
  auto ind = toy();
  ind.layers[1].weight_steps[2] = 0.01;  // fewer bits, smaller step: implausible
  const SearchResult r = run_search(ind, SearchOptions().bitops("W4A4"));
  ASSERT_EQ(r.erased.size(), 1u);
  EXPECT_EQ(r.erased[0].layer, "a");
  EXPECT_EQ(r.erased[0].tensor, "weight");
  EXPECT_EQ(r.erased[0].bits, 2);
  // With the point erased, a tight budget never gives layer a 2-bit weights.
  const SearchResult tight = run_search(ind, SearchOptions().bitops("W3A2"));
  EXPECT_NE(tight.policy.find("a")->weight, 2);
  const SearchResult kept = run_search(ind, SearchOptions().bitops("W4A4").keep_nonmonotone(true));
  EXPECT_TRUE(kept.erased.empty());
}

// At the tightest budget every layer must take its fewest bits, erased or
// not: the answer says so, and its objective is the criterion's value with
// the erased point at its own value, not the program's penalty.
TEST_F(SearchTest, AnAnswerThatMustUseAnErasedPointSaysSoWithoutThePenalty) {
  auto ind = toy();
  ind.layers[1].weight_steps[2] = 0.01;
  const SearchResult r = run_search(ind, SearchOptions().bitops("W2A2"));
  EXPECT_EQ(r.policy.find("a")->weight, 2);
  ASSERT_EQ(r.erased_used.size(), 1u);
  EXPECT_EQ(r.erased_used[0].layer, "a");
  EXPECT_GE(r.solve.objective, kErasedIndicator);
  double expected = 0;
  for (const auto& l : ind.layers) {
    if (l.searchable) expected += l.act_steps.at(2) + r.alpha * l.weight_steps.at(2);
  }
  EXPECT_DOUBLE_EQ(r.objective, expected);
  EXPECT_LT(r.objective, 1e6);
  const auto j = r.to_json();
  EXPECT_TRUE(j["uses_erased_points"].get<bool>());
  EXPECT_DOUBLE_EQ(j["objective"].get<double>(), expected);
  EXPECT_TRUE(run_search(ind, SearchOptions().bitops("W4A4")).erased_used.empty());
}

TEST_F(SearchTest, InfeasibleBudgetStatesWhatIsReachable) {
  const auto ind = toy();
  EXPECT_THAT([&] { run_search(ind, SearchOptions().bitops("0.0001")); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("the smallest reachable is")));
  EXPECT_THAT([&] { run_search(ind, SearchOptions()); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("give a budget")));
  EXPECT_THAT([&] { run_search(ind, SearchOptions().bitops("lots")); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("--bitops must be uniform-equivalent like W3A4")));
  EXPECT_THAT([&] { run_search(ind, SearchOptions().bitops("W3A3").candidates({5})); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("bit-width 5 is not among")));
}

TEST_F(SearchTest, ExtraCsvConstraint) {
  const std::string path = temp_path("latency.csv");
  std::string csv = "layer,weight_bits,act_bits,cost\n";
  for (const char* name : {"a", "b", "c"}) {
    for (int w : {4, 3, 2}) {
      for (int a : {4, 3, 2}) csv += fmt::format("{},{},{},{}\n", name, w, a, 0.1 * w * a);
    }
  }
  limpq::testing::write_bytes(path, csv);
  const SearchResult r =
      run_search(toy(), SearchOptions().extra({read_constraint_csv(path, /*budget=*/3 * 0.1 * 9)}));
  double total = 0;
  for (const auto& [name, b] : r.policy.layers) total += 0.1 * b.weight * b.act;
  EXPECT_LE(total, 3 * 0.1 * 9 + 1e-9);
  limpq::testing::write_bytes(path, "layer,w,a,cost\n");
  EXPECT_THAT([&] { read_constraint_csv(path, 1.0); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("expected the header layer,weight_bits,act_bits,cost")));
  limpq::testing::write_bytes(path, "layer,weight_bits,act_bits,cost\na,4,x,1\n");
  EXPECT_THAT([&] { read_constraint_csv(path, 1.0); }, ::testing::ThrowsMessage<c10::Error>(HasSubstr("line 2")));
}

// A table measured for some pairs only: a missing pair is never chosen; a
// layer with no row at all is named.
TEST_F(SearchTest, ExtraCsvConstraintWithSomePairsOnly) {
  const std::string path = temp_path("latency.csv");
  std::string csv = "layer,weight_bits,act_bits,cost\n";
  for (const char* name : {"a", "b", "c"}) {
    for (int bits : {4, 3, 2}) csv += fmt::format("{},{},{},{}\n", name, bits, bits, 0.1 * bits * bits);
  }
  limpq::testing::write_bytes(path, csv);
  const SearchResult r =
      run_search(toy(), SearchOptions().bitops("W4A4").extra({read_constraint_csv(path, /*budget=*/3 * 0.1 * 9)}));
  for (const auto& [name, b] : r.policy.layers) EXPECT_EQ(b.weight, b.act) << name << ": only WxAx pairs have rows";
  limpq::testing::write_bytes(path, "layer,weight_bits,act_bits,cost\na,4,4,1\nb,4,4,1\n");
  EXPECT_THAT([&] { run_search(toy(), SearchOptions().extra({read_constraint_csv(path, 10)})); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("no row for layer 'c' at any candidate pair")));
}

TEST_F(SearchTest, SweepIsMonotoneAndKeepsInfeasiblePoints) {
  const auto ind = toy();
  const auto sweep = run_sweep(ind, SearchOptions(), SweepOptions().points(6).from("0.000001").to("W4A4"));
  ASSERT_EQ(sweep.size(), 6u);
  EXPECT_FALSE(sweep.front().feasible) << "1 kBitOps is below the W2A2 floor";
  EXPECT_TRUE(sweep.back().feasible);
  double previous = std::numeric_limits<double>::infinity();
  for (const auto& p : sweep) {
    if (!p.feasible) continue;
    EXPECT_LE(p.result.achieved_bitops, p.budget_bitops);
    EXPECT_LE(p.result.solve.objective, previous + 1e-12) << "a larger budget never costs more";
    previous = p.result.solve.objective;
  }
  const std::string csv = sweep_to_csv(sweep);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 7);
  EXPECT_THAT(csv, HasSubstr("budget_gbitops,feasible,objective"));
  EXPECT_DOUBLE_EQ(budget_bitops(ind, "W2A2", 8), (100000 + 50000 + 200000) * 4.0 + (1000 + 640) * 64.0);
}

TEST_F(SearchTest, IndicatorsFileErrorsNameTheLayer) {
  auto j = quant::indicators_to_json(toy());
  j["layers"][2]["weight_steps"]["3"] = -1.0;
  EXPECT_THAT([&] { quant::indicators_from_json(j, "ind.json"); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("layer 'b': weight_steps.3 must be a finite positive step")));
  auto k = quant::indicators_to_json(toy());
  k["format"] = "other/2";
  EXPECT_THAT([&] { quant::indicators_from_json(k, "ind.json"); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("format 'other/2' is not supported")));
}

// fuzz_indicators' finding: the exact search of a file whose surrogate
// bound has a curve without edges at its last depth formed a reference one
// past the end of an empty vector (UBSan; silent here). The search solves
// it, within both budgets.
TEST_F(SearchTest, SurrogateCurveWithoutEdgesIsSolved) {
  const auto ind = quant::read_indicators(std::string(LIMPQ_SEARCH_TESTDATA) + "/surrogate_no_edges_indicators.json");
  const auto r = run_search(ind, SearchOptions().bitops("W4A4").cr(8).solver("dp").time_limit(1.0));
  EXPECT_EQ(r.solve.status, MckpStatus::kOptimal);
  EXPECT_LE(r.achieved_bitops, r.target_bitops);
  EXPECT_LE(r.achieved_size_bits, r.target_size_bits);
}

}  // namespace
}  // namespace limpq::search
