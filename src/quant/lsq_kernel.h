// The fused LSQ CPU kernels, compiled once per instruction set (generic,
// AVX2, AVX-512) from lsq_kernel_impl.h and picked at run time. Plain
// pointers in, no ATen, so the vectoriser sees simple loops.
#pragma once

#include <cstdint>

namespace limpq::quant::kernels {

struct LsqKernels {
  // y[i] = round(clamp(x[i] / step, qn, qp)) * step; also relu_out[i] =
  // max(x[i], 0) when relu_out is not null.
  void (*forward)(const float* x, float* y, float* relu_out, int64_t n, float step, float qn, float qp);
  // dx[i] = g[i] inside the range, else 0 (skipped when dx is null); returns
  // sum_i g[i] * d y[i] / d step (before the gradient scale). relu_input:
  // x is a ReLU's input and y quantizes its output (qn must be 0), so dx is
  // also 0 where x <= 0; relu_grad (relu_input only; may be null) is the
  // gradient of the ReLU's output from its other uses: dx[i] = relu_grad[i]
  // + the above where x > 0.
  double (*backward)(const float* x, const float* g, const float* relu_grad, float* dx, int64_t n, float step,
                     float qn, float qp, bool relu_input);
  const char* isa;
};

const LsqKernels& generic_kernels();
const LsqKernels& avx2_kernels();
const LsqKernels& avx512_kernels();

}  // namespace limpq::quant::kernels
