#include "limpq/search/compare.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <utility>

#include "limpq/search/criterion.h"

namespace limpq::search {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Ranks 1..n, ties sharing the average of their ranks.
std::vector<double> average_ranks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t i, size_t j) { return x[i] < x[j]; });
  std::vector<double> rank(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    const double average = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    for (size_t k = i; k <= j; ++k) rank[order[k]] = average;
    i = j + 1;
  }
  return rank;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : kNaN;
}

RankAgreement agreement(const std::vector<double>& x, const std::vector<double>& y) {
  return {spearman(x, y), kendall_tau_b(x, y), static_cast<int64_t>(x.size())};
}

// Mean of the finite correlations (NaN when there are none).
RankAgreement mean_of(const std::vector<RankAgreement>& rows) {
  RankAgreement m;
  int64_t rho_n = 0, tau_n = 0;
  for (const auto& r : rows) {
    if (std::isfinite(r.spearman)) m.spearman += r.spearman, ++rho_n;
    if (std::isfinite(r.kendall)) m.kendall += r.kendall, ++tau_n;
    m.points += r.points;
  }
  m.spearman = rho_n ? m.spearman / static_cast<double>(rho_n) : kNaN;
  m.kendall = tau_n ? m.kendall / static_cast<double>(tau_n) : kNaN;
  return m;
}

nlohmann::ordered_json to_json(const RankAgreement& r) {
  auto number = [](double v) { return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(); };
  return {{"spearman", number(r.spearman)}, {"kendall", number(r.kendall)}, {"points", r.points}};
}

std::string cell(const RankAgreement& r) {
  auto f = [](double v) { return std::isfinite(v) ? fmt::format("{:+.3f}", v) : std::string("   n/a"); };
  return fmt::format("{} {}", f(r.spearman), f(r.kendall));
}

}  // namespace

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  TORCH_CHECK(x.size() == y.size(), "spearman: samples of different lengths (", x.size(), " and ", y.size(), ")");
  if (x.size() < 2) return kNaN;
  return pearson(average_ranks(x), average_ranks(y));
}

double kendall_tau_b(const std::vector<double>& x, const std::vector<double>& y) {
  TORCH_CHECK(x.size() == y.size(), "kendall: samples of different lengths (", x.size(), " and ", y.size(), ")");
  // O(n^2): comparisons are over layers (tens to hundreds of points).
  double concordant = 0, discordant = 0, ties_x = 0, ties_y = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    for (size_t j = i + 1; j < x.size(); ++j) {
      const double dx = x[i] - x[j], dy = y[i] - y[j];
      if (dx == 0 && dy == 0) continue;
      if (dx == 0) {
        ties_x += 1;
      } else if (dy == 0) {
        ties_y += 1;
      } else if ((dx > 0) == (dy > 0)) {
        concordant += 1;
      } else {
        discordant += 1;
      }
    }
  }
  const double denominator = std::sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y));
  return denominator > 0 ? (concordant - discordant) / denominator : kNaN;
}

IndicatorComparison compare_indicators(const quant::Indicators& a, const quant::Indicators& b, double alpha_a,
                                       double alpha_b) {
  std::map<std::string, const quant::IndicatorLayer*> in_b;
  for (const auto& l : b.layers) {
    if (l.searchable) in_b[l.name] = &l;
  }
  IndicatorComparison c;
  c.alpha_a = alpha_a;
  c.alpha_b = alpha_b;
  std::vector<std::pair<const quant::IndicatorLayer*, const quant::IndicatorLayer*>> pairs;
  for (const auto& l : a.layers) {
    auto it = in_b.find(l.name);
    if (l.searchable && it != in_b.end()) {
      pairs.emplace_back(&l, it->second);
      c.layers.push_back(l.name);
    }
  }
  TORCH_CHECK(pairs.size() >= 2, "compare-indicators: the files share ", pairs.size(),
              " searchable layer(s); a rank correlation needs at least 2");
  std::vector<int64_t> bits;
  for (int64_t x : a.candidates) {
    if (std::find(b.candidates.begin(), b.candidates.end(), x) != b.candidates.end()) bits.push_back(x);
  }
  TORCH_CHECK(!bits.empty(), "compare-indicators: the files share no candidate bit-width");
  std::sort(bits.begin(), bits.end(), std::greater<>());

  // Per tensor kind: the values of both files, per bit-width and pooled.
  std::vector<double> pooled[3][2];
  std::vector<RankAgreement> rows[3];
  for (int64_t bit : bits) {
    std::vector<double> v[3][2];
    for (const auto& [la, lb] : pairs) {
      const quant::IndicatorLayer* layer[2] = {la, lb};
      const double alpha[2] = {alpha_a, alpha_b};
      for (int f = 0; f < 2; ++f) {
        const double w = layer[f]->weight_steps.at(bit), act = layer[f]->act_steps.at(bit);
        v[0][f].push_back(w);
        v[1][f].push_back(act);
        v[2][f].push_back(act + alpha[f] * w);
      }
    }
    BitsComparison row{bit, agreement(v[0][0], v[0][1]), agreement(v[1][0], v[1][1]), agreement(v[2][0], v[2][1])};
    for (int k = 0; k < 3; ++k) {
      for (int f = 0; f < 2; ++f) pooled[k][f].insert(pooled[k][f].end(), v[k][f].begin(), v[k][f].end());
    }
    rows[0].push_back(row.weights);
    rows[1].push_back(row.acts);
    rows[2].push_back(row.combined);
    c.per_bits.push_back(row);
  }
  c.mean_weights = mean_of(rows[0]);
  c.mean_acts = mean_of(rows[1]);
  c.mean_combined = mean_of(rows[2]);
  c.pooled_weights = agreement(pooled[0][0], pooled[0][1]);
  c.pooled_acts = agreement(pooled[1][0], pooled[1][1]);
  c.pooled_combined = agreement(pooled[2][0], pooled[2][1]);
  return c;
}

nlohmann::ordered_json IndicatorComparison::to_json() const {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const auto& r : per_bits) {
    rows.push_back({{"bits", r.bits},
                    {"weights", search::to_json(r.weights)},
                    {"acts", search::to_json(r.acts)},
                    {"combined", search::to_json(r.combined)}});
  }
  return {{"layers", layers.size()},
          {"alpha_a", alpha_a},
          {"alpha_b", alpha_b},
          {"per_bits", rows},
          {"mean", {{"weights", search::to_json(mean_weights)},
                    {"acts", search::to_json(mean_acts)},
                    {"combined", search::to_json(mean_combined)}}},
          {"pooled", {{"weights", search::to_json(pooled_weights)},
                      {"acts", search::to_json(pooled_acts)},
                      {"combined", search::to_json(pooled_combined)}}}};
}

std::string comparison_to_text(const IndicatorComparison& c, const std::string& name_a, const std::string& name_b) {
  std::string out = fmt::format("rank agreement of {} (alpha {:g}) with {} (alpha {:g}) over {} layers\n", name_a,
                                c.alpha_a, name_b, c.alpha_b, c.layers.size());
  out += fmt::format("{:<8} {:>14} {:>14} {:>14}\n", "", "weights", "activations", "combined");
  out += fmt::format("{:<8} {:>14} {:>14} {:>14}\n", "bits", "rho    tau", "rho    tau", "rho    tau");
  for (const auto& r : c.per_bits) {
    out += fmt::format("{:<8} {:>14} {:>14} {:>14}\n", r.bits, cell(r.weights), cell(r.acts), cell(r.combined));
  }
  out += fmt::format("{:<8} {:>14} {:>14} {:>14}\n", "mean", cell(c.mean_weights), cell(c.mean_acts),
                     cell(c.mean_combined));
  out += fmt::format("{:<8} {:>14} {:>14} {:>14}\n", "pooled", cell(c.pooled_weights), cell(c.pooled_acts),
                     cell(c.pooled_combined));
  return out;
}

IndicatorComparison compare_indicator_files(const std::string& path_a, const std::string& path_b,
                                            const CompareOptions& options) {
  auto load = [](const std::string& path, const std::string& name, std::optional<double> alpha) {
    const Criterion criterion = parse_criterion(name);
    quant::Indicators values = apply_criterion(quant::read_indicators(path), criterion);
    const double used = alpha.value_or(default_alpha(criterion, values));
    return std::pair{std::move(values), used};
  };
  const auto [a, alpha_a] = load(path_a, options.criterion_a(), options.alpha_a());
  const auto [b, alpha_b] = load(path_b, options.criterion_b(), options.alpha_b());
  return compare_indicators(a, b, alpha_a, alpha_b);
}

}  // namespace limpq::search
