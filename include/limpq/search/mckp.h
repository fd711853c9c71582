// Exact solvers for the multiple-choice knapsack problem behind the policy
// search (LIMPQ.md section 6): pick one choice per group (one (w, a) pair per
// layer) minimising the summed cost, subject to K <= a few knapsack
// constraints with integer coefficients (BitOps, weight bits, a latency
// table...).
//
// Resource uses and capacities are int64: MACs and parameter counts are
// integers, so feasibility is decided exactly, also for BitOps of 1e11 met
// with a slack of a few parts per million.
//
//   solve_mckp            limpq's exact solver: dynamic programming over
//                         Pareto states with linear-programming bounds (see
//                         src/search/mckp.cpp, which lists its phases); "optimal" only with a proof;
//   solve_mckp_cbc        the same program for COIN-OR CBC (general MILP),
//                         its answer re-checked in integers and returned as
//                         feasible: certify() proves or bounds it;
//   solve_mckp_brute_force enumeration, for tests on tiny instances.
//
//   MckpProblem p;
//   p.cost = {{1.0, 0.5}, {2.0, 0.1}};
//   p.use = {{{1, 4}, {1, 8}}};          // one resource: use[k][group][choice]
//   p.capacity = {9};
//   MckpResult r = solve_mckp(p);       // r.choice == {0, 1}: cost 1.1, use 9
//                                       // (mckp_test: HeaderExampleHoldsAsWritten)
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace limpq::search {

struct MckpProblem {
  std::vector<std::vector<double>> cost;                // [group][choice]
  std::vector<std::vector<std::vector<int64_t>>> use;   // [resource][group][choice], >= 0
  std::vector<int64_t> capacity;                        // [resource]

  int64_t num_groups() const { return static_cast<int64_t>(cost.size()); }
  int64_t num_resources() const { return static_cast<int64_t>(capacity.size()); }
  // Checks shapes and signs; errors name the group and choice.
  void validate() const;
};

// kOptimal: the answer is within relative_gap of a bound limpq proved;
// kFeasible: an answer whose optimality is not proven (see bound and gap);
// kInfeasible: proven to have no answer; kLimitReached: stopped without one.
enum class MckpStatus { kOptimal, kFeasible, kInfeasible, kLimitReached };
const char* to_string(MckpStatus status);

struct MckpResult {
  MckpStatus status = MckpStatus::kInfeasible;
  std::vector<int64_t> choice;  // [group], index into that group's choices
  double objective = std::numeric_limits<double>::infinity();
  // A proven lower bound on the optimum (equals objective when optimal).
  double bound = -std::numeric_limits<double>::infinity();
  std::vector<int64_t> used;    // [resource]
  int64_t nodes = 0;  // states created (limpq) or branch-and-bound nodes (CBC)
  double seconds = 0;
  std::string solver;
  // (objective - bound) / |objective|; infinite without an answer.
  double gap() const;
};

struct MckpOptions {
  // Relative optimality tolerance: a partial assignment is dropped when its
  // bound is within this fraction of the best answer known.
  double relative_gap = 1e-9;
  // States (partial assignments) created, over all passes; about 40 bytes
  // each are held while a pass runs.
  int64_t node_limit = 10'000'000;
  double time_limit_seconds = 60.0;
  // A known assignment (original choice indices) to start from, e.g. the
  // answer for a neighbouring budget; ignored when it does not fit.
  std::vector<int64_t> incumbent;
};

MckpResult solve_mckp(const MckpProblem& problem, const MckpOptions& options = {});
MckpResult solve_mckp_cbc(const MckpProblem& problem, const MckpOptions& options = {});
MckpResult solve_mckp_brute_force(const MckpProblem& problem);

// An answer found elsewhere (CBC's), with limpq's exact solver started from
// it: the bound is the one limpq proved, the status optimal only when that
// bound meets the answer's objective (within relative_gap), else feasible.
// The answer itself is kept, even if the solver found a better one.
MckpResult certify(const MckpProblem& problem, const MckpResult& answer, const MckpOptions& options = {});

// The smallest total use of each resource on its own (ignoring the others):
// what an infeasible budget is measured against.
std::vector<int64_t> minimum_use(const MckpProblem& problem);

// Total cost and use of a full assignment.
double assignment_cost(const MckpProblem& problem, const std::vector<int64_t>& choice);
std::vector<int64_t> assignment_use(const MckpProblem& problem, const std::vector<int64_t>& choice);

}  // namespace limpq::search
