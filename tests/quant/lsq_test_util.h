// Helpers of the LSQ kernel tests: edge-case inputs and one fused or
// reference pass with its gradients, shared by the CPU and CUDA kernel tests (header-only: the CUDA test builds without the rest of
// the test support).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "limpq/quant/lsq.h"

namespace limpq::quant::testing {

// Random values plus exact rounding ties (k + 0.5) * s, exact clip edges
// Qn * s and Qp * s, and values just outside the range.
inline torch::Tensor adversarial_input(const std::vector<int64_t>& shape, float s, const QuantRange& r) {
  auto x = (torch::randn(shape) * s * static_cast<float>(r.qp - r.qn) * 0.4f).contiguous();
  float* flat = x.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); i += 3) {
    const int64_t k = r.qn + (i / 3) % (r.qp - r.qn + 1);
    switch ((i / 3) % 4) {
      case 0: flat[i] = (static_cast<float>(k) + 0.5f) * s; break;
      case 1: flat[i] = static_cast<float>(r.qn) * s; break;
      case 2: flat[i] = static_cast<float>(r.qp) * s; break;
      default: flat[i] = static_cast<float>(r.qp + 1) * s; break;
    }
  }
  return x;
}

// The output and gradients of one fake-quantization of x0 with step s0
// under `upstream` (dY), fused kernel or reference; on the CPU.
struct Grads {
  torch::Tensor y, dx, ds;
};

inline Grads run(bool fused, const torch::Tensor& x0, const torch::Tensor& s0, const QuantRange& r, double g,
                 const torch::Tensor& upstream) {
  auto x = x0.clone().requires_grad_(true);
  auto s = s0.clone().requires_grad_(true);
  auto y = fused ? lsq_fake_quant(x, s, r, g) : lsq_fake_quant_reference(x, s, r, g);
  (y * upstream).sum().backward();
  return {y.detach().cpu(), x.grad().cpu(), s.grad().cpu()};
}

}  // namespace limpq::quant::testing
