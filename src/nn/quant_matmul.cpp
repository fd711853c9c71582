#include "limpq/nn/quant_matmul.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

namespace limpq::nn {

torch::Tensor QuantMatMulImpl::forward(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.dim() >= 2 && b.dim() >= 2, "QuantMatMul: both operands must have at least 2 dimensions, got ",
              a.sizes(), " and ", b.sizes());
  LayerTracer* tracer = LayerTracer::active();
  const bool own = tracer && tracer->keeps_inputs();
  const torch::Tensor x = own ? a.view_as(a) : a;
  const torch::Tensor y = own ? b.view_as(b) : b;
  torch::Tensor out = quantized() ? torch::matmul(input_quantizer(x), weight_quantizer(y)) : torch::matmul(x, y);
  if (tracer) tracer->record(this, x, out, y);
  return out;
}

LayerShape QuantMatMulImpl::shape(const TraceEvent& call, int64_t batch) const {
  TORCH_INTERNAL_ASSERT(call.input_shape.size() >= 2 && !call.output_shape.empty());
  LayerShape s;
  s.in_channels = call.input_shape.back();
  s.out_channels = call.output_shape.back();
  s.output_shape = one_image(call.output_shape, batch);
  s.macs = per_image(call.output_shape, batch) * s.in_channels;
  return s;
}

void QuantMatMulImpl::pretty_print(std::ostream& stream) const { stream << "limpq::nn::QuantMatMul()"; }

}  // namespace limpq::nn
