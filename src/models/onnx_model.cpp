// The importer: an OnnxGraph (onnx_import/graph.h) becomes a Program, the
// list of steps the forward pass runs, and the limpq layers that hold the
// weights.
//
// Import runs in this order, each phase refusing what it cannot handle with
// the node's name, op type and opset:
//   1. Identity of an initializer (how PyTorch's exporter shares equal
//      values, e.g. the fresh batch norms' ones and zeros) becomes a copy of
//      that initializer under the Identity's output name, so that every
//      parameter PyTorch had is one again. Node sequences that one torch op
//      computes (GELU's five nodes; onnx_import/fusion.h) are marked to run
//      as that op.
//   2. The initializers are sorted: those a layer will own (what a Conv's,
//      Gemm's, MatMul's or BatchNormalization's parameter inputs are
//      computed from), the other named floating-point ones (trainable
//      parameters outside layers), and constants.
//   3. Each node, in the file's order: its converter (onnx_import/ops.h)
//      creates the layer it stands for and returns its kernel. A node that
//      makes no layer and whose inputs are all constants is run once here and
//      its outputs kept as constants (the shape arithmetic of fixed sizes).
//   4. The parameters outside layers join the model under their names.
//   5. Values get slots; each slot is released after its last reader.
//   6. One forward pass (the probe) checks that the program runs, and gives
//      the number of classes.
#include "limpq/models/onnx_model.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <sstream>

#include "limpq/util/atomic_file.h"
#include "limpq/util/checksum.h"
#include "onnx_import/fusion.h"
#include "onnx_import/graph.h"
#include "limpq/nn/quant_layer.h"
#include "onnx_import/ops.h"

namespace limpq::models {
namespace onnx_import {

struct Step {
  Kernel kernel;
  std::vector<int> inputs;   // slots; -1 for an omitted input or a layer's parameter
  std::vector<int> outputs;  // slots; -1 for an output nothing reads
  std::vector<int> release;  // slots read for the last time here
  std::string where;         // "node 'x' (Op, opset N)"
};

struct Program {
  std::vector<Step> steps;
  std::vector<std::pair<int, torch::Tensor>> constants;   // constants the steps read, by slot
  std::vector<std::pair<int, torch::Tensor>> parameters;  // trainable parameters outside layers, by slot
  int num_slots = 0;
  int input_slot = -1, output_slot = -1;
  int64_t export_batch = -1;
};

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "/layer1/layer1.0/conv1/Conv" -> "layer1.0.conv1": PyTorch names a scope
// by its module's attribute name, and a container's child as
// "<container>.<index>", so a component that extends the one before it by
// ".x" adds only "x".
std::string module_path_from_scope(const std::string& node_name) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= node_name.size()) {
    const size_t slash = node_name.find('/', start);
    const std::string part = node_name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!part.empty()) parts.push_back(part);
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (parts.size() < 2) return "";
  parts.pop_back();  // the op's own name
  std::string path, last;
  for (const auto& p : parts) {
    if (!last.empty() && starts_with(p, last + ".")) {
      path += p.substr(last.size());
    } else {
      path += (path.empty() ? "" : ".") + p;
    }
    last = p;
  }
  return path;
}

// A path torch::nn::Module accepts: non-empty dot-separated components.
bool valid_module_path(const std::string& path) {
  if (path.empty() || path.front() == '.' || path.back() == '.' || path.find("..") != std::string::npos) return false;
  return std::all_of(path.begin(), path.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

// Values per input image: 64 Mi (3 x 4096 x 4096 fits).
constexpr int64_t kMaxInputElements = int64_t{1} << 26;

// Elements of all the values computed at import from constants (shape
// arithmetic, in the networks PyTorch exports: a few hundred): 64 Mi. Each
// op bounds its own output too (ops_tensor.cpp).
constexpr int64_t kMaxFoldedElements = int64_t{1} << 26;

std::string where(const OnnxNode& node, int64_t opset) {
  return "node '" + node.name + "' (" + node.op_type + ", opset " + std::to_string(opset) + ")";
}

}  // namespace
}  // namespace onnx_import

using namespace onnx_import;

// Builds one OnnxModelImpl from a graph; see the file comment for the phases.
class OnnxModelBuilder {
 public:
  OnnxModelBuilder(OnnxGraph graph, OnnxModelImpl& model) : g_(std::move(graph)), model_(model) {
    program_ = std::make_unique<Program>();
  }

  void build() {
    check_input();
    resolve_identities();
    find_fusions();
    sort_initializers();
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      if (auto f = fused_.find(i); f != fused_.end()) {
        add_fused(f->second);
      } else if (!skipped_[i]) {
        convert(i);
      }
    }
    register_parameters();
    assign_output();
    compute_releases();
    model_.opset_ = g_.opset;
    model_.program_ = std::move(program_);
    probe();
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { TORCH_CHECK(false, "onnx: '", g_.source, "': ", what); }

  void check_input() {
    const auto& d = g_.input_dims;
    if (d.size() != 4) fail("input '" + g_.input + "' has " + std::to_string(d.size()) + " dimensions; limpq imports image "
                            "classifiers with an N x C x H x W input");
    if (d[1] <= 0 || d[2] <= 0 || d[3] <= 0) {
      fail("input '" + g_.input + "' has a symbolic channel count, height or width; limpq needs them fixed: "
           "export with dynamic_axes on the batch dimension only ({'" + g_.input + "': {0: 'batch'}})");
    }
    const bool too_large = d[1] > kMaxInputElements || d[2] > kMaxInputElements || d[3] > kMaxInputElements ||
                           d[1] * d[2] > kMaxInputElements / d[3];
    if (too_large) {
      fail("input '" + g_.input + "' of " + std::to_string(d[1]) + "x" + std::to_string(d[2]) + "x" +
           std::to_string(d[3]) + " is larger than limpq imports (" + std::to_string(kMaxInputElements) +
           " values per image)");
    }
    model_.input_shape_ = {d[1], d[2], d[3]};
    program_->export_batch = d[0];
    if (g_.outputs.size() != 1) {
      fail("has " + std::to_string(g_.outputs.size()) + " outputs; limpq imports classifiers with one output (logits)");
    }
    program_->input_slot = slot_of(g_.input);
  }

  // Phase 1: Identity(initializer) -> a copy of the initializer.
  void resolve_identities() {
    skipped_.assign(g_.nodes.size(), false);
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const auto& n = g_.nodes[i];
      if (n.op_type != "Identity" || n.inputs.size() != 1 || n.outputs.size() != 1) continue;
      auto it = g_.initializers.find(n.inputs[0]);
      if (it == g_.initializers.end()) continue;
      g_.initializers[n.outputs[0]] = it->second.clone();
      skipped_[i] = true;
    }
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      for (const auto& out : g_.nodes[i].outputs) producer_[out] = i;
    }
  }

  // Sequences run as one op (onnx_import/fusion.h): their nodes are skipped,
  // and the fused op is added where the last of them was.
  void find_fusions() {
    for (auto& f : find_gelus(g_, producer_, skipped_)) {
      for (size_t i : f.nodes) skipped_[i] = true;
      model_.fused_nodes_ += static_cast<int64_t>(f.nodes.size());
      fused_.emplace(f.nodes.back(), std::move(f));
    }
  }

  void add_fused(const FusedOp& f) {
    const OnnxNode& first = g_.nodes[f.nodes.front()];
    add_step(f.node, f.kernel, where(first, g_.opset) + " (run with the " + std::to_string(f.nodes.size() - 1) +
                                   " nodes after it as one " + f.node.op_type + ")",
             {}, /*makes_layers=*/false);
  }

  // Phase 2. A value is known at import when it is an initializer or every
  // input of the node computing it is (and that node makes no layer); a
  // layer owns the initializers its parameter inputs are computed from.
  void sort_initializers() {
    std::set<std::string> known;
    for (const auto& [name, value] : g_.initializers) known.insert(name);
    std::set<std::string> owned;
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const OnnxNode& node = g_.nodes[i];
      const OpEntry* entry = skipped_[i] ? nullptr : find_op(node.op_type, g_.opset);
      if (entry == nullptr) continue;
      for (size_t p : entry->parameter_inputs) {
        if (p < node.inputs.size() && known.count(node.inputs[p])) collect_sources(node.inputs[p], owned);
      }
      const bool computable = !entry->makes_layers() && std::all_of(node.inputs.begin(), node.inputs.end(), [&](
                                  const std::string& in) { return in.empty() || known.count(in) > 0; });
      if (computable) known.insert(node.outputs.begin(), node.outputs.end());
    }
    for (const auto& [name, value] : g_.initializers) {
      if (owned.count(name)) continue;
      if (value.is_floating_point() && is_module_tensor_name(name) && !is_batch_norm_statistic(name)) {
        parameters_[name] = value.to(torch::kFloat32).clone().set_requires_grad(true);
      } else if (is_module_tensor_name(name)) {
        model_.named_constants_[name] = value;
      }
    }
  }

  // The initializers `value` is computed from.
  void collect_sources(const std::string& value, std::set<std::string>& out) const {
    if (g_.initializers.count(value)) {
      out.insert(value);
      return;
    }
    auto it = producer_.find(value);
    if (it == producer_.end()) return;
    for (const auto& in : g_.nodes[it->second].inputs) {
      if (!in.empty()) collect_sources(in, out);
    }
  }

  // The initializer a layer's input is read from, through Identity and 2-d
  // transposes, and whether it holds the input transposed; "" if the input is
  // computed otherwise.
  std::pair<std::string, bool> source_of(const std::string& value) const {
    bool transposed = false;
    std::string v = value;
    for (;;) {
      if (g_.initializers.count(v)) return {v, transposed};
      auto it = producer_.find(v);
      if (it == producer_.end()) return {"", false};
      const OnnxNode& n = g_.nodes[it->second];
      if (n.op_type == "Transpose" && n.inputs.size() == 1) {
        auto perm = n.attributes.find("perm");
        const bool swap = perm == n.attributes.end() || perm->second.ints == std::vector<int64_t>{1, 0};
        if (!swap) return {"", false};
        transposed = !transposed;
      } else if (n.op_type != "Identity") {
        return {"", false};
      }
      v = n.inputs.at(0);
    }
  }

  static bool is_batch_norm_statistic(const std::string& name) {
    return ends_with(name, ".running_mean") || ends_with(name, ".running_var") ||
           ends_with(name, ".num_batches_tracked");
  }

  // A value known at import (a trainable parameter is not).
  std::optional<torch::Tensor> constant(const std::string& name) const {
    if (parameters_.count(name)) return std::nullopt;
    if (auto it = g_.initializers.find(name); it != g_.initializers.end()) return it->second;
    if (auto it = folded_.find(name); it != folded_.end()) return it->second;
    return std::nullopt;
  }

  // What a converter reads at import: a parameter it reads so (a dropout
  // ratio, a clip bound the file named) is a constant from then on, unless
  // an earlier node already reads it as a parameter.
  std::optional<torch::Tensor> read_at_import(const std::string& name) {
    auto p = parameters_.find(name);
    if (p == parameters_.end() || read_as_parameter_.count(name)) return constant(name);
    torch::Tensor value = p->second.detach();
    parameters_.erase(p);
    model_.named_constants_[name] = value;
    g_.initializers[name] = value;
    return value;
  }

  // Phase 3 for one node.
  void convert(size_t index) {
    const OnnxNode& node = g_.nodes[index];
    const std::string at = where(node, g_.opset);
    if (!(node.domain.empty() || node.domain == "ai.onnx")) {
      fail(at + ": domain '" + node.domain + "' is not imported (only the default ONNX domain)");
    }
    const OpEntry* entry = find_op(node.op_type, g_.opset);
    if (!entry) fail(at + ": op " + node.op_type + " is not supported by limpq's importer (docs/onnx.md lists the ops)");
    if (node.inputs.size() > entry->max_inputs) {
      fail(at + ": input " + std::to_string(entry->max_inputs) + " ('" + node.inputs[entry->max_inputs] +
           "') is not handled by limpq's importer (it reads " + std::to_string(entry->max_inputs) + ")");
    }
    ImportContext ctx(
        node, g_.opset, [this](const std::string& name) { return read_at_import(name); },
        [this, &node, index](std::shared_ptr<torch::nn::Module> layer, const std::vector<InputBinding>& bindings) {
          add_layer(node, index, std::move(layer), bindings);
        });
    Kernel kernel;
    try {
      kernel = entry->convert(ctx);
      ctx.check_attributes_used();
    } catch (const c10::Error& e) {
      fail(at + ": " + e.msg());
    }
    check_training_outputs(node, at);
    add_step(node, std::move(kernel), at, ctx.parameter_inputs(), entry->makes_layers());
  }

  // The step computing `node` at every forward pass, or its outputs now when
  // every input is a constant (and it makes no layer).
  void add_step(const OnnxNode& node, Kernel kernel, const std::string& at, const std::set<size_t>& parameter_inputs,
                bool makes_layers) {
    if (!makes_layers && all_inputs_constant(node)) {
      fold(node, kernel, at);
      return;
    }
    Step step;
    step.kernel = std::move(kernel);
    step.where = at;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const std::string& name = node.inputs[i];
      if (name.empty() || parameter_inputs.count(i)) {
        step.inputs.push_back(-1);
      } else {
        step.inputs.push_back(runtime_input(name, at));
      }
    }
    for (const auto& out : node.outputs) step.outputs.push_back(out.empty() ? -1 : slot_of(out));
    for (const auto& out : node.outputs) produced_.insert(out);
    program_->steps.push_back(std::move(step));
  }

  bool all_inputs_constant(const OnnxNode& node) const {
    return std::all_of(node.inputs.begin(), node.inputs.end(),
                       [this](const std::string& name) { return name.empty() || constant(name).has_value(); });
  }

  void fold(const OnnxNode& node, const Kernel& kernel, const std::string& at) {
    Values inputs;
    for (const auto& name : node.inputs) inputs.push_back(name.empty() ? torch::Tensor() : *constant(name));
    Values outputs;
    try {
      torch::NoGradGuard no_grad;
      outputs = kernel(inputs, RunState{});
    } catch (const c10::Error& e) {
      fail(at + ": " + e.msg());
    }
    for (size_t i = 0; i < node.outputs.size() && i < outputs.size(); ++i) {
      if (node.outputs[i].empty()) continue;
      folded_[node.outputs[i]] = outputs[i];
      if (outputs[i].defined()) folded_elements_ += outputs[i].numel();
    }
    if (folded_elements_ > kMaxFoldedElements) {
      fail(at + ": the values computed at import from constants hold more than " +
           std::to_string(kMaxFoldedElements) + " elements in all");
    }
    ++model_.folded_nodes_;
  }

  // The slot of a value a step reads: the graph input, an earlier node's
  // output, a trainable parameter, or a constant (kept for the steps).
  int runtime_input(const std::string& name, const std::string& at) {
    if (name == g_.input || produced_.count(name)) return slot_of(name);
    if (auto p = parameters_.find(name); p != parameters_.end()) {
      const int slot = slot_of(name);
      read_as_parameter_.insert(name);
      if (fixed_slots_.insert(slot).second) program_->parameters.emplace_back(slot, p->second);
      return slot;
    }
    if (auto c = constant(name)) {
      const int slot = slot_of(name);
      if (fixed_slots_.insert(slot).second) program_->constants.emplace_back(slot, *c);
      return slot;
    }
    fail(at + ": reads '" + name + "', which no earlier node produces (the graph is not in topological order)");
  }

  int slot_of(const std::string& name) {
    auto [it, inserted] = slots_.emplace(name, program_->num_slots);
    if (inserted) ++program_->num_slots;
    return it->second;
  }

  // A training-mode export's batch norm also outputs its running statistics;
  // nothing may read them.
  void check_training_outputs(const OnnxNode& node, const std::string& at) const {
    if (node.op_type != "BatchNormalization") return;
    for (size_t i = 1; i < node.outputs.size(); ++i) {
      if (node.outputs[i].empty()) continue;
      bool read = std::find(g_.outputs.begin(), g_.outputs.end(), node.outputs[i]) != g_.outputs.end();
      for (const auto& other : g_.nodes) {
        read = read || std::find(other.inputs.begin(), other.inputs.end(), node.outputs[i]) != other.inputs.end();
      }
      if (read) {
        fail(at + ": a training-mode export (the graph reads the batch norm's running statistics); export the "
             "model in eval() with torch.onnx.export(..., training=torch.onnx.TrainingMode.PRESERVE) to keep "
             "batch norm, or TrainingMode.EVAL to fold it");
      }
    }
  }

  // The module path of a node's layer: its weight's name where the export
  // kept it (`conv1.weight` -> `conv1`, `attn.in_proj_weight` ->
  // `attn.in_proj`); for a product of two activations, its scope and op
  // (`/blocks/blocks.0/attn/MatMul_1` -> `blocks.0.attn.matmul_1`); else the
  // node's scope, else the op type and node index.
  std::string layer_name(const OnnxNode& node, size_t index, bool has_weight) const {
    std::string name;
    if (has_weight && node.inputs.size() > 1) {
      const std::string weight = source_of(node.inputs[1]).first;
      if (is_module_tensor_name(weight) && ends_with(weight, ".weight")) {
        name = weight.substr(0, weight.size() - std::string(".weight").size());
      } else if (is_module_tensor_name(weight) && ends_with(weight, "_weight")) {
        name = weight.substr(0, weight.size() - std::string("_weight").size());
      }
    }
    if (!valid_module_path(name)) {
      name = module_path_from_scope(node.name);
      if (!has_weight && valid_module_path(name)) name += "." + lowercase(node.name.substr(node.name.rfind('/') + 1));
    }
    if (!valid_module_path(name)) name = lowercase(node.op_type + "_" + std::to_string(index));
    return unique_path(name);
  }

  static std::string lowercase(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
  }

  // The end of the longest prefix of `path` that is a layer (a layer holds
  // no modules), or npos.
  size_t layer_prefix_end(const std::string& path) const {
    size_t end = std::string::npos;
    for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', dot + 1)) {
      if (layer_paths_.count(path.substr(0, dot))) end = dot;
    }
    return end;
  }

  // `path`, or `path_1`, `path_2`, ... where a layer or a container already
  // has it (a module called twice in the exported forward). A path inside a
  // layer becomes its sibling (`attn.matmul_1` under a layer `attn`:
  // `attn_matmul_1`), which happens where constant folding took the weights'
  // names and two layers came from one scope.
  std::string unique_path(std::string path) const {
    for (size_t end = layer_prefix_end(path); end != std::string::npos; end = layer_prefix_end(path)) path[end] = '_';
    auto taken = [this](const std::string& p) { return layer_paths_.count(p) > 0 || container_paths_.count(p) > 0; };
    if (!taken(path)) return path;
    for (int k = 1;; ++k) {
      const std::string candidate = path + "_" + std::to_string(k);
      if (!taken(candidate)) return candidate;
    }
  }

  // The module at a dotted path's parent, created (as containers) on the
  // way; returns it and the last component.
  std::pair<torch::nn::Module*, std::string> parent_of(const std::string& path) {
    torch::nn::Module* parent = &model_;
    std::string prefix;
    size_t start = 0;
    for (size_t dot = path.find('.'); dot != std::string::npos; dot = path.find('.', start)) {
      const std::string part = path.substr(start, dot - start);
      prefix += (prefix.empty() ? "" : ".") + part;
      if (!parent->named_children().contains(part)) {
        parent->register_module(part, std::make_shared<torch::nn::Module>("OnnxScope"));
        container_paths_.insert(prefix);
      }
      parent = parent->named_children()[part].get();
      start = dot + 1;
    }
    return {parent, path.substr(start)};
  }

  // Registers a node's layer at its path and records where its tensors came from.
  void add_layer(const OnnxNode& node, size_t index, std::shared_ptr<torch::nn::Module> layer,
                 const std::vector<InputBinding>& bindings) {
    const auto* quantizable = nn::as_quant_layer(*layer);
    const std::string path = layer_name(node, index, quantizable == nullptr || quantizable->has_weight());
    auto [parent, last] = parent_of(path);
    parent->register_module(last, std::move(layer));
    layer_paths_.insert(path);
    ImportedLayer record{path, {}};
    for (const auto& b : bindings) {
      const auto [source, source_transposed] = source_of(node.inputs.at(b.input));
      record.tensors.push_back({b.input, b.tensor, b.transposed, source, b.transposed != source_transposed});
    }
    TORCH_INTERNAL_ASSERT(!node.outputs.empty());
    model_.layers_[node.outputs[0]] = std::move(record);
  }

  // Phase 4: the parameters outside layers, at their names' module paths (a
  // name that a layer's own tensor already takes gets a suffix).
  void register_parameters() {
    for (const auto& [name, tensor] : parameters_) {
      auto [parent, last] = parent_of(name);
      std::string key = last;
      for (int k = 1; parent->named_parameters(false).contains(key) || parent->named_buffers(false).contains(key) ||
                      parent->named_children().contains(key);
           ++k) {
        key = last + "_" + std::to_string(k);
      }
      parent->register_parameter(key, tensor);
      model_.parameters_by_source_[name] = name.substr(0, name.size() - last.size()) + key;
    }
  }

  void assign_output() {
    const std::string& out = g_.outputs.front();
    if (!produced_.count(out)) fail("output '" + out + "' is not computed from the input");
    program_->output_slot = slot_of(out);
  }

  // Phase 5: each slot is released after the last step that reads it.
  void compute_releases() {
    std::vector<int> last(program_->num_slots, -1);
    for (size_t s = 0; s < program_->steps.size(); ++s) {
      for (int slot : program_->steps[s].inputs) {
        if (slot >= 0) last[slot] = static_cast<int>(s);
      }
    }
    for (int slot = 0; slot < program_->num_slots; ++slot) {
      if (last[slot] >= 0 && slot != program_->output_slot && !fixed_slots_.count(slot)) {
        program_->steps[last[slot]].release.push_back(slot);
      }
    }
  }

  // Phase 6: one pass on zeros (batch 2, or one more than a fixed export
  // batch, so that a frozen batch size shows here).
  void probe() {
    const int64_t batch = model_.program_->export_batch > 0 ? model_.program_->export_batch + 1 : 2;
    std::vector<int64_t> shape = {batch};
    shape.insert(shape.end(), model_.input_shape_.begin(), model_.input_shape_.end());
    torch::Tensor logits;
    {
      torch::NoGradGuard no_grad;
      model_.eval();
      logits = model_.forward(torch::zeros(shape));
      model_.train();
    }
    if (logits.dim() != 2 || logits.size(0) != batch) {
      std::ostringstream s;
      s << logits.sizes();
      fail("output '" + g_.outputs.front() + "' has shape " + s.str() + " for a batch of " + std::to_string(batch) +
           "; limpq imports classifiers whose output is N x classes");
    }
    model_.num_classes_ = logits.size(1);
  }

  OnnxGraph g_;
  OnnxModelImpl& model_;
  std::unique_ptr<Program> program_;
  std::vector<bool> skipped_;
  std::map<std::string, size_t> producer_;              // value -> the node computing it
  std::map<size_t, FusedOp> fused_;                     // the last node of a fused sequence -> the fused op
  int64_t folded_elements_ = 0;                         // of the values in folded_
  std::map<std::string, torch::Tensor> parameters_;     // trainable initializers outside layers
  std::set<std::string> read_as_parameter_;             // of them, those a step reads
  std::map<std::string, torch::Tensor> folded_;
  std::map<std::string, int> slots_;
  std::set<int> fixed_slots_;  // constants and parameters: filled at every pass, never released
  std::set<std::string> produced_;
  std::set<std::string> layer_paths_, container_paths_;
};

// Named "onnx:<file name>" in messages, indicators and policies.
OnnxModelImpl::OnnxModelImpl(std::string source, std::string checksum)
    : ModelImpl(std::string(kOnnxArch) + ":" + std::filesystem::path(source).filename().string()),
      source_(std::move(source)),
      checksum_(std::move(checksum)) {}

OnnxModelImpl::~OnnxModelImpl() = default;

torch::Tensor OnnxModelImpl::forward(torch::Tensor x) {
  const Program& p = *program_;
  TORCH_CHECK(x.dim() == 4 && x.size(1) == input_shape_[0] && x.size(2) == input_shape_[1] &&
                  x.size(3) == input_shape_[2],
              "onnx: '", source_, "' takes N x ", input_shape_[0], " x ", input_shape_[1], " x ", input_shape_[2],
              " input, got ", x.sizes());
  std::vector<torch::Tensor> slots(p.num_slots);
  // Float constants (operands of arithmetic) follow the input's device,
  // copied there once; integer ones (shapes, indices) stay on the CPU where
  // they are read.
  if (device_constants_.size() != p.constants.size() ||
      (!device_constants_.empty() && device_constants_.front().device() != x.device())) {
    device_constants_.clear();
    for (const auto& [slot, value] : p.constants) {
      device_constants_.push_back(value.is_floating_point() ? value.to(x.device()) : value);
    }
  }
  for (size_t i = 0; i < p.constants.size(); ++i) slots[p.constants[i].first] = device_constants_[i];
  for (const auto& [slot, parameter] : p.parameters) slots[slot] = parameter;
  slots[p.input_slot] = std::move(x);
  const RunState state{is_training(), p.export_batch, slots[p.input_slot].size(0)};
  Values inputs;
  for (const auto& step : p.steps) {
    inputs.clear();
    for (int s : step.inputs) inputs.push_back(s >= 0 ? slots[s] : torch::Tensor());
    Values outputs;
    try {
      outputs = step.kernel(inputs, state);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "onnx: '", source_, "': ", step.where, ": ", e.msg());
    }
    for (size_t i = 0; i < step.outputs.size() && i < outputs.size(); ++i) {
      if (step.outputs[i] >= 0) slots[step.outputs[i]] = std::move(outputs[i]);
    }
    for (int s : step.release) slots[s] = torch::Tensor();
  }
  return slots[p.output_slot];
}

OnnxModel import_onnx_bytes(const std::string& bytes, const std::string& source) {
  OnnxGraph graph = read_onnx_graph(bytes, source);
  auto model = std::make_shared<OnnxModelImpl>(source, util::Crc32().update(bytes).str());
  OnnxModelBuilder(std::move(graph), *model).build();
  return model;
}

OnnxModel import_onnx(const std::string& path) { return import_onnx_bytes(util::read_file(path), path); }

bool is_module_tensor_name(const std::string& name) {
  // A bare number is an older exporter's constant; "0.weight" (a Sequential's) is a path.
  const bool path_like = name.find('.') != std::string::npos || std::isalpha(static_cast<unsigned char>(name[0])) ||
                         name[0] == '_';
  return !starts_with(name, "onnx::") && valid_module_path(name) && path_like;
}

std::vector<std::string> onnx_supported_ops() {
  std::set<std::string> ops;
  for (const auto& e : op_registry()) ops.insert(e.op_type);
  return {ops.begin(), ops.end()};
}

}  // namespace limpq::models
