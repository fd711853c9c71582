#include "limpq/deploy/pytorch.h"

#include <c10/util/Exception.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "limpq/models/onnx_model.h"
#include "limpq/models/state_dict.h"
#include "limpq/nn/quant_layer.h"
#include "limpq/train/evaluate.h"
#include "limpq/util/atomic_file.h"

namespace limpq::deploy {
namespace {

// limpq's own state, not the user's module: quantizer steps (written under
// the layer's name below) and the per-bit-width batch-norm branches of
// indicator training.
bool internal(const std::string& name) {
  for (const char* part : {".weight_quantizer.", ".input_quantizer.", ".branches."}) {
    if (name.find(part) != std::string::npos) return true;
  }
  return false;
}

torch::Tensor cpu(const torch::Tensor& t) { return t.detach().to(torch::kCPU).contiguous().clone(); }

// A quantizer's step, bits and sign under `prefix` (weight_, input_, other_).
void add_quantizer(models::StateDict& sd, const std::string& name, const std::string& side, const char* bits_name,
                   const quant::LsqQuantizerImpl& q, bool with_sign) {
  if (q.full_precision()) return;
  sd[name + "." + side + "_step"] = cpu(q.effective_step(q.bits()));
  sd[name + "." + bits_name] = torch::tensor(q.bits(), torch::kInt64);
  if (with_sign) sd[name + "." + side + "_signed"] = torch::tensor(q.options.is_signed());
}

// Each quantized layer's learned steps, bits and input signs beside its
// tensors; a product of two activations names its second operand "other".
int64_t add_steps(models::StateDict& sd, models::ModelImpl& model) {
  int64_t quantized = 0;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    const nn::QuantLayer* layer = nn::as_quant_layer(*item.value());
    if (layer == nullptr || !layer->quantized()) continue;
    torch::NoGradGuard no_grad;
    const std::string& name = item.key();
    if (layer->has_weight()) {
      add_quantizer(sd, name, "weight", "weight_bits", *layer->weight_quantizer, /*with_sign=*/false);
    } else {
      add_quantizer(sd, name, "other", "other_bits", *layer->weight_quantizer, /*with_sign=*/true);
    }
    add_quantizer(sd, name, "input", "act_bits", *layer->input_quantizer, /*with_sign=*/true);
    ++quantized;
  }
  return quantized;
}

// A built-in network: its parameters and buffers by module path.
models::StateDict builtin_state_dict(const models::ModelImpl& model) {
  models::StateDict sd;
  for (const auto& [name, tensor] : models::state_dict(model)) {
    if (!internal(name)) sd[name] = tensor;
  }
  return sd;
}

// An imported network: every tensor under the name and in the layout the
// file had it, which are the user's module's own (a layer's weight read
// through a transpose goes back to its initializer's layout), the file's
// other named initializers as they were, and a layer tensor that the file
// computed (a folded batch norm's weight) under its layer's path.
models::StateDict imported_state_dict(models::OnnxModelImpl& model) {
  models::StateDict sd;
  for (const auto& [name, value] : model.named_constants()) sd[name] = value;
  const auto parameters = model.named_parameters();
  for (const auto& [source, path] : model.parameters_by_source()) sd[source] = cpu(parameters[path]);
  auto modules = model.named_modules("", /*include_self=*/false);
  for (const auto& [node, layer] : model.layers()) {
    torch::nn::Module& module = *modules[layer.path];
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& p : module.named_parameters(/*recurse=*/false)) tensors[p.key()] = p.value();
    for (const auto& b : module.named_buffers(/*recurse=*/false)) tensors[b.key()] = b.value();
    for (const auto& t : layer.tensors) {
      const torch::Tensor value = cpu(tensors.at(t.tensor));
      const bool own_name = models::is_module_tensor_name(t.source);
      sd[own_name ? t.source : layer.path + "." + t.tensor] = own_name && t.source_transposed ? value.t().contiguous()
                                                                                            : value;
    }
  }
  return sd;
}

}  // namespace

StateDictSummary write_pytorch_state_dict(const std::string& path, const train::Checkpoint& checkpoint) {
  train::LoadedModel loaded = train::load_model(checkpoint);
  auto* imported = dynamic_cast<models::OnnxModelImpl*>(loaded.model.get());
  models::StateDict sd = imported ? imported_state_dict(*imported) : builtin_state_dict(*loaded.model);
  StateDictSummary summary;
  summary.quantized_layers = add_steps(sd, *loaded.model);
  const std::vector<char> bytes = torch::pickle_save(models::state_dict_to_ivalue(sd));
  util::write_file_atomic(path, std::string_view(bytes.data(), bytes.size()));
  summary.tensors = static_cast<int64_t>(sd.size());
  summary.file_bytes = static_cast<int64_t>(bytes.size());
  return summary;
}

}  // namespace limpq::deploy
