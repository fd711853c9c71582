// The ONNX op converters and their registry.
//
// A converter runs once per node at import: it reads the node's attributes
// and its constant inputs through the ImportContext, creates a limpq layer
// where the op is one (Conv -> QuantConv2d, Gemm and MatMul by a weight ->
// QuantLinear, MatMul of two activations -> QuantMatMul, BatchNormalization
// -> SwitchableBatchNorm2d), and returns the kernel that computes the node's
// outputs from its inputs at every forward pass. Adding an op is one
// converter and one entry in op_registry(), with the opsets it is valid for
// and the number of inputs it reads.
//
//   Kernel convert_relu(ImportContext& ctx) {
//     return [](const Values& in, const RunState&) { return Values{torch::relu(in.at(0))}; };
//   }
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

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

// A tensor of an imported layer, read from an input of the layer's node.
struct InputBinding {
  size_t input = 0;         // the node's input
  std::string tensor;       // the layer's parameter or buffer: "weight", "bias", "running_mean", ...
  bool transposed = false;  // the input holds the 2-d tensor transposed (a weight stored in x out)
};

// The importer's side of a converter: the node, its constant inputs and
// layer creation. Every attribute read is recorded; one the converter never
// read is refused after it returns (ImportContext::check_attributes_used).
class ImportContext {
 public:
  // Registers a layer made for the node with the tensors it read from the
  // node's inputs; the importer names it (its module path) and owns it.
  using AddLayer = std::function<void(std::shared_ptr<torch::nn::Module>, const std::vector<InputBinding>&)>;

  ImportContext(const OnnxNode& node, int64_t opset,
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
  // Constant or an expression of them), else nullopt. A parameter that
  // trains outside any layer (a class token, a LayerNorm's scale) is not
  // known at import: it is read at every forward pass.
  std::optional<torch::Tensor> constant_input(size_t i) const;
  // Input `i` as integers; it must be known at import.
  std::vector<int64_t> constant_ints(size_t i, const std::string& what) const;
  // Input `i` as a layer's parameter: known at import, and not passed to
  // the kernel (undefined in its inputs), so the graph keeps no copy of it.
  torch::Tensor parameter_input(size_t i, const std::string& what);
  const std::set<size_t>& parameter_inputs() const { return parameters_; }

  // Registers `layer` and copies each bound input into the layer's tensor of
  // that name (transposed where the input holds it so); those inputs become
  // parameter inputs. A shape that does not fit is refused.
  void add_layer(std::shared_ptr<torch::nn::Module> layer, const std::vector<InputBinding>& bindings);

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
  std::function<std::optional<torch::Tensor>(const std::string&)> constant_;
  AddLayer add_layer_;
  std::set<std::string> used_;
  std::set<size_t> parameters_;
};

using Converter = std::function<Kernel(ImportContext&)>;

// The last default-domain opset the importer reads.
inline constexpr int64_t kLastOpset = 18;
// An op with any number of inputs (Concat).
inline constexpr size_t kAnyNumber = std::numeric_limits<size_t>::max();

// One converter, valid for an op's versions from `since_version` to the
// opset `until_opset`, for nodes of up to `max_inputs` inputs (a node with
// more, such as an input a later opset added, is refused by name).
struct OpEntry {
  std::string op_type;
  int64_t since_version = 1;  // the ONNX operator version this converter implements
  int64_t until_opset = kLastOpset;
  size_t max_inputs = 1;
  Converter convert;
  // The inputs a layer made by this op owns (Conv's weight and bias, ...):
  // ops with them become layers, the others are computed at import when
  // every input is a constant. What these inputs are computed from is the
  // layer's (it trains as the layer's weight), not a parameter of its own.
  std::vector<size_t> parameter_inputs;

  OpEntry& until(int64_t opset) {
    until_opset = opset;
    return *this;
  }
  OpEntry& parameters(std::vector<size_t> inputs) {
    parameter_inputs = std::move(inputs);
    return *this;
  }
  bool makes_layers() const { return !parameter_inputs.empty(); }
};

inline OpEntry op(std::string type, int64_t since_version, size_t max_inputs, Converter convert) {
  OpEntry e;
  e.op_type = std::move(type);
  e.since_version = since_version;
  e.max_inputs = max_inputs;
  e.convert = std::move(convert);
  return e;
}

// Every op limpq imports, grouped by kind (ops_layers.cpp, ops_math.cpp,
// ops_activation.cpp, ops_norm.cpp, ops_tensor.cpp, ops_pool.cpp).
const std::vector<OpEntry>& op_registry();
// The converter for `op_type` at `opset`: the entry valid there (the
// largest since_version not above it whose until_opset is not below it);
// nullptr when there is none.
const OpEntry* find_op(const std::string& op_type, int64_t opset);

void add_layer_ops(std::vector<OpEntry>& registry);
void add_math_ops(std::vector<OpEntry>& registry);
void add_activation_ops(std::vector<OpEntry>& registry);
void add_norm_ops(std::vector<OpEntry>& registry);
void add_tensor_ops(std::vector<OpEntry>& registry);
void add_pool_ops(std::vector<OpEntry>& registry);

// A tensor of shapes, axes or indices as integers (on the CPU).
std::vector<int64_t> to_ints(const torch::Tensor& t);

// An axis of a `rank`-d tensor, negative ones counted from the end.
int64_t normalize_axis(int64_t axis, int64_t rank);

}  // namespace limpq::models::onnx_import
