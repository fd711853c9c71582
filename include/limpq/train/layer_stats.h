// Per-tensor statistics of the searchable layers that the scale-free
// criteria need besides the learned steps (include/limpq/search/criterion.h):
// each weight's and input activation's root mean square and the trace of
// its Fisher information, Tr(F) = sum over the tensor's elements of
// E_n[(d loss_n / d t)^2], from per-example gradients (batches of one
// example, batch norm in inference mode, plain cross-entropy). The loss of
// each example is taken at a label drawn from the model's own predictive
// distribution, not the true one: that is the Fisher of the model (for
// cross-entropy, the expected Gauss-Newton curvature), whereas the true
// labels' "empirical" Fisher of a network that fits its training data is
// carried by its few misfit examples. Activation traces are per example
// (the sum over one example's activation elements) and count only nonzero
// elements: zeros, such as a ReLU's, are represented exactly at every
// bit-width and carry no rounding noise.
//
// Per candidate bit-width b, the Fisher-weighted squared quantization error
// at the learned step s_b, delta = Q_b(x) - x, in loss units:
// - weights 1/2 E_n[(g_n . delta)^2] = 1/2 delta^T F delta, with the
//   tensor's whole Fisher block: the weights' rounding error is the same for
//   every example, so the cross terms between its elements add up;
// - activations the mean over examples of 1/2 sum_i g_i^2 delta_i^2, the
//   Fisher diagonal: their rounding error changes with each example, close to
//   independently from element to element, so the cross terms average out
//   and would only add variance.
// Unlike Tr(F) s^2 / 24 this counts the clipping error and where in the
// tensor the error falls. Layers without a learned step at every candidate
// (the untrained layers of a one-at-a-time run) get no errors.
//
// The joint indicator run measures them at its end, with every searchable
// layer at the highest candidate bit-width (the straight-through gradients
// of a nearly full-precision network), and writes them into indicators.json.
//
//   auto stats = measure_layer_stats(quantized, loader, device, /*samples=*/256, /*seed=*/0);
//   stats.at("layer1.0.conv1").act_fisher
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>

#include "limpq/data/loader.h"
#include "limpq/models/quantized.h"
#include "limpq/quant/indicators.h"
#include "limpq/quant/lsq.h"

namespace limpq::train {

// The weight of a quantizable layer (QuantConv2d or QuantLinear); `name`
// names it in the error for any other module.
torch::Tensor quantizable_weight(torch::nn::Module& layer, const std::string& name);

// Q(x) - x in float64: the error of quantizing `x` with `step` (scalar, or
// one per channel along dim 0) at `range`. No gradient.
torch::Tensor quantization_delta(const torch::Tensor& x, const torch::Tensor& step, const quant::QuantRange& range);

// A class drawn from softmax(logits), one example's logits [1, classes].
int64_t sample_label(const torch::Tensor& logits, std::mt19937_64& rng);

// The generator of the drawn labels: seeded by `seed` and this process's
// data-parallel rank (each worker draws for its own examples).
std::mt19937_64 label_rng(uint64_t seed);

// Statistics of every searchable layer of `model` (as currently quantized)
// over `samples` examples from `loader` (data-parallel workers each take
// their share from their own shard and sum), with labels drawn by
// label_rng(seed). The model is left in inference mode.
std::map<std::string, quant::TensorStats> measure_layer_stats(const models::QuantModel& model,
                                                             data::DataLoader& loader, const torch::Device& device,
                                                             int64_t samples, uint64_t seed);

}  // namespace limpq::train
