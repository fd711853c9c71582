#include "ops.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <map>
#include <sstream>

namespace limpq::models::onnx_import {

ImportContext::ImportContext(const OnnxNode& node, int64_t opset,
                             std::function<std::optional<torch::Tensor>(const std::string&)> constant,
                             AddLayer add_layer)
    : node_(node), opset_(opset), constant_(std::move(constant)), add_layer_(std::move(add_layer)) {}

void ImportContext::refuse(const std::string& what) const {
  // The importer prefixes the node's location to every converter error.
  TORCH_CHECK(false, what);
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

std::string shape_text(c10::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

}  // namespace

void ImportContext::add_layer(std::shared_ptr<torch::nn::Module> layer, const std::vector<InputBinding>& bindings) {
  std::map<std::string, torch::Tensor> tensors;
  for (auto& p : layer->named_parameters(/*recurse=*/false)) tensors[p.key()] = p.value();
  for (auto& b : layer->named_buffers(/*recurse=*/false)) tensors[b.key()] = b.value();
  std::vector<InputBinding> bound;
  torch::NoGradGuard no_grad;
  for (const auto& b : bindings) {
    if (!has_input(b.input)) continue;
    auto it = tensors.find(b.tensor);
    TORCH_INTERNAL_ASSERT(it != tensors.end(), "the layer has no tensor '", b.tensor, "'");
    torch::Tensor value = parameter_input(b.input, "input " + std::to_string(b.input));
    if (b.transposed) value = value.t();
    torch::Tensor& target = it->second;
    // A bias may be one value broadcast over the outputs (Gemm's C).
    if (value.numel() == 1 && target.numel() > 1) value = value.reshape({}).expand(target.sizes());
    check(value.numel() == target.numel(), "input " + std::to_string(b.input) + " ('" + node_.inputs[b.input] +
                                               "') has shape " + shape_text(value.sizes()) + ", the layer's " +
                                               b.tensor + " " + shape_text(target.sizes()));
    target.copy_(value.reshape(target.sizes()));
    bound.push_back(b);
  }
  add_layer_(std::move(layer), bound);
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
    add_activation_ops(r);
    add_norm_ops(r);
    add_tensor_ops(r);
    add_pool_ops(r);
    return r;
  }();
  return registry;
}

const OpEntry* find_op(const std::string& op_type, int64_t opset) {
  const OpEntry* best = nullptr;
  for (const auto& e : op_registry()) {
    if (e.op_type == op_type && e.since_version <= opset && opset <= e.until_opset &&
        (!best || e.since_version > best->since_version)) {
      best = &e;
    }
  }
  return best;
}

}  // namespace limpq::models::onnx_import
