#include "limpq/train/schedule.h"

#include <gtest/gtest.h>

#include <cmath>

namespace limpq::train {
namespace {

TEST(CosineScheduleTest, WarmupThenCosineToMin) {
  CosineSchedule s(0.1, 0.001, /*warmup_steps=*/4, /*total_steps=*/104);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.025);
  EXPECT_DOUBLE_EQ(s.lr(3), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(4), 0.1);
  EXPECT_NEAR(s.lr(54), 0.001 + 0.5 * 0.099, 1e-12) << "halfway through the decay";
  EXPECT_NEAR(s.lr(104), 0.001, 1e-12);
  for (int64_t step = 5; step < 104; ++step) EXPECT_LE(s.lr(step), s.lr(step - 1));
}

TEST(CosineScheduleTest, NoWarmup) {
  CosineSchedule s(0.2, 0.0, 0, 10);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.2);
  EXPECT_NEAR(s.lr(5), 0.1, 1e-12);
}

TEST(CosineScheduleTest, RejectsBadSettings) {
  EXPECT_THROW(CosineSchedule(0.0, 0.0, 0, 10), c10::Error);
  EXPECT_THROW(CosineSchedule(0.1, 0.2, 0, 10), c10::Error);
  EXPECT_THROW(CosineSchedule(0.1, 0.0, 11, 10), c10::Error);
}

}  // namespace
}  // namespace limpq::train
