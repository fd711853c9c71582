#include "limpq/train/commands.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>

namespace limpq::train {

const char* command_name(TrainCommand command) {
  switch (command) {
    case TrainCommand::kTrain: return "train";
    case TrainCommand::kFinetune: return "finetune";
    case TrainCommand::kIndicators: return "indicators";
  }
  return "";
}

const char* command_description(TrainCommand command) {
  switch (command) {
    case TrainCommand::kTrain: return "Train a full-precision network";
    case TrainCommand::kFinetune:
      return "Quantization-aware fine-tuning of a full-precision model under a policy (--policy FILE or --uniform W4A4)";
    case TrainCommand::kIndicators:
      return "Jointly train the importance indicators of every layer and candidate bit-width from a full-precision "
             "model; writes <out-dir>/indicators.json";
  }
  return "";
}

TrainConfig command_config(TrainCommand command) {
  TrainConfig config;
  switch (command) {
    case TrainCommand::kTrain: config.optim = train_recipe(); break;
    case TrainCommand::kFinetune:
      config.optim = finetune_recipe();
      config.run.out_dir("runs/finetune");
      break;
    case TrainCommand::kIndicators:
      config.optim = indicator_recipe();
      config.run.out_dir("runs/indicators");
      config.joint_indicators = true;
      break;
  }
  return config;
}

std::vector<util::ConfigSection> command_sections(TrainConfig& config, TrainCommand command) {
  std::vector<util::ConfigSection> out;
  for (auto& s : config.sections()) {
    if (s.name == "quant" && command != TrainCommand::kFinetune) continue;
    if (s.name == "indicators" && command != TrainCommand::kIndicators) continue;
    out.push_back(std::move(s));
  }
  return out;
}

void check_command(const TrainConfig& config, TrainCommand command) {
  if (command == TrainCommand::kIndicators && config.model.weights().empty()) {
    fmt::print(stderr, "indicators: no --weights given; indicators are meant to be trained from a full-precision model\n");
  }
  if (command == TrainCommand::kFinetune) {
    TORCH_CHECK(config.quant.enabled(), "finetune: give the policy to train under: --policy FILE or --uniform W4A4");
    if (config.model.weights().empty()) {
      fmt::print(stderr, "finetune: no --weights given; quantization-aware training starts from random weights\n");
    }
  }
}

}  // namespace limpq::train
