// Options of the training commands (config sections `train` and `run`).
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

#include "limpq/models/quantized.h"
#include "limpq/util/option_groups.h"

namespace limpq::train {

// The optimisation recipe: SGD with momentum (or AdamW), cosine schedule
// with linear warm-up, label-smoothed cross-entropy.
struct OptimOptions {
  TORCH_ARG(int64_t, epochs) = 15;
  TORCH_ARG(double, lr) = 0.1;
  TORCH_ARG(double, min_lr) = 0.0;
  // "sgd" or "adamw" (torch.optim.AdamW: betas 0.9, 0.999, eps 1e-8, the
  // decay decoupled from the gradient), as transformer recipes train.
  TORCH_ARG(std::string, optimizer) = "sgd";
  TORCH_ARG(double, momentum) = 0.9;
  TORCH_ARG(bool, nesterov) = false;
  TORCH_ARG(double, weight_decay) = 5e-4;
  // Weight decay on the conv and linear layers' weights only: not on
  // biases, norms' scales, layer scales, class tokens or position
  // embeddings (what timm and torchvision's transformer recipes do). Off:
  // every parameter but the LSQ step sizes is decayed.
  TORCH_ARG(bool, decay_layer_weights_only) = false;
  TORCH_ARG(double, warmup_epochs) = 1.0;
  TORCH_ARG(double, label_smoothing) = 0.1;
  // After the last epoch, re-estimate batch-norm running statistics over
  // this many training batches (recalibrate_batch_norm); 0: off. A network
  // without batch norm skips it.
  TORCH_ARG(int64_t, bn_recalibration_batches) = 0;

 public:
  template <typename V>
  void visit(V&& v) {
    v("epochs", epochs_, "training epochs");
    v("lr", lr_, "peak learning rate (used as given: not rescaled with the batch size or the number of workers)");
    v("min_lr", min_lr_, "learning rate at the end of the cosine schedule");
    v("optimizer", optimizer_, "sgd or adamw (betas 0.9, 0.999; decoupled weight decay)");
    v("momentum", momentum_, "SGD momentum");
    v("nesterov", nesterov_, "Nesterov momentum (SGD)");
    v("weight_decay", weight_decay_, "weight decay (SGD: L2 in the gradient; AdamW: decoupled)");
    v("decay_layer_weights_only", decay_layer_weights_only_,
      "decay only conv and linear weights (not biases, norms, layer scales, tokens, position embeddings)");
    v("warmup_epochs", warmup_epochs_, "linear warm-up length in epochs (fractions allowed)");
    v("label_smoothing", label_smoothing_, "label smoothing of the training loss");
    v("bn_recalibration_batches", bn_recalibration_batches_,
      "after the last epoch, re-estimate batch-norm statistics over N training batches (0: off)");
  }
};

// The default recipes of the training stages, defined once for their
// commands (`limpq train`, `limpq indicators`, `limpq finetune`) and the
// stages of `limpq run`:
// full-precision training, ending with batch-norm statistics re-estimated
// over 50 batches: a short run, or batch norms with a small momentum
// (torchvision's mobilenet_v3 has 0.01), otherwise ends with statistics that
// lag the weights, and the indicators start from them.
OptimOptions train_recipe();
// joint indicator training, the authors' recipe (LIMPQ.md section 4).
OptimOptions indicator_recipe();
// Fine-tuning under a policy, ending with batch-norm statistics re-estimated
// over 50 batches: short QAT runs can otherwise end with statistics spoiled
// by their early steps (BENCHMARKS.md).
OptimOptions finetune_recipe();

// Where and how a run executes.
struct RunOptions {
  TORCH_ARG(std::string, out_dir) = "runs/train";
  TORCH_ARG(std::string, device) = "cpu";
  TORCH_ARG(int64_t, threads) = 0;
  TORCH_ARG(int64_t, seed) = 0;
  // Evaluate on the validation (or test) split every N epochs and at the end.
  TORCH_ARG(int64_t, eval_every) = 1;
  TORCH_ARG(bool, progress) = true;
  // Also checkpoint every N optimizer steps inside an epoch (0: at epoch
  // ends only); a stop request (Ctrl-C) always checkpoints.
  TORCH_ARG(int64_t, checkpoint_every) = 0;
  // A NaN or Inf loss or gradient: "stop" (error naming the step and layer)
  // or "skip" (drop that step's update and go on).
  TORCH_ARG(std::string, on_nonfinite) = "stop";
  // Data-parallel runs (launched by torchrun, `limpq launch` or Slurm):
  // seconds a collective may wait for the other workers; SyncBatchNorm.
  TORCH_ARG(double, dist_timeout) = 300;
  TORCH_ARG(bool, sync_bn) = false;
  // Channels-last activations and weights: oneDNN convolves NHWC without
  // reordering, and batch norm runs faster on it. On the 2-core CI VM
  // (BENCHMARKS.md) fp32 and W4A4 QAT steps are both faster; on by default.
  TORCH_ARG(bool, channels_last) = true;

 public:
  template <typename V>
  void visit(V&& v) {
    v("out_dir", out_dir_, "output folder: checkpoint.pt, metrics.jsonl, config.json");
    util::visit_compute(v, device_, threads_);
    v("seed", seed_, "seed for initialisation, shuffling, augmentation and splits");
    v("eval_every", eval_every_, "evaluate every N epochs");
    v("progress", progress_, "show the live progress line");
    v("checkpoint_every", checkpoint_every_, "also checkpoint every N steps inside an epoch (0: epoch ends only)");
    v("on_nonfinite", on_nonfinite_, "on a NaN/Inf loss or gradient: stop | skip");
    v("dist_timeout", dist_timeout_, "data-parallel runs: seconds to wait for the other workers before failing");
    v("sync_bn", sync_bn_, "batch norm over the global batch of all workers (SyncBatchNorm)");
    v("channels_last", channels_last_, "channels-last memory format for weights and activations");
  }
};

// Quantization-aware fine-tuning (config section `quant`): the policy to
// train under, either a policy file or a uniform precision, plus how layers
// are quantized. Both empty: full-precision training.
struct FinetuneOptions {
  TORCH_ARG(std::string, policy) = "";
  TORCH_ARG(std::string, uniform) = "";
  TORCH_ARG(models::QuantizeOptions, quantize) = {};

 public:
  bool enabled() const { return !policy_.empty() || !uniform_.empty(); }
  template <typename V>
  void visit(V&& v) {
    v("policy", policy_, "policy JSON file to fine-tune under (from limpq search)");
    v("uniform", uniform_, "uniform precision instead of a policy, e.g. W4A4");
    quantize_.visit(v);
  }
};

// Joint training of the importance indicators (config section `indicators`,
// LIMPQ.md section 4).
struct IndicatorOptions {
  TORCH_ARG(std::vector<int64_t>, candidates) = std::vector<int64_t>{6, 5, 4, 3, 2};
  // Part of the training set to train on (the authors: 0.5).
  TORCH_ARG(double, fraction) = 0.5;
  // Layers kept out of the search; empty: the first conv and the last layer.
  TORCH_ARG(std::vector<std::string>, fixed_layers) = {};
  TORCH_ARG(bool, fused) = true;
  // One-at-a-time training (the alternative joint training replaces): only
  // this layer is quantized, at the single bit-width in `candidates`, the
  // others stay at full precision, and there is no mixed pass.
  TORCH_ARG(std::string, only_layer) = "";
  // Examples (training set, no augmentation) on which the end of the run
  // measures each tensor's rms and Fisher trace for the scale-free criteria
  // (include/limpq/train/layer_stats.h); 0: none.
  TORCH_ARG(int64_t, stats_samples) = 256;

 public:
  template <typename V>
  void visit(V&& v) {
    v("candidates", candidates_, "candidate bit-widths, e.g. 6,5,4,3,2");
    v("fraction", fraction_, "fraction of the training set used");
    util::visit_fixed_layers(v, fixed_layers_);
    v("fused", fused_, "fused fake-quant kernel (false: composed-op reference)");
    v("only_layer", only_layer_, "train this one layer's indicators alone at one bit-width (others full precision)");
    v("stats_samples", stats_samples_, "examples for the tensors' rms and Fisher traces at the end (0: none)");
  }
};

}  // namespace limpq::train
