// The step strategies' common ground: which strategy a config runs.
#include "limpq/train/step.h"

namespace limpq::train {

bool is_quantizer_step(const std::string& parameter_name) {
  const std::string suffix = ".steps";
  return parameter_name.size() >= suffix.size() &&
         parameter_name.compare(parameter_name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::unique_ptr<TrainStep> make_train_step(const TrainConfig& config, models::Model model, data::DataBundle& data) {
  TORCH_CHECK(!(config.joint_indicators && config.quant.enabled()),
              "train: indicator training and fine-tuning under a policy exclude each other");
  if (config.joint_indicators) return make_joint_indicator_step(config, std::move(model), data);
  return make_plain_step(config, std::move(model), data);
}

}  // namespace limpq::train
