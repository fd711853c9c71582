// The solver's feasible answers (mckp_parts.h): repair of an assignment
// that overflows, and the Lagrangian heuristic that gives the first
// incumbent.
#include <limits>

#include "mckp_parts.h"

namespace limpq::search::mckp_parts {

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

}  // namespace limpq::search::mckp_parts
