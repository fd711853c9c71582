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

// Keeps freed memory in the process for reuse instead of handing it back to
// the operating system (glibc: mmap threshold at its 32 MiB maximum, trim
// threshold at 2 GiB). A training step frees and reallocates the same
// multi-megabyte activation buffers every step; by default glibc returns
// them and every reallocation pays page faults on first touch, which costs
// more than the element-wise work on those buffers (BENCHMARKS.md). The
// process keeps its peak heap resident. $LIMPQ_RETAIN_MEMORY=0 skips it.
// Returns whether the settings were applied.
bool retain_freed_memory();

// Parses "cpu", "cuda" or "cuda:N"; asking for CUDA where it is not built in
// or no GPU is visible is an error that says so.
torch::Device resolve_device(const std::string& name);

// Seeds torch's generators (CPU and, when present, CUDA).
void seed_everything(uint64_t seed);

// SplitMix64: turns nearby integers (seed, epoch, step, index) into
// independent 64-bit seeds.
uint64_t mix_seed(uint64_t x);

}  // namespace limpq::util
