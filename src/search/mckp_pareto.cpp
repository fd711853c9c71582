// The solver's dynamic programming over Pareto states (mckp_parts.h).
#include <numeric>

#include "mckp_parts.h"

namespace limpq::search::mckp_parts {

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

class ParetoDp::Impl {
 public:
  Impl(const Reduced& r, const std::vector<int64_t>& capacity, const std::vector<double>& weight,
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

  double root_bound() const { return root_bound_; }

  using Pass = ParetoDp::Pass;

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

ParetoDp::ParetoDp(const Reduced& r, const std::vector<int64_t>& capacity, const std::vector<double>& weight,
                   const MckpOptions& options, Clock::time_point start)
    : impl_(std::make_unique<Impl>(r, capacity, weight, options, start)) {}

ParetoDp::~ParetoDp() = default;

double ParetoDp::root_bound() const { return impl_->root_bound(); }

ParetoDp::Pass ParetoDp::run(double cutoff, int64_t max_states) { return impl_->run(cutoff, max_states); }

}  // namespace limpq::search::mckp_parts
