#pragma once
// `limpq train` (full precision), `limpq finetune` (quantization-aware
// training under a policy) and `limpq indicators` (joint indicator training)
// share the trainer; each starts from its own recipe and folder and accepts
// its own config sections.

#include <vector>

#include "limpq/train/config.h"
#include "limpq/util/options.h"

namespace limpq::train {

enum class TrainCommand { kTrain, kFinetune, kIndicators };

// The command's name and one-line description, for its --help.
const char* command_name(TrainCommand command);
const char* command_description(TrainCommand command);

// The configuration the command starts from: its recipe (the one `limpq
// run`'s stage uses) and its default folder.
TrainConfig command_config(TrainCommand command);

// The config-file sections the command accepts, bound to `config`.
std::vector<util::ConfigSection> command_sections(TrainConfig& config, TrainCommand command);

// Refuses what the command cannot run (finetune without a policy) and warns
// on stderr about what it can but should not (no --weights).
void check_command(const TrainConfig& config, TrainCommand command);

}  // namespace limpq::train
