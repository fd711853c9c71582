// The training loop: epochs of optimizer steps whose content a TrainStep
// strategy defines (limpq/train/step.h). The loop knows nothing about
// quantization; it owns
//   - the optimizer the strategy makes (SGD by default) and its cosine
//     schedule, and each pass's loss as the strategy defines it,
//   - checkpoints (at epoch ends, every N steps, on a stop request) and
//     resume from any of them, mid-epoch included,
//   - stop requests (Ctrl-C) and the TrainHooks,
//   - non-finite losses and gradients (stop with the step and layer named,
//     or skip the step),
//   - metrics.jsonl, the progress line, evaluation on the validation or
//     test split, batch-norm recalibration after the last epoch,
//   - data-parallel agreement (gradients averaged once per step, one small
//     all-reduce of flags per step, statistics reduced per epoch).
//
//   auto step = make_train_step(config, model, data);
//   TrainingLoop loop(config, model, data, *step, device);
//   TrainResult result = loop.run(resume, hooks);
#pragma once

#include <torch/torch.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "limpq/data/datasets.h"
#include "limpq/data/loader.h"
#include "limpq/models/model.h"
#include "limpq/train/checkpoint.h"
#include "limpq/train/config.h"
#include "limpq/train/evaluate.h"
#include "limpq/train/schedule.h"
#include "limpq/train/step.h"
#include "limpq/util/progress.h"

namespace limpq::train {

// Loss and top-1 accumulated over an epoch's batches (on the device, read
// once per progress update), reducible over data-parallel workers and
// stored exactly in mid-epoch checkpoints.
struct RunningStats {
  torch::Tensor loss_sum, correct;
  int64_t count = 0;

  void reset(const torch::Device& device);
  void add(const torch::Tensor& loss, const torch::Tensor& logits, const torch::Tensor& labels);
  double mean_loss() const;
  double accuracy() const;  // percent
  // Sums over workers (the statistics of the global batch).
  RunningStats reduced() const;
  nlohmann::ordered_json to_json() const;
  void restore(const nlohmann::json& j);
};

// metrics.jsonl: one JSON object per finished epoch, rewritten atomically.
class MetricsLog {
 public:
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}
  // Keeps the entries of epochs <= `epoch` from an existing log (resume).
  void restore_until(int64_t epoch);
  void append(const nlohmann::ordered_json& entry);

 private:
  std::string path_;
  std::vector<std::string> lines_;
};

class TrainingLoop {
 public:
  // Trains `model` (already on `device`, in its memory format) on `data`
  // (the training set as step.training_set() keeps it) with config.optim
  // and config.run; `step` says what one step does.
  TrainingLoop(const TrainConfig& config, models::Model model, const data::DataBundle& data, TrainStep& step,
               const torch::Device& device);

  // With `resume`, continues from out_dir/checkpoint.pt when it exists.
  TrainResult run(bool resume, const TrainHooks& hooks);

 private:
  // What one optimizer step's passes left behind.
  struct StepOutcome {
    std::vector<torch::Tensor> loss, logits;  // per pass, detached
    std::vector<torch::Tensor> finite;        // per pass, then per gradient
    bool nonfinite = false;
    bool stop = false;  // a stop request on any worker
  };

  void build_optimizer();
  void restore(const std::string& path);
  void announce();
  // Whether a hook ended the run after this epoch.
  bool run_epoch(int64_t epoch, const TrainHooks& hooks);
  void begin_epoch(int64_t epoch, int64_t first_batch);
  StepOutcome forward_backward(const torch::Tensor& images, const torch::Tensor& labels);
  void skip_nonfinite_step(const StepOutcome& outcome, const torch::Tensor& images, int64_t epoch);
  void update(const StepOutcome& outcome, const torch::Tensor& labels);
  void report_progress(util::ProgressLine& progress) const;
  nlohmann::ordered_json end_epoch(int64_t epoch, std::string& status);
  std::string pass_summary() const;
  // Writes the checkpoint; batches_done > 0 marks a position inside the
  // epoch, stored with the running statistics to continue from. Collective
  // (the statistics are reduced on every worker); rank 0 writes.
  void save(int64_t epochs_done, int64_t batches_done, const nlohmann::ordered_json& entry);
  [[noreturn]] void interrupted(const std::string& where) const;
  TrainResult finish(const TrainHooks& hooks);

  TrainConfig config_;
  models::Model model_;
  data::DataBundle data_;  // the training set as the strategy keeps it
  TrainStep& step_;
  torch::Device device_;
  bool main_rank_;
  torch::MemoryFormat format_;
  std::vector<torch::Tensor> parameters_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<data::DataLoader> train_loader_, eval_loader_;
  bool use_val_;
  int64_t steps_per_epoch_;
  std::unique_ptr<CosineSchedule> schedule_;
  std::string checkpoint_path_;
  MetricsLog metrics_;
  Checkpoint checkpoint_;
  std::vector<TrainStep::PassLabel> tracked_;

  // Where the run stands.
  int64_t step_index_ = 0;
  int64_t start_epoch_ = 0;
  int64_t start_batch_ = 0;  // > 0: resuming inside start_epoch_
  nlohmann::json start_progress_;
  int64_t batch_index_ = 0;
  double lr_ = 0;
  double prior_seconds_ = 0;  // train time of this epoch before a mid-epoch resume
  util::Stopwatch epoch_clock_;
  util::Stopwatch total_clock_;
  RunningStats stats_;                      // the last pass of each step
  std::vector<RunningStats> tracked_stats_;  // the strategy's tracked passes
  int64_t allreduced_bytes_ = 0;             // per step, for the metrics
  double images_per_second_ = 0;             // training throughput of the last epoch
  EvalResult last_eval_;
  bool final_test_done_ = false;  // last_eval_ is the final model on the test set
};

}  // namespace limpq::train
