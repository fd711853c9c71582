#include "limpq/search/criterion.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <map>
#include <optional>
#include <vector>

namespace limpq::search {
namespace {

struct CriterionName {
  Criterion criterion;
  const char* name;
};
constexpr CriterionName kCriteria[] = {
    {Criterion::kStep, "step"},     {Criterion::kRelative, "relative"},        {Criterion::kNoise, "noise"},
    {Criterion::kFisher, "fisher"}, {Criterion::kFisherError, "fisher-error"}};

// The smallest criterion value written: the indicators format needs positive
// values, and a zero Fisher trace (a tensor the loss does not see) means
// "quantizing it does not matter".
constexpr double kFloor = 1e-30;

// The scale-free forms' default alpha, measured (see criterion.h).
constexpr double kScaleFreeAlpha = 0.25;

// One tensor's statistics, as the criteria see them.
struct TensorView {
  double rms;
  double fisher;
  const std::map<int64_t, double>& error;  // bits -> Fisher-weighted error
};

// One tensor's criterion value at `bits` from its step and statistics.
double value_of(Criterion criterion, int64_t bits, double step, const TensorView& t) {
  switch (criterion) {
    case Criterion::kStep: return step;
    case Criterion::kRelative: return step / t.rms;
    case Criterion::kNoise: return step * step / (12.0 * t.rms * t.rms);
    case Criterion::kFisher: return std::max(kFloor, t.fisher * step * step / 24.0);
    case Criterion::kFisherError: return std::max(kFloor, t.error.at(bits));
  }
  TORCH_INTERNAL_ASSERT(false, "unknown criterion");
}

// What `criterion` needs of one layer's statistics, checked.
void check_stats(Criterion criterion, const quant::IndicatorLayer& l, const std::vector<int64_t>& candidates) {
  TORCH_CHECK(l.stats.has_value(), "search: criterion '", to_string(criterion), "' needs the per-tensor statistics "
              "that limpq indicators records, but layer '", l.name, "' has no 'stats' (use --criterion step, "
              "or retrain the indicators)");
  const quant::TensorStats& s = *l.stats;
  const bool divides_by_rms = criterion == Criterion::kRelative || criterion == Criterion::kNoise;
  TORCH_CHECK(!divides_by_rms || (s.weight_rms > 0 && s.act_rms > 0), "search: criterion '", to_string(criterion),
              "' divides by the tensors' rms, but layer '", l.name, "' has weight_rms ", s.weight_rms,
              " and act_rms ", s.act_rms);
  if (criterion != Criterion::kFisherError) return;
  for (int64_t b : candidates) {
    TORCH_CHECK(s.weight_error.count(b) && s.act_error.count(b), "search: criterion 'fisher-error' needs "
                "stats.weight_error and stats.act_error at every candidate, but layer '", l.name, "' has none for ",
                b, " bits (indicators trained before they were recorded: retrain them, or use --criterion fisher)");
  }
}

const char* formula(Criterion criterion) {
  switch (criterion) {
    case Criterion::kStep: return "s (the learned step)";
    case Criterion::kRelative: return "s / rms";
    case Criterion::kNoise: return "s^2 / (12 rms^2)";
    case Criterion::kFisher: return "Tr(F) s^2 / 24";
    case Criterion::kFisherError: return "1/2 delta^T F delta, delta = Q_s(x) - x";
  }
  TORCH_INTERNAL_ASSERT(false, "unknown criterion");
}

}  // namespace

std::string criterion_names() {
  std::string known;
  for (const auto& c : kCriteria) known += known.empty() ? c.name : std::string(", ") + c.name;
  return known;
}

std::optional<Criterion> find_criterion(const std::string& name) {
  for (const auto& c : kCriteria) {
    if (name == c.name) return c.criterion;
  }
  return std::nullopt;
}

Criterion parse_criterion(const std::string& name) {
  const auto criterion = find_criterion(name);
  TORCH_CHECK(criterion.has_value(), "search: criterion must be one of ", criterion_names(), ", got '", name, "'");
  return *criterion;
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
    check_stats(criterion, l, indicators.candidates);
    const quant::TensorStats& s = *l.stats;
    const TensorView weight{s.weight_rms, s.weight_fisher, s.weight_error};
    const TensorView act{s.act_rms, s.act_fisher, s.act_error};
    for (auto& [bits, step] : l.weight_steps) step = value_of(criterion, bits, step, weight);
    for (auto& [bits, step] : l.act_steps) step = value_of(criterion, bits, step, act);
  }
  out.provenance = {{"criterion", to_string(criterion)},
                    {"formula", formula(criterion)},
                    {"search_alpha", kScaleFreeAlpha},
                    {"from", indicators.provenance}};
  return out;
}

Criterion default_criterion(const quant::Indicators& indicators) {
  bool errors = true;
  for (const auto& l : indicators.layers) {
    if (!l.searchable) continue;
    if (!l.stats || !(l.stats->weight_rms > 0) || !(l.stats->act_rms > 0)) return Criterion::kStep;
    errors &= l.stats->weight_error.size() == indicators.candidates.size() &&
              l.stats->act_error.size() == indicators.candidates.size();
  }
  return errors ? Criterion::kFisherError : Criterion::kRelative;
}

double default_alpha(Criterion criterion, const quant::Indicators& indicators) {
  const auto& p = indicators.provenance;
  if (p.is_object() && p.contains("search_alpha") && p["search_alpha"].is_number()) {
    return p["search_alpha"].get<double>();
  }
  return criterion == Criterion::kStep ? 2.0 : 1.0;
}

}  // namespace limpq::search
