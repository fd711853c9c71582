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
//   solve_mckp            branch and bound with Lagrangian bounds and
//                         dominance reduction (fast, exact);
//   solve_mckp_cbc        the same program for COIN-OR CBC (general MILP),
//                         its answer re-checked in integers;
//   solve_mckp_brute_force enumeration, for tests on tiny instances.
//
//   MckpProblem p;
//   p.cost = {{1.0, 0.5}, {2.0, 0.1}};
//   p.use = {{{1, 4}, {1, 8}}};          // one resource: use[k][group][choice]
//   p.capacity = {9};
//   MckpResult r = solve_mckp(p);       // r.choice == {1, 0}
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

enum class MckpStatus { kOptimal, kInfeasible, kLimitReached };
const char* to_string(MckpStatus status);

struct MckpResult {
  MckpStatus status = MckpStatus::kInfeasible;
  std::vector<int64_t> choice;  // [group], index into that group's choices
  double objective = std::numeric_limits<double>::infinity();
  // A proven lower bound on the optimum (equals objective when optimal).
  double bound = -std::numeric_limits<double>::infinity();
  std::vector<int64_t> used;    // [resource]
  int64_t nodes = 0;
  double seconds = 0;
  std::string solver;
};

struct MckpOptions {
  // Relative optimality tolerance: a branch is pruned when its bound is
  // within this fraction of the incumbent.
  double relative_gap = 1e-9;
  int64_t node_limit = 50'000'000;
  double time_limit_seconds = 60.0;
};

MckpResult solve_mckp(const MckpProblem& problem, const MckpOptions& options = {});
MckpResult solve_mckp_cbc(const MckpProblem& problem, const MckpOptions& options = {});
MckpResult solve_mckp_brute_force(const MckpProblem& problem);

// The smallest total use of each resource on its own (ignoring the others):
// what an infeasible budget is measured against.
std::vector<int64_t> minimum_use(const MckpProblem& problem);

// Total cost and use of a full assignment.
double assignment_cost(const MckpProblem& problem, const std::vector<int64_t>& choice);
std::vector<int64_t> assignment_use(const MckpProblem& problem, const std::vector<int64_t>& choice);

}  // namespace limpq::search
