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

// Parses "cpu", "cuda" or "cuda:N"; asking for CUDA where it is not built in
// or no GPU is visible is an error that says so.
torch::Device resolve_device(const std::string& name);

// Seeds torch's generators (CPU and, when present, CUDA).
void seed_everything(uint64_t seed);

// SplitMix64: turns nearby integers (seed, epoch, step, index) into
// independent 64-bit seeds.
uint64_t mix_seed(uint64_t x);

}  // namespace limpq::util
