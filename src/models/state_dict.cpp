#include "limpq/models/state_dict.h"

#include <c10/util/Exception.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <sstream>

#include "limpq/util/atomic_file.h"
#include "limpq/util/checksum.h"

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
    auto list = [&](const char* what, const std::vector<std::string>& names) {
      if (names.empty()) return;
      ss << "\n  " << what << " (" << names.size() << "):";
      for (const auto& n : names) ss << "\n    " << n;
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
};

WeightsFile read_weights_file(const std::string& path) {
  const std::string bytes = util::read_file(path);
  c10::IValue value;
  try {
    value = torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "'", path, "': not a readable PyTorch file (", e.what_without_backtrace(),
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
      auto arch = dict.find(c10::IValue(std::string("arch")));
      return {state_dict_from_ivalue(model->value(), path),
              arch != dict.end() && arch->value().isString() ? arch->value().toStringRef() : std::string()};
    }
  }
  return {state_dict_from_ivalue(value, path), ""};
}

}  // namespace

StateDict read_state_dict_file(const std::string& path) { return read_weights_file(path).weights; }

StateDict read_weights_for(const std::string& path, const std::string& arch) {
  TORCH_CHECK(util::file_exists(path), "model: the initial weights '", path,
              "' do not exist (they come from model.weights in the config, or --weights, which overrides it); "
              "train the full-precision network there first, or point --weights at a checkpoint");
  WeightsFile file = read_weights_file(path);
  TORCH_CHECK(file.arch.empty() || file.arch == arch, "'", path, "' is a limpq checkpoint of a ", file.arch,
              ", but the model to load it into is a ", arch, ": pass --arch ", file.arch, " (model.arch in a config)");
  return std::move(file.weights);
}

}  // namespace limpq::models
