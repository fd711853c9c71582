#include "limpq/search/compare.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "limpq/quant/indicators.h"
#include "support/test_support.h"

namespace limpq::search {
namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

TEST(RankCorrelationTest, ByHand) {
  // d = -1, 1, -1, 1, 0: rho = 1 - 6 * 4 / (5 * 24); 8 concordant, 2 discordant pairs.
  EXPECT_NEAR(spearman({1, 2, 3, 4, 5}, {2, 1, 4, 3, 5}), 0.8, 1e-12);
  EXPECT_NEAR(kendall_tau_b({1, 2, 3, 4, 5}, {2, 1, 4, 3, 5}), 0.6, 1e-12);
  // Any increasing map of either sample leaves both unchanged.
  EXPECT_NEAR(spearman({1, 20, 300, 4000, 50000}, {0.2, 0.1, 0.4, 0.3, 0.5}), 0.8, 1e-12);
  EXPECT_NEAR(spearman({3, 2, 1}, {1, 2, 3}), -1.0, 1e-12);
  EXPECT_NEAR(kendall_tau_b({3, 2, 1}, {1, 2, 3}), -1.0, 1e-12);
}

TEST(RankCorrelationTest, TiesGetAverageRanksAndTheTauBCorrection) {
  // x ranks 1, 2.5, 2.5, 4 against 1..4: 4.5 / sqrt(4.5 * 5).
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 2, 3, 4}), 4.5 / std::sqrt(22.5), 1e-12);
  // 5 concordant pairs, one tied in x only: 5 / sqrt(5 * 6).
  EXPECT_NEAR(kendall_tau_b({1, 2, 2, 3}, {1, 2, 3, 4}), 5 / std::sqrt(30.0), 1e-12);
  EXPECT_TRUE(std::isnan(spearman({1, 1, 1}, {1, 2, 3}))) << "a constant sample has no ranking";
  EXPECT_TRUE(std::isnan(kendall_tau_b({1}, {2})));
  EXPECT_THAT([] { spearman({1, 2}, {1}); }, ThrowsMessage<c10::Error>(HasSubstr("different lengths")));
}

quant::Indicators ranked(const std::vector<double>& scale, const std::vector<std::string>& names) {
  quant::Indicators ind;
  ind.candidates = {4, 2};
  ind.layers.push_back({"first", "conv", false, 10, 10, {}, {}, {}});
  for (size_t i = 0; i < scale.size(); ++i) {
    quant::IndicatorLayer l{names[i], "conv", true, 10, 10, {}, {}, {}};
    for (int64_t b : ind.candidates) {
      l.weight_steps[b] = scale[i] / static_cast<double>(1 << b);
      l.act_steps[b] = 1.0 / (scale[i] * static_cast<double>(1 << b));  // the reverse order
    }
    ind.layers.push_back(l);
  }
  return ind;
}

TEST(CompareIndicatorsTest, PerBitsMeanAndPooled) {
  const auto a = ranked({1, 2, 3, 4}, {"l1", "l2", "l3", "l4"});
  const auto b = ranked({10, 30, 20, 40}, {"l1", "l2", "l3", "l4"});
  const IndicatorComparison c = compare_indicators(a, b, 2.0, 1.0);
  EXPECT_EQ(c.layers.size(), 4u);
  ASSERT_EQ(c.per_bits.size(), 2u);
  EXPECT_EQ(c.per_bits[0].bits, 4);
  // Weights: ranks 1 2 3 4 against 1 3 2 4 at every bit-width.
  EXPECT_NEAR(c.per_bits[0].weights.spearman, 0.8, 1e-12);
  EXPECT_NEAR(c.per_bits[1].weights.kendall, 4.0 / 6.0, 1e-12);
  EXPECT_NEAR(c.per_bits[1].acts.spearman, 0.8, 1e-12) << "both files reverse the order for activations";
  EXPECT_NEAR(c.mean_weights.spearman, 0.8, 1e-12);
  EXPECT_EQ(c.pooled_weights.points, 8);
  EXPECT_GT(c.pooled_weights.spearman, c.mean_weights.spearman) << "pooling also counts the bit-width order";
  const auto j = c.to_json();
  EXPECT_EQ(j["layers"], 4);
  EXPECT_EQ(j["per_bits"][1]["bits"], 2);
  EXPECT_THAT(comparison_to_text(c, "a", "b"), HasSubstr("over 4 layers"));
}

TEST(CompareIndicatorsTest, OnlyCommonLayersAndBitsCount) {
  const auto a = ranked({1, 2, 3}, {"l1", "l2", "l3"});
  auto b = ranked({2, 3}, {"l3", "l2"});  // l2 and l3 in the reverse order
  const IndicatorComparison c = compare_indicators(a, b, 2, 2);
  EXPECT_EQ(c.layers, (std::vector<std::string>{"l2", "l3"}));
  EXPECT_NEAR(c.per_bits[0].weights.spearman, -1.0, 1e-12);
  b = ranked({3}, {"l3"});
  EXPECT_THAT([&] { compare_indicators(a, b, 2, 2); },
              ThrowsMessage<c10::Error>(HasSubstr("share 1 searchable layer(s); a rank correlation needs at least 2")));
  b = ranked({3, 2}, {"l3", "l2"});
  b.candidates = {6};
  EXPECT_THAT([&] { compare_indicators(a, b, 2, 2); }, ThrowsMessage<c10::Error>(HasSubstr("no candidate bit-width")));
}

class CompareFilesTest : public limpq::testing::SeededTest {};

// The files' route (`limpq compare-indicators`): each read in its criterion's
// form, with its criterion's alpha unless one is given.
TEST_F(CompareFilesTest, EachFileInItsCriterionWithItsAlpha) {
  const auto a = ranked({1, 2, 3, 4}, {"l1", "l2", "l3", "l4"});
  const auto b = ranked({10, 30, 20, 40}, {"l1", "l2", "l3", "l4"});
  quant::write_indicators(temp_path("a.json"), a);
  quant::write_indicators(temp_path("b.json"), b);
  const IndicatorComparison c =
      compare_indicator_files(temp_path("a.json"), temp_path("b.json"), CompareOptions().alpha_b(0.5));
  EXPECT_EQ(c.alpha_a, 2.0) << "the step criterion's default alpha";
  EXPECT_EQ(c.alpha_b, 0.5);
  const IndicatorComparison direct = compare_indicators(a, b, 2.0, 0.5);
  EXPECT_EQ(c.to_json().dump(), direct.to_json().dump());
  EXPECT_THAT([&] { compare_indicator_files(temp_path("a.json"), temp_path("b.json"), CompareOptions().criterion_a("nope")); },
              ThrowsMessage<c10::Error>(HasSubstr("nope")));
}

}  // namespace
}  // namespace limpq::search
