#include "limpq/deploy/packed.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "limpq/nn/quant_layer.h"
#include "limpq/train/trainer.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/checksum.h"
#include "limpq/util/json.h"

namespace limpq::deploy {
namespace {

constexpr char kMagic[8] = {'L', 'I', 'M', 'P', 'Q', 'P', 'K', '1'};
constexpr int64_t kAlign = 8;

struct QuantizedWeight {
  int64_t bits = 0;
  quant::QuantRange range{0, 0};
  torch::Tensor step;  // scalar or one per output channel
};

// The quantized weights of a restored model, by state-dict name.
std::map<std::string, QuantizedWeight> quantized_weights(const train::LoadedModel& loaded) {
  std::map<std::string, QuantizedWeight> out;
  auto modules = loaded.model->named_modules("", /*include_self=*/false);
  for (const auto& layer : loaded.quant->layers()) {
    const nn::QuantLayer* q = nn::as_quant_layer(*modules[layer.name]);
    if (q == nullptr || !q->has_weight() || q->weight_bits() == quant::kFullPrecisionBits) continue;
    const int64_t bits = q->weight_bits();
    out[layer.name + ".weight"] = {bits, q->weight_quantizer->range(bits),
                                   q->weight_quantizer->effective_step(bits).detach().to(torch::kCPU)};
  }
  return out;
}

void append_aligned(std::string& payload, const void* data, size_t size) {
  payload.append(static_cast<const char*>(data), size);
  while (payload.size() % kAlign != 0) payload.push_back('\0');
}

// Packs (q - qn) of every element, `bits` bits each, LSB first.
std::string pack_bits(const torch::Tensor& q, int64_t bits, int64_t qn) {
  const int64_t n = q.numel();
  std::string out((n * bits + 7) / 8, '\0');
  const int64_t* v = q.data_ptr<int64_t>();
  int64_t bit = 0;
  for (int64_t i = 0; i < n; ++i, bit += bits) {
    const auto u = static_cast<uint32_t>(v[i] - qn);
    for (int64_t b = 0; b < bits; ++b) {
      if ((u >> b) & 1u) out[(bit + b) / 8] = static_cast<char>(out[(bit + b) / 8] | (1 << ((bit + b) % 8)));
    }
  }
  return out;
}

torch::Tensor unpack_bits(const uint8_t* data, int64_t n, int64_t bits, int64_t qn) {
  torch::Tensor q = torch::empty({n}, torch::kInt64);
  int64_t* v = q.data_ptr<int64_t>();
  int64_t bit = 0;
  for (int64_t i = 0; i < n; ++i, bit += bits) {
    uint32_t u = 0;
    for (int64_t b = 0; b < bits; ++b) u |= static_cast<uint32_t>((data[(bit + b) / 8] >> ((bit + b) % 8)) & 1) << b;
    v[i] = static_cast<int64_t>(u) + qn;
  }
  return q;
}

const char* dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "float32";
    case torch::kInt64: return "int64";
    case torch::kUInt8: return "uint8";
    case torch::kBool: return "bool";
    default: TORCH_CHECK(false, "packed: cannot store tensors of type ", t);
  }
}

torch::ScalarType dtype_of(const std::string& name, const std::string& where) {
  if (name == "float32") return torch::kFloat32;
  if (name == "int64") return torch::kInt64;
  if (name == "uint8") return torch::kUInt8;
  if (name == "bool") return torch::kBool;
  TORCH_CHECK(false, where, ": unknown dtype '", name, "'");
}

}  // namespace

PackedSummary write_packed(const std::string& path, const train::Checkpoint& checkpoint) {
  TORCH_CHECK(!checkpoint.quantization.empty(), "export: the checkpoint holds a full-precision model; export a "
              "model fine-tuned under a policy (limpq finetune)");
  const train::LoadedModel loaded = train::load_model(checkpoint);
  const auto quantized = quantized_weights(loaded);
  const models::StateDict state = models::state_dict(*loaded.model);

  PackedSummary summary;
  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  std::string payload;
  for (const auto& [name, value] : state) {
    nlohmann::ordered_json entry = {{"name", name}, {"shape", value.sizes().vec()}, {"offset", payload.size()}};
    const auto it = quantized.find(name);
    if (it != quantized.end()) {
      const QuantizedWeight& qw = it->second;
      const torch::Tensor w = value.detach().to(torch::kCPU).to(torch::kFloat32).contiguous();
      const torch::Tensor step = qw.step.to(torch::kFloat32).reshape({-1}).contiguous();
      std::vector<int64_t> bshape(w.dim(), 1);
      bshape[0] = step.numel() > 1 ? w.size(0) : 1;
      const torch::Tensor s = step.numel() > 1 ? step.reshape(bshape) : step.reshape({});
      // Exactly the fake-quantized forward's integers.
      const torch::Tensor q =
          torch::round(torch::clamp(w / s, static_cast<double>(qw.range.qn), static_cast<double>(qw.range.qp)))
              .to(torch::kInt64)
              .contiguous();
      const std::string bits = pack_bits(q, qw.bits, qw.range.qn);
      append_aligned(payload, bits.data(), bits.size());
      std::vector<float> scale(step.data_ptr<float>(), step.data_ptr<float>() + step.numel());
      entry["dtype"] = "packed";
      entry["bits"] = qw.bits;
      entry["qn"] = qw.range.qn;
      entry["scale"] = scale;
      entry["bytes"] = bits.size();
      summary.packed_weight_bytes += static_cast<int64_t>(bits.size());
      summary.scale_bytes += static_cast<int64_t>(scale.size() * sizeof(float));
    } else {
      const torch::Tensor t = value.detach().to(torch::kCPU).contiguous();
      entry["dtype"] = dtype_name(t.scalar_type());
      const size_t bytes = t.numel() * t.element_size();
      append_aligned(payload, t.data_ptr(), bytes);
      entry["bytes"] = bytes;
      summary.other_bytes += static_cast<int64_t>(bytes);
    }
    tensors.push_back(std::move(entry));
  }
  const quant::Policy current = loaded.quant->current_policy();
  const auto cost = models::policy_cost(loaded.quant->layers(), current);
  summary.cost_model_weight_bytes = static_cast<int64_t>(cost.size_bits / 8);
  summary.fp_to_cost_model_ratio = cost.fp_size_bits / cost.size_bits;
  const auto policy = quant::policy_to_json(current);
  nlohmann::ordered_json header = {{"format", kPackedFormat},
                                   {"arch", checkpoint.arch},
                                   {"input_shape", checkpoint.input_shape},
                                   {"num_classes", checkpoint.num_classes},
                                   {"quantization", nlohmann::json::parse(checkpoint.quantization)},
                                   {"config", checkpoint.config},
                                   {"policy", policy},
                                   {"tensors", tensors}};
  const std::string header_text = header.dump();
  std::string file(kMagic, sizeof(kMagic));
  const auto header_length = static_cast<uint32_t>(header_text.size());
  for (int i = 0; i < 4; ++i) file.push_back(static_cast<char>((header_length >> (8 * i)) & 0xff));
  file += header_text;
  while (file.size() % kAlign != 0) file.push_back(' ');  // JSON tolerates trailing spaces
  file += payload;
  const uint32_t crc = util::Crc32().update(file).value();
  for (int i = 0; i < 4; ++i) file.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  util::write_file_atomic(path, file);
  summary.file_bytes = static_cast<int64_t>(file.size());
  summary.header_bytes = static_cast<int64_t>(sizeof(kMagic) + 4 + header_text.size());
  return summary;
}

train::Checkpoint parse_packed(const std::string& bytes, const std::string& name) {
  const std::string where = "packed model '" + name + "'";
  TORCH_CHECK(bytes.size() >= sizeof(kMagic) + 8 && std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) == 0, where,
              ": not a limpq packed model (no LIMPQPK1 magic)");
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t body = bytes.size() - 4;
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= static_cast<uint32_t>(p[body + i]) << (8 * i);
  const uint32_t actual = util::Crc32().update(bytes.data(), body).value();
  TORCH_CHECK(stored == actual, where, ": checksum mismatch (the file is truncated or corrupt)");
  uint32_t header_length = 0;
  for (int i = 0; i < 4; ++i) header_length |= static_cast<uint32_t>(p[sizeof(kMagic) + i]) << (8 * i);
  const size_t header_start = sizeof(kMagic) + 4;
  TORCH_CHECK(header_length <= body - header_start, where, ": header length ", header_length, " exceeds the file");
  const auto header =
      nlohmann::json::parse(bytes.substr(header_start, header_length), nullptr, /*allow_exceptions=*/false);
  TORCH_CHECK(header.is_object(), where, ": the header is not a JSON object");
  TORCH_CHECK(header.value("format", "") == kPackedFormat, where, ": format '", header.value("format", "?"),
              "' is not supported (expected '", kPackedFormat, "')");
  size_t payload_start = header_start + header_length;
  payload_start = (payload_start + kAlign - 1) / kAlign * kAlign;
  TORCH_CHECK(payload_start <= body, where, ": truncated after the header");
  const uint8_t* payload = p + payload_start;
  const size_t payload_size = body - payload_start;

  train::Checkpoint ckpt;
  try {
    ckpt.arch = header.at("arch").get<std::string>();
    ckpt.input_shape = util::json_int_list(header.at("input_shape"), where + ": input_shape");
    ckpt.num_classes = util::json_int(header.at("num_classes"), where + ": num_classes");
    ckpt.quantization = header.at("quantization").dump();
    ckpt.config = header.at("config").get<std::string>();
    for (const auto& t : header.at("tensors")) {
      const std::string tname = t.at("name").get<std::string>();
      const std::string tw = where + ": tensor '" + tname + "'";
      const auto shape = util::json_int_list(t.at("shape"), tw + ": shape");
      int64_t numel = 1;
      for (int64_t d : shape) {
        TORCH_CHECK(d >= 0 && d < (int64_t(1) << 32) && (d == 0 || numel <= (int64_t(1) << 40) / std::max<int64_t>(d, 1)),
                    tw, ": bad shape");
        numel *= d;
      }
      const int64_t offset_signed = util::json_int(t.at("offset"), tw + ": offset");
      const int64_t size_signed = util::json_int(t.at("bytes"), tw + ": bytes");
      TORCH_CHECK(offset_signed >= 0 && size_signed >= 0, tw, ": negative offset or size");
      const auto offset = static_cast<uint64_t>(offset_signed);
      const auto size = static_cast<uint64_t>(size_signed);
      TORCH_CHECK(offset <= payload_size && size <= payload_size - offset, tw, ": its bytes lie outside the file");
      const std::string dtype = t.at("dtype").get<std::string>();
      if (dtype == "packed") {
        const int64_t bits = util::json_int(t.at("bits"), tw + ": bits");
        const int64_t qn = util::json_int(t.at("qn"), tw + ": qn");
        TORCH_CHECK(bits >= 2 && bits <= 8, tw, ": bits ", bits, " is not in 2..8");
        TORCH_CHECK(qn <= 0 && qn >= -(int64_t(1) << (bits - 1)), tw, ": qn ", qn, " does not fit ", bits, " bits");
        TORCH_CHECK(static_cast<uint64_t>((numel * bits + 7) / 8) == size, tw, ": ", size, " bytes cannot hold ",
                    numel, " values of ", bits, " bits");
        const auto scale_json = t.at("scale").get<std::vector<double>>();
        TORCH_CHECK(scale_json.size() == 1 || (!shape.empty() && static_cast<int64_t>(scale_json.size()) == shape[0]),
                    tw, ": needs one scale or one per output channel, got ", scale_json.size());
        std::vector<float> scale;
        for (double s : scale_json) {
          TORCH_CHECK(std::isfinite(s) && s > 0 && s < 1e30, tw, ": scale ", s, " is not a positive step");
          scale.push_back(static_cast<float>(s));
        }
        torch::Tensor q = unpack_bits(payload + offset, numel, bits, qn).to(torch::kFloat32).reshape(shape);
        torch::Tensor s = torch::tensor(scale);
        if (scale.size() > 1) {
          std::vector<int64_t> bshape(shape.size(), 1);
          bshape[0] = shape[0];
          s = s.reshape(bshape);
        } else {
          s = s.reshape({});
        }
        ckpt.model[tname] = q * s;
      } else {
        const torch::ScalarType st = dtype_of(dtype, tw);
        const int64_t element = static_cast<int64_t>(c10::elementSize(st));
        TORCH_CHECK(static_cast<uint64_t>(numel * element) == size, tw, ": ", size, " bytes for ", numel,
                    " elements of ", dtype);
        torch::Tensor v = torch::empty(shape, st);
        if (size > 0) std::memcpy(v.data_ptr(), payload + offset, size);
        ckpt.model[tname] = v;
      }
    }
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, where, ": malformed header (", e.what(), ")");
  }
  TORCH_CHECK(ckpt.input_shape.size() == 3, where, ": input_shape must be C,H,W");
  return ckpt;
}

train::Checkpoint read_packed(const std::string& path) {
  train::Checkpoint ckpt = parse_packed(util::read_file(path), path);
  ckpt.path = path;
  return ckpt;
}

bool is_packed_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[sizeof(kMagic)] = {};
  in.read(head, sizeof(head));
  return in.gcount() == sizeof(head) && std::memcmp(head, kMagic, sizeof(kMagic)) == 0;
}

}  // namespace limpq::deploy
