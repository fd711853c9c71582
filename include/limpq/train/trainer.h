// Training as a library call behind `limpq train`, `limpq finetune` and
// `limpq indicators`: a step strategy for the mode (limpq/train/step.h) run
// by the training loop (limpq/train/loop.h).
//
//   TrainConfig config;
//   config.optim.epochs(15);
//   config.run.out_dir("runs/fmnist");
//   TrainResult result = run_train(config, /*resume=*/false);   // writes runs/fmnist/checkpoint.pt
#pragma once

#include "limpq/train/config.h"
#include "limpq/train/evaluate.h"

namespace limpq::train {

// Trains `config.model` on `config.data`. With `resume`, continues from
// out_dir/checkpoint.pt when it exists (at an epoch boundary or inside an
// epoch); without it, an existing checkpoint is an error (nothing is
// overwritten by accident). A stop request (util::request_stop, or a signal
// under util::StopOnSignal) checkpoints after the current step and throws
// util::Interrupted. A NaN or Inf loss or gradient stops the run with an
// error naming the step and layer (run.on_nonfinite: skip drops the step).
TrainResult run_train(TrainConfig config, bool resume, const TrainHooks& hooks = {});

}  // namespace limpq::train
