// Full-precision training and evaluation, as library calls behind the
// `limpq train` and `limpq eval` commands.
//
//   TrainConfig config;
//   config.optim.epochs(15);
//   config.run.out_dir("runs/fmnist");
//   TrainResult result = run_train(config);        // writes runs/fmnist/checkpoint.pt
//
//   EvalResult r = run_eval(load_checkpoint("runs/fmnist/checkpoint.pt"), EvalOptions(), data_options);
#pragma once

#include <torch/types.h>

#include <functional>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "limpq/data/datasets.h"
#include "limpq/data/loader.h"
#include "limpq/models/model.h"
#include "limpq/train/checkpoint.h"
#include "limpq/train/options.h"
#include "limpq/util/options.h"

namespace limpq::train {

struct EvalResult {
  double loss = 0;  // mean cross-entropy (no label smoothing)
  double top1 = 0;  // percent
  double top5 = 0;  // percent
  int64_t count = 0;
  // For quantized models: the policy's cost (LIMPQ.md section 5).
  std::optional<models::PolicyCost> cost;
  nlohmann::ordered_json to_json() const;
};

// Compute threads for this process: `requested`, or when that is 0 (all
// cores), the cores divided among the data-parallel workers on this machine.
int64_t worker_threads(int64_t requested);

// Top-1/top-5 accuracy and loss of `model` over every batch of `loader`.
EvalResult evaluate(models::ModelImpl& model, data::DataLoader& loader, const torch::Device& device);

// Re-estimates the running statistics of every batch norm the model uses
// ("precise BN"): resets them, then runs up to `batches` batches of `loader`
// forward in training mode without gradients, weighting every batch equally
// (a cumulative average, not the momentum's exponential one, so nothing of
// the old statistics remains). Batch norms that no batch reaches (switchable
// branches of other bit-widths) keep their statistics; momentum settings are
// restored. Data-parallel workers average their estimates (or share them
// through SyncBatchNorm). Short quantization-aware runs need it: an early
// outlier batch stays in momentum-averaged statistics for hundreds of steps.
// Returns the number of batches used.
int64_t recalibrate_batch_norm(models::ModelImpl& model, data::DataLoader& loader, const torch::Device& device,
                               int64_t batches);

// Unaugmented training images for batch-norm recalibration and tensor
// statistics, sharded like training, in an order of their own.
data::DataLoader calibration_loader(const data::DataBundle& data, const data::DataOptions& options, uint64_t seed,
                                    bool pin_memory);

struct TrainConfig {
  data::DataOptions data;
  models::ModelOptions model;
  OptimOptions optim;
  RunOptions run;
  FinetuneOptions quant;
  IndicatorOptions indicators;
  // Train the importance indicators jointly instead of the network
  // (`limpq indicators`); the result is out_dir/indicators.json.
  bool joint_indicators = false;

  // The config-file sections: data, model, train, run, quant, indicators.
  std::vector<util::ConfigSection> sections();
  nlohmann::ordered_json to_json();
};

struct TrainResult {
  bool completed = false;  // false when a hook stopped the run early
  EvalResult test;
  int64_t epochs = 0;
  double seconds = 0;
  double images_per_second = 0;  // training throughput of the last epoch
  std::string checkpoint;
  std::string indicators;        // indicators.json (joint indicator training)
  // Joint indicator training: test accuracy with every searchable layer at
  // each candidate bit-width.
  std::vector<std::pair<int64_t, EvalResult>> per_candidate;
};

// Callbacks into the training loop.
struct TrainHooks {
  // Asked after each epoch's checkpoint is written; true ends the run there
  // (it can be resumed). Signal handling and tests use it.
  std::function<bool(int64_t epochs_done)> should_stop;
  // Called after every optimizer step (steps taken so far), before the
  // stop-request check; tests use it to interrupt at a chosen step.
  std::function<void(int64_t steps_done)> after_step;
};

// Trains `config.model` on `config.data`. With `resume`, continues from
// out_dir/checkpoint.pt when it exists (at an epoch boundary or inside an
// epoch); without it, an existing checkpoint is an error (nothing is
// overwritten by accident). A stop request (util::request_stop, or a signal
// under util::StopOnSignal) checkpoints after the current step and throws
// util::Interrupted. A NaN or Inf loss or gradient stops the run with an
// error naming the step and layer (run.on_nonfinite: skip drops the step).
TrainResult run_train(TrainConfig config, bool resume, const TrainHooks& hooks = {});

struct EvalOptions {
  TORCH_ARG(std::string, split) = "test";  // test | val
  TORCH_ARG(std::string, device) = "cpu";
  TORCH_ARG(int64_t, threads) = 0;
  // Post-training quantization of a full-precision checkpoint: evaluate it
  // under this policy file or uniform precision ("W2A2") with the initial
  // LSQ steps (LIMPQ.md section 2), activation steps calibrated on the first
  // training batch; no training.
  TORCH_ARG(std::string, policy) = "";
  TORCH_ARG(std::string, uniform) = "";
  // Re-estimate batch-norm statistics over this many training batches (no
  // augmentation) before evaluating; 0: use the checkpoint's.
  TORCH_ARG(int64_t, bn_recalibration_batches) = 0;
};

// Builds the network a checkpoint holds (quantized as recorded) and loads
// its state; returns the model and, when quantized, its QuantModel.
struct LoadedModel {
  models::Model model;
  std::optional<models::QuantModel> quant;
};
LoadedModel load_model(const Checkpoint& checkpoint, const std::string& source);

// The data options a checkpoint was trained with.
data::DataOptions data_options_of(const Checkpoint& checkpoint);

EvalResult run_eval(const Checkpoint& checkpoint, const EvalOptions& options, const data::DataOptions& data);

}  // namespace limpq::train
