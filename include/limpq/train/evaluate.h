// Evaluation, batch-norm recalibration and loading checkpoints: what
// training, `limpq eval` and the other commands share.
//
//   EvalResult r = run_eval(load_checkpoint("runs/fmnist/checkpoint.pt"), EvalOptions(), data_options);
//   EvalResult v = evaluate(*model, val_loader, device);
#pragma once

#include <torch/types.h>

#include <optional>
#include <nlohmann/json.hpp>
#include <string>

#include "limpq/data/datasets.h"
#include "limpq/data/loader.h"
#include "limpq/models/model.h"
#include "limpq/models/quantized.h"
#include "limpq/train/checkpoint.h"
#include "limpq/train/options.h"
#include "limpq/util/option_groups.h"

namespace limpq::train {


struct EvalResult {
  double loss = 0;  // mean cross-entropy (no label smoothing)
  double top1 = 0;  // percent
  double top5 = 0;  // percent
  int64_t count = 0;
  // For quantized models: the policy's cost (LIMPQ.md section 5).
  std::optional<models::PolicyCost> cost;
  nlohmann::ordered_json to_json() const;
  // "policy cost: ... GBitOps (..x fewer than 32-bit), weights ..." with a
  // newline, or "" when the model is not quantized.
  std::string cost_text() const;
};

// Compute threads for this process: `requested`, or when that is 0 (all
// cores), the cores divided among the data-parallel workers on this machine.
int64_t worker_threads(int64_t requested);

// Top-1/top-5 accuracy and loss of `model` over every batch of `loader`.
EvalResult evaluate(models::ModelImpl& model, data::DataLoader& loader, const torch::Device& device);

// Whether the model has a batch norm (recalibrate_batch_norm refuses one without).
bool has_batch_norm(const models::ModelImpl& model);

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

 public:
  template <typename V>
  void visit(V&& v) {
    v("split", split_, "test | val");
    util::visit_compute(v, device_, threads_);
    v("policy", policy_,
      "post-training quantization of a full-precision checkpoint under this policy file (initial steps, "
      "calibrated on one training batch)");
    v("uniform", uniform_, "post-training quantization at uniform precision, e.g. W4A4");
    v("bn_recalibration_batches", bn_recalibration_batches_,
      "first re-estimate batch-norm statistics over N training batches (0: the checkpoint's)");
  }
};

// Builds the network a checkpoint holds (quantized as recorded) and loads
// its state; returns the model and, when quantized, its QuantModel. Errors
// name `source`, by default the file the checkpoint was read from.
struct LoadedModel {
  models::Model model;
  std::optional<models::QuantModel> quant;
};
LoadedModel load_model(const Checkpoint& checkpoint, const std::string& source = "");

// The data options a checkpoint was trained with.
data::DataOptions data_options_of(const Checkpoint& checkpoint);
// The optimisation recipe a checkpoint was trained with (the defaults for
// keys its config lacks: sgd before train.optimizer).
OptimOptions optim_options_of(const Checkpoint& checkpoint);

// An ONNX network with the file's own weights as a full-precision
// checkpoint, for evaluation (`limpq eval --onnx FILE`); its data options
// adapt the default dataset to the network's input (data.channels,
// data.image_size).
Checkpoint onnx_checkpoint(const std::string& path);

EvalResult run_eval(const Checkpoint& checkpoint, const EvalOptions& options, const data::DataOptions& data);

}  // namespace limpq::train
