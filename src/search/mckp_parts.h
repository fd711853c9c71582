// The parts of limpq's multiple-choice knapsack solver (mckp.cpp runs them
// in order; its file comment says what each proves). Private to
// src/search: the reduced problem, the bounds (Lagrangian dual, surrogate
// LP, reduced-cost fixing; mckp_bounds.cpp), the feasible answers (repair;
// mckp_repair.cpp) and the dynamic programming over Pareto states
// (mckp_pareto.cpp).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "limpq/search/mckp.h"

namespace limpq::search::mckp_parts {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
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

// Phase 1: fills `r` with the choices that fit on their own and are not
// dominated within their group (costlier and using no less of every
// resource); false when a group keeps none (the problem is infeasible).
bool reduce(const MckpProblem& p, Reduced& r);

// An assignment given in original choice indices, mapped to the reduced
// problem (a removed choice maps to the choice of its group that dominated
// it, never worse); empty when a choice has no survivor that dominates it.
std::vector<int64_t> reduced_choice(const MckpProblem& p, const Reduced& r, const std::vector<int64_t>& original);

// The lower convex hull of points (use[i], cost[i]): indices by increasing
// use and strictly decreasing cost, from the cheapest point towards the
// lowest use. Giving use back along its edges is what a one-row
// multiple-choice LP does with the group.
std::vector<size_t> lower_hull(const std::vector<double>& use, const std::vector<double>& cost);

// Phase 2: Lagrange multipliers of the resources (uses normalised by
// capacity) by coordinate ascent on the dual; every multiplier vector >= 0
// gives a lower bound, these a good one.
std::vector<double> lagrange_multipliers(const Reduced& r, const std::vector<int64_t>& capacity);

// Phase 3: an assignment made feasible greedily (cheapest cost increase per
// unit of violated resource freed), then improved by single-group moves
// while feasible; empty when the repair gets stuck.
std::vector<int64_t> repair_and_improve(const Reduced& r, const std::vector<int64_t>& capacity,
                                        std::vector<int64_t> x);
// Phase 3: the first incumbent, the Lagrangian minimiser of every group
// repaired and improved.
std::vector<int64_t> lagrangian_heuristic(const Reduced& r, const std::vector<int64_t>& capacity,
                                          const std::vector<double>& lambda);

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
      // data() + offset: a curve without edges (every group of a single
      // choice) begins at the end, where points_[offset] would not exist.
      Point* out = points_.data() + curve_begin_[d];
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

// Phase 4: reduced-cost fixing at the root. With mu the surrogate LP's
// price, any answer that takes choice j of group g costs at least
//   L(mu) + (c_gj + mu v_gj) - min_j' (c_gj' + mu v_gj'),
// L the Lagrangian bound. Choices whose bound reaches the incumbent (within
// the relative gap) are removed, except the incumbent's own. Returns the
// smallest bound removed (infinity if none); `incumbent` is remapped.
double fix_by_reduced_cost(Reduced& r, const std::vector<int64_t>& capacity, const std::vector<double>& weight,
                           std::vector<int64_t>& incumbent, double relative_gap);

// The order groups are decided in by the dynamic programming: largest
// regret first.
std::vector<int64_t> branching_order(const Reduced& r);

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
           const MckpOptions& options, Clock::time_point start);
  ~ParetoDp();

  // A proven lower bound on the optimum; infinity when infeasible.
  double root_bound() const;

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
  Pass run(double cutoff, int64_t max_states);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace limpq::search::mckp_parts
