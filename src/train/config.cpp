#include "limpq/train/config.h"

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

}  // namespace limpq::train
