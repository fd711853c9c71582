// The ONNX op converters and their registry.
//
// A converter runs once per node at import: it reads the node's attributes
// and its constant inputs through the ImportContext, creates limpq layers
// where the op has weights (Conv -> QuantConv2d, Gemm / MatMul ->
// QuantLinear, BatchNormalization -> SwitchableBatchNorm2d), and returns the
// kernel that computes the node's outputs from its inputs at every forward
// pass. Adding an op is one converter and one entry in op_registry().
//
//   Kernel convert_relu(ImportContext& ctx) {
//     return [](const Values& in, const RunState&) { return Values{torch::relu(in.at(0))}; };
//   }
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "limpq/nn/batch_norm.h"
#include "limpq/nn/quant_conv.h"
#include "graph.h"

namespace limpq::models::onnx_import {

using Values = std::vector<torch::Tensor>;

// What a kernel may ask of the forward pass it runs in.
struct RunState {
  bool training = false;
  // The graph input's batch size at export when the file fixes it, else -1;
  // `batch` is this pass's (see convert_reshape).
  int64_t export_batch = -1;
  int64_t batch = 0;
};

// Computes a node's outputs (one tensor per node output; an output the graph
// never reads may be left undefined) from its inputs (undefined where an
// optional input is omitted).
using Kernel = std::function<Values(const Values& inputs, const RunState& state)>;

// The importer's side of a converter: the node, its constant inputs and
// layer creation. Every attribute read is recorded; one the converter never
// read is refused after it returns (ImportContext::check_attributes_used).
class ImportContext {
 public:
  // Creates (and registers) a layer under the module path `name`;
  // `stored_transposed` as for add_linear.
  using AddLayer =
      std::function<void(const std::string& name, std::shared_ptr<torch::nn::Module>, bool stored_transposed)>;

  ImportContext(const OnnxNode& node, int64_t opset, std::string layer_name,
                std::function<std::optional<torch::Tensor>(const std::string&)> constant, AddLayer add_layer);

  const OnnxNode& node() const { return node_; }
  int64_t opset() const { return opset_; }
  size_t num_inputs() const { return node_.inputs.size(); }
  bool has_input(size_t i) const { return i < node_.inputs.size() && !node_.inputs[i].empty(); }

  // Attributes, with a default when absent; a present attribute of another
  // type is refused.
  bool has_attribute(const std::string& name) const { return node_.attributes.count(name) > 0; }
  int64_t attr_int(const std::string& name, int64_t fallback);
  double attr_float(const std::string& name, double fallback);
  std::string attr_string(const std::string& name, const std::string& fallback);
  std::vector<int64_t> attr_ints(const std::string& name, std::vector<int64_t> fallback);
  torch::Tensor attr_tensor(const std::string& name);

  // The value of input `i` when it is known at import (an initializer, a
  // Constant or an expression of them), else nullopt.
  std::optional<torch::Tensor> constant_input(size_t i) const;
  // Input `i` as integers; it must be known at import.
  std::vector<int64_t> constant_ints(size_t i, const std::string& what) const;
  // Input `i` as a layer's parameter: known at import, and not passed to
  // the kernel (undefined in its inputs), so the graph keeps no copy of it.
  torch::Tensor parameter_input(size_t i, const std::string& what);
  const std::set<size_t>& parameter_inputs() const { return parameters_; }

  // The module path of the layer a weighted node becomes (e.g. "layer1.0.conv1").
  const std::string& layer_name() const { return layer_name_; }
  nn::QuantConv2d add_conv(const nn::QuantConv2dOptions& options, const torch::Tensor& weight,
                           const torch::Tensor& bias);
  // `weight` is out x in; `stored_transposed`: the file holds it in x out
  // (Gemm with transB = 0, MatMul), as the state_dict written back must.
  nn::QuantLinear add_linear(const torch::Tensor& weight, const torch::Tensor& bias, bool stored_transposed);
  nn::SwitchableBatchNorm2d add_batch_norm(const nn::SwitchableBatchNorm2dOptions& options, const torch::Tensor& weight,
                                           const torch::Tensor& bias, const torch::Tensor& mean,
                                           const torch::Tensor& var);

  // Refuses the node: "node 'x' (Op, opset N): <what>".
  [[noreturn]] void refuse(const std::string& what) const;
  void check(bool condition, const std::string& what) const {
    if (!condition) refuse(what);
  }
  // Refuses any attribute the converter did not read.
  void check_attributes_used() const;

 private:
  const OnnxAttribute* attribute(const std::string& name, const char* type);

  const OnnxNode& node_;
  int64_t opset_;
  std::string layer_name_;
  std::function<std::optional<torch::Tensor>(const std::string&)> constant_;
  AddLayer add_layer_;
  std::set<std::string> used_;
  std::set<size_t> parameters_;
};

using Converter = std::function<Kernel(ImportContext&)>;

struct OpEntry {
  std::string op_type;
  int64_t since_version;  // the ONNX operator version this converter implements
  Converter convert;
  // Ops with weights become layers; the others are computed at import when
  // every input is a constant.
  bool has_weights = false;
};

// Every op limpq imports, grouped by kind (ops_layers.cpp, ops_math.cpp,
// ops_tensor.cpp, ops_pool.cpp).
const std::vector<OpEntry>& op_registry();
// The converter for `op_type` at `opset`: the entry with the largest
// since_version not above it; nullptr when there is none.
const OpEntry* find_op(const std::string& op_type, int64_t opset);

void add_layer_ops(std::vector<OpEntry>& registry);
void add_math_ops(std::vector<OpEntry>& registry);
void add_tensor_ops(std::vector<OpEntry>& registry);
void add_pool_ops(std::vector<OpEntry>& registry);

// A tensor of shapes, axes or indices as integers (on the CPU).
std::vector<int64_t> to_ints(const torch::Tensor& t);

// An axis of a `rank`-d tensor, negative ones counted from the end.
int64_t normalize_axis(int64_t axis, int64_t rank);

}  // namespace limpq::models::onnx_import
