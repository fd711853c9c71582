// Importance indicators: the learned LSQ step sizes of every searchable layer
// at every candidate bit-width (LIMPQ.md section 3), with the per-layer costs
// the search needs. The search reads nothing but this file, so indicators
// made elsewhere (another framework's checkpoint) can be searched too.
//
// Format (JSON, versioned):
//   {"format": "limpq.indicators/1",
//    "model": "resnet20", "input_shape": [1, 28, 28], "candidates": [6, 5, 4, 3, 2],
//    "provenance": {"checkpoint": "...", "epochs": 3, "fraction": 0.5, "seed": 0},
//    "layers": [
//      {"name": "conv1", "kind": "conv", "searchable": false, "macs": 112896, "params": 144},
//      {"name": "layer1.0.conv1", "kind": "conv", "searchable": true, "macs": ..., "params": ...,
//       "weight_steps": {"6": 0.0224, ...}, "act_steps": {"6": 0.0963, ...}},
//      ...]}
// Layers are in network order; fixed layers carry only their costs.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace limpq::quant {

inline constexpr const char* kIndicatorsFormat = "limpq.indicators/1";

struct IndicatorLayer {
  std::string name;
  std::string kind;  // "conv" | "linear"
  bool searchable = true;
  int64_t macs = 0;
  int64_t params = 0;
  std::map<int64_t, double> weight_steps;  // bits -> learned step
  std::map<int64_t, double> act_steps;
};

struct Indicators {
  std::string model;
  std::vector<int64_t> input_shape;
  std::vector<int64_t> candidates;
  nlohmann::ordered_json provenance = nlohmann::ordered_json::object();
  std::vector<IndicatorLayer> layers;
};

nlohmann::ordered_json indicators_to_json(const Indicators& indicators);
// Checks the structure: every searchable layer has a finite, positive step
// for every candidate; errors name the file, layer and field.
Indicators indicators_from_json(const nlohmann::json& json, const std::string& source);
void write_indicators(const std::string& path, const Indicators& indicators);
Indicators read_indicators(const std::string& path);

}  // namespace limpq::quant
