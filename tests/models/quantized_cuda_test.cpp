// Quantized networks on the GPU against the same networks on the CPU.
//
// A network quantized throughout is chaotic in float summation order: cuDNN
// and oneDNN sum a convolution in different orders, an activation within
// ~1e-7 of a rounding tie lands on the other level, and that one-step change
// moves its neighbours in the next quantized layer across ties too. Its
// gradients then differ by percents between devices, and by as much on the
// CPU alone between the NCHW and channels-last layouts. So:
//  - the whole low-bit network: the fused kernel against the composed-op
//    reference on each device (forward bitwise, gradients 1e-4), and the
//    first forward (logits, lazily initialised activation steps) across
//    devices;
//  - training across devices with quantized layers that no other quantized
//    layer feeds, so no tie can cascade: one fine-tuning step under a policy
//    (gradients, step-size updates), and one joint indicator step with
//    switchable batch norm;
//  - the full-precision network as the floor of what two devices agree on.
// Builds in the LIMPQ_CORE_ONLY configuration; the GPU cases skip where no
// GPU is visible.

#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "limpq/models/model.h"
#include "limpq/models/quantized.h"
#include "limpq/quant/lsq.h"
#include "limpq/quant/lsq_quantizer.h"

namespace limpq::models {
namespace {

namespace F = torch::nn::functional;

using Named = std::map<std::string, torch::Tensor>;

// Two sets of named tensors agree where |a - b| <= rtol * max|a| + atol for
// each tensor. Returns how many do not, and a report of the worst ones, so
// a failure says at once whether one layer or all of them disagree.
struct Agreement {
  int64_t checked = 0;
  int64_t failing = 0;
  std::string report;
};

Agreement compare(const Named& want, const Named& got, double rtol, double atol) {
  Agreement a;
  std::vector<std::pair<double, std::string>> worst;
  for (const auto& [name, w] : want) {
    const auto it = got.find(name);
    if (it == got.end()) {
      ++a.failing;
      worst.emplace_back(1e30, name + ": missing");
      continue;
    }
    ++a.checked;
    const auto g = it->second.to(w.device(), w.scalar_type());
    const double diff = (g - w).abs().max().item<double>();
    const double scale = w.abs().max().item<double>();
    const double ratio = diff / (rtol * scale + atol);
    if (ratio > 1.0) ++a.failing;
    std::ostringstream line;
    line << name << ": max diff " << diff << ", max |want| " << scale;
    worst.emplace_back(ratio, line.str());
  }
  std::sort(worst.begin(), worst.end(), [](const auto& l, const auto& r) { return l.first > r.first; });
  std::ostringstream out;
  out << a.failing << " of " << a.checked << " tensors disagree; worst:\n";
  for (size_t i = 0; i < worst.size() && i < 6; ++i) out << "  " << worst[i].second << "\n";
  a.report = out.str();
  return a;
}

Named params(const Model& m) {
  Named out;
  for (const auto& p : m->named_parameters()) out[p.key()] = p.value().detach().cpu().clone();
  return out;
}

Named grads(const Model& m) {
  Named out;
  for (const auto& p : m->named_parameters()) {
    if (p.value().grad().defined()) out[p.key()] = p.value().grad().cpu().clone();
  }
  return out;
}

Named float_buffers(const Model& m) {
  Named out;
  for (const auto& b : m->named_buffers()) {
    if (b.value().is_floating_point()) out[b.key()] = b.value().cpu().clone();
  }
  return out;
}

torch::Device device_of(const Model& model) { return model->parameters().front().device(); }

torch::Tensor loss_of(const Model& model, const torch::Tensor& x, const torch::Tensor& y) {
  return F::cross_entropy(model->forward(x.to(device_of(model))), y.to(device_of(model)));
}

Model fresh_model() {
  torch::manual_seed(7);
  return make_model("resnet20", 1, 10);
}

// A mixed low-bit policy, so that several ranges run: bits 2..4 by layer.
quant::Policy mixed_policy(const QuantModel& qm) {
  quant::Policy policy = qm.uniform_policy({4, 4});
  for (size_t i = 0; i < policy.layers.size(); ++i) {
    policy.layers[i].second = {2 + static_cast<int64_t>(i % 3), 2 + static_cast<int64_t>((i + 1) % 3)};
  }
  return policy;
}

// Every layer at full precision but `quantized`, at the given bits.
quant::Policy sparse_policy(const QuantModel& qm, const std::map<std::string, quant::LayerBits>& quantized) {
  const quant::LayerBits full{quant::kFullPrecisionBits, quant::kFullPrecisionBits};
  quant::Policy policy = qm.uniform_policy(full);
  for (auto* layers : {&policy.layers, &policy.fixed}) {
    for (auto& [name, bits] : *layers) {
      const auto it = quantized.find(name);
      bits = it != quantized.end() ? it->second : full;
    }
  }
  return policy;
}

std::pair<torch::Tensor, torch::Tensor> batch(uint64_t seed) {
  torch::manual_seed(seed);
  return {torch::randn({16, 1, 16, 16}), torch::randint(0, 10, {16})};
}

// The same policy-quantized network with the fused kernel and with the
// composed-op reference agree on one training step's gradients: forward
// bitwise, so only the float order of the step gradient's sum differs.
void expect_fused_matches_reference(const torch::Device& device) {
  Model fused = fresh_model();
  Model reference = fresh_model();
  QuantModel qf(fused, {1, 16, 16});
  QuantModel qr(reference, {1, 16, 16}, QuantizeOptions().fused(false));
  qf.prepare_policy(mixed_policy(qf));
  qr.prepare_policy(mixed_policy(qr));
  fused->to(device);
  reference->to(device);
  fused->train();
  reference->train();
  const auto [x, y] = batch(11);
  const auto lf = loss_of(fused, x, y);
  const auto lr = loss_of(reference, x, y);
  EXPECT_EQ(lf.item<float>(), lr.item<float>()) << device;
  lf.backward();
  lr.backward();
  const Agreement a = compare(grads(reference), grads(fused), 1e-4, 1e-7);
  EXPECT_GT(a.checked, 40);
  EXPECT_EQ(a.failing, 0) << device << ": fused against reference gradients\n" << a.report;
}

TEST(QuantizedNetworkTest, FusedKernelMatchesReferenceOnTheCpu) { expect_fused_matches_reference(torch::kCPU); }

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
};

TEST_F(QuantizedCudaTest, FusedKernelMatchesReferenceOnTheGpu) { expect_fused_matches_reference(torch::kCUDA); }

// What two devices can agree on at all: the network without quantization.
TEST_F(QuantizedCudaTest, FullPrecisionGradientsMatchTheCpu) {
  Model cpu = fresh_model();
  Model gpu = fresh_model();
  gpu->to(torch::kCUDA);
  cpu->train();
  gpu->train();
  const auto [x, y] = batch(11);
  const auto lc = loss_of(cpu, x, y);
  const auto lg = loss_of(gpu, x, y);
  EXPECT_NEAR(lg.item<double>(), lc.item<double>(), 1e-5 * std::abs(lc.item<double>()));
  lc.backward();
  lg.backward();
  const Agreement a = compare(grads(cpu), grads(gpu), 1e-3, 1e-7);
  EXPECT_EQ(a.failing, 0) << "full-precision gradients\n" << a.report;
}

TEST_F(QuantizedCudaTest, FirstForwardMatchesTheCpuAtLowBits) {
  Model cpu = fresh_model();
  Model gpu = fresh_model();
  QuantModel qcpu(cpu, {1, 16, 16});
  QuantModel qgpu(gpu, {1, 16, 16});
  qcpu.prepare_policy(mixed_policy(qcpu));
  qgpu.prepare_policy(mixed_policy(qgpu));
  gpu->to(torch::kCUDA);
  const auto [x, y] = batch(11);
  cpu->train();
  gpu->train();
  // The first forward also sets the activation steps from the batch.
  const auto logits_cpu = cpu->forward(x);
  const auto logits_gpu = gpu->forward(x.cuda());
  const Agreement logits = compare({{"logits", logits_cpu.detach()}}, {{"logits", logits_gpu.detach()}}, 1e-3, 1e-6);
  EXPECT_EQ(logits.failing, 0) << "first forward\n" << logits.report;
  const Agreement steps = compare(params(cpu), params(gpu), 1e-5, 1e-9);
  EXPECT_EQ(steps.failing, 0) << "initial steps\n" << steps.report;
}

// Tolerance of the training comparisons across devices: a tie that the other
// device's summation order moves to the neighbouring level, at the input of
// a quantized layer, moves the gradients by up to ~1% (measured on the CPU
// between the NCHW and channels-last layouts, which sum in different orders);
// a wrong mask, scale or step gradient moves them by their own size.
constexpr double kTrainRtol = 2e-2;

TEST_F(QuantizedCudaTest, PolicyFineTuningMatchesTheCpu) {
  Model cpu = fresh_model();
  Model gpu = fresh_model();
  QuantModel qcpu(cpu, {1, 16, 16});
  QuantModel qgpu(gpu, {1, 16, 16});
  // Two ranges, a signed and an unsigned input; the layers between them
  // stay at full precision so that ties cannot cascade.
  const std::map<std::string, quant::LayerBits> quantized = {{"conv1", {8, 8}}, {"layer2.0.conv1", {3, 2}}};
  qcpu.prepare_policy(sparse_policy(qcpu, quantized));
  qgpu.prepare_policy(sparse_policy(qgpu, quantized));
  gpu->to(torch::kCUDA);
  const auto [x, y] = batch(11);
  cpu->train();
  gpu->train();

  const auto lc = loss_of(cpu, x, y);
  const auto lg = loss_of(gpu, x, y);
  EXPECT_NEAR(lg.item<double>(), lc.item<double>(), 1e-4 * std::abs(lc.item<double>()));
  // The activation steps were set by this first batch.
  const Named initial = params(cpu);
  const Named initial_gpu = params(gpu);
  const Agreement init = compare(initial, initial_gpu, 1e-5, 1e-9);
  EXPECT_EQ(init.failing, 0) << "initial parameters and steps\n" << init.report;
  lc.backward();
  lg.backward();
  const Agreement g = compare(grads(cpu), grads(gpu), kTrainRtol, 1e-7);
  EXPECT_EQ(g.failing, 0) << "gradients\n" << g.report;
  const Agreement b = compare(float_buffers(cpu), float_buffers(gpu), 1e-3, 1e-5);
  EXPECT_EQ(b.failing, 0) << "batch-norm statistics\n" << b.report;

  // One SGD step moves every step size, by the same amount on both devices.
  const auto options = torch::optim::SGDOptions(0.05).momentum(0.9);
  torch::optim::SGD(cpu->parameters(), options).step();
  torch::optim::SGD(gpu->parameters(), options).step();
  Named moved_cpu, moved_gpu;
  const Named after_cpu = params(cpu), after_gpu = params(gpu);
  for (const auto& [name, t] : initial) {
    if (name.find("steps") == std::string::npos) continue;
    moved_cpu[name] = after_cpu.at(name) - t;
    moved_gpu[name] = after_gpu.at(name) - initial_gpu.at(name);
    EXPECT_GT(moved_cpu[name].abs().max().item<double>(), 0.0) << name << " never moved";
  }
  EXPECT_EQ(moved_cpu.size(), 4u);
  const Agreement m = compare(moved_cpu, moved_gpu, kTrainRtol, 1e-12);
  EXPECT_EQ(m.failing, 0) << "step-size updates\n" << m.report;
}

TEST_F(QuantizedCudaTest, JointIndicatorStepMatchesTheCpu) {
  Model cpu = fresh_model();
  Model gpu = fresh_model();
  // One searchable layer (the others kept out of the search stay at full
  // precision in indicator training), so that ties cannot cascade.
  std::vector<std::string> fixed;
  for (const auto& l : analyze_layers(*cpu, {1, 16, 16})) {
    if (l.name != "layer2.1.conv2") fixed.push_back(l.name);
  }
  QuantModel qcpu(cpu, {1, 16, 16}, QuantizeOptions().fixed_layers(fixed));
  QuantModel qgpu(gpu, {1, 16, 16}, QuantizeOptions().fixed_layers(fixed));
  ASSERT_EQ(qcpu.searchable_names(), std::vector<std::string>{"layer2.1.conv2"});
  const std::vector<int64_t> candidates = {4, 3, 2};
  qcpu.prepare_indicators(candidates);
  qgpu.prepare_indicators(candidates);
  gpu->to(torch::kCUDA);
  const auto [x, y] = batch(13);
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
  const Named gc = grads(cpu);
  int64_t steps_checked = 0;
  for (const auto& [name, g] : gc) {
    if (name.find("steps") == std::string::npos) continue;
    // One step per candidate, each with its own gradient (zero only where
    // a step sits at the indicator clamp of 1.0).
    EXPECT_EQ(g.numel(), static_cast<int64_t>(candidates.size())) << name;
    EXPECT_GT((g != 0).sum().item<int64_t>(), 0) << name;
    ++steps_checked;
  }
  EXPECT_EQ(steps_checked, 2 * static_cast<int64_t>(qcpu.searchable_names().size()));
  const Agreement a = compare(gc, grads(gpu), kTrainRtol, 1e-7);
  EXPECT_EQ(a.failing, 0) << "joint step's gradients\n" << a.report;
  const Agreement b = compare(float_buffers(cpu), float_buffers(gpu), 1e-3, 1e-5);
  EXPECT_EQ(b.failing, 0) << "batch-norm statistics\n" << b.report;
}

}  // namespace
}  // namespace limpq::models
