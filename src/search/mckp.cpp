#include "limpq/search/mckp.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

namespace limpq::search {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The problem after removing choices that can never be feasible on their own
// and choices dominated by another choice of the same group, with the
// surviving choices' original indices.
struct Reduced {
  int64_t groups = 0, resources = 0;
  std::vector<std::vector<int64_t>> original;  // [g][j] -> original choice index
  std::vector<std::vector<double>> cost;       // [g][j]
  std::vector<std::vector<int64_t>> use;       // [g][j * K + k]
};

bool reduce(const MckpProblem& p, Reduced& r) {
  r.groups = p.num_groups();
  r.resources = p.num_resources();
  const int64_t K = r.resources;
  r.original.resize(r.groups);
  r.cost.resize(r.groups);
  r.use.resize(r.groups);
  for (int64_t g = 0; g < r.groups; ++g) {
    const int64_t n = static_cast<int64_t>(p.cost[g].size());
    auto fits = [&](int64_t j) {
      for (int64_t k = 0; k < K; ++k) {
        if (p.use[k][g][j] > p.capacity[k]) return false;
      }
      return true;
    };
    // a is dominated by b: no worse anywhere; exact ties keep the lower index.
    auto dominates = [&](int64_t b, int64_t a) {
      if (p.cost[g][b] > p.cost[g][a]) return false;
      bool strict = p.cost[g][b] < p.cost[g][a];
      for (int64_t k = 0; k < K; ++k) {
        if (p.use[k][g][b] > p.use[k][g][a]) return false;
        strict = strict || p.use[k][g][b] < p.use[k][g][a];
      }
      return strict || b < a;
    };
    for (int64_t a = 0; a < n; ++a) {
      if (!fits(a)) continue;
      bool dominated = false;
      for (int64_t b = 0; b < n && !dominated; ++b) dominated = b != a && fits(b) && dominates(b, a);
      if (dominated) continue;
      r.original[g].push_back(a);
      r.cost[g].push_back(p.cost[g][a]);
      for (int64_t k = 0; k < K; ++k) r.use[g].push_back(p.use[k][g][a]);
    }
    if (r.original[g].empty()) return false;
  }
  return true;
}

// Lagrangian dual of the reduced problem with uses normalised by capacity:
// L(lambda) = sum_g min_j (c_gj + sum_k lambda_k u_gjk / C_k) - sum_k lambda_k.
// Every lambda >= 0 gives a lower bound; coordinate ascent with exact 1-D
// maximisation (bisection on the subgradient) finds a good one.
class Dual {
 public:
  Dual(const Reduced& r, const std::vector<int64_t>& capacity) : r_(r), inv_cap_(r.resources) {
    for (int64_t k = 0; k < r.resources; ++k) inv_cap_[k] = capacity[k] > 0 ? 1.0 / capacity[k] : 0.0;
  }

  // Returns L(lambda) and writes the normalised use of the minimisers.
  double value(const std::vector<double>& lambda, std::vector<double>* subgradient = nullptr) const {
    const int64_t K = r_.resources;
    double total = 0.0;
    if (subgradient) subgradient->assign(K, -1.0);
    for (int64_t g = 0; g < r_.groups; ++g) {
      const auto& c = r_.cost[g];
      const auto& u = r_.use[g];
      double best = std::numeric_limits<double>::infinity();
      int64_t arg = 0;
      for (size_t j = 0; j < c.size(); ++j) {
        double v = c[j];
        for (int64_t k = 0; k < K; ++k) v += lambda[k] * static_cast<double>(u[j * K + k]) * inv_cap_[k];
        if (v < best) {
          best = v;
          arg = static_cast<int64_t>(j);
        }
      }
      total += best;
      if (subgradient) {
        for (int64_t k = 0; k < K; ++k) (*subgradient)[k] += static_cast<double>(u[arg * K + k]) * inv_cap_[k];
      }
    }
    for (int64_t k = 0; k < K; ++k) total -= lambda[k];
    return total;
  }

  std::vector<double> maximise(double cost_scale) const {
    const int64_t K = r_.resources;
    std::vector<double> lambda(K, 0.0), sub;
    double current = value(lambda);
    for (int round = 0; round < 8; ++round) {
      const double before = current;
      for (int64_t k = 0; k < K; ++k) {
        auto slope_at = [&](double t) {
          std::vector<double> l = lambda;
          l[k] = t;
          value(l, &sub);
          return sub[k];
        };
        if (slope_at(0.0) <= 0.0) {
          lambda[k] = 0.0;
          continue;
        }
        double lo = 0.0, hi = std::max(cost_scale, 1e-300);
        while (slope_at(hi) > 0.0 && hi < 1e300) {
          lo = hi;
          hi *= 4.0;
        }
        for (int it = 0; it < 60 && hi - lo > 1e-15 * hi; ++it) {
          const double mid = 0.5 * (lo + hi);
          (slope_at(mid) > 0.0 ? lo : hi) = mid;
        }
        // Both ends bracket the kink; keep the better one.
        std::vector<double> a = lambda, b = lambda;
        a[k] = lo;
        b[k] = hi;
        lambda = value(a) >= value(b) ? a : b;
      }
      current = value(lambda);
      if (current - before <= 1e-12 * std::max(1.0, std::abs(current))) break;
    }
    return lambda;
  }

 private:
  const Reduced& r_;
  std::vector<double> inv_cap_;
};

// A good first incumbent: the Lagrangian minimiser of every group, repaired
// greedily until feasible (cheapest cost increase per unit of violated
// resource freed), then improved by single-group moves while feasible. With
// the near-optimal incumbent the branch and bound mostly proves optimality.
std::vector<int64_t> lagrangian_heuristic(const Reduced& r, const std::vector<int64_t>& capacity,
                                          const std::vector<double>& lambda) {
  const int64_t G = r.groups, K = r.resources;
  std::vector<double> inv_cap(K);
  for (int64_t k = 0; k < K; ++k) inv_cap[k] = capacity[k] > 0 ? 1.0 / capacity[k] : 0.0;
  std::vector<int64_t> x(G, 0);
  std::vector<int64_t> used(K, 0);
  for (int64_t g = 0; g < G; ++g) {
    double best = std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < r.cost[g].size(); ++j) {
      double v = r.cost[g][j];
      for (int64_t k = 0; k < K; ++k) v += lambda[k] * static_cast<double>(r.use[g][j * K + k]) * inv_cap[k];
      if (v < best) {
        best = v;
        x[g] = static_cast<int64_t>(j);
      }
    }
    for (int64_t k = 0; k < K; ++k) used[k] += r.use[g][x[g] * K + k];
  }
  auto use_of = [&](int64_t g, int64_t j, int64_t k) { return r.use[g][j * K + k]; };
  // Repair.
  for (int64_t guard = 0; guard < G * 64; ++guard) {
    std::vector<bool> over(K);
    bool any = false;
    for (int64_t k = 0; k < K; ++k) any |= (over[k] = used[k] > capacity[k]);
    if (!any) break;
    double best_ratio = std::numeric_limits<double>::infinity();
    int64_t bg = -1, bj = -1;
    for (int64_t g = 0; g < G; ++g) {
      for (size_t j = 0; j < r.cost[g].size(); ++j) {
        double freed = 0;
        bool worsens = false;
        for (int64_t k = 0; k < K; ++k) {
          const double d = static_cast<double>(use_of(g, x[g], k) - use_of(g, j, k)) * inv_cap[k];
          if (over[k]) freed += d;
          else worsens |= used[k] - use_of(g, x[g], k) + use_of(g, j, k) > capacity[k];
        }
        if (freed <= 0 || worsens) continue;
        const double ratio = (r.cost[g][j] - r.cost[g][x[g]]) / freed;
        if (ratio < best_ratio) {
          best_ratio = ratio;
          bg = g;
          bj = static_cast<int64_t>(j);
        }
      }
    }
    if (bg < 0) return {};
    for (int64_t k = 0; k < K; ++k) used[k] += use_of(bg, bj, k) - use_of(bg, x[bg], k);
    x[bg] = bj;
  }
  for (int64_t k = 0; k < K; ++k) {
    if (used[k] > capacity[k]) return {};
  }
  // Improve.
  for (int64_t guard = 0; guard < G * 64; ++guard) {
    double best_gain = 0;
    int64_t bg = -1, bj = -1;
    for (int64_t g = 0; g < G; ++g) {
      for (size_t j = 0; j < r.cost[g].size(); ++j) {
        const double gain = r.cost[g][x[g]] - r.cost[g][j];
        if (gain <= best_gain) continue;
        bool fits = true;
        for (int64_t k = 0; k < K && fits; ++k) fits = used[k] - use_of(g, x[g], k) + use_of(g, j, k) <= capacity[k];
        if (fits) {
          best_gain = gain;
          bg = g;
          bj = static_cast<int64_t>(j);
        }
      }
    }
    if (bg < 0) break;
    for (int64_t k = 0; k < K; ++k) used[k] += use_of(bg, bj, k) - use_of(bg, x[bg], k);
    x[bg] = bj;
  }
  return x;
}

class BranchAndBound {
 public:
  BranchAndBound(const Reduced& r, const std::vector<int64_t>& capacity, const std::vector<double>& lambda,
                 const MckpOptions& options, Clock::time_point start)
      : r_(r), cap_(capacity), options_(options), start_(start), K_(r.resources) {
    std::vector<double> inv_cap(K_);
    for (int64_t k = 0; k < K_; ++k) inv_cap[k] = capacity[k] > 0 ? 1.0 / capacity[k] : 0.0;
    lambda_sum_ = std::accumulate(lambda.begin(), lambda.end(), 0.0);

    // Branch first on the groups whose choices differ most in resource use.
    order_.resize(r.groups);
    std::iota(order_.begin(), order_.end(), 0);
    std::vector<double> spread(r.groups, 0.0);
    for (int64_t g = 0; g < r.groups; ++g) {
      for (int64_t k = 0; k < K_; ++k) {
        int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;
        for (size_t j = 0; j < r.cost[g].size(); ++j) {
          lo = std::min(lo, r.use[g][j * K_ + k]);
          hi = std::max(hi, r.use[g][j * K_ + k]);
        }
        spread[g] = std::max(spread[g], static_cast<double>(hi - lo) * inv_cap[k]);
      }
    }
    std::stable_sort(order_.begin(), order_.end(), [&](int64_t a, int64_t b) { return spread[a] > spread[b]; });

    // Per depth: choices sorted by reduced cost, and suffix sums for bounds.
    const int64_t G = r.groups;
    choices_.resize(G);
    reduced_.resize(G);
    suffix_min_reduced_.assign(G + 1, 0.0);
    suffix_min_cost_.assign(G + 1, 0.0);
    suffix_min_use_.assign((G + 1) * K_, 0);
    for (int64_t d = G - 1; d >= 0; --d) {
      const int64_t g = order_[d];
      const size_t n = r.cost[g].size();
      std::vector<double> red(n);
      for (size_t j = 0; j < n; ++j) {
        red[j] = r.cost[g][j];
        for (int64_t k = 0; k < K_; ++k) red[j] += lambda[k] * static_cast<double>(r.use[g][j * K_ + k]) * inv_cap[k];
      }
      std::vector<int64_t> idx(n);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return red[a] < red[b]; });
      choices_[d] = idx;
      reduced_[d].resize(n);
      for (size_t j = 0; j < n; ++j) reduced_[d][j] = red[idx[j]];
      suffix_min_reduced_[d] = suffix_min_reduced_[d + 1] + reduced_[d][0];
      suffix_min_cost_[d] = suffix_min_cost_[d + 1] + *std::min_element(r.cost[g].begin(), r.cost[g].end());
      for (int64_t k = 0; k < K_; ++k) {
        int64_t lo = std::numeric_limits<int64_t>::max();
        for (size_t j = 0; j < n; ++j) lo = std::min(lo, r.use[g][j * K_ + k]);
        suffix_min_use_[d * K_ + k] = suffix_min_use_[(d + 1) * K_ + k] + lo;
      }
    }
    inv_cap_ = inv_cap;
    lambda_ = lambda;
  }

  double root_bound() const { return std::max(suffix_min_reduced_[0] - lambda_sum_, suffix_min_cost_[0]); }

  // Seeds the search with a feasible assignment (reduced-choice indices).
  void set_incumbent(const std::vector<int64_t>& choice) {
    double cost = 0;
    for (int64_t g = 0; g < r_.groups; ++g) cost += r_.cost[g][choice[g]];
    if (cost < best_cost_) {
      best_cost_ = cost;
      best_ = choice;
    }
  }

  // Runs the search; returns false when a limit stopped it.
  bool run() {
    current_.assign(r_.groups, 0);
    used_.assign(K_, 0);
    complete_ = true;
    dfs(0, 0.0, 0.0);
    return complete_;
  }

  bool found() const { return !best_.empty(); }
  double best_cost() const { return best_cost_; }
  int64_t nodes() const { return nodes_; }
  // Best assignment as reduced-choice indices per group.
  const std::vector<int64_t>& best() const { return best_; }

 private:
  bool prune(double bound) const {
    return bound >= best_cost_ - options_.relative_gap * std::max(1.0, std::abs(best_cost_));
  }

  // cost: sum of chosen costs; reduced: sum of chosen reduced costs.
  void dfs(int64_t d, double cost, double reduced) {
    if (!complete_) return;
    if (d == r_.groups) {
      if (cost < best_cost_) {
        best_cost_ = cost;
        best_ = current_;
      }
      return;
    }
    if ((++nodes_ & 4095) == 0) {
      if (nodes_ >= options_.node_limit || seconds_since(start_) > options_.time_limit_seconds) {
        complete_ = false;
        return;
      }
    }
    const int64_t g = order_[d];
    const auto& idx = choices_[d];
    for (size_t t = 0; t < idx.size(); ++t) {
      const int64_t j = idx[t];
      // Lagrangian bound, monotone in the sorted reduced cost: once it
      // prunes, every later choice of this group is pruned too.
      const double lagrangian = reduced + reduced_[d][t] + suffix_min_reduced_[d + 1] - lambda_sum_;
      if (found() && prune(lagrangian)) break;
      const double c = cost + r_.cost[g][j];
      if (found() && prune(c + suffix_min_cost_[d + 1])) continue;
      bool feasible = true;
      for (int64_t k = 0; k < K_ && feasible; ++k) {
        feasible = used_[k] + r_.use[g][j * K_ + k] + suffix_min_use_[(d + 1) * K_ + k] <= cap_[k];
      }
      if (!feasible) continue;
      for (int64_t k = 0; k < K_; ++k) used_[k] += r_.use[g][j * K_ + k];
      current_[g] = j;
      dfs(d + 1, c, reduced + reduced_[d][t]);
      for (int64_t k = 0; k < K_; ++k) used_[k] -= r_.use[g][j * K_ + k];
      if (!complete_) return;
    }
  }

  const Reduced& r_;
  const std::vector<int64_t>& cap_;
  const MckpOptions& options_;
  Clock::time_point start_;
  int64_t K_;
  std::vector<double> inv_cap_, lambda_;
  double lambda_sum_ = 0;
  std::vector<int64_t> order_;
  std::vector<std::vector<int64_t>> choices_;
  std::vector<std::vector<double>> reduced_;
  std::vector<double> suffix_min_reduced_, suffix_min_cost_;
  std::vector<int64_t> suffix_min_use_;
  std::vector<int64_t> current_, used_, best_;
  double best_cost_ = std::numeric_limits<double>::infinity();
  int64_t nodes_ = 0;
  bool complete_ = true;
};

}  // namespace

const char* to_string(MckpStatus status) {
  switch (status) {
    case MckpStatus::kOptimal: return "optimal";
    case MckpStatus::kInfeasible: return "infeasible";
    case MckpStatus::kLimitReached: return "limit reached";
  }
  return "?";
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

MckpResult solve_mckp(const MckpProblem& problem, const MckpOptions& options) {
  problem.validate();
  const auto start = Clock::now();
  MckpResult result;
  result.solver = "limpq-bnb";
  Reduced r;
  const std::vector<int64_t> min_use = minimum_use(problem);
  bool trivially_infeasible = false;
  for (int64_t k = 0; k < problem.num_resources(); ++k) trivially_infeasible |= min_use[k] > problem.capacity[k];
  if (trivially_infeasible || !reduce(problem, r)) {
    result.status = MckpStatus::kInfeasible;
    result.seconds = seconds_since(start);
    return result;
  }
  double cost_scale = 0;
  for (const auto& group : r.cost) {
    const auto [lo, hi] = std::minmax_element(group.begin(), group.end());
    cost_scale = std::max(cost_scale, *hi - *lo);
  }
  const std::vector<double> lambda = Dual(r, problem.capacity).maximise(std::max(cost_scale, 1e-12));
  BranchAndBound bnb(r, problem.capacity, lambda, options, start);
  const std::vector<int64_t> heuristic = lagrangian_heuristic(r, problem.capacity, lambda);
  if (!heuristic.empty()) bnb.set_incumbent(heuristic);
  const bool complete = bnb.run();
  result.nodes = bnb.nodes();
  result.bound = bnb.root_bound();
  if (bnb.found()) {
    result.choice.resize(r.groups);
    for (int64_t g = 0; g < r.groups; ++g) result.choice[g] = r.original[g][bnb.best()[g]];
    result.objective = assignment_cost(problem, result.choice);
    result.used = assignment_use(problem, result.choice);
    result.status = complete ? MckpStatus::kOptimal : MckpStatus::kLimitReached;
    if (complete) result.bound = result.objective;
  } else {
    result.status = complete ? MckpStatus::kInfeasible : MckpStatus::kLimitReached;
  }
  result.seconds = seconds_since(start);
  return result;
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

}  // namespace limpq::search
