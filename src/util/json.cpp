#include "limpq/util/json.h"

#include <c10/util/Exception.h>

#include <limits>

namespace limpq::util {

int64_t json_int(const nlohmann::json& value, const std::string& what) {
  if (value.is_number_unsigned()) {
    const auto u = value.get<uint64_t>();
    TORCH_CHECK(u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), what, ": ", u, " is too large");
    return static_cast<int64_t>(u);
  }
  TORCH_CHECK(value.is_number_integer(), what, " must be an integer, got ", value.dump());
  return value.get<int64_t>();
}

std::vector<int64_t> json_int_list(const nlohmann::json& value, const std::string& what) {
  TORCH_CHECK(value.is_array(), what, " must be a list of integers, got ", value.dump());
  std::vector<int64_t> out;
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) out.push_back(json_int(value[i], what + "[" + std::to_string(i) + "]"));
  return out;
}

}  // namespace limpq::util
