#include "limpq/search/synthetic.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "limpq/models/indicator_layer.h"

namespace limpq::search {
namespace {

// Draws one tensor's steps for descending `bits`: the lowest bit-width's step
// is `top`, each further bit multiplies it by `ratio(b)` times a few percent
// of noise, and now and then a point lands just above its lower-bit neighbour.
template <typename Ratio>
std::map<int64_t, double> draw_steps(const std::vector<int64_t>& ascending, double top, Ratio ratio,
                                     const SyntheticOptions& o, std::mt19937_64& rng) {
  std::normal_distribution<double> noise(0.0, o.point_noise);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::map<int64_t, double> steps;
  double rule = top;
  double previous = 0;
  for (size_t i = 0; i < ascending.size(); ++i) {
    const int64_t b = ascending[i];
    if (i > 0) rule *= ratio(ascending[i - 1], b);
    double step = rule * std::max(0.5, 1.0 + noise(rng));
    if (i > 0 && unit(rng) < o.non_monotone_rate) step = previous * (1.0 + 0.1 * unit(rng));
    steps[b] = step;
    previous = step;
  }
  return steps;
}

}  // namespace

quant::Indicators synthetic_indicators(const std::string& arch, uint64_t seed, const SyntheticOptions& o) {
  TORCH_CHECK(!o.candidates.empty(), "synthetic indicators: no candidate bit-widths");
  TORCH_CHECK(o.scale_decades >= 0 && o.point_noise >= 0 && o.non_monotone_rate >= 0 && o.non_monotone_rate <= 1,
              "synthetic indicators: scale_decades and point_noise must be >= 0, non_monotone_rate in [0, 1]");
  models::QuantModel qm(models::make_model(arch, o.input_shape[0], o.num_classes), o.input_shape);
  std::vector<int64_t> ascending = o.candidates;
  std::sort(ascending.begin(), ascending.end());

  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> decades(0.0, o.scale_decades);
  // Qp of unsigned b-bit activations and the weights' halving rule.
  auto act_ratio = [](int64_t from, int64_t to) {
    return std::sqrt((std::exp2(static_cast<double>(from)) - 1) / (std::exp2(static_cast<double>(to)) - 1));
  };
  auto weight_ratio = [](int64_t from, int64_t to) { return std::exp2(static_cast<double>(from - to)); };

  quant::Indicators ind;
  ind.model = arch;
  ind.input_shape = o.input_shape;
  ind.candidates = std::vector<int64_t>(ascending.rbegin(), ascending.rend());
  ind.provenance = {{"synthetic", true},
                    {"seed", seed},
                    {"scale_decades", o.scale_decades},
                    {"point_noise", o.point_noise},
                    {"non_monotone_rate", o.non_monotone_rate}};
  for (const auto& l : qm.layers()) {
    quant::IndicatorLayer e = models::indicator_layer(l);
    if (l.searchable) {
      // Weights' lowest-bit steps in [0.005, 0.005 * 10^decades], activations' 4x larger.
      const double w_top = 0.005 * std::pow(10.0, decades(rng));
      const double a_top = 0.02 * std::pow(10.0, decades(rng));
      e.weight_steps = draw_steps(ascending, w_top, weight_ratio, o, rng);
      e.act_steps = draw_steps(ascending, a_top, act_ratio, o, rng);
    }
    ind.layers.push_back(std::move(e));
  }
  return ind;
}

}  // namespace limpq::search
