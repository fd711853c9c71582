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
//       "weight_steps": {"6": 0.0224, ...}, "act_steps": {"6": 0.0963, ...},
//       "stats": {"weight_rms": 0.041, "act_rms": 0.52, "weight_fisher": 3.1e-3, "act_fisher": 7.4e-5,
//                 "weight_error": {"6": 1.2e-7, ...}, "act_error": {"6": 3.0e-6, ...},
//                 "samples": 256}},
//      ...]}
// Layers are in network order; fixed layers carry only their costs.
//
// "stats" is optional (files written before it, or made elsewhere, lack it):
// what the scale-free criteria (include/limpq/search/criterion.h) need
// besides the steps, measured on the jointly trained network at the end of
// the run: each tensor's root mean square and the trace of its empirical
// Fisher information (the sum over its elements of the mean squared
// per-example loss gradient; for activations per example, over the nonzero
// elements; include/limpq/train/layer_stats.h), and, per candidate
// bit-width, the Fisher-weighted squared quantization error at the learned
// step (weight_error, act_error; files written before it lack both).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace limpq::quant {

inline constexpr const char* kIndicatorsFormat = "limpq.indicators/1";

// Per-tensor statistics of a searchable layer (see "stats" above).
struct TensorStats {
  double weight_rms = 0;
  double act_rms = 0;
  double weight_fisher = 0;
  double act_fisher = 0;
  int64_t samples = 0;  // examples the statistics were measured on
  // bits -> the Fisher-weighted squared error 1/2 delta^T F delta of
  // quantizing the tensor alone at that bit-width's learned step
  // (delta = Q_b(x) - x; weights: the tensor's Fisher block, activations: its
  // diagonal, the mean over examples; include/limpq/train/layer_stats.h):
  // the second-order estimate of the loss increase. Empty, or with one entry
  // per candidate.
  std::map<int64_t, double> weight_error;
  std::map<int64_t, double> act_error;
};

struct IndicatorLayer {
  std::string name;
  std::string kind;  // "conv" | "linear"
  bool searchable = true;
  int64_t macs = 0;
  int64_t params = 0;
  std::map<int64_t, double> weight_steps;  // bits -> learned step
  std::map<int64_t, double> act_steps;
  std::optional<TensorStats> stats;
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
