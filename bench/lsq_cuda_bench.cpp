// LSQ fake quantization on the GPU: limpq's fused CUDA kernel against the
// composed-op reference and ATen's learnable fake-quant op, forward plus
// backward, on activation and weight shapes of resnet20/resnet18/resnet50.
// Built only against a CUDA LibTorch.
//
//   build/bench/limpq_lsq_cuda_bench [repeats]

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "limpq/quant/lsq.h"

namespace {

using limpq::quant::QuantRange;

// Mean milliseconds per call of fn (forward + backward), after warm-up.
double time_ms(const std::function<void()>& fn, int repeats) {
  for (int i = 0; i < 3; ++i) fn();
  torch::cuda::synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < repeats; ++i) fn();
  torch::cuda::synchronize();
  const std::chrono::duration<double, std::milli> elapsed = std::chrono::steady_clock::now() - start;
  return elapsed.count() / repeats;
}

struct Case {
  std::string name;
  std::vector<int64_t> shape;
  bool per_channel;
  bool is_signed;
};

}  // namespace

int main(int argc, char** argv) {
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "limpq_lsq_cuda_bench: no CUDA device visible\n");
    return 1;
  }
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 50;
  const torch::Device cuda(torch::kCUDA);
  const std::vector<Case> cases = {
      {"act resnet20 128x16x32x32", {128, 16, 32, 32}, false, false},
      {"act resnet18 256x64x56x56", {256, 64, 56, 56}, false, false},
      {"act resnet50 256x256x56x56", {256, 256, 56, 56}, false, false},
      {"weight 512x512x3x3 per-tensor", {512, 512, 3, 3}, false, true},
      {"weight 512x512x3x3 per-channel", {512, 512, 3, 3}, true, true},
  };
  std::printf("%-34s %12s %12s %12s %9s %9s %10s\n", "case", "fused ms", "reference ms", "aten ms", "ref/fused",
              "aten/fused", "fused GB/s");
  for (const Case& c : cases) {
    const QuantRange r = QuantRange::of(4, c.is_signed);
    auto x = torch::randn(c.shape, torch::TensorOptions().device(cuda)).requires_grad_(true);
    const auto up = torch::randn_like(x);
    const int64_t channels = c.per_channel ? c.shape[0] : 1;
    auto s = torch::full(c.per_channel ? std::vector<int64_t>{channels} : std::vector<int64_t>{}, 0.1f,
                               torch::TensorOptions().device(cuda))
                       .requires_grad_(true);
    const double g = limpq::quant::lsq_grad_scale(x.numel() / channels, r);
    auto pass = [&](bool fused) {
      return [&, fused] {
        x.mutable_grad().reset();  // each call produces fresh gradients, no accumulation
        s.mutable_grad().reset();
        auto y = fused ? limpq::quant::lsq_fake_quant(x, s, r, g) : limpq::quant::lsq_fake_quant_reference(x, s, r, g);
        y.backward(up);
      };
    };
    const double fused = time_ms(pass(true), repeats);
    const double reference = time_ms(pass(false), repeats);
    double aten = 0.0;
    if (!c.per_channel) {
      auto s1 = s.detach().reshape({1}).clone().requires_grad_(true);
      const auto zero = torch::zeros({1}, torch::TensorOptions().device(cuda));
      aten = time_ms(
          [&] {
            x.mutable_grad().reset();
            s1.mutable_grad().reset();
            auto y = torch::_fake_quantize_learnable_per_tensor_affine(x, s1, zero, r.qn, r.qp, g);
            y.backward(up);
          },
          repeats);
    }
    // Bytes the fused pair must move: forward reads x, writes y; backward
    // reads x and g, writes dx.
    const double bytes = 5.0 * static_cast<double>(x.numel()) * sizeof(float);
    std::printf("%-34s %12.3f %12.3f %12.3f %9.2f %9.2f %10.0f\n", c.name.c_str(), fused, reference, aten,
                reference / fused, aten > 0 ? aten / fused : 0.0, bytes / (fused * 1e-3) / 1e9);
  }
  return 0;
}
