#include "limpq/models/cost.h"

#include "limpq/models/onnx_model.h"

namespace limpq::models {

CostTable cost_table(const ModelOptions& given, const CostOptions& options) {
  const ModelOptions model_options = resolve_model_options(given);
  CostTable table;
  table.fixed_bits = options.fixed_bits();
  Model model;
  if (model_options.onnx().empty()) {
    table.model = model_options.arch();
    table.input_shape = options.input_shape();
    model = build_model(model_options, table.input_shape, options.num_classes());
  } else {
    // Imported once; the file fixes the input and the classes.
    const OnnxModel imported = import_onnx(model_options.onnx());
    table.model = model_options.onnx();
    table.input_shape = imported->input_shape();
    model = imported;
  }
  const QuantModel qm(model, table.input_shape,
                      QuantizeOptions().fixed_layers(options.fixed_layers()).fixed_bits(options.fixed_bits()));
  table.layers = qm.layers();
  for (const auto& l : table.layers) {
    table.macs += l.macs;
    table.params += l.params;
  }
  table.full_precision = policy_cost(table.layers, qm.uniform_policy({32, 32}));
  for (int64_t b : {8, 6, 5, 4, 3, 2}) table.uniform[b] = policy_cost(table.layers, qm.uniform_policy({b, b}));
  return table;
}

nlohmann::ordered_json CostTable::to_json(bool with_layers) const {
  nlohmann::ordered_json j;
  j["model"] = model;
  j["input_shape"] = input_shape;
  j["macs"] = macs;
  j["params"] = params;
  j["fp_bitops"] = full_precision.fp_bitops;
  j["fp_size_bytes"] = full_precision.fp_size_bits / 8;
  nlohmann::ordered_json by_bits = nlohmann::ordered_json::object();
  for (auto it = uniform.rbegin(); it != uniform.rend(); ++it) {
    by_bits["W" + std::to_string(it->first) + "A" + std::to_string(it->first)] = {
        {"bitops", it->second.bitops}, {"size_bytes", it->second.size_bits / 8}};
  }
  j["uniform"] = by_bits;
  if (!with_layers) return j;
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const auto& l : layers) {
    rows.push_back({{"name", l.name}, {"kind", l.kind},
                    {"searchable", l.searchable}, {"signed_input", l.signed_input}, {"macs", l.macs},
                    {"params", l.params}, {"output_shape", l.output_shape}});
  }
  j["layers"] = rows;
  return j;
}

}  // namespace limpq::models
