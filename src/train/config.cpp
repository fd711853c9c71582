#include "limpq/train/config.h"

#include <fmt/core.h>

#include "limpq/util/progress.h"

namespace limpq::train {

std::vector<util::ConfigSection> TrainConfig::sections() {
  return {util::section("data", data), util::section("model", model), util::section("train", optim),
          util::section("run", run), util::section("quant", quant), util::section("indicators", indicators)};
}

nlohmann::ordered_json TrainConfig::to_json() {
  return {{"data", util::to_json(data)},
          {"model", util::to_json(model)},
          {"train", util::to_json(optim)},
          {"run", util::to_json(run)},
          {"quant", util::to_json(quant)},
          {"indicators", util::to_json(indicators)}};
}

std::string TrainResult::to_text(const std::string& only_layer) const {
  if (indicators.empty()) {
    return fmt::format("test top1 {:.2f}%  top5 {:.2f}%  loss {:.4f}  ({} images)  checkpoint {}  [{}]\n", test.top1,
                       test.top5, test.loss, test.count, checkpoint, util::format_duration(seconds)) +
           test.cost_text();
  }
  // With --only-layer one layer is quantized, the others at full precision.
  std::string out;
  for (const auto& [bits, r] : per_candidate) {
    const std::string what =
        only_layer.empty() ? fmt::format("uniform W{0}A{0}", bits) : fmt::format("{0} alone at W{1}A{1}", only_layer, bits);
    out += fmt::format("{}: test top1 {:.2f}%  loss {:.4f}\n", what, r.top1, r.loss);
  }
  return out + fmt::format("indicators written to {}  [{}]\n", indicators, util::format_duration(seconds));
}

nlohmann::ordered_json TrainResult::to_json() const {
  nlohmann::ordered_json j = {{"checkpoint", checkpoint},
                              {"epochs", epochs},
                              {"seconds", seconds},
                              {"images_per_second", images_per_second},
                              {"test", test.to_json()}};
  if (!indicators.empty()) {
    j["indicators"] = indicators;
    for (const auto& [bits, r] : per_candidate) j["test_W" + std::to_string(bits)] = r.to_json();
  }
  return j;
}

}  // namespace limpq::train
