#include "limpq/quant/lsq_quantizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <cmath>
#include <sstream>

#include "support/test_support.h"

namespace limpq::quant {
namespace {

class LsqQuantizerTest : public limpq::testing::SeededTest {};

TEST_F(LsqQuantizerTest, WeightInitFollowsTheThreeSigmaRule) {
  const auto w = torch::tensor({-1.0f, 0.0f, 1.0f, 2.0f});  // mean 0.5, std (unbiased) 1.2910
  LsqQuantizer q(LsqQuantizerOptions({4, 2}).kind(QuantizerKind::kWeight));
  q->init_from_weight(w);
  const double mean = 0.5, std = std::sqrt(5.0 / 3.0);
  const double bound = std::max(std::abs(mean - 3 * std), std::abs(mean + 3 * std));
  EXPECT_NEAR(q->step(4).item<double>(), bound / 8.0, 1e-6);
  EXPECT_NEAR(q->step(2).item<double>(), bound / 2.0, 1e-6);
  EXPECT_TRUE(q->initialized(4));
}

TEST_F(LsqQuantizerTest, PerChannelWeightInit) {
  auto w = torch::zeros({2, 3});
  w[0] = torch::tensor({1.0f, 2.0f, 3.0f});  // mean 2, std 1 -> bound 5
  w[1] = torch::tensor({0.0f, 0.0f, 0.0f});  // bound 0 -> clamped to min_step
  LsqQuantizer q(LsqQuantizerOptions({3}).kind(QuantizerKind::kWeight).channels(2));
  q->init_from_weight(w);
  EXPECT_NEAR(q->step(3)[0].item<double>(), 5.0 / 4.0, 1e-6);
  EXPECT_NEAR(q->step(3)[1].item<double>(), 1e-5, 1e-9);
}

TEST_F(LsqQuantizerTest, ActivationStepsInitialiseLazilyPerBitWidth) {
  LsqQuantizer q(LsqQuantizerOptions({4, 2}).is_signed(false));
  const auto x = torch::tensor({0.0f, 1.0f, 2.0f, 5.0f});  // mean |x| = 2
  q->set_bits(4);
  EXPECT_FALSE(q->initialized(4));
  q(x);
  EXPECT_NEAR(q->step(4).item<double>(), 2.0 * 2.0 / std::sqrt(15.0), 1e-6);
  EXPECT_FALSE(q->initialized(2)) << "only the bit-width that saw data";
  q(x * 10);  // no re-initialisation
  EXPECT_NEAR(q->step(4).item<double>(), 2.0 * 2.0 / std::sqrt(15.0), 1e-6);
  q->set_bits(2);
  q(x);
  EXPECT_NEAR(q->step(2).item<double>(), 2.0 * 2.0 / std::sqrt(3.0), 1e-6);
}

TEST_F(LsqQuantizerTest, LazyInitAveragesAcrossWorkers) {
  set_average_across_workers([](torch::Tensor& t) { t.mul_(0.5); });  // a fake two-worker mean
  LsqQuantizer q(LsqQuantizerOptions({4}).is_signed(false));
  q->set_bits(4);
  q(torch::full({4}, 3.0f));
  set_average_across_workers(nullptr);
  EXPECT_NEAR(q->step(4).item<double>(), 0.5 * 2.0 * 3.0 / std::sqrt(15.0), 1e-6);
}

TEST_F(LsqQuantizerTest, LazyInitOfTwoHalvesAveragedIsTheWholeBatchsStep) {
  // Two workers, each with half of the batch, must start from the very step
  // one process computes from the whole batch: a last-bit difference flips
  // the rounding of some elements and the runs part. Computed in float it
  // differed for 13 of these 20 batches.
  int differing = 0;
  for (int seed = 0; seed < 20; ++seed) {
    torch::manual_seed(seed);
    const auto x = torch::randn({16, 16, 28, 28}).relu();
    auto step_of = [](const torch::Tensor& batch) {
      LsqQuantizer q(LsqQuantizerOptions({4}).is_signed(false));
      q->set_bits(4);
      q(batch);
      return q->step(4).item<float>();
    };
    const float whole = step_of(x);
    // Worker 1's contribution, as the all-reduce would deliver it.
    torch::Tensor other;
    set_average_across_workers([&](torch::Tensor& t) { other = t.clone(); });
    step_of(x.narrow(0, 8, 8));
    set_average_across_workers([&](torch::Tensor& t) { t.add_(other).div_(2); });
    const float averaged = step_of(x.narrow(0, 0, 8));
    set_average_across_workers(nullptr);
    differing += whole != averaged;
  }
  EXPECT_EQ(differing, 0) << "of 20 batches";
}

TEST_F(LsqQuantizerTest, StepsOfOtherBitWidthsGetNoGradient) {
  LsqQuantizer q(LsqQuantizerOptions({6, 4, 2}).kind(QuantizerKind::kWeight));
  auto w = torch::randn({8, 4}, torch::requires_grad());
  q->init_from_weight(w);
  q->set_bits(4);
  q(w).pow(2).sum().backward();
  const auto g = q->steps.grad();
  EXPECT_EQ(g[0].item<float>(), 0.0f);
  EXPECT_NE(g[1].item<float>(), 0.0f);
  EXPECT_EQ(g[2].item<float>(), 0.0f);
}

TEST_F(LsqQuantizerTest, FullPrecisionIsIdentityAndUnknownBitsAreRefused) {
  LsqQuantizer q(LsqQuantizerOptions({4}));
  const auto x = torch::randn({5});
  EXPECT_TRUE(torch::equal(q(x), x)) << "starts at full precision";
  EXPECT_THAT([&] { q->set_bits(3); },
              ::testing::ThrowsMessage<c10::Error>(::testing::HasSubstr("bit-width 3 is not one of its candidates")));
  EXPECT_THROW(LsqQuantizer(LsqQuantizerOptions({4, 4})), c10::Error);
  EXPECT_THROW(LsqQuantizer(LsqQuantizerOptions({1})), c10::Error);
}

TEST_F(LsqQuantizerTest, StepClampAppliesInTheForwardPass) {
  LsqQuantizer q(LsqQuantizerOptions({4}).kind(QuantizerKind::kWeight).max_step(1.0));
  q->init_from_weight(torch::ones({4}));
  {
    torch::NoGradGuard no_grad;
    q->steps.fill_(5.0);
  }
  q->set_bits(4);
  // With s clamped to 1: 2.6 -> round(2.6) * 1 = 3 (with s = 5 it would be 5 * round(0.52) = 5).
  EXPECT_FLOAT_EQ(q(torch::tensor({2.6f}))[0].item<float>(), 3.0f);
}

// An update that carries a step past a bound leaves it where the forward
// pass's clamp gives it no gradient; projected back, it learns again.
TEST_F(LsqQuantizerTest, AStepPastItsBoundsIsProjectedBackAndLearnsAgain) {
  LsqQuantizer q(LsqQuantizerOptions({4, 8}).kind(QuantizerKind::kWeight).max_step(1.0));
  const torch::Tensor w = torch::linspace(-1.0, 1.0, 64);
  q->init_from_weight(w);
  q->set_bits(8);
  auto step_gradient = [&] {
    q->zero_grad();
    (q(w) * torch::linspace(0.5, 1.5, 64)).sum().backward();
    return q->steps.grad()[1].item<double>();
  };
  {
    torch::NoGradGuard no_grad;
    q->steps[1].fill_(-0.3);  // an overshoot below zero
    q->steps[0].fill_(5.0);   // and one above max_step
  }
  EXPECT_EQ(step_gradient(), 0.0) << "below min_step the clamp cuts the gradient";
  StepGuard(*q, /*max_change=*/0).apply();
  EXPECT_DOUBLE_EQ(q->steps[1].item<double>(), static_cast<double>(static_cast<float>(1e-5)));
  EXPECT_DOUBLE_EQ(q->steps[0].item<double>(), 1.0);
  EXPECT_NE(step_gradient(), 0.0) << "at min_step the step gets a gradient again";
}

TEST_F(LsqQuantizerTest, StepGuardLimitsEachUpdatesRelativeChange) {
  auto root = torch::nn::Sequential(LsqQuantizer(LsqQuantizerOptions({4, 2}).kind(QuantizerKind::kWeight)),
                                    LsqQuantizer(LsqQuantizerOptions({3}).channels(2).kind(QuantizerKind::kWeight)));
  auto a = root[0]->as<LsqQuantizerImpl>();
  auto b = root[1]->as<LsqQuantizerImpl>();
  torch::NoGradGuard no_grad;
  a->steps.copy_(torch::tensor({0.1f, 0.2f}));
  b->steps.copy_(torch::tensor({{0.5f, 1e-3f}}));
  StepGuard guard(*root, 0.05);
  guard.snapshot();
  a->steps.copy_(torch::tensor({1.0f, 0.201f}));  // an update: x10, +0.5%
  b->steps.copy_(torch::tensor({{-0.2f, 0.9e-3f}}));  // through zero, -10%
  guard.apply();
  EXPECT_FLOAT_EQ(a->steps[0].item<float>(), 0.105f);
  EXPECT_FLOAT_EQ(a->steps[1].item<float>(), 0.201f) << "a change within the limit is kept";
  EXPECT_FLOAT_EQ(b->steps[0][0].item<float>(), 0.475f);
  EXPECT_FLOAT_EQ(b->steps[0][1].item<float>(), 0.95e-3f);
  EXPECT_THAT([&] { StepGuard(*root, 1.0); },
              ::testing::ThrowsMessage<c10::Error>(::testing::HasSubstr("max_step_change must be in [0, 1)")));
}

// forward_after_relu(x) is forward(relu(x)) in every setting: the ReLU folded
// into the kernel (unsigned, fused), or run first (signed, reference); the
// lazy step initialisation sees the ReLU's output either way.
TEST_F(LsqQuantizerTest, ForwardAfterReluIsForwardOfRelu) {
  const auto x = torch::randn({4, 8, 5, 5});
  const auto up = torch::randn({4, 8, 5, 5});
  for (bool is_signed : {false, true}) {
    for (bool fused : {true, false}) {
      for (int64_t bits : {32, 4, 2}) {
        SCOPED_TRACE(::testing::Message() << (is_signed ? "signed" : "unsigned") << (fused ? " fused" : " reference")
                                          << " bits " << bits);
        const auto options = LsqQuantizerOptions({4, 2}).is_signed(is_signed).fused(fused);
        LsqQuantizer after(options);
        LsqQuantizer plain(options);
        after->set_bits(bits);
        plain->set_bits(bits);
        auto xa = x.clone().requires_grad_(true);
        auto xp = x.clone().requires_grad_(true);
        const auto ya = after->forward_after_relu(xa);
        const auto yp = plain(torch::relu(xp));
        ASSERT_TRUE(torch::equal(ya, yp));
        (ya * up).sum().backward();
        (yp * up).sum().backward();
        EXPECT_TRUE(torch::equal(xa.grad(), xp.grad()));
        if (bits == 32) continue;
        EXPECT_DOUBLE_EQ(after->step(bits).item<double>(), plain->step(bits).item<double>())
            << "the step is initialised from relu(x)";
        EXPECT_TRUE(torch::allclose(after->steps.grad(), plain->steps.grad(), 1e-5, 1e-7))
            << after->steps.grad() << " against " << plain->steps.grad();
      }
    }
  }
}

TEST_F(LsqQuantizerTest, StateSurvivesSaveAndLoadWithoutReinitialising) {
  LsqQuantizer a(LsqQuantizerOptions({4, 2}).is_signed(false));
  a->set_bits(4);
  a(torch::rand({16}));
  std::stringstream buffer;
  torch::save(a, buffer);
  LsqQuantizer b(LsqQuantizerOptions({4, 2}).is_signed(false));
  torch::load(b, buffer);
  b->set_bits(4);
  const double before = b->step(4).item<double>();
  b(torch::rand({16}) * 100);
  EXPECT_DOUBLE_EQ(b->step(4).item<double>(), before) << "a loaded step is not re-initialised";
  EXPECT_FALSE(b->initialized(2));
}

}  // namespace
}  // namespace limpq::quant
