// The cost table of a network (LIMPQ.md section 5): every quantizable
// layer's MACs and parameters, traced from one forward pass at the input
// resolution, their totals, and the BitOps and weight size of full precision
// and of each uniform precision. `limpq cost` prints it.
//
//   auto table = cost_table(ModelOptions().arch("resnet20"), CostOptions().input_shape({1, 28, 28}));
//   table.macs;                       // MACs of the quantizable layers
//   table.uniform.at(3).bitops;       // W3A3, fixed layers at 8 bits
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "limpq/models/model.h"
#include "limpq/models/quantized.h"
#include "limpq/util/option_groups.h"

namespace limpq::models {

struct CostOptions {
  // C, H, W of one input (an ONNX network: its own).
  TORCH_ARG(std::vector<int64_t>, input_shape) = std::vector<int64_t>{1, 28, 28};
  // Classes of the classifier (an ONNX network: its own).
  TORCH_ARG(int64_t, num_classes) = 10;
  // Layers kept out of the search; empty: the first conv and the last layer.
  TORCH_ARG(std::vector<std::string>, fixed_layers) = {};
  // Bits of the fixed layers in the uniform figures.
  TORCH_ARG(int64_t, fixed_bits) = 8;

 public:
  template <typename V>
  void visit(V&& v) {
    v("input_shape", input_shape_, "C H W of one input, e.g. 3,224,224 (an ONNX network: its own)");
    v("num_classes", num_classes_, "classes of the classifier (an ONNX network: its own)");
    util::visit_fixed_layers(v, fixed_layers_);
    util::visit_fixed_bits(v, fixed_bits_);
  }
};

struct CostTable {
  std::string model;                // the arch, or the ONNX file
  std::vector<int64_t> input_shape;  // C, H, W
  int64_t fixed_bits = 8;
  std::vector<LayerInfo> layers;
  int64_t macs = 0;    // over the quantizable layers
  int64_t params = 0;  // weights of the quantizable layers, biases not counted
  PolicyCost full_precision;  // every layer at 32/32
  // Searchable layers at bits/bits, fixed layers at fixed_bits; by bits,
  // 8, 6, 5, 4, 3 and 2.
  std::map<int64_t, PolicyCost> uniform;

  // {model, input_shape, macs, params, fp_bitops, fp_size_bytes,
  // uniform: {"W8A8": {bitops, size_bytes}, ...}}, and `layers` when asked.
  nlohmann::ordered_json to_json(bool with_layers) const;

  // What `limpq cost` prints: a row per layer, then the totals and the
  // uniform precisions.
  std::string to_text() const;
};

// The table of the network `model` names (a built-in arch, or model.onnx,
// whose file fixes the input and the classes).
CostTable cost_table(const ModelOptions& model, const CostOptions& options);

}  // namespace limpq::models
