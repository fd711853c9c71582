// The fused LSQ CPU kernels, compiled once per instruction set (generic,
// AVX2, AVX-512) from lsq_kernel_impl.h and picked at run time. Plain
// pointers in, no ATen, so the vectoriser sees simple loops.
#pragma once

#include <cstdint>

namespace limpq::quant::kernels {

struct LsqKernels {
  // y[i] = round(clamp(x[i] / step, qn, qp)) * step
  void (*forward)(const float* x, float* y, int64_t n, float step, float qn, float qp);
  // dx[i] = g[i] inside the range, else 0 (skipped when dx is null); returns
  // sum_i g[i] * d y[i] / d step (before the gradient scale).
  double (*backward)(const float* x, const float* g, float* dx, int64_t n, float step, float qn, float qp);
  const char* isa;
};

const LsqKernels& generic_kernels();
const LsqKernels& avx2_kernels();
const LsqKernels& avx512_kernels();

}  // namespace limpq::quant::kernels
