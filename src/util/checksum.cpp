#include "limpq/util/checksum.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <vector>

namespace limpq::util {

Crc32& Crc32::update(const void* data, size_t size) {
  const auto* p = static_cast<const Bytef*>(data);
  while (size > 0) {
    const auto chunk = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    value_ = static_cast<uint32_t>(::crc32(value_, p, chunk));
    p += chunk;
    size -= chunk;
  }
  return *this;
}

Crc32& Crc32::update_int(int64_t value) {
  unsigned char bytes[8];
  auto u = static_cast<uint64_t>(value);
  for (unsigned char& b : bytes) {
    b = static_cast<unsigned char>(u & 0xff);
    u >>= 8;
  }
  return update(bytes, sizeof(bytes));
}

std::string Crc32::str() const {
  char text[16];
  std::snprintf(text, sizeof(text), "crc32:%08x", static_cast<unsigned>(value_));
  return text;
}

std::string json_checksum(const nlohmann::ordered_json& json) {
  nlohmann::ordered_json copy = json;
  if (copy.is_object()) copy.erase("checksum");
  return Crc32().update(copy.dump()).str();
}

void seal_json(nlohmann::ordered_json& json) {
  json.erase("checksum");
  json["checksum"] = json_checksum(json);
}

bool verify_json(nlohmann::ordered_json& json, const std::string& what) {
  if (!json.is_object() || !json.contains("checksum")) return false;
  TORCH_CHECK(json["checksum"].is_string(), what, ": \"checksum\" must be a string like \"crc32:0123abcd\"");
  const std::string stored = json["checksum"].get<std::string>();
  json.erase("checksum");
  const std::string actual = Crc32().update(json.dump()).str();
  TORCH_CHECK(stored == actual, what, ": checksum mismatch (stored ", stored, ", content gives ", actual,
              "): the file is corrupt or was edited; regenerate it, or delete the \"checksum\" line to accept "
              "hand edits");
  return true;
}

namespace {

void hash_ivalue(Crc32& crc, const c10::IValue& v) {
  if (v.isNone()) {
    crc.update("N");
  } else if (v.isBool()) {
    crc.update("B").update_int(v.toBool());
  } else if (v.isInt()) {
    crc.update("I").update_int(v.toInt());
  } else if (v.isDouble()) {
    const double d = v.toDouble();
    crc.update("D").update(&d, sizeof(d));
  } else if (v.isString()) {
    const std::string& s = v.toStringRef();
    crc.update("S").update_int(static_cast<int64_t>(s.size())).update(s);
  } else if (v.isTensor()) {
    const torch::Tensor t = v.toTensor().detach().to(torch::kCPU).contiguous();
    crc.update("T").update_int(static_cast<int64_t>(t.scalar_type())).update_int(t.dim());
    for (int64_t size : t.sizes()) crc.update_int(size);
    crc.update(t.data_ptr(), t.numel() * t.element_size());
  } else if (v.isGenericDict()) {
    const auto dict = v.toGenericDict();
    std::vector<std::pair<std::string, c10::IValue>> entries;
    for (const auto& item : dict) {
      TORCH_CHECK(item.key().isString(), "checksum: dict keys must be strings");
      if (item.key().toStringRef() == "checksum") continue;
      entries.emplace_back(item.key().toStringRef(), item.value());
    }
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    crc.update("M").update_int(static_cast<int64_t>(entries.size()));
    for (const auto& [key, value] : entries) {
      hash_ivalue(crc, c10::IValue(key));
      hash_ivalue(crc, value);
    }
  } else if (v.isList()) {
    const auto list = v.toListRef();
    crc.update("L").update_int(static_cast<int64_t>(list.size()));
    for (const auto& item : list) hash_ivalue(crc, item);
  } else if (v.isTuple()) {
    const auto& elements = v.toTupleRef().elements();
    crc.update("U").update_int(static_cast<int64_t>(elements.size()));
    for (const auto& item : elements) hash_ivalue(crc, item);
  } else {
    TORCH_CHECK(false, "checksum: cannot hash a value of type ", v.tagKind());
  }
}

}  // namespace

std::string ivalue_checksum(const c10::IValue& value) {
  Crc32 crc;
  hash_ivalue(crc, value);
  return crc.str();
}

}  // namespace limpq::util
