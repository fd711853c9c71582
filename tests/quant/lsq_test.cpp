#include "limpq/quant/lsq.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "quant/lsq_test_util.h"
#include "support/test_support.h"

namespace limpq::quant {
namespace {

// Tolerances: the forward pass must be bitwise equal; gradients differ only
// by float summation order.
constexpr double kGradRelTol = 1e-5;
constexpr double kGradAbsTol = 1e-6;

class LsqTest : public limpq::testing::SeededTest {};

using testing::Grads;
using testing::run;

TEST_F(LsqTest, Ranges) {
  EXPECT_EQ(QuantRange::of(4, true).qn, -8);
  EXPECT_EQ(QuantRange::of(4, true).qp, 7);
  EXPECT_EQ(QuantRange::of(4, false).qn, 0);
  EXPECT_EQ(QuantRange::of(4, false).qp, 15);
  EXPECT_EQ(QuantRange::of(2, true).qn, -2);
  EXPECT_EQ(QuantRange::of(2, true).qp, 1);
  EXPECT_THROW(QuantRange::of(1, true), c10::Error);
  EXPECT_THROW(QuantRange::of(17, false), c10::Error);
  EXPECT_DOUBLE_EQ(lsq_grad_scale(100, QuantRange::of(4, false)), 1.0 / std::sqrt(1500.0));
}

TEST_F(LsqTest, HandComputedForwardAndBackward) {
  // s = 0.5, signed 3 bits: [Qn, Qp] = [-4, 3]. x / s:
  //   -6 (below), -2.6, -0.5 (tie -> -0), 0.5 (tie -> 0), 1.5 (tie -> 2),
  //   2.5 (tie -> 2), 3 (exactly Qp: inside), 5 (above), 20 (above)
  const auto x = torch::tensor({-3.0f, -1.3f, -0.25f, 0.25f, 0.75f, 1.25f, 1.5f, 2.5f, 10.0f});
  const auto s = torch::tensor(0.5f);
  const QuantRange r = QuantRange::of(3, true);
  const double g = lsq_grad_scale(x.numel(), r);
  const std::vector<float> want_y = {-2.0f, -1.5f, -0.0f, 0.0f, 1.0f, 1.0f, 1.5f, 1.5f, 1.5f};
  const std::vector<float> want_dx = {0, 1, 1, 1, 1, 1, 1, 0, 0};
  // d y / d s: Qn below; q - x/s inside; Qp above.
  const double want_ds = (-4.0 + (-3 + 2.6) + (0 + 0.5) + (0 - 0.5) + (2 - 1.5) + (2 - 2.5) + (3 - 3) + 3 + 3) * g;
  for (bool fused : {false, true}) {
    SCOPED_TRACE(fused ? "fused" : "reference");
    const Grads out = run(fused, x, s, r, g, torch::ones_like(x));
    for (int64_t i = 0; i < x.numel(); ++i) {
      EXPECT_EQ(out.y[i].item<float>(), want_y[i]) << "element " << i;
      EXPECT_EQ(out.dx[i].item<float>(), want_dx[i]) << "element " << i;
    }
    EXPECT_NEAR(out.ds.item<double>(), want_ds, 1e-6);
  }
}

TEST_F(LsqTest, UnsignedClipsNegativesToZero) {
  const auto x = torch::tensor({-0.7f, 0.1f, 0.2f, 3.0f});
  const QuantRange r = QuantRange::of(2, false);  // [0, 3], s = 0.2
  const Grads out = run(true, x, torch::tensor(0.2f), r, 1.0, torch::ones_like(x));
  EXPECT_EQ(out.y[0].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(out.y[1].item<float>(), 0.0f) << "0.5 rounds half to even: 0";
  EXPECT_FLOAT_EQ(out.y[2].item<float>(), 0.2f);
  EXPECT_FLOAT_EQ(out.y[3].item<float>(), 0.6f);
  EXPECT_EQ(out.dx[0].item<float>(), 0.0f);
  EXPECT_EQ(out.dx[3].item<float>(), 0.0f);
  // Below contributes Qn = 0, above contributes Qp = 3; inside: (0 - 0.5) + (1 - 1).
  EXPECT_NEAR(out.ds.item<double>(), 0.0 + (0 - 0.5) + 0.0 + 3.0, 1e-6);
}

TEST_F(LsqTest, GradientScaleMultipliesOnlyTheStepGradient) {
  const auto x = torch::randn({64});
  const auto s = torch::tensor(0.3f);
  const QuantRange r = QuantRange::of(4, true);
  const Grads a = run(true, x, s, r, 1.0, torch::ones_like(x));
  const Grads b = run(true, x, s, r, 0.125, torch::ones_like(x));
  EXPECT_TRUE(torch::equal(a.dx, b.dx));
  EXPECT_NEAR(b.ds.item<double>(), a.ds.item<double>() * 0.125, 1e-6);
}

using testing::adversarial_input;

// Every variant this CPU runs (AVX-512, AVX2, generic), not only the one the
// dispatcher picks: CI machines differ, and each variant is compiled apart.
TEST_F(LsqTest, FusedKernelMatchesReferenceOnManyShapes) {
  const std::string chosen = lsq_cpu_kernel_isa();
  const std::vector<std::vector<int64_t>> shapes = {{1}, {7}, {33}, {4, 5}, {2, 3, 5, 7}, {16, 8, 3, 3},
                                                    {3, 17, 31}, {128, 16, 14, 14}, {70001}};
  for (const std::string& isa : lsq_cpu_kernel_isas()) {
    lsq_use_cpu_kernel_isa(isa);
    ASSERT_EQ(std::string(lsq_cpu_kernel_isa()), isa);
    for (const auto& shape : shapes) {
      for (int64_t bits = 2; bits <= 8; ++bits) {
        for (bool is_signed : {true, false}) {
          SCOPED_TRACE(::testing::Message() << isa << " shape " << c10::IntArrayRef(shape) << " bits " << bits
                                            << (is_signed ? " signed" : " unsigned"));
          const QuantRange r = QuantRange::of(bits, is_signed);
          const float sv = 0.05f + 0.01f * static_cast<float>(bits);
          const auto x = adversarial_input(shape, sv, r);
          const auto up = torch::randn(shape);
          const double g = lsq_grad_scale(x.numel(), r);
          const Grads ref = run(false, x, torch::tensor(sv), r, g, up);
          const Grads fast = run(true, x, torch::tensor(sv), r, g, up);
          ASSERT_TRUE(torch::equal(fast.y, ref.y)) << "forward must be bitwise equal";
          ASSERT_TRUE(torch::allclose(fast.dx, ref.dx, kGradRelTol, kGradAbsTol));
          ASSERT_NEAR(fast.ds.item<double>(), ref.ds.item<double>(),
                      kGradAbsTol + kGradRelTol * 10 * std::abs(ref.ds.item<double>()));
        }
      }
    }
  }
  lsq_use_cpu_kernel_isa(chosen);
}

TEST_F(LsqTest, PerChannelStepsMatchReference) {
  const QuantRange r = QuantRange::of(4, true);
  const auto x = torch::randn({6, 3, 3, 3});
  const auto s = torch::rand({6}) * 0.3f + 0.05f;
  const auto up = torch::randn_like(x);
  const double g = lsq_grad_scale(x.numel() / 6, r);
  const Grads ref = run(false, x, s, r, g, up);
  const Grads fast = run(true, x, s, r, g, up);
  EXPECT_TRUE(torch::equal(fast.y, ref.y));
  EXPECT_TRUE(torch::allclose(fast.dx, ref.dx, kGradRelTol, kGradAbsTol));
  EXPECT_TRUE(torch::allclose(fast.ds, ref.ds, 1e-4, 1e-6));
  EXPECT_EQ(fast.ds.sizes(), s.sizes());
  // Channel c uses step c.
  EXPECT_TRUE(torch::equal(fast.y[2], lsq_fake_quant_reference(x[2], s[2], r, g)));
}

TEST_F(LsqTest, ChannelsLastInputsGiveTheSameValuesAndGradients) {
  const QuantRange r = QuantRange::of(4, false);
  const auto x = torch::rand({4, 6, 5, 3});
  const auto up = torch::randn({4, 6, 5, 3});
  const double g = lsq_grad_scale(x.numel(), r);
  const Grads plain = run(true, x, torch::tensor(0.07f), r, g, up);
  const Grads last = run(true, x.contiguous(torch::MemoryFormat::ChannelsLast), torch::tensor(0.07f), r, g,
                         up.contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(torch::equal(plain.y, last.y));
  EXPECT_TRUE(torch::equal(plain.dx, last.dx));
  EXPECT_NEAR(plain.ds.item<double>(), last.ds.item<double>(), 1e-5 * std::abs(plain.ds.item<double>()) + 1e-7);
  // Upstream gradient in a different layout than the input.
  const Grads mixed = run(true, x.contiguous(torch::MemoryFormat::ChannelsLast), torch::tensor(0.07f), r, g, up);
  EXPECT_TRUE(torch::equal(plain.dx, mixed.dx));
}

// ---- The ReLU folded into the kernel: lsq_fake_quant_of_relu(x) against
// lsq_fake_quant_reference(relu(x)) ------------------------------------------

Grads run_after_relu(bool folded, const torch::Tensor& x0, const torch::Tensor& s0, const QuantRange& r, double g,
                     const torch::Tensor& upstream) {
  auto x = x0.clone().requires_grad_(true);
  auto s = s0.clone().requires_grad_(true);
  auto y = folded ? lsq_fake_quant_of_relu(x, s, r, g) : lsq_fake_quant_reference(torch::relu(x), s, r, g);
  (y * upstream).sum().backward();
  return {y.detach(), x.grad(), s.grad()};
}

TEST_F(LsqTest, ReluFoldedHandComputed) {
  // s = 0.5, unsigned 2 bits: [0, 3]. x / s: -2 (ReLU: 0), -0, 0 (ReLU's
  // gradient is 0 at 0), 0.5 (tie -> 0), 1.5 (tie -> 2), 3 (exactly Qp:
  // inside), 4 (above).
  const auto x = torch::tensor({-1.0f, -0.0f, 0.0f, 0.25f, 0.75f, 1.5f, 2.0f});
  const QuantRange r = QuantRange::of(2, false);
  const double g = 0.25;
  const std::vector<float> want_y = {0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 1.5f, 1.5f};
  const std::vector<float> want_dx = {0, 0, 0, 1, 1, 1, 0};
  // d y / d s: 0 at and below 0 (Qn = 0, or q - x/s = 0 - 0); q - x/s inside; Qp above.
  const double want_ds = (0.0 + 0.0 + 0.0 + (0 - 0.5) + (2 - 1.5) + (3 - 3) + 3) * g;
  for (bool folded : {false, true}) {
    SCOPED_TRACE(folded ? "folded" : "ReLU, then reference");
    const Grads out = run_after_relu(folded, x, torch::tensor(0.5f), r, g, torch::ones_like(x));
    for (int64_t i = 0; i < x.numel(); ++i) {
      EXPECT_EQ(out.y[i].item<float>(), want_y[i]) << "element " << i;
      EXPECT_EQ(out.dx[i].item<float>(), want_dx[i]) << "element " << i;
    }
    EXPECT_NEAR(out.ds.item<double>(), want_ds, 1e-6);
  }
}

TEST_F(LsqTest, ReluFoldedKernelMatchesReluThenReference) {
  const std::string chosen = lsq_cpu_kernel_isa();
  const std::vector<std::vector<int64_t>> shapes = {{1}, {33}, {2, 3, 5, 7}, {3, 17, 31}, {128, 16, 14, 14}};
  for (const std::string& isa : lsq_cpu_kernel_isas()) {
    lsq_use_cpu_kernel_isa(isa);
    for (const auto& shape : shapes) {
      for (int64_t bits = 2; bits <= 8; ++bits) {
        SCOPED_TRACE(::testing::Message() << isa << " shape " << c10::IntArrayRef(shape) << " bits " << bits);
        const QuantRange r = QuantRange::of(bits, false);
        const float sv = 0.05f + 0.01f * static_cast<float>(bits);
        // Ties, clip edges (0 among them) and values past them, and a
        // negative half like a pre-activation's; every 7th element exactly 0.
        auto x = adversarial_input(shape, sv, r) - 0.5f * sv * static_cast<float>(r.qp);
        x.view({-1}).slice(0, 0, x.numel(), 7).zero_();
        const auto up = torch::randn(shape);
        const double g = lsq_grad_scale(x.numel(), r);
        const Grads ref = run_after_relu(false, x, torch::tensor(sv), r, g, up);
        const Grads fast = run_after_relu(true, x, torch::tensor(sv), r, g, up);
        ASSERT_TRUE(torch::equal(fast.y, ref.y)) << "forward must be equal";
        ASSERT_TRUE(torch::allclose(fast.dx, ref.dx, kGradRelTol, kGradAbsTol));
        ASSERT_NEAR(fast.ds.item<double>(), ref.ds.item<double>(),
                    kGradAbsTol + kGradRelTol * 10 * std::abs(ref.ds.item<double>()));
      }
    }
  }
  lsq_use_cpu_kernel_isa(chosen);
}

// {relu(x), LSQ(relu(x))} with both outputs used, as a residual block's
// output is (by the next convolution and the shortcut), or either alone.
TEST_F(LsqTest, ReluAndQuantizedMatchesTheComposedOps) {
  const std::string chosen = lsq_cpu_kernel_isa();
  for (const std::string& isa : lsq_cpu_kernel_isas()) {
    lsq_use_cpu_kernel_isa(isa);
    for (const auto& shape : std::vector<std::vector<int64_t>>{{33}, {2, 3, 5, 7}, {128, 16, 14, 14}}) {
      for (int64_t bits : {2, 4, 8}) {
        for (const char* used : {"both", "relu", "quantized"}) {
          SCOPED_TRACE(::testing::Message() << isa << " shape " << c10::IntArrayRef(shape) << " bits " << bits
                                            << " uses " << used);
          const QuantRange r = QuantRange::of(bits, false);
          const float sv = 0.05f + 0.01f * static_cast<float>(bits);
          auto x0 = adversarial_input(shape, sv, r) - 0.5f * sv * static_cast<float>(r.qp);
          x0.view({-1}).slice(0, 0, x0.numel(), 7).zero_();
          const auto up_relu = torch::randn(shape);
          const auto up_q = torch::randn(shape);
          const double g = lsq_grad_scale(x0.numel(), r);
          const bool use_relu = std::string(used) != "quantized", use_q = std::string(used) != "relu";
          auto run_one = [&](bool fused) {
            auto x = x0.clone().requires_grad_(true);
            auto s = torch::tensor(sv).requires_grad_(true);
            torch::Tensor relu, q;
            if (fused) {
              auto out = relu_and_lsq_fake_quant(x, s, r, g);
              relu = out.relu;
              q = out.quantized;
            } else {
              relu = torch::relu(x);
              q = lsq_fake_quant_reference(relu, s, r, g);
            }
            torch::Tensor loss = torch::zeros({});
            if (use_relu) loss = loss + (relu * up_relu).sum();
            if (use_q) loss = loss + (q * up_q).sum();
            loss.backward();
            return std::vector<torch::Tensor>{relu.detach(), q.detach(), x.grad(),
                                              s.grad().defined() ? s.grad() : torch::zeros({})};
          };
          const auto ref = run_one(false);
          const auto fast = run_one(true);
          ASSERT_TRUE(torch::equal(fast[0], ref[0])) << "ReLU output";
          ASSERT_TRUE(torch::equal(fast[1], ref[1])) << "quantized output";
          ASSERT_TRUE(torch::allclose(fast[2], ref[2], kGradRelTol, kGradAbsTol)) << "dx";
          ASSERT_NEAR(fast[3].item<double>(), ref[3].item<double>(),
                      kGradAbsTol + kGradRelTol * 10 * std::abs(ref[3].item<double>()));
        }
      }
    }
  }
  lsq_use_cpu_kernel_isa(chosen);
}

TEST_F(LsqTest, ReluAndQuantizedNeedsAnUnsignedRange) {
  EXPECT_THAT([] { relu_and_lsq_fake_quant(torch::ones({4}), torch::tensor(0.1f), QuantRange::of(3, true), 1.0); },
              ::testing::ThrowsMessage<c10::Error>(::testing::HasSubstr("needs an unsigned range, got [-4, 3]")));
}

TEST_F(LsqTest, ReluFoldedNeedsAnUnsignedRange) {
  EXPECT_THAT([] { lsq_fake_quant_of_relu(torch::ones({4}), torch::tensor(0.1f), QuantRange::of(4, true), 1.0); },
              ::testing::ThrowsMessage<c10::Error>(::testing::HasSubstr("needs an unsigned range, got [-8, 7]")));
}

TEST_F(LsqTest, RejectsBadStepShapes) {
  EXPECT_THAT([] { lsq_fake_quant(torch::ones({4, 2}), torch::ones({3}), QuantRange::of(4, true), 1.0); },
              ::testing::ThrowsMessage<c10::Error>(::testing::HasSubstr("one value per channel (4)")));
}

TEST_F(LsqTest, ReportsTheChosenKernelAndRefusesOthers) {
  const auto isas = lsq_cpu_kernel_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.back(), "generic");  // runs everywhere, listed last
  const std::string isa = lsq_cpu_kernel_isa();
  EXPECT_NE(std::find(isas.begin(), isas.end(), isa), isas.end()) << isa;
  EXPECT_THAT([] { lsq_use_cpu_kernel_isa("neon"); },
              ::testing::ThrowsMessage<c10::Error>(::testing::HasSubstr("'neon' is not one this CPU runs")));
  EXPECT_EQ(std::string(lsq_cpu_kernel_isa()), isa);
}

}  // namespace
}  // namespace limpq::quant
