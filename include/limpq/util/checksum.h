// Checksums for the files limpq writes and reads back.
//
// Binary files (checkpoints) hash their content field by field with Crc32;
// JSON files (policies, indicators) carry "checksum": "crc32:xxxxxxxx" over
// their canonical compact form without that field. A file that carries a
// checksum is verified on reading; JSON files written by hand or by another
// tool may leave it out.
//
//   nlohmann::ordered_json j = ...;
//   util::seal_json(j);                          // adds j["checksum"]
//   util::verify_json(j, "policy 'p.json'");     // throws on a mismatch, erases the field
#pragma once

#include <ATen/core/ivalue.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace limpq::util {

// Incremental CRC-32 (zlib's polynomial).
class Crc32 {
 public:
  Crc32& update(const void* data, size_t size);
  Crc32& update(std::string_view bytes) { return update(bytes.data(), bytes.size()); }
  // Integers are hashed as 8 little-endian-independent bytes of their value.
  Crc32& update_int(int64_t value);
  uint32_t value() const { return value_; }
  // "crc32:" and 8 lower-case hex digits.
  std::string str() const;

 private:
  uint32_t value_ = 0;
};

// The checksum string of a JSON document without its "checksum" field.
std::string json_checksum(const nlohmann::ordered_json& json);

// Sets json["checksum"] (last) to json_checksum(json).
void seal_json(nlohmann::ordered_json& json);

// When json has a "checksum", checks it and removes it; `what` names the
// file in the error ("policy 'p.json'"). Returns whether one was present.
bool verify_json(nlohmann::ordered_json& json, const std::string& what);

// A checksum of a pickled value (dicts with string keys, taken in key order;
// lists; strings; numbers; tensors by dtype, shape and bytes), independent
// of how the pickle laid it out. A dict's "checksum" entry is left out, so a
// dict can carry its own.
std::string ivalue_checksum(const c10::IValue& value);

}  // namespace limpq::util
