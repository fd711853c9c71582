// Body of the fused LSQ kernels; included by one .cpp per instruction set,
// each compiled with its own -m flags and LIMPQ_KERNEL_NAMESPACE.
//
// The forward pass performs exactly the reference's float operations
// (divide, clamp, round half to even, multiply), so its output is bitwise
// equal to the composed-op reference.
// __builtin_nearbyintf rather than std::nearbyint: an inline library function
// compiled with AVX-512 flags could be the copy the linker keeps for all TUs.

#include "lsq_kernel.h"

namespace limpq::quant::kernels::LIMPQ_KERNEL_NAMESPACE {
namespace {

void forward(const float* __restrict x, float* __restrict y, int64_t n, float step, float qn, float qp) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] / step;
    v = v < qn ? qn : v;
    v = v > qp ? qp : v;
    y[i] = __builtin_nearbyintf(v) * step;
  }
}

// kReluInput: x is the input of a ReLU whose output is being quantized
// (unsigned range, qn = 0). The forward is then unchanged, since the clamp
// at 0 already zeroes negatives; the straight-through mask also drops
// x <= 0, where ReLU's own gradient is 0. dS is unchanged: with qn = 0 the
// elements at or below 0 contribute 0 either way.
template <bool kReluInput>
double backward_impl(const float* __restrict x, const float* __restrict g, float* __restrict dx, int64_t n,
                     float step, float qn, float qp) {
  // Every quantity is computed for every element and then selected, with no
  // branch and no call under a condition: that is what lets the compiler
  // vectorise the loop with blends (with AVX2 too, not only with AVX-512's
  // masks). Branches here are unpredictable on real data and cost about 20x.
  // Blocks of float partial sums folded into a double keep the reduction
  // both vectorised and accurate on large tensors.
  constexpr int64_t kBlock = 4096;
  double total = 0.0;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t end = begin + kBlock < n ? begin + kBlock : n;
    float acc = 0.0f;
    if (dx != nullptr) {
#pragma omp simd reduction(+ : acc)
      for (int64_t i = begin; i < end; ++i) {
        const float xi = x[i], gi = g[i];
        const float v = xi / step;
        const float clipped = v < qn ? qn : (v > qp ? qp : v);
        const float inside = __builtin_nearbyintf(v) - v;
        const bool outside = (v < qn) | (v > qp);
        const bool passes = (!outside) & ((!kReluInput) | (xi > 0.0f));
        dx[i] = passes ? gi : 0.0f;
        acc += gi * (outside ? clipped : inside);
      }
    } else {
#pragma omp simd reduction(+ : acc)
      for (int64_t i = begin; i < end; ++i) {
        const float gi = g[i];
        const float v = x[i] / step;
        const float clipped = v < qn ? qn : (v > qp ? qp : v);
        const float inside = __builtin_nearbyintf(v) - v;
        const bool outside = (v < qn) | (v > qp);
        acc += gi * (outside ? clipped : inside);
      }
    }
    total += acc;
  }
  return total;
}

double backward(const float* x, const float* g, float* dx, int64_t n, float step, float qn, float qp,
                bool relu_input) {
  return relu_input ? backward_impl<true>(x, g, dx, n, step, qn, qp)
                    : backward_impl<false>(x, g, dx, n, step, qn, qp);
}

}  // namespace
}  // namespace limpq::quant::kernels::LIMPQ_KERNEL_NAMESPACE
