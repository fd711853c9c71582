#include "limpq/deploy/onnx.h"

#include <c10/util/Exception.h>

#ifdef LIMPQ_WITH_ONNX

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "limpq/models/onnx_model.h"
#include "limpq/models/quantized.h"
#include "limpq/nn/batch_norm.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/nn/quant_layer.h"
#include "limpq/quant/lsq_quantizer.h"
#include "limpq/train/trainer.h"
#include "limpq/data/loader.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/checksum.h"
#include "limpq/util/subprocess.h"

namespace limpq::deploy {
namespace {

// TensorProto.DataType values; INT4 (ONNX 1.16) is newer than libonnx 1.12.
constexpr int32_t kFloat = onnx::TensorProto_DataType_FLOAT;
constexpr int32_t kUint8 = onnx::TensorProto_DataType_UINT8;
constexpr int32_t kInt8 = onnx::TensorProto_DataType_INT8;
constexpr int32_t kInt4 = 22;

// The names the writer gives its values, initializers and nodes. Each is
// provisional (a placeholder no ONNX file uses) until finalize(), which runs
// once the graph is complete and unused values are gone: a placeholder then
// takes its preferred name when nothing left in the graph has it, and the
// preferred name with a suffix (_1, _2, ...) otherwise. So the file never holds
// a name twice, whatever the source graph shares, aliases or keeps.
class NameTable {
 public:
  // A placeholder that becomes `preferred` (or a variant of it).
  std::string make(const std::string& preferred) {
    preferred_.push_back(preferred);
    return kMark + std::to_string(preferred_.size() - 1);
  }
  static bool is_placeholder(const std::string& name) { return name.rfind(kMark, 0) == 0; }
  // Renames every placeholder in `graph` to its final name.
  void finalize(onnx::GraphProto* graph) const;

 private:
  static constexpr const char* kMark = "\x1flimpq:";
  std::vector<std::string> preferred_;
};

void NameTable::finalize(onnx::GraphProto* graph) const {
  std::set<std::string> taken;
  auto note = [&](const std::string& name) {
    if (!name.empty() && !is_placeholder(name)) taken.insert(name);
  };
  for (const auto& v : graph->input()) note(v.name());
  for (const auto& v : graph->output()) note(v.name());
  for (const auto& t : graph->initializer()) note(t.name());
  for (const auto& n : graph->node()) {
    note(n.name());
    for (const auto& o : n.output()) note(o);
  }
  std::map<std::string, std::string> final_name;
  auto resolve = [&](std::string* name) {
    if (!is_placeholder(*name)) return;
    auto it = final_name.find(*name);
    if (it == final_name.end()) {
      const std::string& base = preferred_.at(std::stoul(name->substr(std::string(kMark).size())));
      std::string candidate = base;
      for (int k = 1; taken.count(candidate); ++k) candidate = base + "_" + std::to_string(k);
      taken.insert(candidate);
      it = final_name.emplace(*name, candidate).first;
    }
    *name = it->second;
  };
  // Definitions first, in the file's order, so that names follow it.
  for (auto& t : *graph->mutable_initializer()) resolve(t.mutable_name());
  for (auto& n : *graph->mutable_node()) {
    resolve(n.mutable_name());
    for (auto& o : *n.mutable_output()) resolve(&o);
  }
  for (auto& n : *graph->mutable_node()) {
    for (auto& i : *n.mutable_input()) resolve(&i);
  }
  for (auto& v : *graph->mutable_output()) resolve(v.mutable_name());
}

class OnnxWriter : public nn::GraphWriter {
 public:
  OnnxWriter(onnx::GraphProto* graph, models::ModelImpl& model, const OnnxOptions& options, OnnxSummary* summary)
      : graph_(graph), options_(options), summary_(summary) {
    for (const auto& item : model.named_modules("", /*include_self=*/false)) names_[item.value().get()] = item.key();
  }

  std::string conv(const nn::QuantConv2dImpl& conv, const std::string& x) override {
    const std::string& name = name_of(&conv);
    const std::string input = quantize_activation(name, x, conv.quantized() ? conv.input_quantizer.get() : nullptr);
    const std::string weight = weight_value(name, conv.weight, conv.quantized() ? conv.weight_quantizer.get() : nullptr);
    std::vector<std::string> inputs = {input, weight};
    if (conv.bias.defined()) inputs.push_back(float_initializer(name + ".bias", conv.bias));
    const auto& o = conv.options;
    onnx::NodeProto* node = add_node("Conv", inputs, name);
    const auto& pad_begin = *o.padding();
    const auto& pad_end = o.padding_end() ? **o.padding_end() : pad_begin;
    set_ints(node, "kernel_shape", {(*o.kernel_size())[0], (*o.kernel_size())[1]});
    set_ints(node, "strides", {(*o.stride())[0], (*o.stride())[1]});
    set_ints(node, "pads", {pad_begin[0], pad_begin[1], pad_end[0], pad_end[1]});
    set_ints(node, "dilations", {(*o.dilation())[0], (*o.dilation())[1]});
    set_int(node, "group", o.groups());
    return node->output(0);
  }

  std::string linear(const nn::QuantLinearImpl& linear, const std::string& x) override {
    const std::string& name = name_of(&linear);
    const std::string input =
        quantize_activation(name, x, linear.quantized() ? linear.input_quantizer.get() : nullptr);
    const std::string weight =
        weight_value(name, linear.weight, linear.quantized() ? linear.weight_quantizer.get() : nullptr);
    std::vector<std::string> inputs = {input, weight};
    if (linear.bias.defined()) inputs.push_back(float_initializer(name + ".bias", linear.bias));
    onnx::NodeProto* node = add_node("Gemm", inputs, name);
    set_int(node, "transB", 1);
    return node->output(0);
  }

  std::string batch_norm(const nn::SwitchableBatchNorm2dImpl& bn, const std::string& x) override {
    const std::string& name = name_of(&bn);
    TORCH_CHECK(!bn.switchable(), "export: '", name, "' is a switchable batch norm (an indicator-training "
                "checkpoint); export a checkpoint fine-tuned under a policy");
    onnx::NodeProto* node = add_node("BatchNormalization",
                                     {x, float_initializer(name + ".weight", bn.weight),
                                      float_initializer(name + ".bias", bn.bias),
                                      float_initializer(name + ".running_mean", bn.running_mean),
                                      float_initializer(name + ".running_var", bn.running_var)},
                                     name);
    set_float(node, "epsilon", static_cast<float>(bn.options.eps()));
    return node->output(0);
  }

  std::string relu(const std::string& x) override { return add_node("Relu", {x}, "")->output(0); }

  std::string relu6(const std::string& x) override {
    return add_node("Clip", {x, scalar("relu6.min", kFloat, 0.0), scalar("relu6.max", kFloat, 6.0)}, "")->output(0);
  }

  std::string add(const std::string& a, const std::string& b) override {
    return add_node("Add", {a, b}, "")->output(0);
  }

  std::string max_pool(const std::string& x, int64_t kernel, int64_t stride, int64_t padding) override {
    onnx::NodeProto* node = add_node("MaxPool", {x}, "");
    set_ints(node, "kernel_shape", {kernel, kernel});
    set_ints(node, "strides", {stride, stride});
    set_ints(node, "pads", {padding, padding, padding, padding});
    return node->output(0);
  }

  std::string global_avg_pool_flatten(const std::string& x) override {
    onnx::NodeProto* node = add_node("Flatten", {add_node("GlobalAveragePool", {x}, "")->output(0)}, "");
    set_int(node, "axis", 1);
    return node->output(0);
  }

  // The vocabulary below also rewrites an imported network's own graph
  // (ImportedGraphWriter).

  onnx::NodeProto* add_node(const std::string& op, const std::vector<std::string>& inputs, const std::string& name) {
    onnx::NodeProto* node = graph_->add_node();
    node->set_op_type(op);
    const std::string id = (name.empty() ? op : name + "." + op) + "_" + std::to_string(graph_->node_size());
    node->set_name(names_table_.make(id));
    for (const auto& in : inputs) node->add_input(in);
    node->add_output(names_table_.make(id + ".out"));
    ++summary_->nodes;
    return node;
  }
  static void set_int(onnx::NodeProto* node, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_INT);
    a->set_i(v);
  }
  static void set_ints(onnx::NodeProto* node, const std::string& name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void set_float(onnx::NodeProto* node, const std::string& name, float v) {
    onnx::AttributeProto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto_AttributeType_FLOAT);
    a->set_f(v);
  }

  // An initializer from raw little-endian bytes.
  std::string initializer(const std::string& name, int32_t type, const std::vector<int64_t>& shape,
                          std::string_view bytes) {
    onnx::TensorProto* t = graph_->add_initializer();
    t->set_name(names_table_.make(name));
    t->set_data_type(type);
    for (int64_t d : shape) t->add_dims(d);
    t->set_raw_data(bytes.data(), bytes.size());
    return t->name();
  }
  std::string float_initializer(const std::string& name, const torch::Tensor& value) {
    const torch::Tensor v = value.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    return initializer(name, kFloat, v.sizes().vec(),
                       {reinterpret_cast<const char*>(v.data_ptr<float>()), static_cast<size_t>(v.nbytes())});
  }
  // A shared scalar of an 8-bit or float type, by value.
  std::string scalar(const std::string& name, int32_t type, double value) {
    const std::string key = name + "/" + std::to_string(type) + "/" + std::to_string(value);
    auto it = scalars_.find(key);
    if (it != scalars_.end()) return it->second;
    std::string bytes;
    if (type == kFloat) {
      const float f = static_cast<float>(value);
      bytes.assign(reinterpret_cast<const char*>(&f), sizeof f);
    } else {  // int8 or uint8: the low byte of the integer
      bytes.assign(1, static_cast<char>(static_cast<int64_t>(value) & 0xFF));
    }
    return scalars_[key] = initializer(name, type, {}, bytes);
  }

  // Q -> Clip -> DQ at the quantizer's bits and learned step (or x itself at
  // full precision).
  std::string quantize_activation(const std::string& layer, const std::string& x,
                                  const quant::LsqQuantizerImpl* q) {
    if (q == nullptr || q->full_precision()) return x;
    const quant::QuantRange r = q->range(q->bits());
    TORCH_CHECK(r.qp - r.qn <= 255, "export: '", layer, "' quantizes its input to ", q->bits(),
                " bits; ONNX QDQ export stores activations in 8 bits");
    const bool is_signed = r.qn < 0;
    const int32_t type = is_signed ? kInt8 : kUint8;
    const std::string scale = float_initializer(layer + ".input_scale", q->effective_step(q->bits()).reshape({}));
    const std::string zero = scalar("zero", type, 0);
    std::string value = add_node("QuantizeLinear", {x, scale, zero}, layer + ".input")->output(0);
    // The 8-bit storage saturates at its own range; narrower ranges need the clip.
    if (r.qn != (is_signed ? -128 : 0) || r.qp != (is_signed ? 127 : 255)) {
      value = add_node("Clip", {value, scalar("qmin", type, r.qn), scalar("qmax", type, r.qp)}, layer + ".input")
                  ->output(0);
    }
    ++summary_->quantized_activations;
    return add_node("DequantizeLinear", {value, scale, zero}, layer + ".input")->output(0);
  }

  // The weight: its b-bit integers and DequantizeLinear, or float at full
  // precision. The integers are computed as the fake-quant kernel does
  // (divide, clamp, round half to even), so DQ gives its values exactly.
  // `transposed`: the node reads the 2-d weight transposed (in x out), so the
  // integers are stored that way and a per-channel scale runs along axis 1.
  std::string weight_value(const std::string& layer, const torch::Tensor& weight, const quant::LsqQuantizerImpl* q,
                           bool transposed = false) {
    if (q == nullptr || q->full_precision()) return float_initializer(layer + ".weight", transposed ? weight.t() : weight);
    const int64_t bits = q->bits();
    const quant::QuantRange r = q->range(bits);
    TORCH_CHECK(bits <= 8, "export: '", layer, "' has ", bits, "-bit weights; ONNX QDQ export stores up to 8 bits");
    torch::NoGradGuard no_grad;
    const torch::Tensor w = weight.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    const torch::Tensor step = q->effective_step(bits).detach().to(torch::kCPU, torch::kFloat32);
    const bool per_channel = step.numel() > 1;
    std::vector<int64_t> view(w.dim(), 1);
    view[0] = -1;
    const torch::Tensor s = per_channel ? step.reshape(view) : step.reshape({});
    torch::Tensor ints = torch::round(torch::clamp(w / s, static_cast<double>(r.qn), static_cast<double>(r.qp)))
                             .to(torch::kInt8);
    TORCH_INTERNAL_ASSERT(!transposed || ints.dim() == 2, "a transposed weight is 2-d");
    ints = (transposed ? ints.t() : ints).contiguous();
    const bool int4 = options_.opset() >= 21 && bits <= 4;
    const int32_t type = int4 ? kInt4 : kInt8;
    std::string bytes;
    if (int4) {
      // Two values per byte, the first in the low nibble.
      const int8_t* v = ints.data_ptr<int8_t>();
      bytes.assign(static_cast<size_t>((ints.numel() + 1) / 2), '\0');
      for (int64_t i = 0; i < ints.numel(); ++i) {
        const uint8_t nibble = static_cast<uint8_t>(v[i]) & 0x0F;
        bytes[i / 2] = static_cast<char>(static_cast<uint8_t>(bytes[i / 2]) | (i % 2 ? nibble << 4 : nibble));
      }
      ++summary_->int4_weights;
    } else {
      bytes.assign(reinterpret_cast<const char*>(ints.data_ptr<int8_t>()), static_cast<size_t>(ints.numel()));
    }
    const std::string values = initializer(layer + ".weight_q", type, ints.sizes().vec(), bytes);
    const std::string scale = float_initializer(layer + ".weight_scale", per_channel ? step.reshape({-1}) : step.reshape({}));
    const int64_t zeros = per_channel ? step.numel() : 1;
    const std::string zero = initializer(layer + ".weight_zero", type, per_channel ? std::vector<int64_t>{zeros}
                                                                                    : std::vector<int64_t>{},
                                         std::string(static_cast<size_t>(int4 ? (zeros + 1) / 2 : zeros), '\0'));
    onnx::NodeProto* node = add_node("DequantizeLinear", {values, scale, zero}, layer + ".weight");
    if (per_channel) set_int(node, "axis", transposed ? 1 : 0);
    ++summary_->quantized_weights;
    return node->output(0);
  }

  OnnxSummary& summary() { return *summary_; }
  // Gives every value, initializer and node the writer added its final name.
  void finalize_names() { names_table_.finalize(graph_); }

 private:
  const std::string& name_of(const torch::nn::Module* m) const {
    auto it = names_.find(m);
    TORCH_CHECK(it != names_.end(), "export: a layer of the graph is not a module of the model");
    return it->second;
  }

  onnx::GraphProto* graph_;
  OnnxOptions options_;
  OnnxSummary* summary_;
  std::map<const torch::nn::Module*, std::string> names_;
  std::map<std::string, std::string> scalars_;
  NameTable names_table_;
};

void set_tensor_type(onnx::ValueInfoProto* value, const std::string& name, const std::vector<std::string>& dims) {
  value->set_name(name);
  onnx::TypeProto_Tensor* t = value->mutable_type()->mutable_tensor_type();
  t->set_elem_type(kFloat);
  for (const auto& d : dims) {
    auto* dim = t->mutable_shape()->add_dim();
    if (std::isdigit(static_cast<unsigned char>(d[0]))) {
      dim->set_dim_value(std::stoll(d));
    } else {
      dim->set_dim_param(d);
    }
  }
}

// Removes the nodes whose outputs nothing reads (what computed a layer's
// weight in the file, now written as the layer's current one) and the
// initializers no node reads.
void remove_unused(onnx::GraphProto* graph) {
  for (bool changed = true; changed;) {
    std::set<std::string> read;
    for (const auto& out : graph->output()) read.insert(out.name());
    for (const auto& node : graph->node()) read.insert(node.input().begin(), node.input().end());
    changed = false;
    auto* nodes = graph->mutable_node();
    for (int i = nodes->size() - 1; i >= 0; --i) {
      const auto& outs = nodes->Get(i).output();
      if (std::none_of(outs.begin(), outs.end(), [&](const std::string& o) { return read.count(o) > 0; })) {
        nodes->DeleteSubrange(i, 1);
        changed = true;
      }
    }
    if (changed) continue;
    auto* inits = graph->mutable_initializer();
    for (int i = inits->size() - 1; i >= 0; --i) {
      if (!read.count(inits->Get(i).name())) inits->DeleteSubrange(i, 1);
    }
  }
}

// An imported network, written back: the graph of the file it came from,
// the input and the output as the file has them, at the file's opset, with
//   - each layer's node reading its current tensors (under the initializer
//     names the file gave them where they are its own), its quantized
//     operands through Q -> Clip -> DQ (activations) and integer weights ->
//     DQ, the learned steps as scales;
//   - each trainable parameter outside layers under its own name, at its
//     current value;
//   - the Identity nodes through which PyTorch shares equal initializers
//     replaced by initializers of their own.
class ImportedGraphWriter {
 public:
  ImportedGraphWriter(models::OnnxModelImpl& model, OnnxWriter& writer) : model_(model), writer_(writer) {
    for (const auto& item : model.named_modules("", /*include_self=*/false)) modules_[item.key()] = item.value();
    for (const auto& item : model.named_parameters()) parameters_[item.key()] = item.value();
  }

  void write(onnx::ModelProto& proto) {
    onnx::ModelProto source = read_source();
    proto.set_ir_version(source.ir_version());
    proto.clear_opset_import();
    *proto.mutable_opset_import() = source.opset_import();
    onnx::GraphProto* graph = proto.mutable_graph();
    const onnx::GraphProto& g = source.graph();
    std::map<std::string, const onnx::TensorProto*> initializers;
    for (const auto& t : g.initializer()) initializers[t.name()] = &t;
    for (const auto& in : g.input()) {
      if (!initializers.count(in.name())) *graph->add_input() = in;
    }
    *graph->mutable_output() = g.output();
    for (const auto& t : g.initializer()) *graph->add_initializer() = current(t.name(), t);
    for (const auto& node : g.node()) {
      // Identity(initializer): the value becomes an initializer of its own.
      if (node.op_type() == "Identity" && node.input_size() == 1 && initializers.count(node.input(0))) {
        onnx::TensorProto copy = *initializers.at(node.input(0));
        copy.set_name(node.output(0));
        *graph->add_initializer() = current(node.output(0), copy);
        continue;
      }
      onnx::NodeProto rewritten = node;
      if (node.output_size() > 0) {
        if (auto layer = model_.layers().find(node.output(0)); layer != model_.layers().end()) {
          rewrite_layer(rewritten, layer->second);
        }
      }
      *graph->add_node() = std::move(rewritten);
      ++writer_.summary().nodes;
    }
    remove_unused(graph);
    graph->set_name(g.name().empty() ? "limpq" : g.name());
  }

 private:
  onnx::ModelProto read_source() const {
    const std::string bytes = util::read_file(model_.source());
    TORCH_CHECK(util::Crc32().update(bytes).str() == model_.checksum(), "export: '", model_.source(),
                "' changed since the network was imported; restore the original file");
    onnx::ModelProto source;
    TORCH_CHECK(source.ParseFromString(bytes), "export: cannot read '", model_.source(), "'");
    return source;
  }

  // The initializer `name` as it is now: a trainable parameter's current
  // value, else the file's.
  onnx::TensorProto current(const std::string& name, const onnx::TensorProto& original) const {
    auto it = model_.parameters_by_source().find(name);
    if (it == model_.parameters_by_source().end()) return original;
    const torch::Tensor v = parameters_.at(it->second).detach().to(torch::kCPU, torch::kFloat32).contiguous();
    onnx::TensorProto t;
    t.set_name(name);
    t.set_data_type(kFloat);
    for (int64_t d : v.sizes()) t.add_dims(d);
    t.set_raw_data(v.data_ptr<float>(), static_cast<size_t>(v.nbytes()));
    return t;
  }

  // The node reads the layer's current tensors and, for a quantized layer,
  // its quantized operands.
  void rewrite_layer(onnx::NodeProto& node, const models::ImportedLayer& layer) {
    torch::nn::Module& module = *modules_.at(layer.path);
    const nn::QuantLayer* quantizable = nn::as_quant_layer(module);
    const bool quantized = quantizable != nullptr && quantizable->quantized();
    if (const auto* bn = module.as<nn::SwitchableBatchNorm2dImpl>()) {
      TORCH_CHECK(!bn->switchable(), "export: '", layer.path, "' is a switchable batch norm (an indicator-training "
                  "checkpoint); export a checkpoint fine-tuned under a policy");
    }
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& p : module.named_parameters(/*recurse=*/false)) tensors[p.key()] = p.value();
    for (const auto& b : module.named_buffers(/*recurse=*/false)) tensors[b.key()] = b.value();
    for (const auto& t : layer.tensors) {
      const torch::Tensor& value = tensors.at(t.tensor);
      const int i = static_cast<int>(t.input);
      if (quantized && quantizable->has_weight() && t.tensor == "weight") {
        node.set_input(i, writer_.weight_value(layer.path, value, quantizable->weight_quantizer.get(), t.transposed));
      } else {
        const std::string preferred = node.input(i) == t.source ? t.source : layer.path + "." + t.tensor;
        node.set_input(i, writer_.float_initializer(preferred, t.transposed ? value.t() : value));
      }
    }
    if (!quantized) return;
    node.set_input(0, writer_.quantize_activation(layer.path, node.input(0), quantizable->input_quantizer.get()));
    if (!quantizable->has_weight()) {
      node.set_input(1, writer_.quantize_activation(layer.path + ".other", node.input(1),
                                                     quantizable->weight_quantizer.get()));
    }
  }

  models::OnnxModelImpl& model_;
  OnnxWriter& writer_;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules_;
  std::map<std::string, torch::Tensor> parameters_;
};

}  // namespace

bool onnx_available() { return true; }

LogitAgreement compare_logits(const torch::Tensor& ours, const torch::Tensor& theirs, const torch::Tensor& labels) {
  LogitAgreement a;
  const torch::Tensor diff = (theirs - ours).abs();
  a.max_abs_diff = diff.max().item<double>();
  const torch::Tensor scale = std::get<0>(ours.abs().max(1, /*keepdim=*/true)).clamp_min(1e-12);
  const torch::Tensor per_image = std::get<0>((diff / scale).max(1));
  a.max_rel_diff = per_image.max().item<double>();
  a.median_rel_diff = per_image.median().item<double>();
  a.within_tolerance = 100.0 * per_image.le(a.tolerance).to(torch::kFloat64).mean().item<double>();
  const torch::Tensor theirs_top = theirs.argmax(1);
  a.agreement = 100.0 * ours.argmax(1).eq(theirs_top).to(torch::kFloat64).mean().item<double>();
  a.runtime_top1 = 100.0 * theirs_top.eq(labels).to(torch::kFloat64).mean().item<double>();
  return a;
}

std::string find_ort_runner() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("LIMPQ_ORT_RUNNER"); env != nullptr && *env != '\0') return env;
  std::vector<fs::path> candidates;
  const std::string exe = util::executable_path();
  if (!exe.empty()) {
    for (fs::path dir = fs::path(exe).parent_path(); !dir.empty() && dir != dir.root_path(); dir = dir.parent_path()) {
      candidates.push_back(dir / "tools" / "ort" / "run_onnx.js");
    }
  }
  candidates.push_back(fs::current_path() / "tools" / "ort" / "run_onnx.js");
  for (const auto& c : candidates) {
    if (fs::exists(c)) return c.string();
  }
  return "";
}

OnnxVerification verify_onnx(const std::string& onnx_path, const train::Checkpoint& checkpoint,
                             const data::DataOptions& data_options, int64_t images, const std::string& runner) {
  namespace fs = std::filesystem;
  TORCH_CHECK(images > 0, "export --verify: images must be positive, got ", images);
  TORCH_CHECK(!runner.empty() && fs::exists(runner), "export --verify: the ONNX Runtime runner (tools/ort/run_onnx.js) "
              "was not found", runner.empty() ? "" : " at '" + runner + "'",
              "; set LIMPQ_ORT_RUNNER or run from the source tree");
  data::DataBundle data = data::make_test_data(data_options, 0);
  TORCH_CHECK(images <= data.test->size(), "export --verify: --verify-images ", images, " is more than the ",
              data.test->size(), " test images of dataset '", data_options.dataset(), "'",
              data_options.test_limit() > 0 ? " with test_limit " + std::to_string(data_options.test_limit()) +
                                                  " (from the checkpoint's config)"
                                            : std::string(),
              "; give at most ", data.test->size());
  data::DataLoader loader(data.test, data.eval_transform, data::LoaderOptions().batch_size(256).workers(1));
  train::LoadedModel loaded = train::load_model(checkpoint);
  loaded.model->eval();
  std::vector<torch::Tensor> inputs, logits, labels;
  int64_t seen = 0;
  {
    torch::NoGradGuard no_grad;
    while (seen < images) {
      auto batch = loader.next();
      if (!batch) break;
      const int64_t take = std::min<int64_t>(images - seen, batch->images.size(0));
      inputs.push_back(batch->images.slice(0, 0, take));
      labels.push_back(batch->labels.slice(0, 0, take));
      logits.push_back(loaded.model->forward(inputs.back()));
      seen += take;
    }
  }
  const torch::Tensor x = torch::cat(inputs).contiguous();
  const torch::Tensor ours = torch::cat(logits).contiguous();
  const torch::Tensor y = torch::cat(labels);

  OnnxVerification v;
  v.images = ours.size(0);
  v.limpq_top1 = 100.0 * ours.argmax(1).eq(y).to(torch::kFloat64).mean().item<double>();
  auto compare = [&](const std::string& level) {
    const OnnxRuntimeResult run = run_onnx_runtime(onnx_path, x, runner, level);
    TORCH_CHECK(run.outputs.sizes() == ours.sizes(), "export --verify: ONNX Runtime returned logits of shape ",
                run.outputs.sizes(), ", expected ", ours.sizes());
    v.runtime = run.runtime;
    LogitAgreement a = compare_logits(ours, run.outputs, y);
    a.runtime_seconds = run.seconds;
    return a;
  };
  v.exact = compare("disabled");
  v.deployed = compare("all");
  return v;
}

OnnxRuntimeResult run_onnx_runtime(const std::string& onnx_path, const torch::Tensor& input, const std::string& runner,
                                   const std::string& optimization) {
  namespace fs = std::filesystem;
  TORCH_CHECK(!runner.empty() && fs::exists(runner), "onnx runtime: the runner (tools/ort/run_onnx.js) was not found",
              runner.empty() ? "" : " at '" + runner + "'", "; set LIMPQ_ORT_RUNNER or run from the source tree");
  TORCH_CHECK(input.dim() == 4, "onnx runtime: expected an N x C x H x W input, got ", input.sizes());
  const torch::Tensor x = input.to(torch::kCPU, torch::kFloat32).contiguous();
  static std::atomic<int> calls{0};
  const fs::path dir = fs::temp_directory_path() /
                       ("limpq_ort_" + std::to_string(::getpid()) + "_" + std::to_string(calls++));
  fs::create_directories(dir);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{dir};
  const std::string in_path = (dir / "input.f32").string(), out_path = (dir / "output.f32").string();
  util::write_file_atomic(in_path, {reinterpret_cast<const char*>(x.data_ptr<float>()), static_cast<size_t>(x.nbytes())});
  std::vector<std::string> argv = {"node", runner, onnx_path, in_path};
  for (int64_t d : x.sizes()) argv.push_back(std::to_string(d));
  argv.push_back(out_path);
  argv.push_back(optimization);
  const util::ProcessResult run = util::run_process(argv);
  TORCH_CHECK(run.exit_code == 0, "onnx runtime: ONNX Runtime failed on '", onnx_path, "' (exit ", run.exit_code,
              "): ", run.output, run.exit_code == 127 ? " (is Node.js installed?)" : "",
              run.output.find("Cannot find module") != std::string::npos
                  ? " (install it: ONNXRUNTIME_NODE_INSTALL=skip npm install, or scripts/setup.sh)"
                  : "");
  OnnxRuntimeResult result;
  const auto info = nlohmann::json::parse(run.output.substr(run.output.rfind('{')), nullptr, false);
  std::vector<int64_t> dims;
  if (!info.is_discarded() && info.contains("version")) {
    result.runtime = info.value("runtime", "onnxruntime") + " " + info["version"].get<std::string>();
    result.seconds = info.value("seconds", 0.0);
    if (info.contains("dims")) dims = info["dims"].get<std::vector<int64_t>>();
  }
  const std::string bytes = util::read_file(out_path);
  int64_t count = 1;
  for (int64_t d : dims) count *= d;
  TORCH_CHECK(!dims.empty() && static_cast<int64_t>(bytes.size()) == count * 4, "onnx runtime: ONNX Runtime returned ",
              bytes.size(), " bytes of output for shape ", c10::IntArrayRef(dims));
  result.outputs = torch::from_blob(const_cast<char*>(bytes.data()), dims, torch::kFloat32).clone();
  return result;
}

OnnxSummary write_onnx(const std::string& path, const train::Checkpoint& checkpoint, const OnnxOptions& options) {
  TORCH_CHECK(options.opset() == 13 || options.opset() == 21, "export: opset must be 13 (int8 storage) or 21 "
              "(int4 storage for weights of <= 4 bits), got ", options.opset());
  train::LoadedModel loaded = train::load_model(checkpoint);
  TORCH_CHECK(loaded.quant && loaded.quant->mode() == "policy", "export: ONNX export takes a checkpoint fine-tuned "
              "under a policy (limpq finetune); this one is ", loaded.quant ? loaded.quant->mode() : "full precision");
  models::Model model = loaded.model;
  model->eval();

  OnnxSummary summary;
  onnx::ModelProto proto;
  proto.set_ir_version(options.opset() >= 21 ? 10 : 7);
  proto.set_producer_name("limpq");
  proto.set_producer_version("0.1");
  proto.set_doc_string("limpq mixed-precision " + checkpoint.arch + " in QDQ form");
  onnx::OperatorSetIdProto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset());
  auto* policy = proto.add_metadata_props();
  policy->set_key("limpq.policy");
  policy->set_value(quant::policy_to_json(loaded.quant->current_policy()).dump());

  onnx::GraphProto* graph = proto.mutable_graph();
  OnnxWriter writer(graph, *model, options, &summary);
  if (auto* imported = dynamic_cast<models::OnnxModelImpl*>(model.get())) {
    TORCH_CHECK(options.opset() == 13, "export: an imported network keeps the opset of its file; INT4 storage "
                "(--opset 21) is not available for it");
    ImportedGraphWriter(*imported, writer).write(proto);
  } else {
    graph->set_name(checkpoint.arch);
    std::vector<std::string> input_dims = {"N"};
    for (int64_t d : checkpoint.input_shape) input_dims.push_back(std::to_string(d));
    set_tensor_type(graph->add_input(), "input", input_dims);
    const std::string output = model->write_graph(writer, "input");
    onnx::NodeProto* identity = graph->add_node();
    identity->set_op_type("Identity");
    identity->set_name("logits");
    identity->add_input(output);
    identity->add_output("logits");
    set_tensor_type(graph->add_output(), "logits", {"N", std::to_string(checkpoint.num_classes)});
  }
  writer.finalize_names();

  for (const auto& o : proto.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") summary.opset = o.version();
  }
  if (summary.opset <= 17) {  // the newest opset libonnx 1.12 knows
    try {
      onnx::checker::check_model(proto);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "export: the ONNX checker refused the graph of '", path, "': ", e.what());
    }
    summary.checked = true;
  }
  std::string bytes;
  TORCH_CHECK(proto.SerializeToString(&bytes), "export: could not serialise the ONNX model for '", path, "'");
  util::write_file_atomic(path, bytes);
  summary.file_bytes = static_cast<int64_t>(bytes.size());
  return summary;
}

}  // namespace limpq::deploy

#else  // !LIMPQ_WITH_ONNX

namespace limpq::deploy {

bool onnx_available() { return false; }

std::string find_ort_runner() { return ""; }

OnnxVerification verify_onnx(const std::string& onnx_path, const train::Checkpoint&, const data::DataOptions&,
                             int64_t, const std::string&) {
  TORCH_CHECK(false, "export --verify: cannot check '", onnx_path, "': limpq was built without ONNX support");
}

OnnxRuntimeResult run_onnx_runtime(const std::string& onnx_path, const torch::Tensor&, const std::string&,
                                   const std::string&) {
  TORCH_CHECK(false, "onnx runtime: cannot run '", onnx_path, "': limpq was built without ONNX support");
}

OnnxSummary write_onnx(const std::string& path, const train::Checkpoint&, const OnnxOptions&) {
  TORCH_CHECK(false, "export: cannot write '", path, "': limpq was built without ONNX support (install libonnx-dev "
              "and reconfigure)");
}

}  // namespace limpq::deploy

#endif
