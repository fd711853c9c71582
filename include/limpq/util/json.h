// Typed reads of JSON values from files limpq did not necessarily write:
// nlohmann's get<int64_t>() on a float or an out-of-range number is
// undefined behaviour, so integers go through these checks.
//
//   const int64_t macs = util::json_int(layer.at("macs"), "layer 'conv1': macs");
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace limpq::util {

// An integer that fits int64; anything else is an error naming `what`.
int64_t json_int(const nlohmann::json& value, const std::string& what);
// A list of such integers.
std::vector<int64_t> json_int_list(const nlohmann::json& value, const std::string& what);

}  // namespace limpq::util
