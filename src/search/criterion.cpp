#include "limpq/search/criterion.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace limpq::search {
namespace {

struct CriterionName {
  Criterion criterion;
  const char* name;
};
constexpr CriterionName kCriteria[] = {
    {Criterion::kStep, "step"}, {Criterion::kRelative, "relative"}, {Criterion::kNoise, "noise"}, {Criterion::kFisher, "fisher"}};

// The smallest criterion value written: the indicators format needs positive
// values, and a zero Fisher trace (a tensor the loss does not see) means
// "quantizing it does not matter".
constexpr double kFloor = 1e-30;

// The scale-free forms' default alpha, measured (see criterion.h).
constexpr double kScaleFreeAlpha = 0.25;

// One tensor's criterion value from its step and statistics.
double value_of(Criterion criterion, double step, double rms, double fisher) {
  switch (criterion) {
    case Criterion::kStep: return step;
    case Criterion::kRelative: return step / rms;
    case Criterion::kNoise: return step * step / (12.0 * rms * rms);
    case Criterion::kFisher: return std::max(kFloor, fisher * step * step / 24.0);
  }
  TORCH_INTERNAL_ASSERT(false, "unknown criterion");
}

const char* formula(Criterion criterion) {
  switch (criterion) {
    case Criterion::kStep: return "s (the learned step)";
    case Criterion::kRelative: return "s / rms";
    case Criterion::kNoise: return "s^2 / (12 rms^2)";
    case Criterion::kFisher: return "Tr(F) s^2 / 24";
  }
  TORCH_INTERNAL_ASSERT(false, "unknown criterion");
}

}  // namespace

Criterion parse_criterion(const std::string& name) {
  std::string known;
  for (const auto& c : kCriteria) {
    if (name == c.name) return c.criterion;
    known += known.empty() ? c.name : std::string(", ") + c.name;
  }
  TORCH_CHECK(false, "search: criterion must be one of ", known, ", got '", name, "'");
}

std::string to_string(Criterion criterion) {
  for (const auto& c : kCriteria) {
    if (c.criterion == criterion) return c.name;
  }
  TORCH_INTERNAL_ASSERT(false, "unknown criterion");
}

quant::Indicators apply_criterion(const quant::Indicators& indicators, Criterion criterion) {
  if (criterion == Criterion::kStep) return indicators;
  quant::Indicators out = indicators;
  for (auto& l : out.layers) {
    if (!l.searchable) continue;
    TORCH_CHECK(l.stats.has_value(), "search: criterion '", to_string(criterion), "' needs the per-tensor statistics "
                "that limpq indicators records, but layer '", l.name, "' has no 'stats' (use --criterion step, "
                "or retrain the indicators)");
    const quant::TensorStats& s = *l.stats;
    TORCH_CHECK(criterion == Criterion::kFisher || (s.weight_rms > 0 && s.act_rms > 0), "search: criterion '",
                to_string(criterion), "' divides by the tensors' rms, but layer '", l.name, "' has weight_rms ",
                s.weight_rms, " and act_rms ", s.act_rms);
    for (auto& [bits, step] : l.weight_steps) step = value_of(criterion, step, s.weight_rms, s.weight_fisher);
    for (auto& [bits, step] : l.act_steps) step = value_of(criterion, step, s.act_rms, s.act_fisher);
  }
  out.provenance = {{"criterion", to_string(criterion)},
                    {"formula", formula(criterion)},
                    {"search_alpha", kScaleFreeAlpha},
                    {"from", indicators.provenance}};
  return out;
}

Criterion default_criterion(const quant::Indicators& indicators) {
  for (const auto& l : indicators.layers) {
    if (l.searchable && (!l.stats || !(l.stats->weight_rms > 0) || !(l.stats->act_rms > 0))) return Criterion::kStep;
  }
  return Criterion::kRelative;
}

double default_alpha(Criterion criterion, const quant::Indicators& indicators) {
  const auto& p = indicators.provenance;
  if (p.is_object() && p.contains("search_alpha") && p["search_alpha"].is_number()) {
    return p["search_alpha"].get<double>();
  }
  return criterion == Criterion::kStep ? 2.0 : 1.0;
}

}  // namespace limpq::search
