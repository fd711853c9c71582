// Quantized forms of limpq's networks, built by module path from one traced
// forward pass (no per-model tables).
//
// The trace gives the quantizable layers (nn::QuantLayer: convolutions,
// linear layers, products of two activations) in network order, the batch
// norm that follows each conv, whether each layer's operands can be negative
// (inputs after a ReLU or a Softmax are unsigned, others, such as the network
// input and MobileNetV2's linear bottlenecks, signed), and each layer's MACs
// and parameter count (LIMPQ.md section 5).
//
//   QuantModel qm(model, {1, 28, 28});                // analyses, changes nothing yet
//   qm.prepare_indicators({6, 5, 4, 3, 2});           // joint indicator training
//   qm.set_uniform(4);
//   ...
//   QuantModel ft(model2, {1, 28, 28});
//   ft.prepare_policy(read_policy("policy.json"));    // fine-tuning
#pragma once

#include <torch/arg.h>

#include <array>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "limpq/models/model.h"
#include "limpq/quant/policy.h"
#include "limpq/util/option_groups.h"

namespace limpq::models {

struct LayerInfo {
  std::string name;  // module path, e.g. "layer1.0.conv1"
  std::string kind = "conv";  // nn::QuantLayer::kind(): conv, linear or matmul
  std::string bn;    // the batch norm that follows it ("" if none)
  bool signed_input = true;
  // Operand 1: a weight (always signed), or a second activation whose sign
  // the trace saw.
  bool has_weight = true;
  bool signed_other = true;
  bool searchable = true;
  int64_t in_channels = 0, out_channels = 0, groups = 1;
  std::array<int64_t, 2> kernel_size{1, 1}, stride{1, 1};  // height, width
  std::vector<int64_t> output_shape;  // batch 1
  // Per image: MACs per output element times output elements (conv
  // C_in * C_out * k_h * k_w * H_out * W_out / G; linear in * out per token).
  int64_t macs = 0;
  int64_t params = 0;  // C_in * C_out * k_h * k_w / G (linear: in * out; matmul 0); biases not counted
};

struct QuantizeOptions {
  // Layers kept out of the search, by module path. Empty: the first conv and
  // the last layer (the classifier).
  TORCH_ARG(std::vector<std::string>, fixed_layers) = {};
  // Bits of the fixed layers in fine-tuning (weights and activations).
  TORCH_ARG(int64_t, fixed_bits) = 8;
  // One weight step per output channel in fine-tuning.
  TORCH_ARG(bool, per_channel) = false;
  // The fused fake-quant kernel (false: the composed-op reference).
  TORCH_ARG(bool, fused) = true;
  // The largest relative change of an LSQ step in one fine-tuning update
  // (0: unbounded); see quant::StepGuard.
  TORCH_ARG(double, max_step_change) = 0.05;

 public:
  template <typename V>
  void visit(V&& v) {
    util::visit_fixed_layers(v, fixed_layers_);
    util::visit_fixed_bits(v, fixed_bits_);
    v("per_channel", per_channel_, "per-channel weight steps when fine-tuning");
    v("fused", fused_, "fused fake-quant kernel (false: composed-op reference)");
    v("max_step_change", max_step_change_,
      "largest relative change of an LSQ step size in one fine-tuning update (0: unbounded)");
  }
};

// Traces `model` on one input of `input_shape` (C, H, W).
std::vector<LayerInfo> analyze_layers(ModelImpl& model, const std::vector<int64_t>& input_shape,
                                      const std::vector<std::string>& fixed_layers = {});

class QuantModel {
 public:
  QuantModel(Model model, std::vector<int64_t> input_shape, QuantizeOptions options = {});

  const Model& model() const { return model_; }
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  const std::vector<LayerInfo>& layers() const { return layers_; }
  const QuantizeOptions& options() const { return options_; }
  std::vector<std::string> searchable_names() const;
  std::vector<std::string> fixed_names() const;
  const LayerInfo& layer(const std::string& name) const;

  // Indicator training (LIMPQ.md section 4): searchable layers get one step
  // per candidate for weights and inputs (step clamp [1e-5, 1]) and their
  // batch norms become switchable; fixed layers stay at full precision.
  void prepare_indicators(const std::vector<int64_t>& candidates);
  // Fine-tuning (section 7): one step per quantizer at the policy's bits,
  // ordinary batch norm, fixed layers at their bits. Checks the policy first.
  void prepare_policy(const quant::Policy& policy, const std::string& source = "policy");

  // Sets one layer's bits (and its switchable batch norm's).
  void set_layer_bits(const std::string& name, int64_t weight_bits, int64_t act_bits);
  // Every searchable layer at `bits` for weights and activations.
  void set_uniform(int64_t bits);
  void set_policy(const quant::Policy& policy);

  // A policy with every layer's current bits.
  quant::Policy current_policy() const;
  // A uniform policy over this model's layers (fixed layers at fixed_bits).
  quant::Policy uniform_policy(const quant::LayerBits& bits) const;

  // What was prepared, enough to rebuild it (stored in checkpoints).
  nlohmann::ordered_json describe() const;
  // Prepares a freshly built model as described by a describe() record.
  static QuantModel restore(Model model, std::vector<int64_t> input_shape, const nlohmann::json& record);
  // "none", "indicators" or "policy".
  const std::string& mode() const { return mode_; }

  const std::vector<int64_t>& candidates() const { return candidates_; }

 private:
  torch::nn::Module& module(const std::string& name) const;

  Model model_;
  // Layer and batch-norm modules by path, looked up once (set_layer_bits
  // runs many times per training step).
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules_;
  std::vector<int64_t> input_shape_;
  QuantizeOptions options_;
  std::vector<LayerInfo> layers_;
  std::string mode_ = "none";  // none | indicators | policy
  std::vector<int64_t> candidates_;
  quant::Policy prepared_policy_;
};

// Hardware cost of a policy over the model's layers (LIMPQ.md section 5).
struct PolicyCost {
  double bitops = 0;       // sum MACs * b_w * b_a
  double size_bits = 0;    // sum params * b_w
  double fp_bitops = 0;    // every layer at 32/32
  double fp_size_bits = 0; // every weight at 32 bits
};
PolicyCost policy_cost(const std::vector<LayerInfo>& layers, const quant::Policy& policy);

}  // namespace limpq::models
