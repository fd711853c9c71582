#include "limpq/quant/policy.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>

#include "limpq/util/atomic_file.h"
#include "limpq/util/checksum.h"

namespace limpq::quant {
namespace {

LayerBits bits_from_json(const nlohmann::json& j, const std::string& where) {
  TORCH_CHECK(j.is_object() && j.contains("weight_bits") && j.contains("act_bits"), where,
              ": expected {\"weight_bits\": W, \"act_bits\": A}, got ", j.dump());
  TORCH_CHECK(j["weight_bits"].is_number_integer() && j["act_bits"].is_number_integer(), where,
              ": weight_bits and act_bits must be integers, got ", j.dump());
  return {j["weight_bits"].get<int64_t>(), j["act_bits"].get<int64_t>()};
}

std::vector<std::pair<std::string, LayerBits>> section_from_json(const nlohmann::json& json, const char* key,
                                                                 const std::string& source) {
  std::vector<std::pair<std::string, LayerBits>> out;
  if (!json.contains(key)) return out;
  const auto& sec = json[key];
  TORCH_CHECK(sec.is_object(), "policy '", source, "': '", key, "' must map layer names to bits");
  for (auto it = sec.begin(); it != sec.end(); ++it) {
    out.emplace_back(it.key(), bits_from_json(it.value(), "policy '" + source + "': " + key + "." + it.key()));
  }
  return out;
}

}  // namespace

const LayerBits* Policy::find(const std::string& name) const {
  for (const auto* section : {&layers, &fixed}) {
    for (const auto& [n, b] : *section) {
      if (n == name) return &b;
    }
  }
  return nullptr;
}

bool valid_policy_bits(int64_t bits) { return (bits >= 2 && bits <= 8) || bits == 32; }

LayerBits parse_uniform(const std::string& text) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::toupper(c); });
  int w = 0, a = 0;
  char tail = 0;
  const bool ok = std::sscanf(t.c_str(), "W%dA%d%c", &w, &a, &tail) == 2;
  TORCH_CHECK(ok, "uniform precision must look like W4A4 (weight bits, activation bits), got '", text, "'");
  TORCH_CHECK(valid_policy_bits(w) && valid_policy_bits(a), "uniform precision '", text,
              "': bits must be in 2..8 (or 32 for full precision)");
  return {w, a};
}

nlohmann::ordered_json policy_to_json(const Policy& policy) {
  nlohmann::ordered_json j;
  j["format"] = kPolicyFormat;
  j["model"] = policy.model;
  auto section = [](const std::vector<std::pair<std::string, LayerBits>>& entries) {
    nlohmann::ordered_json s = nlohmann::ordered_json::object();
    for (const auto& [name, b] : entries) s[name] = {{"weight_bits", b.weight}, {"act_bits", b.act}};
    return s;
  };
  j["layers"] = section(policy.layers);
  j["fixed"] = section(policy.fixed);
  return j;
}

Policy policy_from_json(const nlohmann::json& json, const std::string& source) {
  TORCH_CHECK(json.is_object(), "policy '", source, "': expected a JSON object");
  TORCH_CHECK(json.contains("format") && json["format"].is_string(), "policy '", source,
              "': missing \"format\": \"", kPolicyFormat, "\"");
  TORCH_CHECK(json["format"].get<std::string>() == kPolicyFormat, "policy '", source, "': format '",
              json["format"].get<std::string>(), "' is not supported (expected '", kPolicyFormat, "')");
  TORCH_CHECK(json.contains("layers"), "policy '", source, "': missing \"layers\"");
  Policy p;
  if (json.contains("model") && json["model"].is_string()) p.model = json["model"].get<std::string>();
  p.layers = section_from_json(json, "layers", source);
  p.fixed = section_from_json(json, "fixed", source);
  return p;
}

void write_policy(const std::string& path, const Policy& policy) {
  nlohmann::ordered_json json = policy_to_json(policy);
  util::seal_json(json);
  util::write_file_atomic(path, json.dump(2) + "\n");
}

Policy read_policy(const std::string& path) {
  const std::string text = util::read_file(path);
  auto json = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  TORCH_CHECK(!json.is_discarded(), "policy '", path, "': not valid JSON (truncated or not a policy file)");
  util::verify_json(json, "policy '" + path + "'");
  return policy_from_json(json, path);
}

void check_policy(const Policy& policy, const std::vector<std::string>& searchable,
                  const std::vector<std::string>& fixed, const std::string& source) {
  std::vector<std::string> problems;
  const std::set<std::string> searchable_set(searchable.begin(), searchable.end());
  const std::set<std::string> fixed_set(fixed.begin(), fixed.end());
  std::set<std::string> seen;
  auto check_section = [&](const std::vector<std::pair<std::string, LayerBits>>& entries, bool is_fixed) {
    for (const auto& [name, b] : entries) {
      if (!seen.insert(name).second) problems.push_back("layer '" + name + "' appears twice");
      const bool known = is_fixed ? fixed_set.count(name) : searchable_set.count(name);
      if (!known) {
        const bool other = is_fixed ? searchable_set.count(name) : fixed_set.count(name);
        problems.push_back(other ? "layer '" + name + "' is listed under '" + (is_fixed ? "fixed" : "layers") +
                                       "' but the model has it " + (is_fixed ? "searchable" : "fixed")
                                 : "unknown layer '" + name + "' (the model has no such quantizable layer)");
      }
      if (!valid_policy_bits(b.weight) || !valid_policy_bits(b.act)) {
        problems.push_back("layer '" + name + "': W" + std::to_string(b.weight) + "A" + std::to_string(b.act) +
                           " is outside 2..8 bits (or 32 for full precision)");
      }
    }
  };
  check_section(policy.layers, false);
  check_section(policy.fixed, true);
  for (const auto& name : searchable) {
    if (!seen.count(name)) problems.push_back("searchable layer '" + name + "' is missing");
  }
  for (const auto& name : fixed) {
    if (!seen.count(name)) problems.push_back("fixed layer '" + name + "' is missing");
  }
  if (!problems.empty()) {
    std::ostringstream ss;
    ss << "policy '" << source << "' does not fit the model:";
    for (const auto& p : problems) ss << "\n  " << p;
    TORCH_CHECK(false, ss.str());
  }
}

}  // namespace limpq::quant
