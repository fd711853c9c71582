#include "limpq/nn/quant_layer.h"

#include <c10/util/Exception.h>

namespace limpq::nn {

void QuantLayer::attach_quantizers(const quant::LsqQuantizerOptions& other, const quant::LsqQuantizerOptions& input) {
  const auto other_kind = has_weight() ? quant::QuantizerKind::kWeight : quant::QuantizerKind::kActivation;
  TORCH_CHECK(other.kind() == other_kind && input.kind() == quant::QuantizerKind::kActivation, "attach_quantizers: a ",
              kind(), " layer takes ", has_weight() ? "a weight quantizer" : "an activation quantizer",
              " for its second operand and an activation quantizer for its input");
  const torch::Tensor weight = weight_tensor();
  TORCH_CHECK(other.channels() == 0 || (weight.defined() && other.channels() == weight.size(0)),
              "attach_quantizers: per-channel steps need the ", weight.defined() ? weight.size(0) : 0,
              " output channels of the weight, got ", other.channels());
  torch::nn::Module& self = as_module();
  const torch::Device device = weight.defined()                ? weight.device()
                               : self.parameters().empty()     ? torch::Device(torch::kCPU)
                                                               : self.parameters().front().device();
  weight_quantizer = quant::LsqQuantizer(other);
  input_quantizer = quant::LsqQuantizer(input);
  weight_quantizer->to(device);
  input_quantizer->to(device);
  if (weight.defined()) weight_quantizer->init_from_weight(weight);
  if (self.named_children().contains("weight_quantizer")) {
    self.replace_module("weight_quantizer", weight_quantizer);
    self.replace_module("input_quantizer", input_quantizer);
  } else {
    self.register_module("weight_quantizer", weight_quantizer);
    self.register_module("input_quantizer", input_quantizer);
  }
}

void QuantLayer::set_bits(int64_t weight_bits, int64_t input_bits) {
  if (!quantized()) {
    TORCH_CHECK(weight_bits == quant::kFullPrecisionBits && input_bits == quant::kFullPrecisionBits, "a ", kind(),
                " layer without quantizers cannot be set to W", weight_bits, "A", input_bits);
    return;
  }
  weight_quantizer->set_bits(weight_bits);
  input_quantizer->set_bits(input_bits);
}

int64_t per_image(const std::vector<int64_t>& shape, int64_t batch) {
  TORCH_INTERNAL_ASSERT(batch > 0);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n / batch;
}

std::vector<int64_t> one_image(std::vector<int64_t> shape, int64_t batch) {
  TORCH_INTERNAL_ASSERT(batch > 0);
  // The batch is the first dimension that holds it: attention may put tokens
  // first ([tokens, batch, features]).
  for (auto& d : shape) {
    if (d % batch == 0) {
      d /= batch;
      break;
    }
  }
  return shape;
}

QuantLayer* as_quant_layer(torch::nn::Module& module) { return dynamic_cast<QuantLayer*>(&module); }

const QuantLayer* as_quant_layer(const torch::nn::Module& module) { return dynamic_cast<const QuantLayer*>(&module); }

}  // namespace limpq::nn
