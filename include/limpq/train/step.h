// What one optimizer step does: the strategies the training loop runs.
//
// The loop (limpq/train/loop.h) owns epochs, the schedule, checkpoints and
// resume, stop requests, non-finite checks, metrics, evaluation and the
// data-parallel agreement. A step strategy sets the network up for its mode
// and says what happens inside one step: how many forward/backward passes,
// how the network is configured for each, the loss each pass minimises, the
// optimizer, what is done to the gradients before the update, which part of
// the training set it trains on, and what the run leaves behind at the end.
// A new objective (distillation, a label-free calibration loss) or another
// optimizer is a new strategy overriding loss() or make_optimizer(), not an
// edit of the loop.
//
//   PlainStep           full-precision training, or quantization-aware
//                       training under a policy (`limpq train`, `finetune`)
//   JointIndicatorStep  the importance indicators of every layer and
//                       candidate bit-width (`limpq indicators`, LIMPQ.md
//                       section 4); one-at-a-time training is its
//                       configuration with `indicators.only_layer`
#pragma once

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "limpq/data/datasets.h"
#include "limpq/data/loader.h"
#include "limpq/models/model.h"
#include "limpq/train/config.h"
#include "limpq/train/evaluate.h"

namespace limpq::train {

// What the loop hands a strategy when the last epoch is done.
struct FinishContext {
  models::Model model;
  torch::Device device = torch::kCPU;
  const data::DataBundle* data = nullptr;  // what the run trained on
  data::DataLoader* test_loader = nullptr;
  std::string out_dir;
  int64_t epochs = 0;
  bool main_rank = true;  // alone writes files
  bool evaluate_every_candidate = true;  // TrainHooks::evaluate_every_candidate
};

class TrainStep {
 public:
  // `optim` gives the defaults below their settings (label smoothing; the
  // optimizer's momentum, Nesterov and weight decay).
  explicit TrainStep(OptimOptions optim) : optim_(std::move(optim)) {}
  virtual ~TrainStep() = default;

  // The part of the run's training set this strategy trains on; the loop
  // builds its loader (and its steps per epoch) from it. Default: all.
  // JointIndicatorStep keeps indicators.fraction of it (LIMPQ.md section 4).
  virtual std::shared_ptr<const data::Dataset> training_set(std::shared_ptr<const data::Dataset> train) const {
    return train;
  }
  // The objective of one pass (the loop adds the passes' gradients).
  // Default: cross-entropy with optim.label_smoothing.
  virtual torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& labels) const;
  // The optimizer over the parameters, split by decays(). Default: SGD with
  // optim's momentum and Nesterov flag, optim.weight_decay on `decayed`, none
  // on `undecayed`. The loop sets each group's learning rate every step
  // (its cosine schedule) and saves and restores the optimizer's state.
  virtual std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& decayed,
                                                                  const std::vector<torch::Tensor>& undecayed) const;

  // How the strategy set the network up (the checkpoint's quantization
  // record; "" for a plain network). A resumed checkpoint must match it.
  virtual std::string record() const = 0;
  // Whether a parameter is weight-decayed (LSQ step sizes are not).
  virtual bool decays(const std::string& parameter_name) const = 0;

  // Forward/backward passes per step; their gradients accumulate. The loop
  // reports the loss and accuracy of the last pass as the step's.
  virtual int64_t passes() const { return 1; }
  // Sets the network up for pass `pass` of optimizer step `step`.
  virtual void configure_pass(int64_t /*pass*/, int64_t /*step*/) {}
  // Names a pass in error messages, e.g. " in the uniform W4A4 pass".
  virtual std::string describe_pass(int64_t /*pass*/) const { return ""; }
  // Labels of the first passes, whose loss and accuracy the loop also
  // reports one by one (metrics "train_<key>", progress "<label> l/acc%").
  struct PassLabel {
    std::string key, label;
  };
  virtual std::vector<PassLabel> tracked_passes() const { return {}; }
  // The label of the last pass on the progress line ("" for none).
  virtual std::string reported_label() const { return ""; }

  // Called with the step's gradients (averaged over workers, all finite)
  // before the optimizer updates.
  virtual void before_update(std::vector<torch::Tensor>& /*parameters*/) {}
  // Called after the optimizer's update, to bring parameters back into
  // their domain (LSQ step sizes into [min_step, max_step]).
  virtual void after_update() {}
  // Sets the network up to be evaluated (the loop's evaluations).
  virtual void prepare_evaluation() {}
  // After the last epoch: fills `result` beyond result.test (the final test
  // evaluation, already done) and writes what the run leaves behind.
  virtual void finish(FinishContext& context, TrainResult& result) = 0;

 protected:
  OptimOptions optim_;
};

// Full-precision training, or quantization-aware training under the policy
// of config.quant (the network quantized and the policy applied here).
std::unique_ptr<TrainStep> make_plain_step(const TrainConfig& config, models::Model model,
                                           const data::DataBundle& data);
// Joint indicator training (one-at-a-time with indicators.only_layer): the
// network quantized with every candidate bit-width, trained on
// indicators.fraction of the training set (its training_set()).
std::unique_ptr<TrainStep> make_joint_indicator_step(const TrainConfig& config, models::Model model,
                                                     const data::DataBundle& data);
// The strategy of `config`: joint indicators or plain.
std::unique_ptr<TrainStep> make_train_step(const TrainConfig& config, models::Model model,
                                           const data::DataBundle& data);

// Whether a parameter path names an LSQ quantizer's step sizes.
bool is_quantizer_step(const std::string& parameter_name);

}  // namespace limpq::train
