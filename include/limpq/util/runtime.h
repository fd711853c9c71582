// Process-wide runtime settings: compute threads, the device, seeding.
//
//   limpq::util::set_threads(0);                  // all cores
//   torch::Device device = limpq::util::resolve_device("cuda");
#pragma once

#include <torch/types.h>

#include <string>

namespace limpq::util {

// Sets ATen's intra-op threads; 0 means every available core (Debian's torch
// otherwise starts with one). Returns the number set.
int64_t set_threads(int64_t threads);

// Makes glibc's malloc keep freed memory for reuse instead of handing it back
// to the kernel. A training step frees and allocates the same activation-sized
// buffers every step; with glibc's defaults the freed ones are unmapped or
// trimmed and the next step page-faults them back in (5,000 faults a resnet20
// W4A4 step, 13,000 in fp32, each 2.5 us on the 2-core VM: 15-19 ms and 40 ms
// of kernel time a step).
// Allocations above 32 MiB (glibc's cap on the mmap threshold) are still
// mapped and unmapped each time. The process keeps its peak heap until it
// exits, as PyTorch's caching allocators do. A process-wide choice, so
// programs make it, not the library: limpq's CLI and benchmarks call it at
// startup. Leaves malloc alone, returning false, when the user has tuned it
// (GLIBC_TUNABLES with glibc.malloc.*, or MALLOC_TRIM_THRESHOLD_ /
// MALLOC_MMAP_THRESHOLD_ / MALLOC_TOP_PAD_ / MALLOC_MMAP_MAX_), when
// LIMPQ_HOST_ALLOCATOR=system, or where the C library is not glibc.
bool retain_freed_host_memory();

// Parses "cpu", "cuda" or "cuda:N"; asking for CUDA where it is not built in
// or no GPU is visible is an error that says so.
torch::Device resolve_device(const std::string& name);

// Seeds torch's generators (CPU and, when present, CUDA).
void seed_everything(uint64_t seed);

// SplitMix64: turns nearby integers (seed, epoch, step, index) into
// independent 64-bit seeds.
uint64_t mix_seed(uint64_t x);

}  // namespace limpq::util
