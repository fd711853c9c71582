#include "limpq/search/search.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include "limpq/search/criterion.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/text.h"

namespace limpq::search {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Costs of an extra constraint are compared in integer micro-units.
constexpr double kExtraUnitsPerCost = 1e6;

}  // namespace

ExtraConstraint read_constraint_csv(const std::string& path, double budget) {
  TORCH_CHECK(budget > 0, "constraint '", path, "': the budget must be positive, got ", budget);
  std::istringstream in(util::read_file(path));
  ExtraConstraint c;
  c.name = path;
  c.budget = budget;
  std::string line;
  int64_t line_no = 0;
  bool header = true;
  while (std::getline(in, line)) {
    ++line_no;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields;
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, ',');) fields.push_back(trim(f));
    if (header) {
      header = false;
      TORCH_CHECK(fields == (std::vector<std::string>{"layer", "weight_bits", "act_bits", "cost"}), "constraint '", path,
                  "' line ", line_no, ": expected the header layer,weight_bits,act_bits,cost, got '", line, "'");
      continue;
    }
    TORCH_CHECK(fields.size() == 4, "constraint '", path, "' line ", line_no, ": expected 4 fields, got ",
                fields.size());
    const auto w = util::parse_int(fields[1]);
    const auto a = util::parse_int(fields[2]);
    const auto cost = util::parse_double(fields[3]);
    TORCH_CHECK(w && a && cost && *cost >= 0, "constraint '", path, "' line ", line_no,
                ": weight_bits and act_bits must be integers and cost a non-negative number, got '", line, "'");
    c.rows.emplace_back(fields[0], *w, *a, *cost);
  }
  TORCH_CHECK(!c.rows.empty(), "constraint '", path, "': no rows");
  return c;
}

nlohmann::ordered_json SearchResult::to_json() const {
  auto points = [](const std::vector<ErasedPoint>& list) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& e : list) {
      out.push_back({{"layer", e.layer}, {"tensor", e.tensor}, {"bits", e.bits}, {"value", e.value}});
    }
    return out;
  };
  return {{"status", to_string(solve.status)},
          {"solver", solve.solver},
          {"criterion", criterion},
          {"alpha", alpha},
          {"objective", objective},
          {"uses_erased_points", !erased_used.empty()},
          {"erased_used", points(erased_used)},
          {"program_objective", solve.objective},
          {"bound", solve.bound},
          {"gap", solve.gap()},
          {"target_bitops", target_bitops},
          {"achieved_bitops", achieved_bitops},
          {"target_size_bytes", target_size_bits / 8},
          {"achieved_size_bytes", achieved_size_bits / 8},
          {"fp_bitops", fp_bitops},
          {"fp_size_bytes", fp_size_bits / 8},
          {"average_weight_bits", average_weight_bits},
          {"average_act_bits", average_act_bits},
          {"nodes", solve.nodes},
          {"solve_seconds", solve.seconds},
          {"erased", points(erased)}};
}

namespace {

// The solver the options name. "auto" is limpq's exact solver; when
// auto_node_limit stops it before a proof, CBC is asked too and the better
// answer kept, with limpq's bound. "cbc" is CBC's answer, certified.
MckpResult solve(const MckpProblem& p, const SearchOptions& options, const MckpOptions& mo) {
  if (options.solver() == "cbc") return certify(p, solve_mckp_cbc(p, mo), mo);
  MckpOptions first = mo;
  if (options.solver() == "auto") first.node_limit = options.auto_node_limit();
  MckpResult exact = solve_mckp(p, first);
  if (options.solver() == "dp" || exact.status == MckpStatus::kOptimal || exact.status == MckpStatus::kInfeasible) {
    return exact;
  }
  MckpResult cbc = solve_mckp_cbc(p, mo);
  MckpResult out = !cbc.choice.empty() && (exact.choice.empty() || cbc.objective < exact.objective) ? cbc : exact;
  out.solver = "limpq-dp+cbc";
  out.seconds = exact.seconds + cbc.seconds;
  out.nodes = exact.nodes + cbc.nodes;
  out.bound = exact.bound;
  if (!out.choice.empty()) {
    out.bound = std::min(out.bound, out.objective);
    out.status = out.gap() <= mo.relative_gap ? MckpStatus::kOptimal : MckpStatus::kFeasible;
  }
  return out;
}

}  // namespace

namespace {

// The search's view of an indicators file: its searchable layers, the
// bit-widths they may take (descending), and what the fixed layers cost.
struct SearchSpace {
  std::vector<const quant::IndicatorLayer*> searchable;
  std::vector<int64_t> bits;
  int64_t fixed_bits = 8;
  int64_t fixed_bitops = 0;
  int64_t fixed_size = 0;
  int64_t all_params = 0;

  int64_t nb() const { return static_cast<int64_t>(bits.size()); }

  // A resource row of `problem`: use_of(layer, weight bits, act bits) per
  // choice, at most `capacity` in total.
  template <typename UseOf>
  void add_resource(MckpProblem& problem, UseOf&& use_of, int64_t capacity) const {
    std::vector<std::vector<int64_t>> use;
    for (const auto* l : searchable) {
      std::vector<int64_t> u;
      for (int64_t wb : bits) {
        for (int64_t ab : bits) u.push_back(use_of(*l, wb, ab));
      }
      use.push_back(std::move(u));
    }
    problem.use.push_back(std::move(use));
    problem.capacity.push_back(capacity);
  }
};

SearchSpace make_space(const quant::Indicators& ind, const SearchOptions& options, SearchResult& result) {
  SearchSpace space;
  space.fixed_bits = options.fixed_bits();
  space.bits = options.candidates().empty() ? ind.candidates : options.candidates();
  for (int64_t b : space.bits) {
    TORCH_CHECK(std::find(ind.candidates.begin(), ind.candidates.end(), b) != ind.candidates.end(), "search: bit-width ",
                b, " is not among the indicators' candidates ", c10::IntArrayRef(ind.candidates));
  }
  std::sort(space.bits.begin(), space.bits.end(), std::greater<>());
  space.bits.erase(std::unique(space.bits.begin(), space.bits.end()), space.bits.end());
  int64_t fixed_macs = 0, fixed_params = 0;
  for (const auto& l : ind.layers) {
    space.all_params += l.params;
    result.fp_bitops += static_cast<double>(l.macs) * 32 * 32;
    result.fp_size_bits += static_cast<double>(l.params) * 32;
    if (l.searchable) {
      space.searchable.push_back(&l);
    } else {
      fixed_macs += l.macs;
      fixed_params += l.params;
    }
  }
  TORCH_CHECK(!space.searchable.empty(), "search: the indicators have no searchable layer");
  space.fixed_bitops = fixed_macs * space.fixed_bits * space.fixed_bits;
  space.fixed_size = fixed_params * space.fixed_bits;
  return space;
}

// The objective I_a + alpha I_w per choice, with non-monotone points erased
// (compared on the learned values, so one erasure does not cascade).
void add_objective(const SearchSpace& space, double alpha, bool keep_nonmonotone, MckpProblem& p,
                   SearchResult& result) {
  for (const auto* l : space.searchable) {
    std::map<int64_t, double> w = l->weight_steps, a = l->act_steps;
    for (int64_t i = 0; !keep_nonmonotone && i + 1 < space.nb(); ++i) {
      const int64_t hi = space.bits[i], lo = space.bits[i + 1];
      if (l->weight_steps.at(lo) < l->weight_steps.at(hi)) {
        w[lo] = kErasedIndicator;
        result.erased.push_back({l->name, "weight", lo, l->weight_steps.at(lo)});
      }
      if (l->act_steps.at(lo) < l->act_steps.at(hi)) {
        a[lo] = kErasedIndicator;
        result.erased.push_back({l->name, "act", lo, l->act_steps.at(lo)});
      }
    }
    std::vector<double> cost;
    for (int64_t wb : space.bits) {
      for (int64_t ab : space.bits) cost.push_back(a.at(ab) + alpha * w.at(wb));
    }
    p.cost.push_back(std::move(cost));
  }
}

// "W3A4" (every searchable layer at that precision) or GBitOps.
void add_bitops_budget(const SearchSpace& space, const std::string& spec, MckpProblem& p, SearchResult& result) {
  int64_t capacity = 0;
  if (const auto bits = uniform_budget(spec)) {
    for (const auto* l : space.searchable) capacity += l->macs * bits->weight * bits->act;
    result.target_bitops = static_cast<double>(capacity + space.fixed_bitops);
  } else {
    const auto parsed = util::parse_double(spec);
    TORCH_CHECK(parsed, "search: --bitops must be uniform-equivalent like W3A4 or GBitOps like 12.5, got '", spec, "'");
    const double g = *parsed;
    TORCH_CHECK(g > 0, "search: --bitops must be positive, got ", g);
    result.target_bitops = g * 1e9;
    capacity = static_cast<int64_t>(std::floor(g * 1e9)) - space.fixed_bitops;
  }
  space.add_resource(p, [](const quant::IndicatorLayer& l, int64_t wb, int64_t ab) { return l.macs * wb * ab; },
                     std::max<int64_t>(capacity, -1));
}

// MB and/or a compression ratio: the tighter of the two.
void add_size_budget(const SearchSpace& space, const SearchOptions& options, MckpProblem& p, SearchResult& result) {
  double target = std::numeric_limits<double>::infinity();
  if (options.size_mb() > 0) target = std::min(target, std::floor(options.size_mb() * 8e6));
  if (options.cr() > 0) {
    target = std::min(target, std::floor(32.0 * static_cast<double>(space.all_params) / options.cr()));
  }
  result.target_size_bits = target;
  space.add_resource(p, [](const quant::IndicatorLayer& l, int64_t wb, int64_t) { return l.params * wb; },
                     std::max<int64_t>(static_cast<int64_t>(target) - space.fixed_size, -1));
}

void add_extra_constraint(const SearchSpace& space, const quant::Indicators& ind, const ExtraConstraint& extra,
                          MckpProblem& p) {
  std::map<std::tuple<std::string, int64_t, int64_t>, int64_t> table;
  for (const auto& [layer, wb, ab, cost] : extra.rows) table[{layer, wb, ab}] = std::llround(cost * kExtraUnitsPerCost);
  double fixed_cost = 0;
  for (const auto& l : ind.layers) {
    if (l.searchable) continue;
    auto it = table.find({l.name, space.fixed_bits, space.fixed_bits});
    if (it != table.end()) fixed_cost += static_cast<double>(it->second);
  }
  // A (weight, activation) pair without a row is not available to that
  // layer (a latency table measured for some pairs only); a layer needs at
  // least one.
  for (const auto* l : space.searchable) {
    bool any = false;
    for (int64_t wb : space.bits) {
      for (int64_t ab : space.bits) any = any || table.count({l->name, wb, ab}) > 0;
    }
    TORCH_CHECK(any, "constraint '", extra.name, "': no row for layer '", l->name, "' at any candidate pair of ",
                c10::IntArrayRef(space.bits), " bits; give it at least one row layer,weight_bits,act_bits,cost");
  }
  const int64_t capacity =
      std::max<int64_t>(static_cast<int64_t>(std::floor(extra.budget * kExtraUnitsPerCost - fixed_cost)), -1);
  space.add_resource(
      p,
      [&](const quant::IndicatorLayer& l, int64_t wb, int64_t ab) {
        auto it = table.find({l.name, wb, ab});
        return it != table.end() ? it->second : capacity + 1;  // over the budget: never chosen
      },
      capacity);
}

// Why the budget cannot be met: the smallest BitOps and size reachable.
std::string infeasible_reason(const SearchSpace& space, const MckpProblem& p, const SearchResult& result) {
  int64_t min_bitops = space.fixed_bitops, min_size = space.fixed_size;
  for (const auto* l : space.searchable) {
    min_bitops += l->macs * space.bits.back() * space.bits.back();
    min_size += l->params * space.bits.back();
  }
  return c10::str("search: the budget cannot be met with candidates ", c10::IntArrayRef(space.bits),
                  " (fixed layers at ", space.fixed_bits, " bits): the smallest reachable is ",
                  static_cast<double>(min_bitops) / 1e9, " GBitOps and ", static_cast<double>(min_size) / 8e6,
                  " MB of weights",
                  result.target_bitops > 0 ? ", the BitOps target is " + std::to_string(result.target_bitops / 1e9) + " G"
                                           : std::string(),
                  result.target_size_bits > 0
                      ? ", the size target is " + std::to_string(result.target_size_bits / 8e6) + " MB"
                      : std::string(),
                  p.capacity.size() > 1 ? " (or the constraints cannot be met together)" : "");
}

// The erased point of `layer`'s `tensor` at `bits`, or null.
const ErasedPoint* find_erased(const SearchResult& result, const std::string& layer, const std::string& tensor,
                               int64_t bits) {
  for (const auto& e : result.erased) {
    if (e.layer == layer && e.tensor == tensor && e.bits == bits) return &e;
  }
  return nullptr;
}

// The policy of the solver's choice and its figures.
void fill_policy(const SearchSpace& space, const quant::Indicators& ind, SearchResult& result) {
  result.policy.model = ind.model;
  double weighted_w = 0, weighted_a = 0, total_params = 0, total_macs = 0;
  int64_t achieved_bitops = space.fixed_bitops, achieved_size = space.fixed_size;
  result.objective = 0;
  for (size_t g = 0; g < space.searchable.size(); ++g) {
    const int64_t choice = result.solve.choice[g];
    const quant::LayerBits b{space.bits[choice / space.nb()], space.bits[choice % space.nb()]};
    const auto* l = space.searchable[g];
    result.policy.layers.emplace_back(l->name, b);
    result.objective += l->act_steps.at(b.act) + result.alpha * l->weight_steps.at(b.weight);
    if (const auto* e = find_erased(result, l->name, "weight", b.weight)) result.erased_used.push_back(*e);
    if (const auto* e = find_erased(result, l->name, "act", b.act)) result.erased_used.push_back(*e);
    achieved_bitops += l->macs * b.weight * b.act;
    achieved_size += l->params * b.weight;
    weighted_w += static_cast<double>(l->params) * b.weight;
    weighted_a += static_cast<double>(l->macs) * b.act;
    total_params += static_cast<double>(l->params);
    total_macs += static_cast<double>(l->macs);
  }
  for (const auto& l : ind.layers) {
    if (!l.searchable) result.policy.fixed.emplace_back(l.name, quant::LayerBits{space.fixed_bits, space.fixed_bits});
  }
  result.achieved_bitops = static_cast<double>(achieved_bitops);
  result.achieved_size_bits = static_cast<double>(achieved_size);
  result.average_weight_bits = weighted_w / total_params;
  result.average_act_bits = weighted_a / total_macs;
}

}  // namespace

namespace {

// True when `choice` meets every constraint of `p` (exact integer uses).
bool fits(const MckpProblem& p, const std::vector<int64_t>& choice) {
  if (static_cast<int64_t>(choice.size()) != p.num_groups()) return false;
  const std::vector<int64_t> used = assignment_use(p, choice);
  for (int64_t k = 0; k < p.num_resources(); ++k) {
    if (used[k] > p.capacity[k]) return false;
  }
  return true;
}

// The answer to the same program under budgets no tighter in any resource,
// as the answer to `p`, when it meets p's budgets: a tighter budget cannot
// make anything cheaper, so the looser program's bound bounds this one and
// the proof carries over. Empty when it does not fit.
std::optional<MckpResult> looser_answer(const MckpProblem& p, const MckpResult& looser) {
  const auto start = std::chrono::steady_clock::now();
  if (!fits(p, looser.choice)) return std::nullopt;
  MckpResult r = looser;
  // Said once, however many budgets the answer has passed down.
  const std::string taken = " (the answer of a looser budget)";
  if (r.solver.find(taken) == std::string::npos) r.solver += taken;
  r.used = assignment_use(p, looser.choice);
  r.nodes = 0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

// run_search, given optionally the answer of a looser budget to take
// without solving where it fits (looser_answer), and to start from where it
// does not.
SearchResult search(const quant::Indicators& indicators, const SearchOptions& options, const MckpResult* looser) {
  const Criterion criterion =
      options.criterion().empty() ? default_criterion(indicators) : parse_criterion(options.criterion());
  const quant::Indicators ind = apply_criterion(indicators, criterion);
  const double alpha = options.alpha().value_or(default_alpha(criterion, ind));
  TORCH_CHECK(alpha >= 0, "search: alpha must be >= 0, got ", alpha);
  TORCH_CHECK(options.fixed_bits() >= 2 && options.fixed_bits() <= 8, "search: fixed_bits must be in 2..8, got ",
              options.fixed_bits());
  TORCH_CHECK(options.size_mb() >= 0 && options.cr() >= 0, "search: size and compression ratio must be >= 0");
  TORCH_CHECK(options.solver() == "auto" || options.solver() == "dp" || options.solver() == "cbc",
              "search: solver must be auto, dp or cbc, got '", options.solver(), "'");
  SearchResult result;
  result.criterion = to_string(criterion);
  result.alpha = alpha;
  const SearchSpace space = make_space(ind, options, result);
  MckpProblem p;
  add_objective(space, alpha, options.keep_nonmonotone(), p, result);
  if (!options.bitops().empty()) add_bitops_budget(space, options.bitops(), p, result);
  if (options.size_mb() > 0 || options.cr() > 0) add_size_budget(space, options, p, result);
  for (const auto& extra : options.extra()) add_extra_constraint(space, ind, extra, p);
  TORCH_CHECK(!p.capacity.empty(), "search: give a budget: --bitops (W3A4 or GBitOps), --size-mb MB or --cr RATIO");

  // Capacities below zero can never be met.
  const bool negative = std::any_of(p.capacity.begin(), p.capacity.end(), [](int64_t c) { return c < 0; });
  MckpOptions mo;
  mo.time_limit_seconds = options.time_limit();
  if (!negative) {
    const auto reused = looser ? looser_answer(p, *looser) : std::nullopt;
    if (looser && !reused) mo.incumbent = looser->choice;  // the solver repairs it to fit: a warm start
    result.solve = reused ? *reused : solve(p, options, mo);
  }
  if (negative || result.solve.status == MckpStatus::kInfeasible) {
    // An expected outcome, returned as a status; run_search turns it into the error.
    result.solve.status = MckpStatus::kInfeasible;
    result.infeasible = infeasible_reason(space, p, result);
    return result;
  }
  TORCH_CHECK(result.solve.status != MckpStatus::kLimitReached || !result.solve.choice.empty(),
              "search: the solver stopped at its time limit (", options.time_limit(), " s) without a policy");
  fill_policy(space, ind, result);
  return result;
}

}  // namespace

SearchResult run_search(const quant::Indicators& indicators, const SearchOptions& options) {
  SearchResult result = search(indicators, options, nullptr);
  TORCH_CHECK(result.solve.status != MckpStatus::kInfeasible, result.infeasible);
  return result;
}

std::optional<quant::LayerBits> uniform_budget(const std::string& spec) {
  if (spec.empty() || (spec[0] != 'W' && spec[0] != 'w')) return std::nullopt;
  return quant::parse_uniform(spec);
}

double budget_bitops(const quant::Indicators& ind, const std::string& spec, int64_t fixed_bits) {
  if (const auto bits = uniform_budget(spec)) {
    double total = 0;
    for (const auto& l : ind.layers) {
      total += l.searchable ? static_cast<double>(l.macs) * bits->weight * bits->act
                            : static_cast<double>(l.macs) * fixed_bits * fixed_bits;
    }
    return total;
  }
  const auto g = util::parse_double(spec);
  TORCH_CHECK(g && *g > 0, "search: a BitOps budget must be uniform-equivalent like W3A4 or GBitOps like 12.5, got '",
              spec, "'");
  return *g * 1e9;
}

std::vector<SweepPoint> run_sweep(const quant::Indicators& ind, const SearchOptions& options,
                                  const SweepOptions& budgets) {
  const int64_t points = budgets.points();
  const std::string& from = budgets.from();
  const std::string& to = budgets.to();
  TORCH_CHECK(points >= 2, "sweep: needs at least 2 points, got ", points);
  const double lo = budget_bitops(ind, from, options.fixed_bits());
  const double hi = budget_bitops(ind, to, options.fixed_bits());
  TORCH_CHECK(hi > lo, "sweep: the upper budget ", to, " (", hi / 1e9, " G) must exceed the lower ", from, " (",
              lo / 1e9, " G)");
  // From the loosest budget down: where the answer of a looser budget meets
  // a tighter one it is reused, proven as it was (see search()).
  std::vector<SweepPoint> sweep(points);
  const MckpResult* looser = nullptr;
  for (int64_t i = points - 1; i >= 0; --i) {
    SweepPoint& point = sweep[i];
    point.budget_bitops = lo + (hi - lo) * static_cast<double>(i) / static_cast<double>(points - 1);
    SearchOptions o = options;
    o.bitops(fmt::format("{:.17g}", point.budget_bitops / 1e9));
    point.result = search(ind, o, looser);
    point.feasible = point.result.solve.status != MckpStatus::kInfeasible;
    if (point.feasible) looser = &point.result.solve;
  }
  return sweep;
}

std::string sweep_to_csv(const std::vector<SweepPoint>& sweep) {
  std::string out = "budget_gbitops,feasible,objective,achieved_gbitops,size_bytes,average_weight_bits,average_act_bits\n";
  for (const auto& p : sweep) {
    if (p.feasible) {
      const auto& r = p.result;
      out += fmt::format("{:.9g},1,{:.12g},{:.9g},{:.0f},{:.6g},{:.6g}\n", p.budget_bitops / 1e9, r.objective,
                         r.achieved_bitops / 1e9, r.achieved_size_bits / 8, r.average_weight_bits, r.average_act_bits);
    } else {
      out += fmt::format("{:.9g},0,,,,,\n", p.budget_bitops / 1e9);
    }
  }
  return out;
}

nlohmann::ordered_json sweep_to_json(const std::vector<SweepPoint>& sweep) {
  nlohmann::ordered_json j = nlohmann::ordered_json::array();
  for (const auto& p : sweep) {
    nlohmann::ordered_json e = {{"budget_bitops", p.budget_bitops}, {"feasible", p.feasible}};
    if (p.feasible) {
      e["result"] = p.result.to_json();
      e["policy"] = quant::policy_to_json(p.result.policy);
    }
    j.push_back(std::move(e));
  }
  return j;
}

quant::Indicators random_indicators(const quant::Indicators& indicators, uint64_t seed) {
  quant::Indicators out = indicators;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(1e-6, 1.0);
  // Candidates from fewest to most bits get values from largest to smallest.
  auto draw = [&](std::map<int64_t, double>& values) {
    std::vector<double> v(values.size());
    for (double& x : v) x = uniform(rng);
    std::sort(v.begin(), v.end(), std::greater<>());
    size_t k = 0;
    for (auto& [bits, value] : values) value = v[k++];  // map order: ascending bits
  };
  for (auto& l : out.layers) {
    if (!l.searchable) continue;
    draw(l.weight_steps);
    draw(l.act_steps);
    l.stats.reset();  // the values are no steps: no criterion form applies
  }
  // Weights and activations drawn alike: searched with alpha 1.
  out.provenance = {{"method", "random"}, {"seed", seed}, {"search_alpha", 1.0}, {"from", indicators.provenance}};
  return out;
}

namespace {

std::string erased_points(const std::vector<ErasedPoint>& points) {
  std::string out;
  for (const auto& e : points) out += fmt::format(" {}:{}@{}", e.layer, e.tensor, e.bits);
  return out;
}

}  // namespace

std::string search_text(const SearchResult& r) {
  std::string out = fmt::format("{:<28} {:>4} {:>4}\n", "layer", "W", "A");
  for (const auto& [name, b] : r.policy.layers) out += fmt::format("{:<28} {:>4} {:>4}\n", name, b.weight, b.act);
  for (const auto& [name, b] : r.policy.fixed) out += fmt::format("{:<28} {:>4} {:>4}  fixed\n", name, b.weight, b.act);
  out += fmt::format("\ncriterion {}, alpha {:g}\n", r.criterion, r.alpha);
  if (r.erased_used.empty()) {
    out += fmt::format("{} ({}): objective {:.6g}, proven bound {:.6g} (relative gap {:.2g}), {} nodes, {:.2f} ms\n",
                       to_string(r.solve.status), r.solve.solver, r.objective, r.solve.bound, r.solve.gap(),
                       r.solve.nodes, r.solve.seconds * 1e3);
  } else {
    out += fmt::format("{} ({}) among the policies with the fewest erased points the budget allows ({}): objective "
                       "{:.6g} with them at their own values, {} nodes, {:.2f} ms\n",
                       to_string(r.solve.status), r.solve.solver, r.erased_used.size(), r.objective, r.solve.nodes,
                       r.solve.seconds * 1e3);
    out += "the budget forces erased (non-monotone) indicator points:" + erased_points(r.erased_used) + "\n";
  }
  out += fmt::format("BitOps {:.4f} G{}, weights {:.4f} MB{}\n", r.achieved_bitops / 1e9,
                     r.target_bitops > 0 ? fmt::format(" (target {:.4f} G)", r.target_bitops / 1e9) : "",
                     r.achieved_size_bits / 8e6,
                     r.target_size_bits > 0 ? fmt::format(" (target {:.4f} MB)", r.target_size_bits / 8e6) : "");
  out += fmt::format("average bits: weights {:.2f} (parameter-weighted), activations {:.2f} (MAC-weighted)\n",
                     r.average_weight_bits, r.average_act_bits);
  if (!r.erased.empty()) {
    out += fmt::format("{} non-monotone indicator points erased:", r.erased.size()) + erased_points(r.erased) + "\n";
  }
  return out;
}

std::string sweep_text(const std::vector<SweepPoint>& sweep) {
  std::string out = fmt::format("{:>12} {:>12} {:>12} {:>12} {:>7} {:>7}\n", "budget G", "objective", "BitOps G",
                                "weights KB", "avg W", "avg A");
  bool any_erased = false;
  for (const auto& p : sweep) {
    if (!p.feasible) {
      out += fmt::format("{:>12.4f}   infeasible\n", p.budget_bitops / 1e9);
      continue;
    }
    const auto& r = p.result;
    any_erased = any_erased || !r.erased_used.empty();
    out += fmt::format("{:>12.4f} {:>12.6g} {:>12.4f} {:>12.1f} {:>7.2f} {:>7.2f}{}\n", p.budget_bitops / 1e9,
                       r.objective, r.achieved_bitops / 1e9, r.achieved_size_bits / 8e3, r.average_weight_bits,
                       r.average_act_bits,
                       r.erased_used.empty() ? "" : fmt::format("  uses {} erased points", r.erased_used.size()));
  }
  if (any_erased) {
    out += "(an answer that uses erased points is the best with the fewest of them the budget allows; its objective "
           "counts them at their own values)\n";
  }
  return out;
}

std::string write_sweep(const std::string& out, const std::vector<SweepPoint>& sweep) {
  const std::string suffix = ".json";
  const bool has_suffix = out.size() > suffix.size() && out.compare(out.size() - suffix.size(), suffix.size(), suffix) == 0;
  const std::string prefix = has_suffix ? out.substr(0, out.size() - suffix.size()) : out;
  if (prefix.empty()) return prefix;
  util::write_file_atomic(prefix + ".csv", sweep_to_csv(sweep));
  util::write_file_atomic(prefix + ".json", sweep_to_json(sweep).dump(2) + "\n");
  return prefix;
}

}  // namespace limpq::search
