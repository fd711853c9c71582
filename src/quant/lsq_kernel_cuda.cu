// Fused LSQ fake quantization on CUDA; see lsq_cuda.h. Grid: x strides over
// one channel's elements, y over channels. The forward pass uses the
// correctly rounded division and product (__fdiv_rn, __fmul_rn) and rintf
// (round half to even), the same operations as the composed-op reference.

#include "lsq_cuda.h"

#include <algorithm>

namespace limpq::quant::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;   // per launch, across all channels
constexpr int64_t kMaxGridY = 65535;

__device__ __forceinline__ float quantize(float x, float s, float qn, float qp) {
  float v = __fdiv_rn(x, s);
  v = v < qn ? qn : v;
  v = v > qp ? qp : v;
  return __fmul_rn(rintf(v), s);
}

__global__ void forward_kernel(const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ steps,
                               int64_t channels, int64_t inner, float qn, float qp) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = blockIdx.y; c < channels; c += gridDim.y) {
    const float s = steps[c];
    const float* xc = x + c * inner;
    float* yc = y + c * inner;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < inner; i += stride) {
      yc[i] = quantize(xc[i], s, qn, qp);
    }
  }
}

__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  }
  __syncthreads();  // warp_sums is reused by the next channel
  return total;
}

__global__ void backward_kernel(const float* __restrict__ x, const float* __restrict__ g, float* __restrict__ dx,
                                double* __restrict__ partial, const float* __restrict__ steps, int64_t channels,
                                int64_t inner, float qn, float qp) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = blockIdx.y; c < channels; c += gridDim.y) {
    const float s = steps[c];
    const float* xc = x + c * inner;
    const float* gc = g + c * inner;
    float acc = 0.0f;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < inner; i += stride) {
      const float v = __fdiv_rn(xc[i], s);
      const bool below = v < qn;
      const bool above = v > qp;
      const float d = below ? qn : (above ? qp : rintf(v) - v);
      if (dx != nullptr) dx[c * inner + i] = (below || above) ? 0.0f : gc[i];
      acc += gc[i] * d;
    }
    const double total = block_sum(acc);
    if (threadIdx.x == 0) partial[c * gridDim.x + blockIdx.x] = total;
  }
}

dim3 grid_for(int64_t channels, int64_t inner) {
  const int64_t per_channel_needed = std::max<int64_t>(1, (inner + kThreads - 1) / kThreads);
  const int64_t per_channel_budget = std::max<int64_t>(1, kMaxBlocks / std::max<int64_t>(channels, 1));
  const int64_t x_blocks = std::min(per_channel_needed, per_channel_budget);
  const int64_t y_blocks = std::min(channels, kMaxGridY);
  return dim3(static_cast<unsigned>(x_blocks), static_cast<unsigned>(y_blocks));
}

}  // namespace

cudaError_t forward(const float* x, float* y, const float* steps, int64_t channels, int64_t inner, float qn,
                    float qp, cudaStream_t stream) {
  if (channels == 0 || inner == 0) return cudaSuccess;
  forward_kernel<<<grid_for(channels, inner), kThreads, 0, stream>>>(x, y, steps, channels, inner, qn, qp);
  return cudaGetLastError();
}

int64_t backward_blocks(int64_t channels, int64_t inner) { return grid_for(channels, inner).x; }

cudaError_t backward(const float* x, const float* g, float* dx, double* partial, const float* steps,
                     int64_t channels, int64_t inner, float qn, float qp, cudaStream_t stream) {
  if (channels == 0 || inner == 0) return cudaSuccess;
  backward_kernel<<<grid_for(channels, inner), kThreads, 0, stream>>>(x, g, dx, partial, steps, channels, inner,
                                                                       qn, qp);
  return cudaGetLastError();
}

}  // namespace limpq::quant::kernels::cuda
