#include "limpq/quant/indicators.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <set>

#include "limpq/util/atomic_file.h"
#include "limpq/util/checksum.h"
#include "limpq/util/json.h"

namespace limpq::quant {
namespace {

// One value per candidate, in the candidates' order.
nlohmann::ordered_json steps_to_json(const std::vector<int64_t>& candidates, const std::map<int64_t, double>& steps) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (int64_t b : candidates) j[std::to_string(b)] = steps.at(b);
  return j;
}

template <typename T>
T get(const nlohmann::json& j, const char* key, const std::string& where) {
  TORCH_CHECK(j.contains(key), where, ": missing field '", key, "'");
  if constexpr (std::is_same_v<T, int64_t>) {
    return util::json_int(j.at(key), where + ": field '" + key + "'");
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    return util::json_int_list(j.at(key), where + ": field '" + key + "'");
  }
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    TORCH_CHECK(false, where, ": field '", key, "' has the wrong type (", j.at(key).dump(), ")");
  }
}

std::map<int64_t, double> steps_from_json(const nlohmann::json& j, const char* key,
                                          const std::vector<int64_t>& candidates, const std::string& where) {
  TORCH_CHECK(j.contains(key) && j[key].is_object(), where, ": a searchable layer needs '", key,
              "' mapping each candidate bit-width to its step");
  std::map<int64_t, double> steps;
  for (int64_t b : candidates) {
    const std::string k = std::to_string(b);
    TORCH_CHECK(j[key].contains(k), where, ": '", key, "' has no step for ", b, " bits");
    TORCH_CHECK(j[key][k].is_number(), where, ": ", key, ".", k, " is not a number (", j[key][k].dump(), ")");
    const double v = j[key][k].get<double>();
    TORCH_CHECK(std::isfinite(v) && v > 0, where, ": ", key, ".", k, " must be a finite positive step, got ", v);
    steps[b] = v;
  }
  return steps;
}

nlohmann::ordered_json stats_to_json(const std::vector<int64_t>& candidates, const TensorStats& s) {
  nlohmann::ordered_json j = {{"weight_rms", s.weight_rms},
                              {"act_rms", s.act_rms},
                              {"weight_fisher", s.weight_fisher},
                              {"act_fisher", s.act_fisher}};
  if (!s.weight_error.empty()) j["weight_error"] = steps_to_json(candidates, s.weight_error);
  if (!s.act_error.empty()) j["act_error"] = steps_to_json(candidates, s.act_error);
  j["samples"] = s.samples;
  return j;
}

// An optional stats field mapping every candidate to a finite value >= 0.
std::map<int64_t, double> per_bits_from_json(const nlohmann::json& j, const char* key,
                                             const std::vector<int64_t>& candidates, const std::string& where) {
  std::map<int64_t, double> values;
  if (!j.contains(key)) return values;
  TORCH_CHECK(j[key].is_object(), where, ": stats.", key, " must map each candidate bit-width to a number");
  for (int64_t b : candidates) {
    const std::string k = std::to_string(b);
    TORCH_CHECK(j[key].contains(k) && j[key][k].is_number(), where, ": stats.", key, " has no number for ", b,
                " bits");
    const double v = j[key][k].get<double>();
    TORCH_CHECK(std::isfinite(v) && v >= 0, where, ": stats.", key, ".", k, " must be finite and >= 0, got ", v);
    values[b] = v;
  }
  return values;
}

TensorStats stats_from_json(const nlohmann::json& j, const std::vector<int64_t>& candidates,
                            const std::string& where) {
  TORCH_CHECK(j.is_object(), where, ": 'stats' must be an object");
  auto value = [&](const char* key) {
    TORCH_CHECK(j.contains(key) && j[key].is_number(), where, ": stats.", key, " must be a number");
    const double v = j[key].get<double>();
    TORCH_CHECK(std::isfinite(v) && v >= 0, where, ": stats.", key, " must be finite and >= 0, got ", v);
    return v;
  };
  TensorStats s;
  s.weight_rms = value("weight_rms");
  s.act_rms = value("act_rms");
  s.weight_fisher = value("weight_fisher");
  s.act_fisher = value("act_fisher");
  s.weight_error = per_bits_from_json(j, "weight_error", candidates, where);
  s.act_error = per_bits_from_json(j, "act_error", candidates, where);
  s.samples = get<int64_t>(j, "samples", where + ": stats");
  return s;
}

}  // namespace

nlohmann::ordered_json indicators_to_json(const Indicators& ind) {
  nlohmann::ordered_json j;
  j["format"] = kIndicatorsFormat;
  j["model"] = ind.model;
  j["input_shape"] = ind.input_shape;
  j["candidates"] = ind.candidates;
  j["provenance"] = ind.provenance;
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const auto& l : ind.layers) {
    nlohmann::ordered_json e = {{"name", l.name}, {"kind", l.kind}, {"searchable", l.searchable},
                                {"macs", l.macs}, {"params", l.params}};
    if (l.searchable) {
      e["weight_steps"] = steps_to_json(ind.candidates, l.weight_steps);
      e["act_steps"] = steps_to_json(ind.candidates, l.act_steps);
      if (l.stats) e["stats"] = stats_to_json(ind.candidates, *l.stats);
    }
    layers.push_back(std::move(e));
  }
  j["layers"] = std::move(layers);
  return j;
}

Indicators indicators_from_json(const nlohmann::json& j, const std::string& source) {
  const std::string where = "indicators '" + source + "'";
  TORCH_CHECK(j.is_object(), where, ": expected a JSON object");
  const auto format = get<std::string>(j, "format", where);
  TORCH_CHECK(format == kIndicatorsFormat, where, ": format '", format, "' is not supported (expected '",
              kIndicatorsFormat, "')");
  Indicators ind;
  ind.model = j.contains("model") && j["model"].is_string() ? j["model"].get<std::string>() : "";
  if (j.contains("input_shape")) ind.input_shape = get<std::vector<int64_t>>(j, "input_shape", where);
  ind.candidates = get<std::vector<int64_t>>(j, "candidates", where);
  TORCH_CHECK(!ind.candidates.empty(), where, ": 'candidates' is empty");
  std::set<int64_t> unique;
  for (int64_t b : ind.candidates) {
    TORCH_CHECK(b >= 2 && b <= 8, where, ": candidate bit-width ", b, " is not in 2..8");
    TORCH_CHECK(unique.insert(b).second, where, ": candidate bit-width ", b, " listed twice");
  }
  if (j.contains("provenance")) ind.provenance = j["provenance"];
  TORCH_CHECK(j.contains("layers") && j["layers"].is_array() && !j["layers"].empty(), where,
              ": 'layers' must be a non-empty list");
  std::set<std::string> names;
  for (size_t i = 0; i < j["layers"].size(); ++i) {
    const auto& e = j["layers"][i];
    const std::string lw = where + ": layers[" + std::to_string(i) + "]";
    IndicatorLayer l;
    l.name = get<std::string>(e, "name", lw);
    const std::string lwn = where + ": layer '" + l.name + "'";
    TORCH_CHECK(names.insert(l.name).second, lwn, " appears twice");
    l.kind = e.contains("kind") ? get<std::string>(e, "kind", lwn) : "conv";
    l.searchable = get<bool>(e, "searchable", lwn);
    l.macs = get<int64_t>(e, "macs", lwn);
    l.params = get<int64_t>(e, "params", lwn);
    // A product of two activations (kind "matmul") has no weights.
    const int64_t min_params = l.kind == "matmul" ? 0 : 1;
    TORCH_CHECK(l.macs > 0 && l.params >= min_params, lwn, ": macs must be positive and params ",
                min_params ? "positive" : "at least 0", ", got ", l.macs, " and ", l.params);
    if (l.searchable) {
      l.weight_steps = steps_from_json(e, "weight_steps", ind.candidates, lwn);
      l.act_steps = steps_from_json(e, "act_steps", ind.candidates, lwn);
      if (e.contains("stats")) l.stats = stats_from_json(e["stats"], ind.candidates, lwn);
    }
    ind.layers.push_back(std::move(l));
  }
  return ind;
}

void write_indicators(const std::string& path, const Indicators& indicators) {
  nlohmann::ordered_json json = indicators_to_json(indicators);
  util::seal_json(json);
  util::write_file_atomic(path, json.dump(2) + "\n");
}

Indicators read_indicators(const std::string& path) {
  auto json = nlohmann::ordered_json::parse(util::read_file(path), nullptr, /*allow_exceptions=*/false);
  TORCH_CHECK(!json.is_discarded(), "indicators '", path, "': not valid JSON (truncated or not an indicators file)");
  util::verify_json(json, "indicators '" + path + "'");
  return indicators_from_json(json, path);
}

}  // namespace limpq::quant
