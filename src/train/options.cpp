#include "limpq/train/options.h"

namespace limpq::train {

OptimOptions indicator_recipe() {
  return OptimOptions()
      .epochs(3)
      .lr(0.01)
      .min_lr(1e-5)
      .warmup_epochs(0)
      .weight_decay(2.5e-5)
      .label_smoothing(0.1);
}

OptimOptions train_recipe() { return OptimOptions().bn_recalibration_batches(50); }

OptimOptions finetune_recipe() {
  return OptimOptions().epochs(5).lr(0.01).warmup_epochs(0).weight_decay(1e-4).bn_recalibration_batches(50);
}

}  // namespace limpq::train
