// limpq's exact multiple-choice knapsack solver (mckp.h). The driver,
// solve_mckp below, runs these phases in order; each either proves
// something about the optimum or finds a feasible answer (the parts are in
// mckp_parts.h: mckp_bounds.cpp, mckp_repair.cpp, mckp_pareto.cpp):
//
//   1. reduce                drops the choices that cannot fit even alone and
//                            those dominated within their group (costlier and
//                            using no less of every resource): an optimum
//                            always survives.
//   2. Dual::maximise        Lagrange multipliers of the resources by
//                            coordinate ascent: the Lagrangian lower bound.
//   3. lagrangian_heuristic  a feasible assignment (the incumbent, an upper
//                            bound), improved by repair_and_improve; a warm
//                            start (the answer of a neighbouring budget) is
//                            repaired the same way.
//   4. fix_by_reduced_cost   removes the choices whose reduced cost proves
//                            they cannot beat the incumbent; returns the lower
//                            bound of everything it removed.
//   5. ParetoDp passes       dynamic programming over the groups in
//                            branching_order, keeping only Pareto-optimal
//                            resource uses, each state pruned by the
//                            SurrogateLp bound (the LP relaxation of the rest,
//                            one surrogate row weighted by the multipliers)
//                            against a cutoff. A pass that completes an
//                            assignment below its cutoff has proven it
//                            optimal; one that finds none proves the optimum
//                            is at least its smallest pruned bound, and the
//                            cutoff rises until the incumbent.
//   6. the result            "optimal" only when the proven bound meets the
//                            answer within the relative gap; otherwise
//                            "feasible" with the bound, or "infeasible" /
//                            "limit reached" without an answer.
//
// certify() proves or bounds another solver's answer (CBC's) by running the
// same phases with that answer as the incumbent.
#include "limpq/search/mckp.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "mckp_parts.h"

namespace limpq::search {

using mckp_parts::Clock;
using mckp_parts::seconds_since;

MckpResult solve_mckp(const MckpProblem& problem, const MckpOptions& options) {
  problem.validate();
  const auto start = Clock::now();
  MckpResult result;
  result.solver = "limpq-dp";
  mckp_parts::Reduced r;
  const std::vector<int64_t> min_use = minimum_use(problem);
  bool trivially_infeasible = false;
  for (int64_t k = 0; k < problem.num_resources(); ++k) trivially_infeasible |= min_use[k] > problem.capacity[k];
  if (trivially_infeasible || !mckp_parts::reduce(problem, r)) {
    result.status = MckpStatus::kInfeasible;
    result.seconds = seconds_since(start);
    return result;
  }
  const std::vector<double> lambda = mckp_parts::lagrange_multipliers(r, problem.capacity);
  // The surrogate row weighs the resources by their Lagrange multipliers, so
  // its LP bound at the root is at least the Lagrangian one.
  std::vector<double> weight = lambda;
  if (std::all_of(weight.begin(), weight.end(), [](double w) { return w <= 0; })) weight.assign(r.resources, 1.0);

  auto cost_of = [&](const std::vector<int64_t>& x) {
    double c = 0;
    for (int64_t g = 0; g < r.groups; ++g) c += r.cost[g][x[g]];
    return c;
  };
  std::vector<int64_t> incumbent = mckp_parts::lagrangian_heuristic(r, problem.capacity, lambda);
  if (!options.incumbent.empty()) {
    // Repaired where it does not fit: the answer of a neighbouring budget
    // usually needs a few moves.
    std::vector<int64_t> warm = mckp_parts::reduced_choice(problem, r, options.incumbent);
    if (!warm.empty()) warm = mckp_parts::repair_and_improve(r, problem.capacity, std::move(warm));
    if (!warm.empty() && (incumbent.empty() || cost_of(warm) < cost_of(incumbent))) incumbent = warm;
  }
  // A lower bound on every assignment that uses a choice fixing removed
  // (infinite when nothing was removed).
  const double removed_bound = incumbent.empty() ? std::numeric_limits<double>::infinity()
                                                 : mckp_parts::fix_by_reduced_cost(r, problem.capacity, weight, incumbent,
                                                                       options.relative_gap);
  // The proven lower bound on the optimum, as the passes below establish it.
  double proven = removed_bound;
  double upper = incumbent.empty() ? std::numeric_limits<double>::infinity() : cost_of(incumbent);

  // Passes with a rising cutoff: a pass whose cutoff is just above the
  // optimum keeps few states, so the cutoff starts 1e-5 (relative) above the
  // best bound and its distance doubles until a pass finds an answer below
  // it or it reaches the incumbent. A pass that finds nothing proves the
  // optimum is at least its smallest pruned bound, and the cheapest complete
  // assignment it pruned becomes the incumbent. Growth measured on synthetic
  // files (median ms over 20, seeds 0-19 / held-out 20-39, resnet50): 1.5x
  // 2.23 / 2.95, 2x 1.93 / 2.47, 3x 1.67 / 2.44 but mobilenet_v2's slowest
  // files 3-4x slower; a start at 1e-4 was no better.
  mckp_parts::ParetoDp dp(r, problem.capacity, weight, options, start);
  double lower = dp.root_bound();
  double step = 1e-5;
  std::vector<int64_t> answer;
  bool complete = true;
  while (std::isfinite(lower)) {
    const double cutoff = std::min(upper, lower + step * std::max(std::abs(lower), 1e-12));
    const auto pass = dp.run(cutoff, options.node_limit - result.nodes);
    result.nodes += pass.states;
    if (!pass.choice.empty()) {
      answer = pass.choice;
      proven = std::min({proven, pass.bound, pass.cost});
      break;
    }
    lower = std::max(lower, pass.bound);
    if (pass.spare_cost < upper) {
      upper = pass.spare_cost;
      incumbent = pass.spare;
    }
    if (!pass.complete) {
      complete = false;
      proven = std::min(proven, lower);
      break;
    }
    if (cutoff >= upper) {  // nothing below the incumbent: it is the answer
      proven = std::min({proven, pass.bound, upper});
      break;
    }
    step *= 2;
  }
  if (answer.empty() && !incumbent.empty()) answer = incumbent;
  if (!answer.empty()) {
    result.choice.resize(r.groups);
    for (int64_t g = 0; g < r.groups; ++g) result.choice[g] = r.original[g][answer[g]];
    result.objective = assignment_cost(problem, result.choice);
    result.used = assignment_use(problem, result.choice);
    result.bound = std::max(dp.root_bound(), std::min(proven, result.objective));
    result.status = result.gap() <= options.relative_gap ? MckpStatus::kOptimal : MckpStatus::kFeasible;
  } else {
    result.status = complete ? MckpStatus::kInfeasible : MckpStatus::kLimitReached;
    result.bound = lower;
  }
  result.seconds = seconds_since(start);
  return result;
}

MckpResult certify(const MckpProblem& problem, const MckpResult& answer, const MckpOptions& options) {
  MckpResult out = answer;
  if (answer.choice.empty()) return out;
  MckpOptions check = options;
  check.incumbent = answer.choice;
  const MckpResult exact = solve_mckp(problem, check);
  out.bound = std::min(exact.bound, answer.objective);
  out.status = out.gap() <= options.relative_gap ? MckpStatus::kOptimal : MckpStatus::kFeasible;
  out.nodes += exact.nodes;
  out.seconds += exact.seconds;
  return out;
}

MckpResult solve_mckp_brute_force(const MckpProblem& problem) {
  problem.validate();
  const auto start = Clock::now();
  MckpResult result;
  result.solver = "brute-force";
  const int64_t G = problem.num_groups();
  double combos = 1;
  for (const auto& g : problem.cost) combos *= static_cast<double>(g.size());
  TORCH_CHECK(combos <= 5e7, "mckp brute force: ", combos, " assignments are too many");
  std::vector<int64_t> choice(G, 0);
  while (true) {
    const auto use = assignment_use(problem, choice);
    bool feasible = true;
    for (int64_t k = 0; k < problem.num_resources(); ++k) feasible = feasible && use[k] <= problem.capacity[k];
    if (feasible) {
      const double c = assignment_cost(problem, choice);
      if (c < result.objective) {
        result.objective = c;
        result.choice = choice;
        result.used = use;
      }
    }
    ++result.nodes;
    int64_t g = 0;
    while (g < G && ++choice[g] == static_cast<int64_t>(problem.cost[g].size())) choice[g++] = 0;
    if (g == G) break;
  }
  result.status = result.choice.empty() ? MckpStatus::kInfeasible : MckpStatus::kOptimal;
  result.bound = result.objective;
  result.seconds = seconds_since(start);
  return result;
}

const char* to_string(MckpStatus status) {
  switch (status) {
    case MckpStatus::kOptimal: return "optimal";
    case MckpStatus::kFeasible: return "feasible";
    case MckpStatus::kInfeasible: return "infeasible";
    case MckpStatus::kLimitReached: return "limit reached";
  }
  return "?";
}

double MckpResult::gap() const {
  if (choice.empty()) return std::numeric_limits<double>::infinity();
  return (objective - bound) / std::max(std::abs(objective), 1e-300);
}

void MckpProblem::validate() const {
  TORCH_CHECK(!cost.empty(), "mckp: no groups");
  TORCH_CHECK(use.size() == capacity.size(), "mckp: ", use.size(), " resource use tables for ", capacity.size(),
              " capacities");
  for (size_t g = 0; g < cost.size(); ++g) {
    TORCH_CHECK(!cost[g].empty(), "mckp: group ", g, " has no choices");
    for (size_t j = 0; j < cost[g].size(); ++j) {
      TORCH_CHECK(std::isfinite(cost[g][j]), "mckp: group ", g, " choice ", j, " has cost ", cost[g][j]);
    }
  }
  for (size_t k = 0; k < use.size(); ++k) {
    TORCH_CHECK(capacity[k] >= 0, "mckp: capacity ", k, " is negative (", capacity[k], ")");
    TORCH_CHECK(use[k].size() == cost.size(), "mckp: resource ", k, " covers ", use[k].size(), " groups, not ",
                cost.size());
    for (size_t g = 0; g < cost.size(); ++g) {
      TORCH_CHECK(use[k][g].size() == cost[g].size(), "mckp: resource ", k, " group ", g, " has ", use[k][g].size(),
                  " uses for ", cost[g].size(), " choices");
      for (size_t j = 0; j < cost[g].size(); ++j) {
        TORCH_CHECK(use[k][g][j] >= 0, "mckp: resource ", k, " group ", g, " choice ", j, " has negative use ",
                    use[k][g][j]);
      }
    }
  }
}

std::vector<int64_t> minimum_use(const MckpProblem& p) {
  std::vector<int64_t> out(p.num_resources(), 0);
  for (int64_t k = 0; k < p.num_resources(); ++k) {
    for (int64_t g = 0; g < p.num_groups(); ++g) out[k] += *std::min_element(p.use[k][g].begin(), p.use[k][g].end());
  }
  return out;
}

double assignment_cost(const MckpProblem& p, const std::vector<int64_t>& choice) {
  double total = 0;
  for (int64_t g = 0; g < p.num_groups(); ++g) total += p.cost[g][choice[g]];
  return total;
}

std::vector<int64_t> assignment_use(const MckpProblem& p, const std::vector<int64_t>& choice) {
  std::vector<int64_t> out(p.num_resources(), 0);
  for (int64_t k = 0; k < p.num_resources(); ++k) {
    for (int64_t g = 0; g < p.num_groups(); ++g) out[k] += p.use[k][g][choice[g]];
  }
  return out;
}

}  // namespace limpq::search
