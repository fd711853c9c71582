// limpq's exact multiple-choice knapsack solver (mckp.h). The driver,
// solve_mckp at the end of this file, runs these phases in order; each
// either proves something about the optimum or finds a feasible answer:
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
#include <chrono>
#include <cmath>
#include <numeric>
#include <map>

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
    std::vector<char> fitting(n);
    for (int64_t j = 0; j < n; ++j) fitting[j] = fits(j);
    for (int64_t a = 0; a < n; ++a) {
      if (!fitting[a]) continue;
      bool dominated = false;
      for (int64_t b = 0; b < n && !dominated; ++b) dominated = b != a && fitting[b] && dominates(b, a);
      if (dominated) continue;
      r.original[g].push_back(a);
      r.cost[g].push_back(p.cost[g][a]);
      for (int64_t k = 0; k < K; ++k) r.use[g].push_back(p.use[k][g][a]);
    }
    if (r.original[g].empty()) return false;
  }
  return true;
}

// The lower convex hull of points (use[i], cost[i]): indices by increasing
// use and strictly decreasing cost, from the cheapest point towards the
// lowest use. Giving use back along its edges is what a one-row
// multiple-choice LP does with the group.
// `idx` and `hull` are the caller's buffers (the hull comes back in `hull`).
void lower_hull(const std::vector<double>& use, const std::vector<double>& cost, std::vector<size_t>& idx,
                std::vector<size_t>& hull) {
  idx.resize(cost.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(),
            [&](size_t a, size_t b) { return use[a] < use[b] || (use[a] == use[b] && cost[a] < cost[b]); });
  hull.clear();
  for (size_t i : idx) {
    if (!hull.empty() && cost[i] >= cost[hull.back()]) continue;
    while (hull.size() >= 2) {
      const size_t a = hull[hull.size() - 2], b = hull.back();
      // b lies on or above the segment a -> i: drop it.
      if ((cost[b] - cost[a]) * (use[i] - use[a]) >= (cost[i] - cost[a]) * (use[b] - use[a])) hull.pop_back();
      else break;
    }
    hull.push_back(i);
  }
}

std::vector<size_t> lower_hull(const std::vector<double>& use, const std::vector<double>& cost) {
  std::vector<size_t> idx, hull;
  lower_hull(use, cost, idx, hull);
  return hull;
}

// Lagrangian dual of the reduced problem with uses normalised by capacity:
// L(lambda) = sum_g min_j (c_gj + sum_k lambda_k u_gjk / C_k) - sum_k lambda_k.
// Every lambda >= 0 gives a lower bound. Coordinate ascent finds a good one:
// along one coordinate L is concave and piecewise linear, and its maximum is
// the price of the one-row LP of that resource (the costs carrying the other
// multipliers' terms), found exactly on the groups' lower hulls.
class Dual {
 public:
  Dual(const Reduced& r, const std::vector<int64_t>& capacity) : r_(r), inv_cap_(r.resources) {
    for (int64_t k = 0; k < r.resources; ++k) inv_cap_[k] = capacity[k] > 0 ? 1.0 / capacity[k] : 0.0;
  }

  double value(const std::vector<double>& lambda) const {
    const int64_t K = r_.resources;
    double total = 0.0;
    for (int64_t g = 0; g < r_.groups; ++g) {
      double best = std::numeric_limits<double>::infinity();
      for (size_t j = 0; j < r_.cost[g].size(); ++j) best = std::min(best, priced(g, j, lambda, K));
      total += best;
    }
    for (int64_t k = 0; k < K; ++k) total -= lambda[k];
    return total;
  }

  std::vector<double> maximise() const {
    std::vector<double> lambda(r_.resources, 0.0);
    double current = value(lambda);
    for (int round = 0; round < 8; ++round) {
      const double before = current;
      for (int64_t k = 0; k < r_.resources; ++k) lambda[k] = best_along(lambda, k);
      current = value(lambda);
      if (current - before <= 1e-12 * std::max(1.0, std::abs(current))) break;
    }
    return lambda;
  }

 private:
  // c_gj plus the multipliers' terms, resource `skip` left out.
  double priced(int64_t g, size_t j, const std::vector<double>& lambda, int64_t skip) const {
    const int64_t K = r_.resources;
    double v = r_.cost[g][j];
    for (int64_t k = 0; k < K; ++k) {
      if (k != skip) v += lambda[k] * static_cast<double>(r_.use[g][j * K + k]) * inv_cap_[k];
    }
    return v;
  }

  // The maximiser of L along lambda_k: 0 when the cheapest choices fit
  // resource k, else the slope of the hull edge at which the use given back
  // (cheapest per unit first) brings it within capacity.
  double best_along(const std::vector<double>& lambda, int64_t k) const {
    const int64_t K = r_.resources;
    struct Edge {
      double slope, use;
    };
    std::vector<Edge> edges;
    double used = 0;
    std::vector<double> u, c;
    std::vector<size_t> idx, hull;
    for (int64_t g = 0; g < r_.groups; ++g) {
      const size_t n = r_.cost[g].size();
      u.resize(n);
      c.resize(n);
      for (size_t j = 0; j < n; ++j) {
        u[j] = static_cast<double>(r_.use[g][j * K + k]) * inv_cap_[k];
        c[j] = priced(g, j, lambda, k);
      }
      lower_hull(u, c, idx, hull);
      used += u[hull.back()];
      for (size_t t = hull.size() - 1; t > 0; --t) {
        const double du = u[hull[t]] - u[hull[t - 1]];
        edges.push_back({(c[hull[t - 1]] - c[hull[t]]) / du, du});
      }
    }
    if (used <= 1.0) return 0.0;
    std::sort(edges.begin(), edges.end(), [](const Edge& a, const Edge& b) { return a.slope < b.slope; });
    for (const Edge& e : edges) {
      used -= e.use;
      if (used <= 1.0) return e.slope;
    }
    return edges.empty() ? 0.0 : edges.back().slope;  // infeasible in k alone: reduce() rules it out
  }

  const Reduced& r_;
  std::vector<double> inv_cap_;
};

// An assignment made feasible greedily (cheapest cost increase per unit of
// violated resource freed), then improved by single-group moves while
// feasible; empty when the repair gets stuck.
std::vector<int64_t> repair_and_improve(const Reduced& r, const std::vector<int64_t>& capacity,
                                        std::vector<int64_t> x) {
  const int64_t G = r.groups, K = r.resources;
  std::vector<double> inv_cap(K);
  for (int64_t k = 0; k < K; ++k) inv_cap[k] = capacity[k] > 0 ? 1.0 / capacity[k] : 0.0;
  std::vector<int64_t> used(K, 0);
  for (int64_t g = 0; g < G; ++g) {
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

// A good first incumbent: the Lagrangian minimiser of every group, repaired
// and improved. It caps the cutoff of the solver's passes and drives
// reduced-cost fixing.
std::vector<int64_t> lagrangian_heuristic(const Reduced& r, const std::vector<int64_t>& capacity,
                                          const std::vector<double>& lambda) {
  const int64_t G = r.groups, K = r.resources;
  std::vector<int64_t> x(G, 0);
  for (int64_t g = 0; g < G; ++g) {
    double best = std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < r.cost[g].size(); ++j) {
      double v = r.cost[g][j];
      for (int64_t k = 0; k < K; ++k) {
        if (capacity[k] > 0) v += lambda[k] * static_cast<double>(r.use[g][j * K + k]) / static_cast<double>(capacity[k]);
      }
      if (v < best) {
        best = v;
        x[g] = static_cast<int64_t>(j);
      }
    }
  }
  return repair_and_improve(r, capacity, std::move(x));
}

// The order groups are decided in: largest regret first (the cost gap
// between a group's two cheapest choices), so the groups whose decision
// moves the objective most are fixed while few states exist. Measured on the
// bench instances (bench/search_bench.cpp) against the spread of resource
// use and the range of cost: up to 1.7x fewer states on the hard ones.
std::vector<int64_t> branching_order(const Reduced& r) {
  std::vector<double> regret(r.groups, std::numeric_limits<double>::infinity());
  for (int64_t g = 0; g < r.groups; ++g) {
    std::vector<double> c = r.cost[g];
    if (c.size() < 2) continue;
    std::partial_sort(c.begin(), c.begin() + 2, c.end());
    regret[g] = c[1] - c[0];
  }
  std::vector<int64_t> order(r.groups);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return regret[a] > regret[b]; });
  return order;
}

// The linear-programming bound of a surrogate of the constraints: the
// resources, each normalised by its capacity, summed with weights w_k >= 0
// into one knapsack row. Any feasible assignment satisfies the surrogate row,
// so the LP of the one-row problem bounds the optimum from below, for every
// subproblem whose first groups are fixed. A one-row multiple-choice LP is
// solved greedily (Sinha and Zoltners, 1979): every open group starts at its
// cheapest choice, then surrogate use is given back along the groups' lower
// convex hulls, cheapest cost per unit first, the last edge fractionally.
// For the groups from depth d on, that LP is a convex piecewise-linear
// function of the room left; its breakpoints (the running sums of the edges
// in slope order) are computed once per depth, so a bound is one binary
// search.
class SurrogateLp {
 public:
  // every_depth false: only the root's curve (depth 0), for price(0, room)
  // and bound(0, room).
  SurrogateLp(const Reduced& r, const std::vector<int64_t>& capacity, const std::vector<double>& weight,
              const std::vector<int64_t>& depth_of_group, bool every_depth = true)
      : K_(r.resources), weight_(K_), use_(r.groups) {
    for (int64_t k = 0; k < K_; ++k) weight_[k] = capacity[k] > 0 ? weight[k] / capacity[k] : 0.0;
    const int64_t G = r.groups;
    top_cost_suffix_.assign(G + 1, 0.0);
    top_use_suffix_.assign(G + 1, 0.0);
    std::vector<double> top_cost(G), top_use(G);
    for (int64_t g = 0; g < G; ++g) {
      const size_t n = r.cost[g].size();
      use_[g].resize(n);
      for (size_t j = 0; j < n; ++j) use_[g][j] = surrogate(&r.use[g][j * K_]);
      add_hull_edges(g, r.cost[g], depth_of_group[g], &top_cost[g], &top_use[g]);
    }
    std::vector<int64_t> group_at(G);
    for (int64_t g = 0; g < G; ++g) group_at[depth_of_group[g]] = g;
    for (int64_t d = G - 1; d >= 0; --d) {
      top_cost_suffix_[d] = top_cost_suffix_[d + 1] + top_cost[group_at[d]];
      top_use_suffix_[d] = top_use_suffix_[d + 1] + top_use[group_at[d]];
    }
    std::stable_sort(edges_.begin(), edges_.end(), [](const Edge& a, const Edge& b) { return a.slope < b.slope; });
    // The curve of depth d holds the edges of the groups at depths >= d.
    std::vector<size_t> edges_from(G + 2, 0);
    for (const Edge& e : edges_) ++edges_from[e.depth];
    for (int64_t d = G - 1; d >= 0; --d) edges_from[d] += edges_from[d + 1];
    const int64_t depths = every_depth ? G + 1 : 1;
    curve_begin_.assign(depths + 1, 0);
    for (int64_t d = 0; d < depths; ++d) curve_begin_[d + 1] = curve_begin_[d] + edges_from[d];
    points_.resize(curve_begin_.back());
    for (int64_t d = 0; d < depths; ++d) {
      Point* out = &points_[curve_begin_[d]];
      double given = 0, added = 0;
      for (const Edge& e : edges_) {
        if (e.depth < d) continue;
        given += e.use;
        added += e.cost;
        *out++ = {given, added, e.slope};
      }
    }
  }

  // The surrogate use of a resource vector (normalised units).
  double surrogate(const int64_t* use) const {
    double v = 0;
    for (int64_t k = 0; k < K_; ++k) v += weight_[k] * static_cast<double>(use[k]);
    return v;
  }
  double use(int64_t g, int64_t j) const { return use_[g][j]; }
  double weight(int64_t k) const { return weight_[k]; }

  // Lower bound on the summed cost of the groups at depths >= d when `room`
  // surrogate units are left; infinity when even the hulls' lowest uses do
  // not fit.
  // The LP's price of a surrogate unit at depth d and `room`: the slope of
  // the edge the greedy stops on (0 when the row is slack).
  double price(int64_t d, double room) const {
    const double excess = top_use_suffix_[d] - room;
    const Point *begin = curve_begin(d), *end = curve_end(d);
    if (excess <= 0 || begin == end) return 0.0;
    const Point* at = first_giving(begin, end, excess);
    return (at == end ? end - 1 : at)->slope;
  }

  double bound(int64_t d, double room) const {
    const double excess = top_use_suffix_[d] - room;
    const double slack = 1e-12 * (std::abs(top_use_suffix_[d]) + std::abs(room));
    if (excess <= slack) return top_cost_suffix_[d];
    const Point *begin = curve_begin(d), *end = curve_end(d);
    // The first edge whose running sum gives back the excess.
    const Point* at = first_giving(begin, end, excess);
    if (at == end) {
      const Point* last = begin == end ? nullptr : end - 1;
      return excess - (last ? last->given : 0.0) <= slack ? top_cost_suffix_[d] + (last ? last->added : 0.0)
                                                          : std::numeric_limits<double>::infinity();
    }
    const double given_before = at > begin ? (at - 1)->given : 0.0, added_before = at > begin ? (at - 1)->added : 0.0;
    return top_cost_suffix_[d] + added_before + at->slope * (excess - given_before);
  }

 private:
  struct Edge {
    double slope, cost, use;  // cost added per surrogate unit given back; totals of the edge
    int64_t depth;            // branching depth of the edge's group
  };

  // The lower convex hull of a group's (surrogate use, cost) points, from the
  // cheapest point towards the lowest use; its edges join edges_.
  void add_hull_edges(int64_t g, const std::vector<double>& cost, int64_t depth, double* top_cost, double* top_use) {
    const auto& v = use_[g];
    const std::vector<size_t> hull = lower_hull(v, cost);
    *top_cost = cost[hull.back()];
    *top_use = v[hull.back()];
    for (size_t t = hull.size() - 1; t > 0; --t) {
      const size_t from = hull[t], to = hull[t - 1];
      const double dv = v[from] - v[to], dc = cost[to] - cost[from];
      edges_.push_back({dv > 0 ? dc / dv : std::numeric_limits<double>::infinity(), dc, dv, depth});
    }
  }

  int64_t K_;
  std::vector<double> weight_;             // [k], divided by the capacity
  std::vector<std::vector<double>> use_;   // [g][j] surrogate use
  // The LP of the groups from one depth on, against the surrogate use
  // given back: running sums over its edges in slope order. The curves of
  // all depths lie one after another in points_.
  struct Point {
    double given, added, slope;
  };
  const Point* curve_begin(int64_t d) const { return points_.data() + curve_begin_[d]; }
  const Point* curve_end(int64_t d) const { return points_.data() + curve_begin_[d + 1]; }
  static const Point* first_giving(const Point* begin, const Point* end, double excess) {
    return std::lower_bound(begin, end, excess, [](const Point& p, double v) { return p.given < v; });
  }

  std::vector<double> top_cost_suffix_, top_use_suffix_;
  std::vector<Edge> edges_;
  std::vector<Point> points_;
  std::vector<size_t> curve_begin_;  // [depth], one past the last depth at the end
};

// Reduced-cost fixing at the root: with mu the surrogate LP's price, any
// answer that takes choice j of group g costs at least
//   L(mu) + (c_gj + mu v_gj) - min_j' (c_gj' + mu v_gj'),
// L the Lagrangian bound. Choices whose bound reaches the incumbent (within
// the relative gap) are removed, except the incumbent's own. Returns the
// smallest bound removed (infinity if none); `incumbent` is remapped.
double fix_by_reduced_cost(Reduced& r, const std::vector<int64_t>& capacity, const std::vector<double>& weight,
                           std::vector<int64_t>& incumbent, double relative_gap) {
  const int64_t G = r.groups, K = r.resources;
  std::vector<int64_t> identity(G);
  std::iota(identity.begin(), identity.end(), 0);
  const SurrogateLp lp(r, capacity, weight, identity, /*every_depth=*/false);
  const double room = lp.surrogate(capacity.data());
  const double mu = lp.price(0, room);
  double upper = 0;
  for (int64_t g = 0; g < G; ++g) upper += r.cost[g][incumbent[g]];
  std::vector<double> least(G, std::numeric_limits<double>::infinity());
  double lagrangian = -mu * room;
  for (int64_t g = 0; g < G; ++g) {
    for (size_t j = 0; j < r.cost[g].size(); ++j) least[g] = std::min(least[g], r.cost[g][j] + mu * lp.use(g, j));
    lagrangian += least[g];
  }
  double removed = std::numeric_limits<double>::infinity();
  for (int64_t g = 0; g < G; ++g) {
    std::vector<int64_t> original;
    std::vector<double> cost;
    std::vector<int64_t> use;
    int64_t remapped = -1;
    for (size_t j = 0; j < r.cost[g].size(); ++j) {
      const double b = lagrangian + r.cost[g][j] + mu * lp.use(g, j) - least[g];
      const bool own = static_cast<int64_t>(j) == incumbent[g];
      if (!own && b >= upper - relative_gap * std::abs(upper)) {
        removed = std::min(removed, b);
        continue;
      }
      if (own) remapped = static_cast<int64_t>(original.size());
      original.push_back(r.original[g][j]);
      cost.push_back(r.cost[g][j]);
      use.insert(use.end(), r.use[g].begin() + j * K, r.use[g].begin() + (j + 1) * K);
    }
    r.original[g] = std::move(original);
    r.cost[g] = std::move(cost);
    r.use[g] = std::move(use);
    incumbent[g] = remapped;
  }
  return removed;
}

// Dynamic programming over Pareto states, the groups in the branching order.
// A state is a partial assignment of the first d groups: its cost and its
// integer resource uses. A state is dropped when its surrogate LP bound
// reaches the cutoff (within the relative gap), when even the least use of
// the groups left would overflow a resource, or when another state of the
// same depth is no worse in cost and in every resource: whatever completes
// the dominated state completes the other at no more cost. Layers of one
// shape (a ResNet stage's repeated blocks) make many assignments with equal
// uses, which dominance collapses to one; a depth-first search visits each.
class ParetoDp {
 public:
  ParetoDp(const Reduced& r, const std::vector<int64_t>& capacity, const std::vector<double>& weight,
           const MckpOptions& options, Clock::time_point start)
      : r_(r), cap_(capacity), options_(options), start_(start), K_(r.resources),
        order_(branching_order(r)) {
    lps_.emplace_back(r, capacity, weight, depths(order_));
    if (K_ == 2 && weight[0] > 0 && weight[1] > 0) {
      // With both resources binding at the root, two more surrogates: the
      // second resource weighted half and twice as much as at the root.
      // Deeper in the tree the multipliers that fit the groups left drift
      // from the root's, and the largest of the three bounds is closer to the
      // bound of the LP with both rows. Measured on 20 synthetic files
      // (W3A4 + CR 12.2): 2.4x fewer states on ResNet-50, 16x on
      // mobilenet_v2. Ratios 0.25 and 4 gave less; four ratios, little more
      // for the extra work.
      for (const double ratio : {0.5, 2.0}) {
        std::vector<double> w = weight;
        w[1] *= ratio;
        lps_.emplace_back(r, capacity, w, depths(order_));
      }
    }
    const int64_t G = r.groups;
    suffix_min_use_.assign((G + 1) * K_, 0);
    for (int64_t d = G - 1; d >= 0; --d) {
      const int64_t g = order_[d];
      for (int64_t k = 0; k < K_; ++k) {
        int64_t least = std::numeric_limits<int64_t>::max();
        for (size_t j = 0; j < r.cost[g].size(); ++j) least = std::min(least, r.use[g][j * K_ + k]);
        suffix_min_use_[d * K_ + k] = suffix_min_use_[(d + 1) * K_ + k] + least;
      }
    }
    root_bound_ = lps_[0].bound(0, lps_[0].surrogate(capacity.data()));
  }

  // A proven lower bound on the optimum; infinity when infeasible.
  double root_bound() const { return root_bound_; }

  struct Pass {
    bool complete = true;   // false: a limit stopped it
    std::vector<int64_t> choice;  // the cheapest assignment below the cutoff, if any
    double cost = std::numeric_limits<double>::infinity();
    // The smallest bound of a state pruned or left open: every assignment
    // not found costs at least this.
    double bound = std::numeric_limits<double>::infinity();
    int64_t states = 0;
    // The cheapest complete assignment the cutoff pruned (at or above it):
    // as the cutoff rises towards the optimum, a failed pass finds answers
    // close to it on the way. (Completing the least-bound pruned state of
    // the other depths greedily found no cheaper ones.)
    std::vector<int64_t> spare;
    double spare_cost = std::numeric_limits<double>::infinity();
    int32_t spare_parent = -1, spare_choice = -1;
  };

  // Finds the cheapest assignment that costs less than `cutoff` (less its
  // relative gap), if there is one. `max_states` caps the states created.
  Pass run(double cutoff, int64_t max_states) {
    cutoff_ = cutoff;
    Pass pass;
    if (!std::isfinite(root_bound_)) return pass;
    // The levels' buffers are kept from pass to pass: the early passes are
    // small and would otherwise spend their time allocating.
    levels_.resize(r_.groups + 1);
    for (Level& level : levels_) level.clear();
    levels_[0].cost = {0.0};
    levels_[0].bound = {root_bound_};
    levels_[0].use.assign(K_, 0);
    levels_[0].parent = {-1};
    levels_[0].choice = {-1};
    for (int64_t d = 0; d < r_.groups; ++d) {
      if (pass.states > max_states || seconds_since(start_) > options_.time_limit_seconds) {
        pass.complete = false;
        for (double b : levels_[d].bound) pass.bound = std::min(pass.bound, b);
        return pass;
      }
      expand(d, levels_[d], levels_[d + 1], pass);
    }
    if (pass.spare_parent >= 0) {
      pass.spare = assignment(r_.groups - 1, pass.spare_parent);
      pass.spare[order_[r_.groups - 1]] = pass.spare_choice;
    }
    const Level& last = levels_.back();
    if (last.cost.empty()) return pass;
    const int64_t at = std::min_element(last.cost.begin(), last.cost.end()) - last.cost.begin();
    pass.cost = last.cost[at];
    pass.choice = assignment(r_.groups, at);
    return pass;
  }

 private:
  // The states of one depth (parallel arrays).
  struct Level {
    std::vector<double> cost, bound;
    std::vector<int64_t> use;  // [state * K + k]
    std::vector<int32_t> parent, choice;
    void clear() {
      cost.clear();
      bound.clear();
      use.clear();
      parent.clear();
      choice.clear();
    }
  };
  struct Candidate {
    double cost, bound;
    int32_t parent, choice;
  };

  // The resource vectors of the states kept so far at one depth, cheapest
  // first: a vector enters unless one kept is no larger in every resource.
  class ParetoFront {
   public:
    explicit ParetoFront(int64_t K) : K_(K) {}
    void clear() {
      steps_.clear();
      kept_.clear();
    }
    bool insert(const int64_t* u) {
      if (K_ == 2) return insert_step(u[0], u[1]);
      for (size_t i = 0; i < kept_.size(); i += K_) {
        bool no_larger = true;
        for (int64_t k = 0; k < K_ && no_larger; ++k) no_larger = kept_[i + k] <= u[k];
        if (no_larger) return false;
      }
      if (K_ == 1) kept_.clear();  // the new one is the least
      kept_.insert(kept_.end(), u, u + K_);
      return true;
    }

   private:
    // Two resources: the kept points, by increasing first use, have
    // decreasing second use (a staircase in a sorted vector).
    bool insert_step(int64_t u0, int64_t u1) {
      auto it = std::upper_bound(steps_.begin(), steps_.end(), u0,
                                 [](int64_t v, const std::pair<int64_t, int64_t>& s) { return v < s.first; });
      if (it != steps_.begin() && std::prev(it)->second <= u1) return false;
      auto first = it != steps_.begin() && std::prev(it)->first == u0 ? std::prev(it) : it;
      auto last = it;
      while (last != steps_.end() && last->second >= u1) ++last;
      if (first == last) {
        steps_.insert(first, {u0, u1});
      } else {
        *first = {u0, u1};
        steps_.erase(first + 1, last);
      }
      return true;
    }

    int64_t K_;
    std::vector<std::pair<int64_t, int64_t>> steps_;
    std::vector<int64_t> kept_;
  };

  // The choices of the groups decided up to `depth`, read back from state
  // `at` of that depth along the parents (the others left 0).
  std::vector<int64_t> assignment(int64_t depth, int64_t at) const {
    std::vector<int64_t> choice(r_.groups, 0);
    for (int64_t d = depth; d >= 1; --d) {
      choice[order_[d - 1]] = levels_[d].choice[at];
      at = levels_[d].parent[at];
    }
    return choice;
  }

  static std::vector<int64_t> depths(const std::vector<int64_t>& order) {
    std::vector<int64_t> depth(order.size());
    for (size_t d = 0; d < order.size(); ++d) depth[order[d]] = static_cast<int64_t>(d);
    return depth;
  }

  // The surrogate rooms left by integer uses, one per surrogate.
  void rooms(const int64_t* used, double* out) const {
    for (size_t i = 0; i < lps_.size(); ++i) {
      double v = 0;
      for (int64_t k = 0; k < K_; ++k) v += lps_[i].weight(k) * static_cast<double>(cap_[k] - used[k]);
      out[i] = v;
    }
  }

  // The bound of a state of cost `cost` at depth d + 1 that took choice j of
  // group g with `left` rooms before it: the largest of the surrogates'
  // bounds, the later ones computed only while the state is not pruned.
  double bound_after(int64_t d, int64_t g, size_t j, double cost, const double* left) const {
    double bound = cost + lps_[0].bound(d + 1, left[0] - lps_[0].use(g, j));
    for (size_t i = 1; i < lps_.size() && std::isfinite(bound) && !pruned(bound); ++i) {
      bound = std::max(bound, cost + lps_[i].bound(d + 1, left[i] - lps_[i].use(g, j)));
    }
    return bound;
  }

  bool pruned(double bound) const {
    return std::isfinite(cutoff_) && bound >= cutoff_ - options_.relative_gap * std::abs(cutoff_);
  }

  // Sorts candidates_ by cost, given runs_ (the bounds of runs already
  // sorted): adjacent runs are merged pairwise until one is left.
  void merge_runs() {
    const auto by_cost = [](const Candidate& a, const Candidate& b) { return a.cost < b.cost; };
    while (runs_.size() > 2) {
      merged_.resize(candidates_.size());
      std::vector<size_t> bounds{0};
      for (size_t r = 0; r + 1 < runs_.size(); r += 2) {
        const size_t lo = runs_[r], mid = runs_[r + 1], hi = r + 2 < runs_.size() ? runs_[r + 2] : mid;
        std::merge(candidates_.begin() + lo, candidates_.begin() + mid, candidates_.begin() + mid,
                   candidates_.begin() + hi, merged_.begin() + lo, by_cost);
        bounds.push_back(hi);
      }
      candidates_.swap(merged_);
      runs_.swap(bounds);
    }
  }

  // The states of depth d + 1 (into `next`) from those of depth d.
  void expand(int64_t d, const Level& from, Level& next, Pass& pass) {
    const int64_t g = order_[d];
    const size_t n = r_.cost[g].size();
    const size_t states = from.cost.size(), L = lps_.size();
    const int64_t* least_after = &suffix_min_use_[(d + 1) * K_];
    left_.resize(states * L);
    for (size_t i = 0; i < states; ++i) rooms(&from.use[i * K_], &left_[i * L]);
    // Choice by choice, so that each choice's candidates come out in the
    // order of their parents, which is by cost: the runs are merged, not
    // sorted.
    candidates_.clear();
    runs_.assign(1, 0);
    for (size_t j = 0; j < n; ++j) {
      const int64_t* add = &r_.use[g][j * K_];
      for (size_t i = 0; i < states; ++i) {
        const int64_t* used = &from.use[i * K_];
        bool fits = true;
        for (int64_t k = 0; k < K_ && fits; ++k) fits = used[k] + add[k] + least_after[k] <= cap_[k];
        if (!fits) continue;
        const double cost = from.cost[i] + r_.cost[g][j];
        const double bound = bound_after(d, g, j, cost, &left_[i * L]);
        if (!std::isfinite(bound)) continue;
        if (pruned(bound)) {
          pass.bound = std::min(pass.bound, bound);
          if (d + 1 == r_.groups && cost < pass.spare_cost) {
            pass.spare_cost = cost;
            pass.spare_parent = static_cast<int32_t>(i);
            pass.spare_choice = static_cast<int32_t>(j);
          }
          continue;
        }
        candidates_.push_back({cost, bound, static_cast<int32_t>(i), static_cast<int32_t>(j)});
      }
      if (candidates_.size() > runs_.back()) runs_.push_back(candidates_.size());
    }
    pass.states += static_cast<int64_t>(candidates_.size());
    merge_runs();
    const std::vector<Candidate>& candidates = candidates_;
    front_.clear();
    std::vector<int64_t>& u = use_;
    u.resize(K_);
    for (const Candidate& c : candidates) {
      const int64_t* used = &from.use[static_cast<size_t>(c.parent) * K_];
      const int64_t* add = &r_.use[g][static_cast<size_t>(c.choice) * K_];
      for (int64_t k = 0; k < K_; ++k) u[k] = used[k] + add[k];
      if (!front_.insert(u.data())) continue;
      next.cost.push_back(c.cost);
      next.bound.push_back(c.bound);
      next.use.insert(next.use.end(), u.begin(), u.end());
      next.parent.push_back(c.parent);
      next.choice.push_back(c.choice);
    }
  }

  const Reduced& r_;
  const std::vector<int64_t>& cap_;
  const MckpOptions& options_;
  Clock::time_point start_;
  int64_t K_;
  std::vector<int64_t> order_;
  std::vector<SurrogateLp> lps_;  // the root's multipliers first, then the variants
  std::vector<int64_t> suffix_min_use_;  // [(depth) * K + k]: least use of the groups from depth on
  double root_bound_ = 0;
  double cutoff_ = std::numeric_limits<double>::infinity();
  // Buffers reused by every pass.
  std::vector<Level> levels_;
  std::vector<Candidate> candidates_;
  std::vector<Candidate> merged_;
  std::vector<size_t> runs_;
  std::vector<double> left_;  // [state * surrogates + i]
  std::vector<int64_t> use_;
  ParetoFront front_{K_};
};

// An assignment given in original choice indices, mapped to the reduced
// problem (a removed choice maps to the choice of its group that dominated
// it, never worse); empty when a choice has no survivor that dominates it.
std::vector<int64_t> reduced_choice(const MckpProblem& p, const Reduced& r, const std::vector<int64_t>& original) {
  if (static_cast<int64_t>(original.size()) != p.num_groups()) return {};
  std::vector<int64_t> out(r.groups);
  for (int64_t g = 0; g < r.groups; ++g) {
    const int64_t want = original[g];
    int64_t pick = -1;
    for (size_t j = 0; j < r.original[g].size() && pick < 0; ++j) {
      if (r.original[g][j] == want) pick = static_cast<int64_t>(j);
    }
    for (size_t j = 0; j < r.original[g].size() && pick < 0; ++j) {
      // A dominating survivor: no more cost and no more use of any resource.
      bool no_worse = r.cost[g][j] <= p.cost[g][want];
      for (int64_t k = 0; k < r.resources && no_worse; ++k) no_worse = r.use[g][j * r.resources + k] <= p.use[k][g][want];
      if (no_worse) pick = static_cast<int64_t>(j);
    }
    if (pick < 0) return {};
    out[g] = pick;
  }
  return out;
}

}  // namespace

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

MckpResult solve_mckp(const MckpProblem& problem, const MckpOptions& options) {
  problem.validate();
  const auto start = Clock::now();
  MckpResult result;
  result.solver = "limpq-dp";
  Reduced r;
  const std::vector<int64_t> min_use = minimum_use(problem);
  bool trivially_infeasible = false;
  for (int64_t k = 0; k < problem.num_resources(); ++k) trivially_infeasible |= min_use[k] > problem.capacity[k];
  if (trivially_infeasible || !reduce(problem, r)) {
    result.status = MckpStatus::kInfeasible;
    result.seconds = seconds_since(start);
    return result;
  }
  const std::vector<double> lambda = Dual(r, problem.capacity).maximise();
  // The surrogate row weighs the resources by their Lagrange multipliers, so
  // its LP bound at the root is at least the Lagrangian one.
  std::vector<double> weight = lambda;
  if (std::all_of(weight.begin(), weight.end(), [](double w) { return w <= 0; })) weight.assign(r.resources, 1.0);

  auto cost_of = [&](const std::vector<int64_t>& x) {
    double c = 0;
    for (int64_t g = 0; g < r.groups; ++g) c += r.cost[g][x[g]];
    return c;
  };
  std::vector<int64_t> incumbent = lagrangian_heuristic(r, problem.capacity, lambda);
  if (!options.incumbent.empty()) {
    // Repaired where it does not fit: the answer of a neighbouring budget
    // usually needs a few moves.
    std::vector<int64_t> warm = reduced_choice(problem, r, options.incumbent);
    if (!warm.empty()) warm = repair_and_improve(r, problem.capacity, std::move(warm));
    if (!warm.empty() && (incumbent.empty() || cost_of(warm) < cost_of(incumbent))) incumbent = warm;
  }
  // A lower bound on every assignment that uses a choice fixing removed
  // (infinite when nothing was removed).
  const double removed_bound = incumbent.empty() ? std::numeric_limits<double>::infinity()
                                                 : fix_by_reduced_cost(r, problem.capacity, weight, incumbent,
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
  ParetoDp dp(r, problem.capacity, weight, options, start);
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

}  // namespace limpq::search
