// Mixed-precision policies: a (weight bits, activation bits) pair for every
// quantized layer, by module path.
//
// File format (JSON, versioned):
//   {"format": "limpq.policy/1", "model": "resnet20",
//    "layers": {"layer1.0.conv1": {"weight_bits": 4, "act_bits": 3}, ...},   // searchable, network order
//    "fixed":  {"conv1": {"weight_bits": 8, "act_bits": 8}, "fc": {...}}}    // kept out of the search
//
//   Policy p = read_policy("policy.json");
//   check_policy(p, searchable_names, fixed_names, "policy.json");
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace limpq::quant {

inline constexpr const char* kPolicyFormat = "limpq.policy/1";

struct LayerBits {
  int64_t weight = 32;
  int64_t act = 32;
  bool operator==(const LayerBits& o) const { return weight == o.weight && act == o.act; }
};

struct Policy {
  std::string model;
  std::vector<std::pair<std::string, LayerBits>> layers;  // searchable layers
  std::vector<std::pair<std::string, LayerBits>> fixed;   // layers kept out of the search
  // The bits of `name` (searchable or fixed), or null.
  const LayerBits* find(const std::string& name) const;
};

// "W4A4" / "w3a2" -> {4, 4} / {3, 2}; anything else is an error naming it.
LayerBits parse_uniform(const std::string& text);

// A bit-width a policy may hold: 2..8, or 32 for full precision.
bool valid_policy_bits(int64_t bits);

nlohmann::ordered_json policy_to_json(const Policy& policy);
Policy policy_from_json(const nlohmann::json& json, const std::string& source);
void write_policy(const std::string& path, const Policy& policy);
Policy read_policy(const std::string& path);

// The policy must name every searchable layer and every fixed layer of the
// model, nothing else, with valid bits; the error lists every problem.
void check_policy(const Policy& policy, const std::vector<std::string>& searchable,
                  const std::vector<std::string>& fixed, const std::string& source);

}  // namespace limpq::quant
