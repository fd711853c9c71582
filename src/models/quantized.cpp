#include "limpq/models/quantized.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <map>
#include <set>

#include "limpq/models/indicator_layer.h"
#include "limpq/nn/batch_norm.h"
#include "limpq/nn/quant_layer.h"
#include "limpq/nn/trace.h"
#include "limpq/util/options.h"

namespace limpq::models {
namespace {

using quant::LsqQuantizerOptions;
using quant::QuantizerKind;

}  // namespace

namespace {

// The batch of the probe pass.
constexpr int64_t kProbeBatch = 2;

// The traced calls of one forward pass on a fixed random input; the caller's
// training mode is kept.
std::vector<nn::TraceEvent> trace_layers(ModelImpl& model, const std::vector<int64_t>& input_shape) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  // Quantizers stay as they are; a fresh model is full precision.
  torch::Device device = model.parameters().empty() ? torch::Device(torch::kCPU) : model.parameters()[0].device();
  torch::manual_seed(12345);  // a fixed probe; QuantModel restores the caller's RNG stream
  nn::LayerTracer tracer;
  std::vector<int64_t> shape = {kProbeBatch};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  model.forward(torch::randn(shape, torch::TensorOptions().device(device)));
  model.train(was_training);
  return tracer.events();
}

LayerInfo layer_info(const nn::QuantLayer& layer, const nn::TraceEvent& call, std::string name) {
  const nn::LayerShape shape = layer.shape(call, kProbeBatch);
  LayerInfo info;
  info.name = std::move(name);
  info.kind = layer.kind();
  info.signed_input = !call.input_nonnegative;
  info.has_weight = layer.has_weight();
  info.signed_other = layer.has_weight() || !call.other_nonnegative;
  info.in_channels = shape.in_channels;
  info.out_channels = shape.out_channels;
  info.groups = shape.groups;
  info.kernel_size = shape.kernel_size;
  info.stride = shape.stride;
  info.output_shape = shape.output_shape;
  info.macs = shape.macs;
  info.params = shape.params;
  return info;
}

}  // namespace

std::vector<LayerInfo> analyze_layers(ModelImpl& model, const std::vector<int64_t>& input_shape,
                                      const std::vector<std::string>& fixed_layers) {
  TORCH_CHECK(input_shape.size() == 3, "analyze_layers: input shape must be C,H,W, got ",
              c10::IntArrayRef(input_shape));
  std::map<const torch::nn::Module*, std::string> names;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) names[item.value().get()] = item.key();
  const std::vector<nn::TraceEvent> events = trace_layers(model, input_shape);

  std::vector<LayerInfo> layers;
  for (size_t i = 0; i < events.size(); ++i) {
    const auto* layer = nn::as_quant_layer(*events[i].module);
    if (layer == nullptr) continue;
    LayerInfo info = layer_info(*layer, events[i], names.at(events[i].module));
    // The batch norm right after a layer, over its output channels, switches
    // with its bits in indicator training.
    if (i + 1 < events.size()) {
      if (const auto* bn = dynamic_cast<const nn::SwitchableBatchNorm2dImpl*>(events[i + 1].module)) {
        if (info.kind == "conv" && bn->options.num_features() == info.out_channels) info.bn = names.at(bn);
      }
    }
    layers.push_back(std::move(info));
  }
  TORCH_CHECK(!layers.empty(), "analyze_layers: ", model.arch(), " has no quantizable layers");
  // Each layer runs once per forward in these networks; a shared layer would
  // need per-call bits.
  std::set<std::string> seen;
  for (const auto& l : layers) {
    TORCH_CHECK(seen.insert(l.name).second, "analyze_layers: layer '", l.name,
                "' runs more than once per forward; shared layers are not supported");
  }

  std::vector<std::string> fixed = fixed_layers;
  if (fixed.empty()) fixed = {layers.front().name, layers.back().name};
  for (const auto& f : fixed) {
    TORCH_CHECK(seen.count(f), "quantize: fixed layer '", f, "' is not a quantizable layer of ", model.arch(),
                " (layers: ", layers.front().name, ", ..., ", layers.back().name, ")");
  }
  for (auto& l : layers) l.searchable = std::find(fixed.begin(), fixed.end(), l.name) == fixed.end();
  return layers;
}

QuantModel::QuantModel(Model model, std::vector<int64_t> input_shape, QuantizeOptions options)
    : model_(std::move(model)), input_shape_(std::move(input_shape)), options_(std::move(options)) {
  TORCH_CHECK(options_.fixed_bits() >= 2 && options_.fixed_bits() <= 8, "quantize: fixed_bits must be in 2..8, got ",
              options_.fixed_bits());
  // Keep the caller's RNG stream unchanged by the probe forward pass.
  const torch::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
  layers_ = analyze_layers(*model_, input_shape_, options_.fixed_layers());
  auto gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(rng);
  for (const auto& item : model_->named_modules("", /*include_self=*/false)) {
    for (const auto& l : layers_) {
      if (item.key() == l.name || item.key() == l.bn) modules_[item.key()] = item.value();
    }
  }
}

std::vector<std::string> QuantModel::searchable_names() const {
  std::vector<std::string> out;
  for (const auto& l : layers_) {
    if (l.searchable) out.push_back(l.name);
  }
  return out;
}

std::vector<std::string> QuantModel::fixed_names() const {
  std::vector<std::string> out;
  for (const auto& l : layers_) {
    if (!l.searchable) out.push_back(l.name);
  }
  return out;
}

const LayerInfo& QuantModel::layer(const std::string& name) const {
  for (const auto& l : layers_) {
    if (l.name == name) return l;
  }
  TORCH_CHECK(false, "quantize: '", name, "' is not a quantizable layer of ", model_->arch());
}

torch::nn::Module& QuantModel::module(const std::string& name) const {
  auto it = modules_.find(name);
  TORCH_INTERNAL_ASSERT(it != modules_.end(), "module '", name, "' is not a traced layer or batch norm");
  return *it->second;
}

namespace {

nn::QuantLayer& quant_layer(torch::nn::Module& m) {
  nn::QuantLayer* layer = nn::as_quant_layer(m);
  TORCH_INTERNAL_ASSERT(layer != nullptr, "a traced layer is not a QuantLayer");
  return *layer;
}

// Operand 1's quantizer: a weight's, or an activation's of the sign traced.
LsqQuantizerOptions other_quantizer(const LayerInfo& l, std::vector<int64_t> bits) {
  if (l.has_weight) return LsqQuantizerOptions(std::move(bits)).kind(QuantizerKind::kWeight).is_signed(true);
  return LsqQuantizerOptions(std::move(bits)).kind(QuantizerKind::kActivation).is_signed(l.signed_other);
}

}  // namespace

void QuantModel::prepare_indicators(const std::vector<int64_t>& candidates) {
  TORCH_CHECK(mode_ == "none", "quantize: the model is already prepared (", mode_, ")");
  TORCH_CHECK(!candidates.empty(), "quantize: candidates must list at least one bit-width");
  for (int64_t b : candidates) {
    TORCH_CHECK(b >= 2 && b <= 8, "quantize: candidate bit-width ", b, " is not in 2..8");
  }
  for (const auto& l : layers_) {
    if (!l.searchable) continue;
    quant_layer(module(l.name))
        .attach_quantizers(other_quantizer(l, candidates).max_step(1.0).fused(options_.fused()),
                           LsqQuantizerOptions(candidates)
                               .kind(QuantizerKind::kActivation)
                               .is_signed(l.signed_input)
                               .max_step(1.0)
                               .fused(options_.fused()));
    if (!l.bn.empty()) module(l.bn).as<nn::SwitchableBatchNorm2dImpl>()->make_switchable(candidates);
  }
  candidates_ = candidates;
  mode_ = "indicators";
  set_uniform(candidates.front());
}

void QuantModel::prepare_policy(const quant::Policy& policy, const std::string& source) {
  TORCH_CHECK(mode_ == "none", "quantize: the model is already prepared (", mode_, ")");
  quant::check_policy(policy, searchable_names(), fixed_names(), source);
  for (const auto& l : layers_) {
    const quant::LayerBits* b = policy.find(l.name);
    TORCH_INTERNAL_ASSERT(b != nullptr);
    if (b->weight == quant::kFullPrecisionBits && b->act == quant::kFullPrecisionBits) continue;
    TORCH_CHECK(b->weight != quant::kFullPrecisionBits && b->act != quant::kFullPrecisionBits, "policy '", source,
                "': layer '", l.name, "' mixes full precision and quantization (W", b->weight, "A", b->act,
                "); quantize both or neither");
    const int64_t channels = options_.per_channel() && l.has_weight ? l.out_channels : 0;
    nn::QuantLayer& layer = quant_layer(module(l.name));
    layer.attach_quantizers(other_quantizer(l, {b->weight}).channels(channels).fused(options_.fused()),
                            LsqQuantizerOptions({b->act})
                                .kind(QuantizerKind::kActivation)
                                .is_signed(l.signed_input)
                                .fused(options_.fused()));
    layer.set_bits(b->weight, b->act);
  }
  prepared_policy_ = policy;
  mode_ = "policy";
}

void QuantModel::set_layer_bits(const std::string& name, int64_t weight_bits, int64_t act_bits) {
  const LayerInfo& l = layer(name);
  quant_layer(module(name)).set_bits(weight_bits, act_bits);
  if (!l.bn.empty()) {
    auto* bn = module(l.bn).as<nn::SwitchableBatchNorm2dImpl>();
    // The switchable BN follows the conv's weight bits (in indicator training
    // weights and activations share one bit-width per layer).
    if (bn->switchable()) bn->set_bits(weight_bits);
  }
}

void QuantModel::set_uniform(int64_t bits) {
  for (const auto& l : layers_) {
    if (l.searchable) set_layer_bits(l.name, bits, bits);
  }
}

void QuantModel::set_policy(const quant::Policy& policy) {
  quant::check_policy(policy, searchable_names(), fixed_names(), "policy");
  for (const auto& l : layers_) {
    const quant::LayerBits* b = policy.find(l.name);
    set_layer_bits(l.name, b->weight, b->act);
  }
}

quant::Policy QuantModel::current_policy() const {
  quant::Policy p;
  p.model = model_->arch();
  for (const auto& l : layers_) {
    const nn::QuantLayer& layer = quant_layer(module(l.name));
    (l.searchable ? p.layers : p.fixed).emplace_back(l.name, quant::LayerBits{layer.weight_bits(), layer.input_bits()});
  }
  return p;
}

quant::Policy QuantModel::uniform_policy(const quant::LayerBits& bits) const {
  quant::Policy p;
  p.model = model_->arch();
  for (const auto& l : layers_) {
    if (l.searchable) {
      p.layers.emplace_back(l.name, bits);
    } else {
      p.fixed.emplace_back(l.name, quant::LayerBits{options_.fixed_bits(), options_.fixed_bits()});
    }
  }
  return p;
}

nlohmann::ordered_json QuantModel::describe() const {
  nlohmann::ordered_json j;
  j["mode"] = mode_;
  QuantizeOptions options = options_;
  j["options"] = util::to_json(options);
  if (mode_ == "indicators") j["candidates"] = candidates_;
  if (mode_ == "policy") j["policy"] = quant::policy_to_json(prepared_policy_);
  return j;
}

QuantModel QuantModel::restore(Model model, std::vector<int64_t> input_shape, const nlohmann::json& record) {
  TORCH_CHECK(record.is_object() && record.contains("mode"), "quantization record: missing 'mode'");
  QuantizeOptions options;
  if (record.contains("options")) {
    util::from_yaml(YAML::Load(record["options"].dump()), options, "quantization record: options");
  }
  QuantModel qm(std::move(model), std::move(input_shape), options);
  const std::string mode = record["mode"].get<std::string>();
  if (mode == "indicators") {
    qm.prepare_indicators(record.at("candidates").get<std::vector<int64_t>>());
  } else if (mode == "policy") {
    qm.prepare_policy(quant::policy_from_json(record.at("policy"), "checkpoint"), "checkpoint");
  } else {
    TORCH_CHECK(mode == "none", "quantization record: unknown mode '", mode, "'");
  }
  return qm;
}

PolicyCost policy_cost(const std::vector<LayerInfo>& layers, const quant::Policy& policy) {
  PolicyCost c;
  for (const auto& l : layers) {
    const quant::LayerBits* b = policy.find(l.name);
    TORCH_CHECK(b != nullptr, "policy_cost: the policy has no bits for layer '", l.name, "'");
    c.bitops += static_cast<double>(l.macs) * static_cast<double>(b->weight) * static_cast<double>(b->act);
    c.size_bits += static_cast<double>(l.params) * static_cast<double>(b->weight);
    c.fp_bitops += static_cast<double>(l.macs) * 32.0 * 32.0;
    c.fp_size_bits += static_cast<double>(l.params) * 32.0;
  }
  return c;
}

quant::IndicatorLayer indicator_layer(const LayerInfo& layer) {
  quant::IndicatorLayer e;
  e.name = layer.name;
  e.kind = layer.kind;
  e.searchable = layer.searchable;
  e.macs = layer.macs;
  e.params = layer.params;
  return e;
}

}  // namespace limpq::models
