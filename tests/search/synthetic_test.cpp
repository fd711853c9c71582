#include "limpq/search/synthetic.h"

#include <gtest/gtest.h>

#include <fmt/core.h>

#include <algorithm>
#include <cmath>

#include "limpq/search/search.h"

namespace limpq::search {
namespace {

TEST(SyntheticTest, StepsHaveTheShapeOfTrainedFiles) {
  const auto ind = synthetic_indicators("resnet18", 0);
  const auto again = synthetic_indicators("resnet18", 0);
  EXPECT_EQ(quant::indicators_to_json(ind), quant::indicators_to_json(again)) << "seeded";
  EXPECT_NE(quant::indicators_to_json(ind), quant::indicators_to_json(synthetic_indicators("resnet18", 1)));
  EXPECT_EQ(ind.candidates, (std::vector<int64_t>{6, 5, 4, 3, 2}));
  int64_t searchable = 0, points = 0, non_monotone = 0;
  double w_lo = 1e9, w_hi = 0, a_lo = 1e9, a_hi = 0;
  std::vector<double> weight_ratio;
  for (const auto& l : ind.layers) {
    EXPECT_GT(l.macs, 0) << l.name;
    if (!l.searchable) continue;
    ++searchable;
    w_lo = std::min(w_lo, l.weight_steps.at(2));
    w_hi = std::max(w_hi, l.weight_steps.at(2));
    a_lo = std::min(a_lo, l.act_steps.at(2));
    a_hi = std::max(a_hi, l.act_steps.at(2));
    for (int64_t b = 3; b <= 6; ++b) {
      weight_ratio.push_back(l.weight_steps.at(b) / l.weight_steps.at(b - 1));
      for (const auto* steps : {&l.weight_steps, &l.act_steps}) {
        ++points;
        non_monotone += steps->at(b) > steps->at(b - 1);
      }
    }
  }
  EXPECT_EQ(searchable, 19) << "resnet18 without its first conv and fc";
  EXPECT_GT(w_hi / w_lo, 10.0) << "tensor scales spread over orders of magnitude";
  EXPECT_GT(a_hi / a_lo, 10.0);
  std::sort(weight_ratio.begin(), weight_ratio.end());
  EXPECT_NEAR(weight_ratio[weight_ratio.size() / 2], 0.5, 0.05) << "weight steps about halve per bit";
  EXPECT_GT(non_monotone, 0);
  EXPECT_LT(non_monotone, points / 10);
}

// Trained-like files at the paper's budget pair, both constraints binding:
// limpq's solver proves its answer, and CBC's certified answer agrees.
TEST(SyntheticTest, ExactSolverAndCbcAgreeOnTrainedLikeFiles) {
  for (const auto& [arch, cr] : {std::pair<std::string, double>{"resnet18", 12.2}, {"mobilenet_v2", 7.0}}) {
    const auto ind = synthetic_indicators(arch, 1);
    const auto options = SearchOptions().bitops("W3A4").cr(cr);
    const auto dp = run_search(ind, SearchOptions(options).solver("dp"));
    const auto cbc = run_search(ind, SearchOptions(options).solver("cbc"));
    ASSERT_EQ(dp.solve.status, MckpStatus::kOptimal) << arch;
    EXPECT_LE(dp.solve.gap(), 1e-9) << arch;
    EXPECT_LE(dp.achieved_bitops, dp.target_bitops) << arch;
    EXPECT_LE(dp.achieved_size_bits, dp.target_size_bits) << arch;
    EXPECT_GE(dp.achieved_bitops, 0.99 * dp.target_bitops) << arch << ": the BitOps budget binds";
    EXPECT_GE(dp.achieved_size_bits, 0.99 * dp.target_size_bits) << arch << ": the size budget binds";
    EXPECT_NEAR(cbc.solve.objective, dp.solve.objective, 1e-9 * dp.solve.objective) << arch;
    EXPECT_EQ(cbc.solve.status, MckpStatus::kOptimal) << arch << ": certified";
  }
}

// Files trained by `limpq indicators` on Fashion-MNIST (resnet20: 20
// searchable layers; mobilenet_v2_stem1: 50), searched with the paper's
// criterion and the default one, BitOps and size both binding.
TEST(SyntheticTest, RealLearnedFilesAreSolvedExactly) {
  for (const char* file : {"resnet20_fashion_mnist_indicators.json", "mobilenet_v2_fashion_mnist_indicators.json"}) {
    const auto ind = quant::read_indicators(std::string(LIMPQ_SEARCH_TESTDATA) + "/" + file);
    for (const char* criterion : {"step", "relative"}) {
      const auto options = SearchOptions().bitops("W3A4").cr(12.2).criterion(criterion);
      const auto dp = run_search(ind, SearchOptions(options).solver("dp"));
      const auto cbc = run_search(ind, SearchOptions(options).solver("cbc"));
      ASSERT_EQ(dp.solve.status, MckpStatus::kOptimal) << file << " " << criterion;
      EXPECT_NEAR(cbc.solve.objective, dp.solve.objective, 1e-9 * dp.solve.objective) << file << " " << criterion;
      EXPECT_LE(dp.achieved_bitops, dp.target_bitops);
      EXPECT_LE(dp.achieved_size_bits, dp.target_size_bits);
    }
    const auto sweep = run_sweep(ind, SearchOptions().cr(12.2), SweepOptions().points(8).from("W2A3").to("W5A5"));
    for (const auto& point : sweep) {
      if (point.feasible) {
        EXPECT_EQ(point.result.solve.status, MckpStatus::kOptimal) << file << " " << point.budget_bitops;
      }
    }
  }
}

// A sweep runs from the loosest budget down and takes a looser budget's
// answer where it meets a tighter one; every point must still be the optimum
// of its own program, as a search at that budget alone finds it.
TEST(SyntheticTest, SweepReusesAnswersOnlyWhereTheyStayOptimal) {
  const auto ind = synthetic_indicators("resnet50", 3);
  const auto options = SearchOptions().cr(12.2).solver("dp");
  const auto sweep = run_sweep(ind, options, SweepOptions().points(12).from("W2A3").to("W6A6"));
  int64_t reused = 0, solved = 0;
  for (const auto& point : sweep) {
    ASSERT_TRUE(point.feasible) << point.budget_bitops;
    const auto alone = run_search(ind, SearchOptions(options).bitops(fmt::format("{:.17g}", point.budget_bitops / 1e9)));
    EXPECT_NEAR(point.result.solve.objective, alone.solve.objective, 1e-9 * alone.solve.objective)
        << point.budget_bitops;
    EXPECT_EQ(point.result.solve.status, MckpStatus::kOptimal) << point.budget_bitops;
    EXPECT_LE(point.result.achieved_bitops, point.budget_bitops);
    EXPECT_LE(point.result.achieved_size_bits, point.result.target_size_bits);
    const std::string& solver = point.result.solve.solver;
    const bool taken = solver.find("looser budget") != std::string::npos;
    EXPECT_EQ(taken, point.result.solve.nodes == 0) << "a reused answer says so";
    EXPECT_EQ(solver.find("looser budget"), solver.rfind("looser budget")) << "and says it once: " << solver;
    (taken ? reused : solved) += 1;
  }
  EXPECT_GE(reused, 3) << "the loose budgets, where only the size binds, share one answer";
  EXPECT_GE(solved, 3) << "the tight ones are solved";
}

}  // namespace
}  // namespace limpq::search
