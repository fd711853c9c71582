// The solver's bounds (mckp_parts.h): the reduction, the Lagrangian dual,
// reduced-cost fixing; the surrogate LP itself is in the header, where the
// dynamic programming's inner loop inlines it.
#include <c10/util/Exception.h>

#include <numeric>

#include "mckp_parts.h"

namespace limpq::search::mckp_parts {
namespace {

// The lower hull into the caller's buffers `idx` and `hull` (the dual's
// coordinate search calls it once per group and resource).
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

}  // namespace

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

std::vector<size_t> lower_hull(const std::vector<double>& use, const std::vector<double>& cost) {
  std::vector<size_t> idx, hull;
  lower_hull(use, cost, idx, hull);
  return hull;
}

std::vector<double> lagrange_multipliers(const Reduced& r, const std::vector<int64_t>& capacity) {
  return Dual(r, capacity).maximise();
}

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

}  // namespace limpq::search::mckp_parts
