// The product of two activations with both quantized: attention's scores
// Q K^T and its context softmax(Q K^T / sqrt(d)) V, as torch.matmul
// computes them (batched over the leading dimensions). It has no
// parameters; its two LSQ quantizers are activation quantizers, and a
// policy's weight bits apply to its second operand (quant_layer.h).
//
//   QuantMatMul scores;
//   scores->attach_quantizers(LsqQuantizerOptions({4}), LsqQuantizerOptions({4}));
//   scores->set_bits(4, 4);
//   auto s = scores(q, k_transposed);
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "limpq/nn/quant_layer.h"

namespace limpq::nn {

class QuantMatMulImpl : public torch::nn::Cloneable<QuantMatMulImpl>, public QuantLayer {
 public:
  QuantMatMulImpl() { reset(); }
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& b);
  void pretty_print(std::ostream& stream) const override;

  const char* kind() const override { return "matmul"; }
  bool has_weight() const override { return false; }
  LayerShape shape(const TraceEvent& call, int64_t batch) const override;

 protected:
  torch::nn::Module& as_module() override { return *this; }
};
TORCH_MODULE(QuantMatMul);

}  // namespace limpq::nn
