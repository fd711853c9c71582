// LSQ fake quantization (Esser et al., "Learned Step Size Quantization",
// ICLR 2020), as specified in LIMPQ.md section 2:
//
//   q(x)  = round(clamp(x / s, Qn, Qp))      (round half to even)
//   xq(x) = q(x) * s
//   d xq / d x = 1 inside [Qn, Qp] (straight-through), 0 outside
//   d xq / d s = q(x) - x/s inside, Qn below, Qp above; times grad_scale
//
// Two implementations with identical semantics:
//   lsq_fake_quant_reference  composed ATen ops, autograd does the rest (slow,
//                             obviously right; any device);
//   lsq_fake_quant            one custom autograd Function with a fused CPU
//                             kernel (forward, and backward producing dX and
//                             the reduced, scaled dS in one pass), vectorised
//                             for the host CPU and parallel over cores, and a
//                             CUDA kernel when built against a CUDA LibTorch
//                             (LIMPQ_WITH_CUDA). Other devices and dtypes fall
//                             back to the reference.
//
//   auto range = QuantRange::of(/*bits=*/4, /*is_signed=*/true);    // [-8, 7]
//   auto xq = lsq_fake_quant(x, step, range, lsq_grad_scale(x.numel(), range));
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace limpq::quant {

struct QuantRange {
  int64_t qn;
  int64_t qp;
  // Signed: [-2^(b-1), 2^(b-1) - 1]; unsigned: [0, 2^b - 1]. b in 1..16.
  static QuantRange of(int64_t bits, bool is_signed);
};

// 1 / sqrt(numel * Qp): the LSQ step-size gradient scale for a step covering
// `numel` elements.
double lsq_grad_scale(int64_t numel, const QuantRange& range);

// `step` is a scalar (per-tensor) or, for per-channel quantization, a vector
// of x.size(0) steps. Steps must be positive.
torch::Tensor lsq_fake_quant(const torch::Tensor& x, const torch::Tensor& step, const QuantRange& range,
                             double grad_scale);

torch::Tensor lsq_fake_quant_reference(const torch::Tensor& x, const torch::Tensor& step,
                                       const QuantRange& range, double grad_scale);

// lsq_fake_quant(relu(x), ...), the ReLU folded into the kernel: no ReLU
// output and no ReLU backward pass (the straight-through mask also drops
// x <= 0). Same values and gradients; `range` must be unsigned. On the CPU;
// other devices run ReLU and then lsq_fake_quant.
torch::Tensor lsq_fake_quant_of_relu(const torch::Tensor& x, const torch::Tensor& step, const QuantRange& range,
                                     double grad_scale);

// {relu(x), lsq_fake_quant(relu(x), ...)} in one pass each way, for a ReLU
// whose output is used elsewhere too (a residual block's output feeds the
// next convolution and the shortcut). Same values and gradients as the
// composed ops; `range` must be unsigned. On the CPU with a per-tensor
// step; otherwise ReLU, then lsq_fake_quant.
struct ReluAndQuantized {
  torch::Tensor relu;
  torch::Tensor quantized;
};
ReluAndQuantized relu_and_lsq_fake_quant(const torch::Tensor& x, const torch::Tensor& step, const QuantRange& range,
                                         double grad_scale);

// The name of the CPU kernel variant in use ("avx512", "avx2" or "generic"):
// the best this CPU runs, or the one $LIMPQ_CPU_CAPABILITY names.
const char* lsq_cpu_kernel_isa();

// The variants this CPU can run, best first.
std::vector<std::string> lsq_cpu_kernel_isas();

// Switches every later call to the named variant (one of
// lsq_cpu_kernel_isas(); anything else is an error). For tests and
// benchmarks that compare the variants.
void lsq_use_cpu_kernel_isa(const std::string& isa);

// Whether this build carries the CUDA kernel (else CUDA tensors take the
// reference path).
bool lsq_has_cuda_kernel();

}  // namespace limpq::quant
