// `limpq train`, `finetune` and `indicators`: a step strategy for the mode
// (limpq/train/step.h) run by the training loop (limpq/train/loop.h).
#include "limpq/train/trainer.h"

#include <c10/util/Exception.h>

#include <filesystem>

#include "limpq/dist/dist.h"
#include "limpq/models/state_dict.h"
#include "limpq/quant/lsq_quantizer.h"
#include "limpq/train/loop.h"
#include "limpq/train/step.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/runtime.h"

namespace limpq::train {
namespace {

void check_options(const TrainConfig& config) {
  const OptimOptions& optim = config.optim;
  const RunOptions& run = config.run;
  TORCH_CHECK(optim.epochs() > 0, "train: epochs must be positive, got ", optim.epochs());
  TORCH_CHECK(optim.warmup_epochs() >= 0, "train: warmup_epochs must be >= 0, got ", optim.warmup_epochs());
  TORCH_CHECK(optim.label_smoothing() >= 0 && optim.label_smoothing() < 1,
              "train: label_smoothing must be in [0, 1), got ", optim.label_smoothing());
  TORCH_CHECK(optim.bn_recalibration_batches() >= 0, "train: bn_recalibration_batches must be >= 0, got ",
              optim.bn_recalibration_batches());
  TORCH_CHECK(run.eval_every() > 0, "run: eval_every must be positive, got ", run.eval_every());
  TORCH_CHECK(run.dist_timeout() > 0, "run: dist_timeout must be positive, got ", run.dist_timeout());
  TORCH_CHECK(run.on_nonfinite() == "stop" || run.on_nonfinite() == "skip",
              "run: on_nonfinite must be stop or skip, got '", run.on_nonfinite(), "'");
  TORCH_CHECK(run.checkpoint_every() >= 0, "run: checkpoint_every must be >= 0, got ", run.checkpoint_every());
}

// In a data-parallel run the quantizers' lazy step initialisation averages
// over the workers and their gradient scale counts the global batch; both
// are reset when the run ends, however it ends.
struct DataParallelQuantizers {
  DataParallelQuantizers() {
    if (!dist::is_distributed()) return;
    quant::set_average_across_workers([](torch::Tensor& t) { dist::allreduce_mean(t); });
    quant::set_data_parallel_workers(dist::world_size());
  }
  ~DataParallelQuantizers() {
    quant::set_average_across_workers(nullptr);
    quant::set_data_parallel_workers(1);
  }
  DataParallelQuantizers(const DataParallelQuantizers&) = delete;
  DataParallelQuantizers& operator=(const DataParallelQuantizers&) = delete;
};

}  // namespace

TrainResult run_train(TrainConfig config, bool resume, const TrainHooks& hooks) {
  check_options(config);
  config.model = models::resolve_model_options(config.model);
  const RunOptions& run = config.run;
  dist::init_from_environment(std::chrono::milliseconds(std::llround(run.dist_timeout() * 1000)));
  dist::set_sync_batch_norm(run.sync_bn());
  util::set_threads(worker_threads(run.threads()));
  const torch::Device device = util::resolve_device(run.device());
  const auto seed = static_cast<uint64_t>(run.seed());
  util::seed_everything(seed);

  const std::string checkpoint = (std::filesystem::path(run.out_dir()) / "checkpoint.pt").string();
  TORCH_CHECK(resume || !util::file_exists(checkpoint), "train: '", checkpoint,
              "' already exists; pass --resume to continue it or choose another --out-dir");

  data::DataBundle data = data::make_data(config.data, seed);
  models::Model model = models::build_model(config.model, data.input_shape, data.num_classes);
  std::unique_ptr<TrainStep> step = make_train_step(config, model, data);
  model->to(device);
  if (run.channels_last()) models::to_channels_last(*model);
  const DataParallelQuantizers quantizers;
  TrainingLoop loop(config, model, data, *step, device);
  return loop.run(resume, hooks);
}

}  // namespace limpq::train
