#include "limpq/train/schedule.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace limpq::train {

CosineSchedule::CosineSchedule(double base_lr, double min_lr, int64_t warmup_steps, int64_t total_steps)
    : base_lr_(base_lr), min_lr_(min_lr), warmup_steps_(warmup_steps), total_steps_(total_steps) {
  TORCH_CHECK(base_lr > 0, "schedule: lr must be positive, got ", base_lr);
  TORCH_CHECK(min_lr >= 0 && min_lr <= base_lr, "schedule: min_lr must be in [0, lr=", base_lr, "], got ",
              min_lr);
  TORCH_CHECK(total_steps > 0, "schedule: total steps must be positive, got ", total_steps);
  TORCH_CHECK(warmup_steps >= 0 && warmup_steps <= total_steps, "schedule: warm-up of ", warmup_steps,
              " steps must be within the ", total_steps, " total steps");
}

double CosineSchedule::lr(int64_t step) const {
  if (step < warmup_steps_) return base_lr_ * static_cast<double>(step + 1) / warmup_steps_;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps_ - warmup_steps_);
  const double t = std::min(1.0, static_cast<double>(step - warmup_steps_) / decay_steps);
  return min_lr_ + 0.5 * (base_lr_ - min_lr_) * (1.0 + std::cos(M_PI * t));
}

}  // namespace limpq::train
