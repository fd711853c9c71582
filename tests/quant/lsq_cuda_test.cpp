// The CUDA fake-quant kernel against the composed-op reference, on the GPU.
// Needs nothing but LibTorch and GoogleTest (it also builds in the
// LIMPQ_KERNELS_ONLY configuration); skipped where no GPU is visible.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "limpq/quant/lsq.h"
#include "quant/lsq_test_util.h"

namespace limpq::quant {
namespace {

constexpr double kGradRelTol = 1e-5;
constexpr double kGradAbsTol = 1e-6;

class LsqCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    if (!lsq_has_cuda_kernel()) GTEST_SKIP() << "built without the CUDA kernel (LibTorch has no CUDA)";
    torch::manual_seed(0);
  }
  const torch::Device cuda{torch::kCUDA};
};

using testing::Grads;
using testing::run;

using testing::adversarial_input;

TEST_F(LsqCudaTest, HandComputedValues) {
  // s = 0.5, signed 3 bits [-4, 3]; x / s = -6, -2.6, -0.5, 0.5, 1.5, 2.5, 3, 5, 20.
  const auto x = torch::tensor({-3.0f, -1.3f, -0.25f, 0.25f, 0.75f, 1.25f, 1.5f, 2.5f, 10.0f}).to(cuda);
  const auto s = torch::tensor(0.5f).to(cuda);
  const QuantRange r = QuantRange::of(3, true);
  const double g = lsq_grad_scale(x.numel(), r);
  const Grads out = run(true, x, s, r, g, torch::ones_like(x));
  const std::vector<float> want_y = {-2.0f, -1.5f, -0.0f, 0.0f, 1.0f, 1.0f, 1.5f, 1.5f, 1.5f};
  const std::vector<float> want_dx = {0, 1, 1, 1, 1, 1, 1, 0, 0};
  for (int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_EQ(out.y[i].item<float>(), want_y[i]) << "element " << i;
    EXPECT_EQ(out.dx[i].item<float>(), want_dx[i]) << "element " << i;
  }
  const double want_ds = (-4.0 + (-3 + 2.6) + 0.5 - 0.5 + 0.5 - 0.5 + 0 + 3 + 3) * g;
  EXPECT_NEAR(out.ds.item<double>(), want_ds, 1e-6);
}

TEST_F(LsqCudaTest, MatchesReferenceOnManyShapes) {
  const std::vector<std::vector<int64_t>> shapes = {{1},        {7},          {33},          {4, 5},
                                                    {2, 3, 5, 7}, {16, 8, 3, 3}, {3, 17, 31}, {128, 16, 14, 14},
                                                    {70001},    {4, 1 << 20}};
  for (const auto& shape : shapes) {
    for (int64_t bits = 2; bits <= 8; ++bits) {
      for (bool is_signed : {true, false}) {
        SCOPED_TRACE(::testing::Message() << "shape " << c10::IntArrayRef(shape) << " bits " << bits
                                          << (is_signed ? " signed" : " unsigned"));
        const QuantRange r = QuantRange::of(bits, is_signed);
        const float sv = 0.05f + 0.01f * static_cast<float>(bits);
        const auto x = adversarial_input(shape, sv, r).to(cuda);
        const auto up = torch::randn(shape).to(cuda);
        const auto s = torch::tensor(sv).to(cuda);
        const double g = lsq_grad_scale(x.numel(), r);
        const Grads ref = run(false, x, s, r, g, up);
        const Grads fast = run(true, x, s, r, g, up);
        ASSERT_TRUE(torch::equal(fast.y, ref.y)) << "forward must be bitwise equal";
        // The reference's dx is g * s / s through autograd; the kernel passes g through exactly.
        ASSERT_TRUE(torch::allclose(fast.dx, ref.dx, kGradRelTol, kGradAbsTol));
        ASSERT_TRUE(torch::equal(fast.dx, up.cpu() * (fast.dx != 0)));
        ASSERT_NEAR(fast.ds.item<double>(), ref.ds.item<double>(),
                    kGradAbsTol + kGradRelTol * 10 * std::abs(ref.ds.item<double>()));
        // The CPU kernel computes the same forward values.
        ASSERT_TRUE(torch::equal(lsq_fake_quant(x.cpu(), s.cpu(), r, g), fast.y));
      }
    }
  }
}

TEST_F(LsqCudaTest, PerChannelStepsMatchReference) {
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{6, 3, 3, 3}, {512, 256, 3, 3}, {3, 100000}}) {
    SCOPED_TRACE(::testing::Message() << "shape " << c10::IntArrayRef(shape));
    const QuantRange r = QuantRange::of(4, true);
    const auto x = torch::randn(shape).to(cuda);
    const auto s = (torch::rand({shape[0]}) * 0.3f + 0.05f).to(cuda);
    const auto up = torch::randn_like(x);
    const double g = lsq_grad_scale(x.numel() / shape[0], r);
    const Grads ref = run(false, x, s, r, g, up);
    const Grads fast = run(true, x, s, r, g, up);
    EXPECT_TRUE(torch::equal(fast.y, ref.y));
    EXPECT_TRUE(torch::allclose(fast.dx, ref.dx, kGradRelTol, kGradAbsTol));
    EXPECT_TRUE(torch::allclose(fast.ds, ref.ds, 1e-4, 1e-6));
    EXPECT_EQ(fast.ds.sizes(), s.sizes());
  }
}

TEST_F(LsqCudaTest, StepGradientIsDeterministic) {
  const QuantRange r = QuantRange::of(4, false);
  const auto x = torch::rand({64, 64, 32, 32}).to(cuda);
  const auto up = torch::randn_like(x);
  const auto s = torch::tensor(0.07f).to(cuda);
  const Grads a = run(true, x, s, r, 1e-3, up);
  const Grads b = run(true, x, s, r, 1e-3, up);
  EXPECT_TRUE(torch::equal(a.ds, b.ds));
}

TEST_F(LsqCudaTest, NonContiguousInputAndNoInputGradient) {
  const QuantRange r = QuantRange::of(3, true);
  const auto x = torch::randn({32, 48}).to(cuda).t();  // non-contiguous
  const auto s = torch::tensor(0.2f).to(cuda);
  EXPECT_TRUE(torch::equal(lsq_fake_quant(x, s, r, 1.0).cpu(), lsq_fake_quant_reference(x, s, r, 1.0).cpu()));
  // Weights frozen, step learnable: only dS is produced.
  auto sp = s.clone().requires_grad_(true);
  lsq_fake_quant(x, sp, r, 1.0).sum().backward();
  auto sr = s.clone().requires_grad_(true);
  lsq_fake_quant_reference(x, sr, r, 1.0).sum().backward();
  EXPECT_NEAR(sp.grad().item<double>(), sr.grad().item<double>(), 1e-4 * std::abs(sr.grad().item<double>()) + 1e-6);
}

TEST_F(LsqCudaTest, RejectsAStepOnAnotherDevice) {
  const auto x = torch::randn({4}).to(cuda);
  try {
    lsq_fake_quant(x, torch::tensor(0.1f), QuantRange::of(4, true), 1.0);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("step is on cpu"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace limpq::quant
