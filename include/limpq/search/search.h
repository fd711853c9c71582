// The LIMPQ policy search (LIMPQ.md section 6): from an indicators file and a
// budget to a mixed-precision policy, by one exact integer program.
//
//   minimise   sum_l I_a(l, a_l) + alpha * I_w(l, w_l)
//   subject to sum_l MACs(l) * w_l * a_l              <= BitOps budget
//              8 * params(fixed) + sum_l params(l) * w_l <= 32 * params(all) / CR
//              (plus any extra linear constraint, e.g. a latency table)
//
//   SearchOptions opts;
//   opts.bitops("W3A4").cr(12.2);
//   SearchResult r = run_search(read_indicators("indicators.json"), opts);
//   write_policy("policy.json", r.policy);
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "limpq/quant/indicators.h"
#include "limpq/quant/policy.h"
#include "limpq/search/mckp.h"

namespace limpq::search {

// The value an erased (non-monotone) indicator point gets: the search never
// picks it.
inline constexpr double kErasedIndicator = 1e8;

// An extra linear constraint: cost per (layer, weight bits, activation bits)
// and a budget, e.g. a measured latency table. Loaded from CSV with the
// header `layer,weight_bits,act_bits,cost`; costs are scaled to integers by
// `resolution` (default 1e-6 of the unit) so feasibility is exact.
struct ExtraConstraint {
  std::string name;
  std::vector<std::tuple<std::string, int64_t, int64_t, double>> rows;
  double budget = 0;
};
ExtraConstraint read_constraint_csv(const std::string& path, double budget);

struct SearchOptions {
  // BitOps budget: "W3A4" (uniform-equivalent over the searchable layers) or
  // an absolute figure in GBitOps for the whole network (fixed layers at
  // fixed_bits). Empty: no BitOps constraint.
  TORCH_ARG(std::string, bitops) = "";
  // Weight-size budget in MB (1e6 bytes) for the whole network, or a
  // compression ratio against 32-bit weights. 0: none.
  TORCH_ARG(double, size_mb) = 0;
  TORCH_ARG(double, cr) = 0;
  // The form of the indicators minimised (include/limpq/search/criterion.h):
  // step (the paper's) | relative | noise | fisher | fisher-error; empty:
  // default_criterion (fisher-error when the file has the per-tensor
  // statistics with their per-bit errors, relative with the statistics
  // alone, else step).
  TORCH_ARG(std::string, criterion) = "";
  // Weight of the weight indicators; unset: the criterion's default
  // (default_alpha: 2 for the paper's step, 0.25 for the scale-free forms, 1
  // for files from limpq sensitivity).
  TORCH_ARG(std::optional<double>, alpha) = std::nullopt;
  // Bit-widths the search may use (a subset of the file's); empty: all.
  TORCH_ARG(std::vector<int64_t>, candidates) = {};
  // Keep non-monotone indicator points instead of erasing them.
  TORCH_ARG(bool, keep_nonmonotone) = false;
  TORCH_ARG(int64_t, fixed_bits) = 8;
  // "auto": limpq's exact solver (mckp.h), asking CBC too when it has not
  // proven optimality within auto_node_limit states; "dp": limpq's solver
  // alone; "cbc": CBC's answer, certified by limpq's solver.
  TORCH_ARG(std::string, solver) = "auto";
  TORCH_ARG(int64_t, auto_node_limit) = 5'000'000;
  TORCH_ARG(double, time_limit) = 60.0;
  // Extra linear constraints (see read_constraint_csv).
  TORCH_ARG(std::vector<ExtraConstraint>, extra) = {};
};

struct ErasedPoint {
  std::string layer;
  std::string tensor;  // "weight" | "act"
  int64_t bits;
  double value;        // the value erased, in the criterion's form (the learned step for "step")
};

struct SearchResult {
  quant::Policy policy;
  std::string criterion;  // the form minimised
  double alpha = 0;       // the alpha used
  // The program solved: erased points cost kErasedIndicator there, so its
  // objective, bound and status are those of "the fewest erased points
  // first, then the criterion".
  MckpResult solve;
  // The policy's criterion value, every point at its own value: what the
  // search minimised, without the program's penalty.
  double objective = 0;
  // Erased points the policy uses (when the budget leaves no other choice).
  std::vector<ErasedPoint> erased_used;
  // Why the budget cannot be met, when solve.status is kInfeasible (then
  // there is no policy).
  std::string infeasible;
  double target_bitops = 0, achieved_bitops = 0;  // whole network; target 0: none
  double target_size_bits = 0, achieved_size_bits = 0;
  double fp_bitops = 0, fp_size_bits = 0;
  double average_weight_bits = 0, average_act_bits = 0;  // MAC-weighted over searchable layers
  std::vector<ErasedPoint> erased;
  nlohmann::ordered_json to_json() const;
};

// Solves the program; an infeasible budget is an error stating the smallest
// BitOps and size reachable with the given candidates.
SearchResult run_search(const quant::Indicators& indicators, const SearchOptions& options);

// Whole-network BitOps of a budget spec: "W3A4" (searchable layers at 3/4
// bits, fixed layers at fixed_bits) or GBitOps ("0.35").
double budget_bitops(const quant::Indicators& indicators, const std::string& spec, int64_t fixed_bits);

// The same indicators with every searchable layer's values replaced by
// random ones, drawn uniformly from (0, 1) and sorted so that more bits never
// look worse (a random objective that still spends the budget): searching
// them gives a random policy that meets the same constraints through the
// same program. The provenance records the method and seed, and alpha 1
// (weights and activations drawn alike); the statistics are dropped, so the
// values are searched as they are.
quant::Indicators random_indicators(const quant::Indicators& indicators, uint64_t seed);

// One point of a Pareto sweep.
struct SweepPoint {
  double budget_bitops = 0;
  bool feasible = false;
  SearchResult result;  // valid when feasible
};

// Solves the program for `points` BitOps budgets evenly spaced from `from`
// to `to` (specs as for budget_bitops; other constraints from `options`).
// Infeasible budgets are kept as points, not errors. The budgets are solved
// from the loosest down; a point whose budget the next looser point's answer
// meets takes that answer (proven optimal by the looser program's bound;
// `solve.nodes` is then 0) instead of being solved again.
std::vector<SweepPoint> run_sweep(const quant::Indicators& indicators, const SearchOptions& options,
                                  const std::string& from, const std::string& to, int64_t points);

// CSV (budget_gbitops,feasible,objective,achieved_gbitops,size_bytes,
// average_weight_bits,average_act_bits) and JSON renderings of a sweep.
std::string sweep_to_csv(const std::vector<SweepPoint>& sweep);
nlohmann::ordered_json sweep_to_json(const std::vector<SweepPoint>& sweep);

}  // namespace limpq::search
