// The multiple-choice knapsack as a general MILP for COIN-OR CBC: binary
// x[g][j], one choice per group, one row per resource. CBC works in floating
// point with absolute tolerances, so the rows are scaled by their capacity
// and the objective to unit magnitude, the cutoff increment (by default CBC
// drops nodes that cannot improve the incumbent by 1e-5) is set to zero, and
// every answer's resources are re-checked in integers (a solution that only
// fits within CBC's tolerance is cut off by tightening that row and solving
// again). CBC's own claim of optimality is not taken (its bound is computed
// in floating point with tolerances): the answer comes back as feasible, for
// certify() to prove.
#include <CbcModel.hpp>
#include <CoinPackedMatrix.hpp>
#include <CoinPackedVector.hpp>
#include <OsiClpSolverInterface.hpp>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "limpq/search/mckp.h"

namespace limpq::search {

MckpResult solve_mckp_cbc(const MckpProblem& problem, const MckpOptions& options) {
  problem.validate();
  const auto start = std::chrono::steady_clock::now();
  MckpResult result;
  result.solver = "cbc";
  const int64_t G = problem.num_groups(), K = problem.num_resources();
  std::vector<int64_t> offset(G + 1, 0);
  for (int64_t g = 0; g < G; ++g) offset[g + 1] = offset[g] + static_cast<int64_t>(problem.cost[g].size());
  const int64_t n = offset[G];

  std::vector<double> scale(K, 1.0);
  for (int64_t k = 0; k < K; ++k) scale[k] = problem.capacity[k] > 0 ? 1.0 / problem.capacity[k] : 1.0;
  std::vector<double> row_upper(K);
  for (int64_t k = 0; k < K; ++k) row_upper[k] = problem.capacity[k] * scale[k];

  // The objective's unit: the summed cheapest costs, the size of an answer
  // (the largest cost would be an erased point's 1e8).
  double cost_scale = 0;
  for (const auto& group : problem.cost) cost_scale += std::abs(*std::min_element(group.begin(), group.end()));
  if (!(cost_scale > 0)) cost_scale = 1;

  for (int attempt = 0; attempt < 20; ++attempt) {
    CoinPackedMatrix matrix(false, 0, 0);
    matrix.setDimensions(0, static_cast<int>(n));
    std::vector<double> row_lo, row_hi;
    for (int64_t g = 0; g < G; ++g) {
      CoinPackedVector row;
      for (int64_t j = offset[g]; j < offset[g + 1]; ++j) row.insert(static_cast<int>(j), 1.0);
      matrix.appendRow(row);
      row_lo.push_back(1.0);
      row_hi.push_back(1.0);
    }
    for (int64_t k = 0; k < K; ++k) {
      CoinPackedVector row;
      for (int64_t g = 0; g < G; ++g) {
        for (int64_t j = offset[g]; j < offset[g + 1]; ++j) {
          const double v = static_cast<double>(problem.use[k][g][j - offset[g]]) * scale[k];
          if (v != 0.0) row.insert(static_cast<int>(j), v);
        }
      }
      matrix.appendRow(row);
      row_lo.push_back(-COIN_DBL_MAX);
      row_hi.push_back(row_upper[k]);
    }
    std::vector<double> obj(n), col_lo(n, 0.0), col_hi(n, 1.0);
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t j = offset[g]; j < offset[g + 1]; ++j) obj[j] = problem.cost[g][j - offset[g]] / cost_scale;
    }
    OsiClpSolverInterface solver;
    solver.loadProblem(matrix, col_lo.data(), col_hi.data(), obj.data(), row_lo.data(), row_hi.data());
    for (int64_t j = 0; j < n; ++j) solver.setInteger(static_cast<int>(j));
    solver.messageHandler()->setLogLevel(0);
    CbcModel model(solver);
    model.setLogLevel(0);
    model.messageHandler()->setLogLevel(0);
    model.setMaximumSeconds(options.time_limit_seconds);
    model.setAllowableFractionGap(options.relative_gap);
    model.setAllowableGap(0.0);
    model.setCutoffIncrement(0.0);
    model.branchAndBound();

    result.nodes += model.getNodeCount();
    if (model.isProvenInfeasible()) {
      result.status = MckpStatus::kInfeasible;
      break;
    }
    const double* x = model.bestSolution();
    if (x == nullptr) {
      result.status = MckpStatus::kLimitReached;
      break;
    }
    std::vector<int64_t> choice(G, -1);
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t j = offset[g]; j < offset[g + 1]; ++j) {
        if (x[j] > 0.5) choice[g] = j - offset[g];
      }
      TORCH_CHECK(choice[g] >= 0, "mckp cbc: solution picks nothing for group ", g);
    }
    const auto used = assignment_use(problem, choice);
    int64_t violated = -1;
    for (int64_t k = 0; k < K; ++k) {
      if (used[k] > problem.capacity[k]) violated = k;
    }
    if (violated >= 0) {
      // Feasible only within CBC's tolerance: tighten that row just below the
      // infeasible total and solve again.
      const double over = static_cast<double>(used[violated] - problem.capacity[violated]) * scale[violated];
      row_upper[violated] -= std::max(over, 1e-9 * row_upper[violated]);
      continue;
    }
    result.choice = choice;
    result.used = used;
    result.objective = assignment_cost(problem, choice);
    result.status = MckpStatus::kFeasible;  // optimal only once certify() proves it
    break;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace limpq::search
