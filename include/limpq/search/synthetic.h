// Seeded indicators files with the structure of trained ones, on the real
// per-layer MACs and parameters of a model: instances for the search's tests
// and benchmark (bench/search_bench.cpp) that are as hard as learned files.
//
// What makes trained files hard for an exact search is that many (w, a) pairs
// across layers trade objective for BitOps and size at nearly the same rates.
// The generator reproduces the causes:
//   - each tensor has its own scale, log-uniform over `scale_decades` orders
//     of magnitude, weights and activations in different ranges;
//   - steps shrink per bit like LSQ's initial rules: weights about halve
//     (3 sigma / 2^(b-1)), activations by sqrt(Qp(b) / Qp(b+1)) (2 E|x| /
//     sqrt(Qp)), each point off by a few percent (`point_noise`);
//   - a few points break monotonicity (`non_monotone_rate`): the step at b
//     bits slightly above the one at b - 1.
//
//   auto ind = synthetic_indicators("resnet50", 0);   // 224x224, candidates 6..2
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "limpq/quant/indicators.h"

namespace limpq::search {

struct SyntheticOptions {
  std::vector<int64_t> input_shape = {3, 224, 224};
  int64_t num_classes = 1000;
  std::vector<int64_t> candidates = {6, 5, 4, 3, 2};
  double scale_decades = 2.0;
  double point_noise = 0.03;
  double non_monotone_rate = 0.03;
};

quant::Indicators synthetic_indicators(const std::string& arch, uint64_t seed, const SyntheticOptions& options = {});

}  // namespace limpq::search
