// The quantizable layer: one interface for every kind of layer limpq
// quantizes, so that tracing, the cost model, indicator training,
// fine-tuning, the search and the exports handle a kind without knowing it.
//
// A quantizable layer computes a product of two operands and quantizes both
// with LSQ (LIMPQ.md section 2). Operand 0 is always an activation, the
// layer's input; operand 1 is the layer's weight (QuantConv2d, QuantLinear)
// or a second activation (QuantMatMul: attention's scores Q K^T and its
// context softmax(.) V). A policy's weight bits apply to operand 1 and its
// activation bits to operand 0; the layer's BitOps are its MACs times both.
//
//   for (const auto& m : model->modules()) {
//     if (auto* layer = nn::as_quant_layer(*m)) layer->set_bits(4, 4);
//   }
//
// A new kind is one class: a torch module that derives from QuantLayer,
// quantizes its operands with the two quantizers in forward(), records its
// call with the LayerTracer, and says its kind, whether operand 1 is a
// weight, and its cost from a traced call.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <vector>

#include "limpq/nn/trace.h"
#include "limpq/quant/lsq_quantizer.h"

namespace limpq::nn {

// What the cost model (LIMPQ.md section 5) needs of one call of a layer, for
// one image.

// Elements of `shape` per image of a pass over `batch` images (attention
// folds its heads into the first dimension, so that is not always the batch).
int64_t per_image(const std::vector<int64_t>& shape, int64_t batch);
// `shape` for one image: the first dimension that holds the batch divided by
// it (for display: attention may put its tokens first).
std::vector<int64_t> one_image(std::vector<int64_t> shape, int64_t batch);

struct LayerShape {
  int64_t in_channels = 0;   // features reduced per output element (conv: per group)
  int64_t out_channels = 0;  // features produced
  int64_t groups = 1;
  std::array<int64_t, 2> kernel_size{1, 1}, stride{1, 1};  // height, width
  std::vector<int64_t> output_shape;                       // batch 1
  // Multiply-accumulates: MACs per output element times output elements
  // (conv: C_in / G * k_h * k_w per element; linear: in; matmul: the reduced
  // dimension), so a linear layer over tokens counts every token.
  int64_t macs = 0;
  int64_t params = 0;  // weight elements (0 for a product of two activations)
};

class QuantLayer {
 public:
  virtual ~QuantLayer() = default;

  // "conv", "linear" or "matmul": the kind's name in cost tables and files.
  virtual const char* kind() const = 0;
  // Whether operand 1 is a trained weight; else a second activation.
  virtual bool has_weight() const = 0;
  // The layer's weight (undefined without one).
  virtual torch::Tensor weight_tensor() const { return {}; }
  // Its cost per image from one traced call of a pass over `batch` images.
  virtual LayerShape shape(const TraceEvent& call, int64_t batch) const = 0;

  // Registers an LSQ quantizer for each operand, the layer starting at full
  // precision. `other` quantizes operand 1: a weight quantizer (its steps
  // start from the current weight) or, for a product of activations, an
  // activation quantizer.
  void attach_quantizers(const quant::LsqQuantizerOptions& other, const quant::LsqQuantizerOptions& input);
  bool quantized() const { return !weight_quantizer.is_empty(); }
  // Bits of operand 1 and of operand 0; 32 is full precision.
  void set_bits(int64_t weight_bits, int64_t input_bits);
  int64_t weight_bits() const { return quantized() ? weight_quantizer->bits() : quant::kFullPrecisionBits; }
  int64_t input_bits() const { return quantized() ? input_quantizer->bits() : quant::kFullPrecisionBits; }

  quant::LsqQuantizer weight_quantizer{nullptr};  // operand 1
  quant::LsqQuantizer input_quantizer{nullptr};   // operand 0

 protected:
  // The module the quantizers are registered in (the layer itself).
  virtual torch::nn::Module& as_module() = 0;
};

// The module as a quantizable layer, or null.
QuantLayer* as_quant_layer(torch::nn::Module& module);
const QuantLayer* as_quant_layer(const torch::nn::Module& module);

}  // namespace limpq::nn
