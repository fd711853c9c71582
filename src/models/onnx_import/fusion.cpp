#include "fusion.h"

#include <torch/torch.h>

#include <cmath>
#include <optional>

#include "limpq/models/onnx_model.h"

namespace limpq::models::onnx_import {
namespace {

// The one value of a constant: a Constant node's, or an initializer's that
// is not a trained tensor (a module's, which is a parameter of the network).
std::optional<double> scalar(const OnnxGraph& g, const std::map<std::string, size_t>& producer,
                             const std::string& name) {
  torch::Tensor t;
  if (auto it = g.initializers.find(name); it != g.initializers.end()) {
    if (is_module_tensor_name(name)) return std::nullopt;
    t = it->second;
  } else if (auto p = producer.find(name); p != producer.end()) {
    const OnnxNode& n = g.nodes[p->second];
    if (n.op_type != "Constant" || n.attributes.size() != 1) return std::nullopt;
    const auto& [key, a] = *n.attributes.begin();
    if (key == "value_float") return a.f;
    if (key != "value" || !a.t.defined()) return std::nullopt;
    t = a.t;
  } else {
    return std::nullopt;
  }
  if (t.numel() != 1) return std::nullopt;
  return t.to(torch::kDouble).item<double>();
}

bool near(std::optional<double> v, double expected) {
  return v && std::abs(*v - expected) <= 1e-6 * std::abs(expected);
}

// The graph as the matcher reads it: who computes a value, and who reads it.
class Matcher {
 public:
  Matcher(const OnnxGraph& g, const std::map<std::string, size_t>& producer, const std::vector<bool>& skipped)
      : g_(g), producer_(producer) {
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (skipped[i]) continue;
      for (const auto& in : g.nodes[i].inputs) readers_[in].push_back(i);
    }
    for (const auto& out : g.outputs) readers_[out].push_back(g.nodes.size());  // read outside the graph
  }

  // The node that alone reads `value` (not a graph output).
  std::optional<size_t> sole_reader(const std::string& value) const {
    auto it = readers_.find(value);
    if (it == readers_.end() || it->second.size() != 1 || it->second[0] >= g_.nodes.size()) return std::nullopt;
    return it->second[0];
  }

  // The two-input node of type `op` that alone reads `value`.
  std::optional<size_t> only_reader(const std::string& value, const char* op) const {
    const auto r = sole_reader(value);
    if (!r) return std::nullopt;
    const OnnxNode& n = g_.nodes[*r];
    if (n.op_type != op || n.inputs.size() != 2 || n.outputs.size() != 1) return std::nullopt;
    return r;
  }

  // The input of a two-input node other than `value`, if `value` is one.
  static std::optional<std::string> other(const OnnxNode& n, const std::string& value) {
    if (n.inputs[0] == value) return n.inputs[1];
    if (n.inputs[1] == value) return n.inputs[0];
    return std::nullopt;
  }

  std::optional<double> scalar(const std::string& name) const { return onnx_import::scalar(g_, producer_, name); }

  std::optional<FusedOp> gelu_at(size_t erf) const {
    const OnnxNode& e = g_.nodes[erf];
    if (e.inputs.size() != 1 || e.outputs.size() != 1) return std::nullopt;
    auto p = producer_.find(e.inputs[0]);
    if (p == producer_.end()) return std::nullopt;
    const size_t div = p->second;
    const OnnxNode& d = g_.nodes[div];
    if (d.op_type != "Div" || d.inputs.size() != 2 || d.outputs.size() != 1 ||
        !near(scalar(d.inputs[1]), std::sqrt(2.0)) || sole_reader(d.outputs[0]) != erf) {
      return std::nullopt;
    }
    const std::string& x = d.inputs[0];
    const auto add = only_reader(e.outputs[0], "Add");
    if (!add || !near(scalar(*other(g_.nodes[*add], e.outputs[0])), 1.0)) return std::nullopt;
    const auto mul = only_reader(g_.nodes[*add].outputs[0], "Mul");
    if (!mul || other(g_.nodes[*mul], g_.nodes[*add].outputs[0]) != x) return std::nullopt;
    const auto half = only_reader(g_.nodes[*mul].outputs[0], "Mul");
    if (!half || !near(scalar(*other(g_.nodes[*half], g_.nodes[*mul].outputs[0])), 0.5)) return std::nullopt;
    FusedOp f;
    f.nodes = {div, erf, *add, *mul, *half};
    f.node.op_type = "Gelu";
    f.node.name = g_.nodes[*half].name;
    f.node.inputs = {x};
    f.node.outputs = g_.nodes[*half].outputs;
    f.kernel = [](const Values& in, const RunState&) { return Values{torch::gelu(in.at(0))}; };
    return f;
  }

 private:
  const OnnxGraph& g_;
  const std::map<std::string, size_t>& producer_;
  std::map<std::string, std::vector<size_t>> readers_;
};

}  // namespace

std::vector<FusedOp> find_gelus(const OnnxGraph& graph, const std::map<std::string, size_t>& producer,
                                const std::vector<bool>& skipped) {
  const Matcher matcher(graph, producer, skipped);
  std::vector<FusedOp> found;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    if (skipped[i] || graph.nodes[i].op_type != "Erf") continue;
    if (auto f = matcher.gelu_at(i)) found.push_back(std::move(*f));
  }
  return found;
}

}  // namespace limpq::models::onnx_import
