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

template <bool kReluOut>
void forward_impl(const float* __restrict x, float* __restrict y, float* __restrict relu_out, int64_t n, float step,
                  float qn, float qp) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    if (kReluOut) relu_out[i] = xi < 0.0f ? 0.0f : xi;
    float v = xi / step;
    v = v < qn ? qn : v;
    v = v > qp ? qp : v;
    y[i] = __builtin_nearbyintf(v) * step;
  }
}

void forward(const float* x, float* y, float* relu_out, int64_t n, float step, float qn, float qp) {
  if (relu_out != nullptr) {
    forward_impl<true>(x, y, relu_out, n, step, qn, qp);
  } else {
    forward_impl<false>(x, y, nullptr, n, step, qn, qp);
  }
}

// kReluInput: x is the input of a ReLU whose output is being quantized
// (unsigned range, qn = 0). The forward is then unchanged, since the clamp
// at 0 already zeroes negatives; the straight-through mask also drops
// x <= 0, where ReLU's own gradient is 0. dS is unchanged: with qn = 0 the
// elements at or below 0 contribute 0 either way.
// kReluGrad (with kReluInput): the ReLU's output is used elsewhere too, and
// relu_grad is its gradient from there, added before the ReLU's mask.
// kDx: write dx (else only the step gradient is wanted).
template <bool kReluInput, bool kReluGrad, bool kDx>
double backward_impl(const float* __restrict x, const float* __restrict g, const float* __restrict relu_grad,
                     float* __restrict dx, int64_t n, float step, float qn, float qp) {
  // Every quantity is computed for every element and then selected, with no
  // branch and no call under a condition: that is what lets the compiler
  // vectorise the loops with blends (with AVX2 too, not only with AVX-512's
  // masks). The inputs are loaded before any select: a load under a
  // condition becomes masked loads and stores (slow on AMD) behind branches,
  // with the accumulator kept in memory, about 5x slower. Blocks of float
  // partial sums folded into a double keep the reduction both vectorised and
  // accurate on large tensors.
  constexpr int64_t kBlock = 4096;
  double total = 0.0;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t end = begin + kBlock < n ? begin + kBlock : n;
    if constexpr (kReluGrad) {
      // dx in a loop of its own: GCC 12 does not vectorise a simd reduction
      // over four arrays (20x slower). The block is still in cache for the
      // reduction below.
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) {
        const float xi = x[i], gi = g[i], gr = relu_grad[i];
        const bool positive = xi > 0.0f;
        // Where x > 0, x / step > qn = 0: only the upper clip can drop g.
        const float through = (positive & (xi / step <= qp)) ? gi : 0.0f;
        dx[i] = positive ? gr + through : 0.0f;
      }
    }
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = begin; i < end; ++i) {
      const float xi = x[i], gi = g[i];
      const float v = xi / step;
      const float clipped = v < qn ? qn : (v > qp ? qp : v);
      const float inside = __builtin_nearbyintf(v) - v;
      const bool outside = (v < qn) | (v > qp);
      if constexpr (kDx && !kReluGrad) {
        const bool passes = (!outside) & ((!kReluInput) | (xi > 0.0f));
        dx[i] = passes ? gi : 0.0f;
      }
      acc += gi * (outside ? clipped : inside);
    }
    total += acc;
  }
  return total;
}

double backward(const float* x, const float* g, const float* relu_grad, float* dx, int64_t n, float step, float qn,
                float qp, bool relu_input) {
  if (dx == nullptr) return backward_impl<false, false, false>(x, g, nullptr, nullptr, n, step, qn, qp);
  if (!relu_input) return backward_impl<false, false, true>(x, g, nullptr, dx, n, step, qn, qp);
  if (relu_grad == nullptr) return backward_impl<true, false, true>(x, g, nullptr, dx, n, step, qn, qp);
  return backward_impl<true, true, true>(x, g, relu_grad, dx, n, step, qn, qp);
}

}  // namespace
}  // namespace limpq::quant::kernels::LIMPQ_KERNEL_NAMESPACE
