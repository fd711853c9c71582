#include "ops.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <sstream>

namespace limpq::models::onnx_import {

ImportContext::ImportContext(const OnnxNode& node, int64_t opset, std::string layer_name,
                             std::function<std::optional<torch::Tensor>(const std::string&)> constant,
                             AddLayer add_layer)
    : node_(node),
      opset_(opset),
      layer_name_(std::move(layer_name)),
      constant_(std::move(constant)),
      add_layer_(std::move(add_layer)) {}

void ImportContext::refuse(const std::string& what) const {
  TORCH_CHECK(false, "node '", node_.name, "' (", node_.op_type, ", opset ", opset_, "): ", what);
}

const OnnxAttribute* ImportContext::attribute(const std::string& name, const char* type) {
  auto it = node_.attributes.find(name);
  if (it == node_.attributes.end()) return nullptr;
  used_.insert(name);
  check(it->second.type == type, "attribute '" + name + "' is " + it->second.type + ", expected " + type);
  return &it->second;
}

int64_t ImportContext::attr_int(const std::string& name, int64_t fallback) {
  const auto* a = attribute(name, "INT");
  return a ? a->i : fallback;
}

double ImportContext::attr_float(const std::string& name, double fallback) {
  const auto* a = attribute(name, "FLOAT");
  return a ? a->f : fallback;
}

std::string ImportContext::attr_string(const std::string& name, const std::string& fallback) {
  const auto* a = attribute(name, "STRING");
  return a ? a->s : fallback;
}

std::vector<int64_t> ImportContext::attr_ints(const std::string& name, std::vector<int64_t> fallback) {
  const auto* a = attribute(name, "INTS");
  return a ? a->ints : fallback;
}

torch::Tensor ImportContext::attr_tensor(const std::string& name) {
  const auto* a = attribute(name, "TENSOR");
  check(a != nullptr, "has no attribute '" + name + "'");
  return a->t;
}

std::optional<torch::Tensor> ImportContext::constant_input(size_t i) const {
  if (!has_input(i)) return std::nullopt;
  return constant_(node_.inputs[i]);
}

std::vector<int64_t> ImportContext::constant_ints(size_t i, const std::string& what) const {
  auto value = constant_input(i);
  check(value.has_value(), what + " (input " + std::to_string(i) + ") must be known at import (an initializer or a "
                               "Constant), got the computed value '" + (has_input(i) ? node_.inputs[i] : "") + "'");
  return to_ints(*value);
}

torch::Tensor ImportContext::parameter_input(size_t i, const std::string& what) {
  auto value = constant_input(i);
  check(value.has_value(), what + " (input " + std::to_string(i) + ") must be an initializer, got the computed value '" +
                               (has_input(i) ? node_.inputs[i] : "") + "'");
  parameters_.insert(i);
  return value->to(torch::kFloat32);
}

void ImportContext::check_attributes_used() const {
  for (const auto& [name, a] : node_.attributes) {
    check(used_.count(name) > 0, "attribute '" + name + "' is not handled by limpq's importer");
  }
}

namespace {

void copy_into(torch::Tensor& target, const torch::Tensor& source) {
  torch::NoGradGuard no_grad;
  target.copy_(source.reshape(target.sizes()));
}

}  // namespace

nn::QuantConv2d ImportContext::add_conv(const nn::QuantConv2dOptions& options, const torch::Tensor& weight,
                                        const torch::Tensor& bias) {
  nn::QuantConv2d conv(options);
  check(conv->weight.sizes() == weight.sizes(), "weight shape does not match the convolution's attributes");
  copy_into(conv->weight, weight);
  if (bias.defined()) copy_into(conv->bias, bias);
  add_layer_(layer_name_, conv.ptr(), false);
  return conv;
}

nn::QuantLinear ImportContext::add_linear(const torch::Tensor& weight, const torch::Tensor& bias,
                                          bool stored_transposed) {
  nn::QuantLinear linear(nn::QuantLinearOptions(weight.size(1), weight.size(0)).bias(bias.defined()));
  copy_into(linear->weight, weight);
  if (bias.defined()) copy_into(linear->bias, bias);
  add_layer_(layer_name_, linear.ptr(), stored_transposed);
  return linear;
}

nn::SwitchableBatchNorm2d ImportContext::add_batch_norm(const nn::SwitchableBatchNorm2dOptions& options,
                                                        const torch::Tensor& weight, const torch::Tensor& bias,
                                                        const torch::Tensor& mean, const torch::Tensor& var) {
  nn::SwitchableBatchNorm2d bn(options);
  copy_into(bn->weight, weight);
  copy_into(bn->bias, bias);
  copy_into(bn->running_mean, mean);
  copy_into(bn->running_var, var);
  add_layer_(layer_name_, bn.ptr(), false);
  return bn;
}

std::vector<int64_t> to_ints(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU, torch::kInt64).flatten().contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

int64_t normalize_axis(int64_t axis, int64_t rank) {
  TORCH_CHECK(axis >= -rank && axis < rank, "axis ", axis, " is out of range for a ", rank, "-d tensor");
  return axis < 0 ? axis + rank : axis;
}

const std::vector<OpEntry>& op_registry() {
  static const std::vector<OpEntry> registry = [] {
    std::vector<OpEntry> r;
    add_layer_ops(r);
    add_math_ops(r);
    add_tensor_ops(r);
    add_pool_ops(r);
    return r;
  }();
  return registry;
}

const OpEntry* find_op(const std::string& op_type, int64_t opset) {
  const OpEntry* best = nullptr;
  for (const auto& e : op_registry()) {
    if (e.op_type == op_type && e.since_version <= opset && (!best || e.since_version > best->since_version)) {
      best = &e;
    }
  }
  return best;
}

}  // namespace limpq::models::onnx_import
