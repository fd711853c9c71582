#include "limpq/deploy/pytorch.h"

#include <c10/util/Exception.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "limpq/models/onnx_model.h"
#include "limpq/models/state_dict.h"
#include "limpq/nn/quant_conv.h"
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

template <typename Layer>
void add_steps(models::StateDict& sd, const std::string& name, const Layer& layer, int64_t& quantized) {
  if (!layer.quantized()) return;
  torch::NoGradGuard no_grad;
  const auto& w = *layer.weight_quantizer;
  const auto& a = *layer.input_quantizer;
  if (!w.full_precision()) {
    sd[name + ".weight_step"] = w.effective_step(w.bits()).detach().to(torch::kCPU).clone();
    sd[name + ".weight_bits"] = torch::tensor(w.bits(), torch::kInt64);
  }
  if (!a.full_precision()) {
    sd[name + ".input_step"] = a.effective_step(a.bits()).detach().to(torch::kCPU).clone();
    sd[name + ".act_bits"] = torch::tensor(a.bits(), torch::kInt64);
    // The input's integer range: [-2^(b-1), 2^(b-1) - 1] when signed, [0, 2^b - 1] when not.
    sd[name + ".input_signed"] = torch::tensor(a.options.is_signed());
  }
  ++quantized;
}

}  // namespace

StateDictSummary write_pytorch_state_dict(const std::string& path, const train::Checkpoint& checkpoint) {
  train::LoadedModel loaded = train::load_model(checkpoint);
  const auto* imported = dynamic_cast<const models::OnnxModelImpl*>(loaded.model.get());
  models::StateDict sd;
  for (const auto& [name, tensor] : models::state_dict(*loaded.model)) {
    if (!internal(name)) sd[name] = tensor;
  }
  StateDictSummary summary;
  for (const auto& item : loaded.model->named_modules("", /*include_self=*/false)) {
    const std::string& name = item.key();
    if (const auto* conv = item.value()->as<nn::QuantConv2dImpl>()) {
      add_steps(sd, name, *conv, summary.quantized_layers);
    } else if (const auto* linear = item.value()->as<nn::QuantLinearImpl>()) {
      add_steps(sd, name, *linear, summary.quantized_layers);
      // MatMul and Gemm(transB = 0) hold the weight as in x out in the file.
      if (imported && imported->transposed_weights().count(name)) {
        sd[name + ".weight"] = sd[name + ".weight"].t().contiguous();
      }
    }
  }
  const std::vector<char> bytes = torch::pickle_save(models::state_dict_to_ivalue(sd));
  util::write_file_atomic(path, std::string_view(bytes.data(), bytes.size()));
  summary.tensors = static_cast<int64_t>(sd.size());
  summary.file_bytes = static_cast<int64_t>(bytes.size());
  return summary;
}

}  // namespace limpq::deploy
