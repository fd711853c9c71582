// Quantized networks trained on the GPU against the same networks on the CPU:
// fine-tuning under a policy (lazily initialised activation steps, the fused
// CUDA kernel, SGD on every step size) and one joint indicator step
// (switchable batch norm, one step per candidate). Builds in the
// LIMPQ_CORE_ONLY configuration; skipped where no GPU is visible.

#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "limpq/models/model.h"
#include "limpq/models/quantized.h"
#include "limpq/quant/lsq.h"

namespace limpq::models {
namespace {

namespace F = torch::nn::functional;

class QuantizedCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    if (!quant::lsq_has_cuda_kernel()) GTEST_SKIP() << "built without the CUDA kernel (LibTorch has no CUDA)";
    // TF32 convolutions would differ from the CPU's by ~1e-3, far more than
    // the float summation order this comparison allows for.
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
  }

  // Two identical resnet20s: one stays on the CPU, one goes to the GPU.
  static Model fresh_model() {
    torch::manual_seed(7);
    return make_model("resnet20", 1, 10);
  }

  static torch::Tensor loss_of(const Model& model, const torch::Tensor& x, const torch::Tensor& y) {
    return F::cross_entropy(model->forward(x.to(device_of(model))), y.to(device_of(model)));
  }

  static torch::Device device_of(const Model& model) { return model->parameters().front().device(); }

  // Every parameter and buffer agrees within float summation-order noise.
  // The quantizer steps, whose updates are small next to their values, are
  // also held to how far they moved: a wrong or missing step gradient on the
  // GPU fails here even when the absolute difference is tiny.
  static void expect_same_state(const Model& cpu, const Model& gpu,
                                const std::map<std::string, torch::Tensor>& initial) {
    auto gpu_params = gpu->named_parameters();
    for (const auto& p : cpu->named_parameters()) {
      const auto want = p.value().detach();
      const auto got = gpu_params[p.key()].detach().cpu();
      const double diff = (got - want).abs().max().item<double>();
      const double scale = want.abs().max().item<double>();
      EXPECT_LE(diff, 1e-3 * scale + 1e-5) << p.key() << ": max |gpu - cpu| " << diff << ", max |cpu| " << scale;
      const auto it = initial.find(p.key());
      if (it != initial.end() && p.key().find("step") != std::string::npos) {
        const double moved = (want - it->second).abs().max().item<double>();
        EXPECT_GT(moved, 0.0) << p.key() << " never moved on the CPU";
        EXPECT_LE(diff, 0.02 * moved + 1e-7) << p.key() << ": gpu and cpu updates differ (moved " << moved << ")";
      }
    }
    auto gpu_buffers = gpu->named_buffers();
    for (const auto& b : cpu->named_buffers()) {
      if (!b.value().is_floating_point()) {
        EXPECT_TRUE(torch::equal(gpu_buffers[b.key()].cpu(), b.value())) << b.key();
        continue;
      }
      const double diff = (gpu_buffers[b.key()].cpu() - b.value()).abs().max().item<double>();
      const double scale = b.value().abs().max().item<double>();
      EXPECT_LE(diff, 1e-3 * scale + 1e-5) << b.key() << ": max |gpu - cpu| " << diff;
    }
  }

  static std::map<std::string, torch::Tensor> snapshot(const Model& model) {
    std::map<std::string, torch::Tensor> out;
    for (const auto& p : model->named_parameters()) out[p.key()] = p.value().detach().cpu().clone();
    return out;
  }
};

TEST_F(QuantizedCudaTest, PolicyFineTuningMatchesTheCpu) {
  Model cpu = fresh_model();
  Model gpu = fresh_model();
  QuantModel qcpu(cpu, {1, 16, 16});
  QuantModel qgpu(gpu, {1, 16, 16});
  // Mixed bits, so more than one range runs on the device.
  quant::Policy policy = qcpu.uniform_policy({4, 4});
  for (size_t i = 0; i < policy.layers.size(); ++i) {
    policy.layers[i].second = {2 + static_cast<int64_t>(i % 3), 2 + static_cast<int64_t>((i + 1) % 4)};
  }
  qcpu.prepare_policy(policy);
  qgpu.prepare_policy(policy);
  gpu->to(torch::kCUDA);

  torch::manual_seed(11);
  const auto x = torch::randn({16, 1, 16, 16});
  const auto y = torch::randint(0, 10, {16});
  std::map<std::string, torch::Tensor> initial;
  auto options = torch::optim::SGDOptions(0.05).momentum(0.9);
  torch::optim::SGD opt_cpu(cpu->parameters(), options);
  torch::optim::SGD opt_gpu(gpu->parameters(), options);
  cpu->train();
  gpu->train();
  for (int step = 0; step < 3; ++step) {
    const auto loss_cpu = loss_of(cpu, x, y);
    const auto loss_gpu = loss_of(gpu, x, y);
    // The activation steps are set by the first batch: snapshot after it.
    if (step == 0) initial = snapshot(cpu);
    const double want = loss_cpu.item<double>();
    EXPECT_NEAR(loss_gpu.item<double>(), want, 1e-4 * std::abs(want)) << "step " << step;
    for (auto* opt : {&opt_cpu, &opt_gpu}) opt->zero_grad();
    loss_cpu.backward();
    loss_gpu.backward();
    opt_cpu.step();
    opt_gpu.step();
  }
  expect_same_state(cpu, gpu, initial);

  cpu->eval();
  gpu->eval();
  torch::NoGradGuard no_grad;
  const auto logits_cpu = cpu->forward(x);
  const auto logits_gpu = gpu->forward(x.cuda()).cpu();
  EXPECT_LE((logits_gpu - logits_cpu).abs().max().item<double>(), 1e-3 * logits_cpu.abs().max().item<double>());
}

TEST_F(QuantizedCudaTest, JointIndicatorStepMatchesTheCpu) {
  Model cpu = fresh_model();
  Model gpu = fresh_model();
  QuantModel qcpu(cpu, {1, 16, 16});
  QuantModel qgpu(gpu, {1, 16, 16});
  const std::vector<int64_t> candidates = {4, 3, 2};
  qcpu.prepare_indicators(candidates);
  qgpu.prepare_indicators(candidates);
  gpu->to(torch::kCUDA);

  torch::manual_seed(13);
  const auto x = torch::randn({16, 1, 16, 16});
  const auto y = torch::randint(0, 10, {16});
  cpu->train();
  gpu->train();
  // One joint step: every candidate's forward and backward into the same
  // gradients, each through its own steps and batch-norm branch.
  for (int64_t bits : candidates) {
    qcpu.set_uniform(bits);
    qgpu.set_uniform(bits);
    loss_of(cpu, x, y).backward();
    loss_of(gpu, x, y).backward();
  }
  auto gpu_params = gpu->named_parameters();
  int64_t steps_checked = 0;
  for (const auto& p : cpu->named_parameters()) {
    const auto& want = p.value().grad();
    const auto& got = gpu_params[p.key()].grad();
    ASSERT_EQ(want.defined(), got.defined()) << p.key();
    if (!want.defined()) continue;
    const double diff = (got.cpu() - want).abs().max().item<double>();
    const double scale = want.abs().max().item<double>();
    EXPECT_LE(diff, 1e-3 * scale + 1e-6) << p.key() << ": max |gpu - cpu| grad " << diff << ", max |cpu| " << scale;
    if (p.key().find("step") != std::string::npos) {
      // One step per candidate, each with its own gradient.
      EXPECT_EQ(want.numel(), static_cast<int64_t>(candidates.size())) << p.key();
      EXPECT_GT((want != 0).sum().item<int64_t>(), 0) << p.key();
      ++steps_checked;
    }
  }
  EXPECT_EQ(steps_checked, 2 * static_cast<int64_t>(qcpu.searchable_names().size()));
  expect_same_state(cpu, gpu, {});
}

}  // namespace
}  // namespace limpq::models
