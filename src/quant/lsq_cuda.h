// The fused LSQ CUDA kernels (lsq_kernel_cuda.cu). Raw device pointers and a
// stream in, an error code out: no torch headers, so nvcc compiles the file
// in seconds and lsq.cpp owns every tensor.
//
// Layout: x holds `channels` contiguous runs of `inner` elements; run c uses
// steps[c] (channels == 1 for a per-tensor step). Steps stay on the device,
// so neither pass synchronises with the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace limpq::quant::kernels::cuda {

// y = round(clamp(x / step, qn, qp)) * step, bitwise equal to the reference.
cudaError_t forward(const float* x, float* y, const float* steps, int64_t channels, int64_t inner, float qn,
                    float qp, cudaStream_t stream);

// Blocks the backward pass uses per channel; `partial` must hold
// channels * backward_blocks(channels, inner) doubles.
int64_t backward_blocks(int64_t channels, int64_t inner);

// dx = g inside the range, 0 outside (skipped when dx is null); partial[c *
// blocks + b] = block b's share of sum_i g[i] * d y[i] / d step[c], unscaled.
// Summing the partials in a fixed order makes the step gradient deterministic.
cudaError_t backward(const float* x, const float* g, float* dx, double* partial, const float* steps,
                     int64_t channels, int64_t inner, float qn, float qp, cudaStream_t stream);

}  // namespace limpq::quant::kernels::cuda
