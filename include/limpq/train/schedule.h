// Learning-rate schedule: linear warm-up to the peak, then cosine decay to
// min_lr (Loshchilov & Hutter, "SGDR", 2017), evaluated per optimizer step.
//
//   CosineSchedule schedule(0.1, 0.0, /*warmup_steps=*/469, /*total_steps=*/7035);
//   double lr = schedule.lr(step);
#pragma once

#include <cstdint>

namespace limpq::train {

class CosineSchedule {
 public:
  CosineSchedule(double base_lr, double min_lr, int64_t warmup_steps, int64_t total_steps);
  // Learning rate for the optimizer step with 0-based index `step`.
  double lr(int64_t step) const;

 private:
  double base_lr_, min_lr_;
  int64_t warmup_steps_, total_steps_;
};

}  // namespace limpq::train
