#include "limpq/search/mckp.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

namespace limpq::search {
namespace {

// Costs shaped like LIMPQ's: decreasing in both bit-widths; uses MACs*w*a
// and params*w with realistic magnitudes.
MckpProblem random_problem(std::mt19937_64& rng, int64_t layers, const std::vector<int64_t>& bits, bool two_constraints,
                           double bitops_fraction, double size_fraction, int64_t mac_scale = 100'000'000) {
  std::uniform_int_distribution<int64_t> macs_dist(mac_scale / 20, mac_scale);
  std::uniform_int_distribution<int64_t> params_dist(1'000, 2'000'000);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  MckpProblem p;
  p.use.resize(two_constraints ? 2 : 1);
  int64_t max_bitops = 0, max_size = 0, min_bitops = 0, min_size = 0;
  const int64_t bmax = *std::max_element(bits.begin(), bits.end());
  const int64_t bmin = *std::min_element(bits.begin(), bits.end());
  for (int64_t l = 0; l < layers; ++l) {
    const int64_t macs = macs_dist(rng), params = params_dist(rng);
    const double wi = u(rng), ai = u(rng);
    std::vector<double> cost;
    std::vector<int64_t> bitops, size;
    for (int64_t w : bits) {
      for (int64_t a : bits) {
        cost.push_back(ai * std::pow(2.0, -static_cast<double>(a)) * u(rng) +
                       2.0 * wi * std::pow(2.0, -static_cast<double>(w)) * u(rng));
        bitops.push_back(macs * w * a);
        size.push_back(params * w);
      }
    }
    p.cost.push_back(cost);
    p.use[0].push_back(bitops);
    if (two_constraints) p.use[1].push_back(size);
    max_bitops += macs * bmax * bmax;
    min_bitops += macs * bmin * bmin;
    max_size += params * bmax;
    min_size += params * bmin;
  }
  p.capacity.push_back(min_bitops + static_cast<int64_t>(bitops_fraction * (max_bitops - min_bitops)));
  if (two_constraints) p.capacity.push_back(min_size + static_cast<int64_t>(size_fraction * (max_size - min_size)));
  return p;
}

void expect_feasible(const MckpProblem& p, const MckpResult& r) {
  ASSERT_EQ(r.choice.size(), static_cast<size_t>(p.num_groups()));
  const auto used = assignment_use(p, r.choice);
  for (int64_t k = 0; k < p.num_resources(); ++k) EXPECT_LE(used[k], p.capacity[k]) << "resource " << k;
  EXPECT_DOUBLE_EQ(assignment_cost(p, r.choice), r.objective);
}

TEST(MckpTest, HandExample) {
  MckpProblem p;
  p.cost = {{1.0, 0.5}, {2.0, 0.1}};
  p.use = {{{1, 4}, {1, 8}}};
  p.capacity = {9};
  const auto r = solve_mckp(p);
  ASSERT_EQ(r.status, MckpStatus::kOptimal);
  EXPECT_EQ(r.choice, (std::vector<int64_t>{0, 1}));
  EXPECT_DOUBLE_EQ(r.objective, 1.1);
}

TEST(MckpTest, MatchesBruteForceOnTinyInstances) {
  std::mt19937_64 rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t layers = 1 + trial % 5;
    const bool two = trial % 2 == 0;
    auto p = random_problem(rng, layers, {4, 3, 2}, two, 0.05 + 0.9 * (trial % 7) / 6.0, 0.1 + 0.8 * (trial % 3) / 2.0);
    const auto brute = solve_mckp_brute_force(p);
    const auto fast = solve_mckp(p);
    ASSERT_EQ(fast.status, brute.status) << "trial " << trial;
    if (brute.status == MckpStatus::kOptimal) {
      expect_feasible(p, fast);
      EXPECT_NEAR(fast.objective, brute.objective, 1e-12 * std::abs(brute.objective)) << "trial " << trial;
    }
  }
}

TEST(MckpTest, MatchesCbcOnResnetSizedInstances) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 12; ++trial) {
    const int64_t layers = 20 + 40 * trial / 11;  // 20 .. 60 layers
    auto p = random_problem(rng, layers, {6, 5, 4, 3, 2}, /*two_constraints=*/true, 0.15 + 0.05 * (trial % 5),
                            0.2 + 0.1 * (trial % 4), /*mac_scale=*/3'000'000'000);
    const auto fast = solve_mckp(p);
    const auto cbc = solve_mckp_cbc(p);
    ASSERT_EQ(fast.status, MckpStatus::kOptimal) << "trial " << trial;
    ASSERT_NE(cbc.status, MckpStatus::kInfeasible) << "trial " << trial;
    expect_feasible(p, fast);
    expect_feasible(p, cbc);
    // Exact B&B is never worse than CBC, and CBC (gap 1e-9) agrees.
    EXPECT_LE(fast.objective, cbc.objective + 1e-9 * std::abs(cbc.objective)) << "trial " << trial;
    EXPECT_NEAR(fast.objective, cbc.objective, 1e-7 * std::abs(cbc.objective)) << "trial " << trial;
  }
}

TEST(MckpTest, TightBudgetAtPartsPerMillionIsRespectedExactly) {
  // Two layers whose cheapest feasible combination meets the budget to the
  // unit: a floating-point tolerance of 1e-6 relative would admit the
  // better-objective but infeasible pair.
  MckpProblem p;
  const int64_t big = 40'000'000'000;  // 4e10 BitOps
  p.cost = {{0.0, 1.0}, {0.0, 1.0}};
  p.use = {{{big + 10'000, big}, {big + 10'000, big}}};
  p.capacity = {2 * big + 10'000};  // exactly one layer may take the large choice
  const auto r = solve_mckp(p);
  ASSERT_EQ(r.status, MckpStatus::kOptimal);
  EXPECT_DOUBLE_EQ(r.objective, 1.0);
  const auto c = solve_mckp_cbc(p);
  ASSERT_EQ(c.status, MckpStatus::kFeasible) << "CBC's answers are not optimal until certified";
  expect_feasible(p, c);
  EXPECT_DOUBLE_EQ(c.objective, 1.0);
  EXPECT_EQ(certify(p, c).status, MckpStatus::kOptimal);
}

TEST(MckpTest, ThreeResourcesMatchBruteForce) {
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int64_t> use(0, 20);
  std::uniform_real_distribution<double> cost(0.0, 1.0);
  for (int trial = 0; trial < 100; ++trial) {
    MckpProblem p;
    const int64_t groups = 1 + trial % 6, choices = 1 + trial % 4;
    p.use.assign(3, {});
    for (int64_t g = 0; g < groups; ++g) {
      p.cost.emplace_back();
      for (auto& u : p.use) u.emplace_back();
      for (int64_t j = 0; j < choices; ++j) {
        p.cost.back().push_back(cost(rng));
        for (auto& u : p.use) u.back().push_back(use(rng));
      }
    }
    for (int64_t k = 0; k < 3; ++k) p.capacity.push_back(groups * (4 + trial % 9));
    const auto brute = solve_mckp_brute_force(p);
    const auto fast = solve_mckp(p);
    ASSERT_EQ(fast.status, brute.status) << "trial " << trial;
    if (brute.status == MckpStatus::kOptimal) {
      expect_feasible(p, fast);
      EXPECT_NEAR(fast.objective, brute.objective, 1e-12) << "trial " << trial;
    }
  }
}

// A hard instance: 60 layers, both constraints binding.
MckpProblem hard_problem() {
  std::mt19937_64 rng(11);
  return random_problem(rng, 60, {6, 5, 4, 3, 2}, /*two_constraints=*/true, 0.2, 0.3, 3'000'000'000);
}

// CBC's tolerances are absolute (by default it drops nodes that cannot
// improve the incumbent by 1e-5), so an objective whose whole range is
// smaller than that (raw learned steps in small units can be) makes an
// unscaled CBC take almost any answer as optimal. limpq's CBC path scales
// the objective and has its answer certified: it must return the optimum
// and prove it.
TEST(MckpTest, CbcFindsTheOptimumOfAnObjectiveBelowItsAbsoluteTolerances) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 4; ++trial) {
    MckpProblem p = random_problem(rng, 30, {6, 5, 4, 3, 2}, /*two_constraints=*/true, 0.2 + 0.05 * trial, 0.3,
                                   3'000'000'000);
    for (auto& group : p.cost) {
      for (double& c : group) c *= 1e-7;
    }
    const auto exact = solve_mckp(p);
    ASSERT_EQ(exact.status, MckpStatus::kOptimal) << "trial " << trial;
    const auto cbc = certify(p, solve_mckp_cbc(p));
    expect_feasible(p, cbc);
    EXPECT_EQ(cbc.status, MckpStatus::kOptimal) << "trial " << trial;
    EXPECT_NEAR(cbc.objective, exact.objective, 1e-9 * exact.objective) << "trial " << trial;
  }
}

TEST(MckpTest, AStoppedSolveReportsAnHonestBound) {
  const MckpProblem p = hard_problem();
  const auto exact = solve_mckp(p);
  ASSERT_EQ(exact.status, MckpStatus::kOptimal);
  EXPECT_LE(exact.gap(), 1e-9);
  MckpOptions tiny;
  tiny.node_limit = 50;
  const auto stopped = solve_mckp(p, tiny);
  ASSERT_EQ(stopped.status, MckpStatus::kFeasible) << "50 states cannot prove a 60-layer optimum";
  expect_feasible(p, stopped);
  EXPECT_GE(stopped.objective, exact.objective - 1e-12);
  EXPECT_LE(stopped.bound, exact.objective + 1e-12) << "the bound of a stopped solve still holds";
  EXPECT_GT(stopped.gap(), 0.0);
}

TEST(MckpTest, AKnownAnswerStartsTheSearchAndCertifyProvesOrBounds) {
  const MckpProblem p = hard_problem();
  const auto exact = solve_mckp(p);
  MckpOptions warm;
  warm.incumbent = exact.choice;
  const auto again = solve_mckp(p, warm);
  ASSERT_EQ(again.status, MckpStatus::kOptimal);
  EXPECT_NEAR(again.objective, exact.objective, 1e-12);
  EXPECT_LE(again.nodes, exact.nodes) << "starting from the optimum never needs more states";

  EXPECT_EQ(certify(p, exact).status, MckpStatus::kOptimal);
  // A worse answer: the cheapest assignment that meets both budgets at the
  // smallest bit-widths (choice 24 = W2A2) in every group.
  MckpResult poor;
  poor.choice.assign(p.num_groups(), 24);
  poor.objective = assignment_cost(p, poor.choice);
  poor.used = assignment_use(p, poor.choice);
  const auto judged = certify(p, poor);
  EXPECT_EQ(judged.status, MckpStatus::kFeasible);
  EXPECT_EQ(judged.choice, poor.choice) << "certify keeps the answer it was given";
  EXPECT_NEAR(judged.bound, exact.objective, 1e-9 * exact.objective);
  EXPECT_GT(judged.gap(), 0.01);
}

TEST(MckpTest, AnIncumbentOverTheBudgetIsRepairedAndTheAnswerStaysOptimal) {
  // The answer of a looser budget (what a sweep passes on) overflows the
  // tighter one; the solver starts from a repaired copy of it.
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 100; ++trial) {
    const int64_t layers = 2 + trial % 4;
    const bool two = trial % 2 == 0;
    const double tight = 0.05 + 0.5 * (trial % 5) / 4.0;
    MckpProblem p = random_problem(rng, layers, {4, 3, 2}, two, tight, 0.3);
    MckpProblem looser = p;
    for (auto& c : looser.capacity) c = c + c / 2;
    const auto brute = solve_mckp_brute_force(p);
    const auto loose = solve_mckp(looser);
    ASSERT_EQ(loose.status, MckpStatus::kOptimal) << "trial " << trial;
    MckpOptions warm;
    warm.incumbent = loose.choice;
    const auto fast = solve_mckp(p, warm);
    ASSERT_EQ(fast.status, brute.status) << "trial " << trial;
    if (brute.status == MckpStatus::kOptimal) {
      expect_feasible(p, fast);
      EXPECT_NEAR(fast.objective, brute.objective, 1e-12 * std::abs(brute.objective)) << "trial " << trial;
    }
  }
}

TEST(MckpTest, InfeasibleBudgetsAreReported) {
  MckpProblem p;
  p.cost = {{1.0, 2.0}};
  p.use = {{{5, 7}}};
  p.capacity = {4};
  EXPECT_EQ(solve_mckp(p).status, MckpStatus::kInfeasible);
  EXPECT_EQ(solve_mckp_cbc(p).status, MckpStatus::kInfeasible);
  EXPECT_EQ(minimum_use(p), (std::vector<int64_t>{5}));
  // Jointly infeasible although each resource alone can be met.
  MckpProblem q;
  q.cost = {{1.0, 2.0}};
  q.use = {{{1, 9}}, {{9, 1}}};
  q.capacity = {5, 5};
  EXPECT_EQ(solve_mckp(q).status, MckpStatus::kInfeasible);
  EXPECT_EQ(solve_mckp_brute_force(q).status, MckpStatus::kInfeasible);
}

TEST(MckpTest, ValidationNamesTheProblem) {
  MckpProblem p;
  p.cost = {{1.0}, {}};
  p.use = {{{1}, {}}};
  p.capacity = {3};
  EXPECT_THAT([&] { solve_mckp(p); }, ::testing::ThrowsMessage<c10::Error>(::testing::HasSubstr("group 1 has no choices")));
}


// The usage example at the top of mckp.h, as written there.
TEST(MckpHeaderTest, HeaderExampleHoldsAsWritten) {
  MckpProblem p;
  p.cost = {{1.0, 0.5}, {2.0, 0.1}};
  p.use = {{{1, 4}, {1, 8}}};
  p.capacity = {9};
  const MckpResult r = solve_mckp(p);
  EXPECT_EQ(r.status, MckpStatus::kOptimal);
  EXPECT_EQ(r.choice, (std::vector<int64_t>{0, 1}));
  EXPECT_DOUBLE_EQ(r.objective, 1.1);
}

}  // namespace
}  // namespace limpq::search
