#include "limpq/train/checkpoint.h"

#include <c10/util/Exception.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "limpq/util/atomic_file.h"
#include "limpq/util/checksum.h"
#include "limpq/util/text.h"

namespace limpq::train {
namespace {

using Dict = c10::impl::GenericDict;

torch::Tensor bytes_to_tensor(const std::string& bytes) {
  auto t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return t;
}

std::string tensor_to_bytes(const torch::Tensor& t) {
  auto c = t.contiguous().to(torch::kCPU);
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), c.numel());
}

const c10::IValue& field(const Dict& dict, const std::string& name, const std::string& path) {
  auto it = dict.find(c10::IValue(name));
  TORCH_CHECK(it != dict.end(), "checkpoint '", path, "': missing field '", name, "'");
  return it->value();
}

}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  Dict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("format", std::string(kCheckpointFormat));
  dict.insert("arch", ckpt.arch);
  if (!ckpt.onnx.empty()) {
    dict.insert("onnx", ckpt.onnx);
    dict.insert("onnx_checksum", ckpt.onnx_checksum);
  }
  dict.insert("input_shape", c10::List<int64_t>(ckpt.input_shape));
  dict.insert("num_classes", ckpt.num_classes);
  dict.insert("model", models::state_dict_to_ivalue(ckpt.model));
  dict.insert("optimizer", bytes_to_tensor(ckpt.optimizer));
  dict.insert("epoch", ckpt.epoch);
  dict.insert("batch", ckpt.batch);
  dict.insert("step", ckpt.step);
  dict.insert("rng_state", ckpt.rng_state.defined() ? ckpt.rng_state.to(torch::kCPU) : torch::empty({0}, torch::kUInt8));
  dict.insert("config", ckpt.config);
  dict.insert("metrics", ckpt.metrics);
  dict.insert("quantization", ckpt.quantization);
  dict.insert("progress", ckpt.progress);
  dict.insert("checksum", util::ivalue_checksum(dict));
  const std::vector<char> bytes = torch::pickle_save(dict);
  util::write_file_atomic(path, std::string_view(bytes.data(), bytes.size()));
}

Checkpoint load_checkpoint(const std::string& path) {
  const std::string bytes = util::read_file(path);
  c10::IValue value;
  try {
    value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "checkpoint '", path, "': unreadable, truncated or corrupt (", util::error_message(e), ")");
  }
  TORCH_CHECK(value.isGenericDict(), "checkpoint '", path, "': not a limpq checkpoint (top level is ",
              value.tagKind(), ")");
  const Dict dict = value.toGenericDict();
  auto format = dict.find(c10::IValue(std::string("format")));
  TORCH_CHECK(format != dict.end(), "checkpoint '", path,
              "': not a limpq checkpoint (no 'format' field; a plain state_dict goes to model.weights)");
  const std::string version = format->value().isString() ? format->value().toStringRef() : "?";
  TORCH_CHECK(version == kCheckpointFormat || version == kCheckpointFormatV1, "checkpoint '", path, "': format '",
              version, "' is not supported (expected '", kCheckpointFormat, "'; written by another limpq version?)");
  const bool v1 = version == kCheckpointFormatV1;
  if (!v1) {
    auto stored = dict.find(c10::IValue(std::string("checksum")));
    TORCH_CHECK(stored != dict.end() && stored->value().isString(), "checkpoint '", path,
                "': no checksum (the file is damaged)");
    const std::string actual = util::ivalue_checksum(value);
    TORCH_CHECK(stored->value().toStringRef() == actual, "checkpoint '", path, "': checksum mismatch (stored ",
                stored->value().toStringRef(), ", content gives ", actual,
                "): the file is corrupt; restore it from a copy or train again");
  }
  Checkpoint ckpt;
  ckpt.path = path;
  ckpt.arch = field(dict, "arch", path).toStringRef();
  if (dict.contains(c10::IValue(std::string("onnx")))) {
    ckpt.onnx = field(dict, "onnx", path).toStringRef();
    ckpt.onnx_checksum = field(dict, "onnx_checksum", path).toStringRef();
  }
  ckpt.input_shape = field(dict, "input_shape", path).toIntVector();
  ckpt.num_classes = field(dict, "num_classes", path).toInt();
  ckpt.model = models::state_dict_from_ivalue(field(dict, "model", path), path);
  ckpt.optimizer = tensor_to_bytes(field(dict, "optimizer", path).toTensor());
  ckpt.epoch = field(dict, "epoch", path).toInt();
  ckpt.step = field(dict, "step", path).toInt();
  if (!v1) {
    ckpt.batch = field(dict, "batch", path).toInt();
    ckpt.progress = field(dict, "progress", path).toStringRef();
  }
  ckpt.rng_state = field(dict, "rng_state", path).toTensor();
  ckpt.config = field(dict, "config", path).toStringRef();
  ckpt.metrics = field(dict, "metrics", path).toStringRef();
  // The first /1 files (full-precision training only) had no quantization record.
  auto quantization = dict.find(c10::IValue(std::string("quantization")));
  if (v1 && quantization == dict.end()) return ckpt;
  ckpt.quantization = field(dict, "quantization", path).toStringRef();
  return ckpt;
}

}  // namespace limpq::train
