#include "limpq/models/state_dict.h"

#include <c10/util/Exception.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <sstream>

#include "limpq/models/model.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/checksum.h"
#include "limpq/util/text.h"

namespace limpq::models {

StateDict state_dict(const torch::nn::Module& module) {
  StateDict sd;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) sd[p.key()] = p.value().detach();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) sd[b.key()] = b.value().detach();
  return sd;
}

void load_state_dict(torch::nn::Module& module, const StateDict& sd, const std::string& source) {
  std::map<std::string, torch::Tensor> targets;
  for (auto& p : module.named_parameters(true)) targets[p.key()] = p.value();
  for (auto& b : module.named_buffers(true)) targets[b.key()] = b.value();

  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [name, target] : targets) {
    auto it = sd.find(name);
    if (it == sd.end()) {
      missing.push_back(name);
    } else if (it->second.sizes() != target.sizes()) {
      std::ostringstream ss;
      ss << name << " (file " << it->second.sizes() << ", model " << target.sizes() << ")";
      mismatched.push_back(ss.str());
    }
  }
  for (const auto& [name, tensor] : sd) {
    if (targets.count(name) == 0) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::ostringstream ss;
    ss << "'" << source << "' does not match the model";
    // A few names of each kind: a file of another network would list hundreds.
    constexpr size_t kShown = 4;
    auto list = [&](const char* what, const std::vector<std::string>& names) {
      if (names.empty()) return;
      ss << "\n  " << what << " (" << names.size() << "):";
      for (size_t i = 0; i < names.size() && i < kShown; ++i) ss << "\n    " << names[i];
      if (names.size() > kShown) ss << "\n    ... and " << names.size() - kShown << " more";
    };
    list("missing from the file", missing);
    list("in the file but not in the model", unexpected);
    list("shape mismatch", mismatched);
    TORCH_CHECK(false, ss.str());
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    const torch::Tensor& src = sd.at(name);
    TORCH_CHECK(src.scalar_type() == target.scalar_type() || (src.is_floating_point() && target.is_floating_point()),
                "'", source, "': ", name, " has dtype ", src.scalar_type(), ", the model expects ",
                target.scalar_type());
    target.copy_(src);
  }
}

c10::IValue state_dict_to_ivalue(const StateDict& sd) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [name, tensor] : sd) dict.insert(name, tensor.detach().to(torch::kCPU).contiguous());
  return dict;
}

StateDict state_dict_from_ivalue(const c10::IValue& value, const std::string& source) {
  TORCH_CHECK(value.isGenericDict(), "'", source, "': expected a dict of tensors, found ", value.tagKind(),
              " (save state_dicts from Python with torch.save(dict(model.state_dict()), path))");
  StateDict sd;
  for (const auto& item : value.toGenericDict()) {
    TORCH_CHECK(item.key().isString(), "'", source, "': a state_dict key is not a string");
    TORCH_CHECK(item.value().isTensor(), "'", source, "': entry '", item.key().toStringRef(),
                "' is not a tensor");
    sd[item.key().toStringRef()] = item.value().toTensor();
  }
  return sd;
}

namespace {

// The weights of a file and, for a limpq checkpoint, its architecture.
struct WeightsFile {
  StateDict weights;
  std::string arch;  // "" for a plain state dict
  std::string onnx, onnx_checksum;  // a checkpoint of an imported network
};

std::string string_field(const c10::impl::GenericDict& dict, const std::string& name) {
  auto it = dict.find(c10::IValue(name));
  return it != dict.end() && it->value().isString() ? it->value().toStringRef() : std::string();
}

WeightsFile read_weights_file(const std::string& path) {
  const std::string bytes = util::read_file(path);
  c10::IValue value;
  try {
    value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "'", path, "': not a readable PyTorch file (", util::error_message(e),
                "). Save weights with torch.save(dict(model.state_dict()), path)");
  }
  if (value.isGenericDict()) {
    auto dict = value.toGenericDict();
    auto format = dict.find(c10::IValue(std::string("format")));
    if (format != dict.end()) {
      // A limpq checkpoint: verify its checksum when it carries one.
      auto stored = dict.find(c10::IValue(std::string("checksum")));
      if (stored != dict.end() && stored->value().isString()) {
        const std::string actual = util::ivalue_checksum(value);
        TORCH_CHECK(stored->value().toStringRef() == actual, "'", path, "': checksum mismatch (stored ",
                    stored->value().toStringRef(), ", content gives ", actual, "): the checkpoint is corrupt");
      }
      auto model = dict.find(c10::IValue(std::string("model")));
      TORCH_CHECK(model != dict.end(), "'", path, "': limpq checkpoint without a 'model' entry");
      return {state_dict_from_ivalue(model->value(), path), string_field(dict, "arch"), string_field(dict, "onnx"),
              string_field(dict, "onnx_checksum")};
    }
  }
  return {state_dict_from_ivalue(value, path)};
}

}  // namespace

StateDict read_state_dict_file(const std::string& path) { return read_weights_file(path).weights; }

StateDict read_weights_for(const std::string& path, const WeightsTarget& target) {
  TORCH_CHECK(util::file_exists(path), "model: the initial weights '", path,
              "' do not exist (they come from model.weights in the config, or --weights, which overrides it); "
              "train the full-precision network there first, or point --weights at a checkpoint");
  WeightsFile file = read_weights_file(path);
  if (file.arch == kOnnxArch && target.arch != kOnnxArch) {
    TORCH_CHECK(false, "'", path, "' is a limpq checkpoint of the ONNX network '", file.onnx,
                "', but the model to load it into is a ", target.arch, ": pass --onnx ", file.onnx,
                " (model.onnx in a config)");
  }
  TORCH_CHECK(file.arch.empty() || file.arch == target.arch, "'", path, "' is a limpq checkpoint of a ", file.arch,
              ", but the model to load it into is ", target.arch == kOnnxArch ? "the ONNX network '" + target.onnx + "'"
                                                                               : "a " + target.arch,
              ": pass --arch ", file.arch, " (model.arch in a config)");
  if (file.arch == kOnnxArch && file.onnx_checksum != target.onnx_checksum) {
    const bool same_path = file.onnx == target.onnx;
    TORCH_CHECK(false, "'", path, "' was trained from the ONNX file '", file.onnx, "' (checksum ", file.onnx_checksum,
                "), but '", target.onnx, "' has checksum ", target.onnx_checksum,
                same_path ? ": the file changed since; restore the original file"
                          : ": give --onnx " + file.onnx + " (model.onnx in a config), or weights trained from '" +
                                target.onnx + "'");
  }
  return std::move(file.weights);
}

}  // namespace limpq::models
