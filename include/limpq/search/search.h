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
#include "limpq/util/option_groups.h"

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

 public:
  // The fields a config file and the command line set (not auto_node_limit,
  // a tuning constant, nor extra, which comes from --constraint).
  template <typename V>
  void visit(V&& v) {
    v("bitops", bitops_, "BitOps budget: uniform-equivalent (W3A4) or GBitOps of the whole network; empty: none");
    v("size_mb", size_mb_, "weight-size budget of the whole network in MB (0: none)");
    v("cr", cr_, "compression ratio of the weights against 32 bits (0: none)");
    v("criterion", criterion_,
      "form of the indicators minimised: step (the learned step, the paper's) | relative (step / tensor rms) | "
      "noise (step^2 / (12 rms^2)) | fisher (Fisher trace x step^2 / 24) | fisher-error (Fisher-weighted measured "
      "quantization error at the learned step); empty: fisher-error when the indicators have per-tensor statistics "
      "with per-bit errors (limpq indicators records them), relative with older statistics, else step. limpq run "
      "also takes drop | hessian (limpq sensitivity's measured criteria, in place of the joint run)");
    v("alpha", alpha_,
      "weight of the weight indicators against the activation ones (empty: 2 for step, 0.25 for relative, noise, "
      "fisher and fisher-error, 1 for files from limpq sensitivity)");
    v("candidates", candidates_, "bit-widths the search may use (empty: all in the indicators file)");
    v("keep_nonmonotone", keep_nonmonotone_, "keep indicator points where fewer bits learned a smaller step");
    util::visit_fixed_bits(v, fixed_bits_);
    v("solver", solver_,
      "auto (limpq's exact solver, then CBC if it stalls) | dp | cbc (its answer certified by limpq's solver)");
    v("time_limit", time_limit_, "solver time limit in seconds");
  }
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

// The precision of a uniform-equivalent budget spec ("W3A4" -> {3, 4});
// nullopt for a GBitOps figure ("0.35") or an empty spec.
std::optional<quant::LayerBits> uniform_budget(const std::string& spec);

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

// The budgets of a Pareto sweep: `points` BitOps budgets evenly spaced from
// `from` to `to` (specs as for budget_bitops).
struct SweepOptions {
  TORCH_ARG(int64_t, points) = 0;
  TORCH_ARG(std::string, from) = "W2A2";
  TORCH_ARG(std::string, to) = "W6A6";

 public:
  template <typename V>
  void visit(V&& v) {
    v("sweep", points_, "solve N BitOps budgets evenly spaced from --sweep-from to --sweep-to (the data of a Pareto "
                        "plot; 0: one search)");
    v("sweep_from", from_, "lowest sweep budget (W2A2 or GBitOps)");
    v("sweep_to", to_, "highest sweep budget (W6A6 or GBitOps)");
  }
};

// Solves the program at each budget of `sweep` (other constraints from
// `options`).
// Infeasible budgets are kept as points, not errors. The budgets are solved
// from the loosest down; a point whose budget the next looser point's answer
// meets takes that answer (proven optimal by the looser program's bound;
// `solve.nodes` is then 0) instead of being solved again.
std::vector<SweepPoint> run_sweep(const quant::Indicators& indicators, const SearchOptions& options,
                                  const SweepOptions& sweep);

// CSV (budget_gbitops,feasible,objective,achieved_gbitops,size_bytes,
// average_weight_bits,average_act_bits) and JSON renderings of a sweep.
std::string sweep_to_csv(const std::vector<SweepPoint>& sweep);
nlohmann::ordered_json sweep_to_json(const std::vector<SweepPoint>& sweep);

// What `limpq search` prints: the policy, the solver's proof, the cost
// against the budgets and the erased indicator points; for a sweep, one row
// per budget.
std::string search_text(const SearchResult& r);

// Writes a sweep to <prefix>.csv and <prefix>.json, `out` without a .json
// suffix being the prefix; returns the prefix ("" writes nothing).
std::string write_sweep(const std::string& out, const std::vector<SweepPoint>& sweep);
std::string sweep_text(const std::vector<SweepPoint>& sweep);

}  // namespace limpq::search
