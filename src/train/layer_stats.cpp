#include "limpq/train/layer_stats.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "limpq/dist/dist.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/nn/trace.h"
#include "limpq/quant/lsq.h"
#include "limpq/quant/lsq_quantizer.h"

namespace limpq::train {

double quantization_error(const torch::Tensor& x, const torch::Tensor& step, const quant::QuantRange& range,
                          const torch::Tensor& weight) {
  torch::NoGradGuard no_grad;
  const torch::Tensor xf = x.detach().to(torch::kFloat32).contiguous();
  const torch::Tensor s = step.detach().to(xf.device());
  const torch::Tensor error = (quant::lsq_fake_quant(xf, s, range, 1.0) - xf).to(torch::kFloat64).pow(2);
  return (weight.defined() ? error * weight : error).sum().item<double>();
}

const torch::Tensor& quantizable_weight(torch::nn::Module& layer, const std::string& name) {
  if (auto* conv = layer.as<nn::QuantConv2dImpl>()) return conv->weight;
  auto* linear = layer.as<nn::QuantLinearImpl>();
  TORCH_CHECK(linear != nullptr, "layer '", name, "' is neither a QuantConv2d nor a QuantLinear");
  return linear->weight;
}

namespace {

// Sums over examples, per searchable layer (rows): squared weight gradients,
// squared activation gradients, squared activations, activation elements.
enum Column : int64_t { kWeightGrad2, kActGrad2, kAct2, kActCount, kColumns };

struct Quantizers {
  quant::LsqQuantizerImpl* weight;
  quant::LsqQuantizerImpl* input;

  // Both quantizers hold a learned step for every candidate (not so for the
  // untrained layers of a one-at-a-time run).
  bool learned(const std::vector<int64_t>& candidates) const {
    return std::all_of(candidates.begin(), candidates.end(),
                       [&](int64_t b) { return weight->initialized(b) && input->initialized(b); });
  }
};

Quantizers quantizers_of(torch::nn::Module& layer, const std::string& name) {
  if (auto* conv = layer.as<nn::QuantConv2dImpl>(); conv && conv->quantized()) {
    return {conv->weight_quantizer.get(), conv->input_quantizer.get()};
  }
  auto* linear = layer.as<nn::QuantLinearImpl>();
  TORCH_CHECK(linear != nullptr && linear->quantized(), "layer stats: layer '", name, "' has no quantizers");
  return {linear->weight_quantizer.get(), linear->input_quantizer.get()};
}

// sum_i weight_i (Q_b(x_i) - x_i)^2 with the quantizer's step for `bits`.
double weighted_error(const quant::LsqQuantizerImpl& q, int64_t bits, const torch::Tensor& x,
                      const torch::Tensor& weight, const std::string& name) {
  TORCH_CHECK(q.initialized(bits), "layer stats: layer '", name, "' has no learned step for ", bits, " bits");
  return quantization_error(x, q.effective_step(bits), q.range(bits), weight);
}

}  // namespace

std::map<std::string, quant::TensorStats> measure_layer_stats(const models::QuantModel& qm, data::DataLoader& loader,
                                                             const torch::Device& device, int64_t samples) {
  TORCH_CHECK(samples > 0, "layer stats: samples must be positive, got ", samples);
  models::ModelImpl& model = *qm.model();
  auto modules = model.named_modules("", /*include_self=*/false);
  std::map<const torch::nn::Module*, size_t> index_of;
  std::vector<std::string> names;
  std::vector<torch::Tensor> weights;
  std::vector<Quantizers> quantizers;
  for (const auto& l : qm.layers()) {
    if (!l.searchable) continue;
    index_of[modules[l.name].get()] = names.size();
    names.push_back(l.name);
    weights.push_back(quantizable_weight(*modules[l.name], l.name));
    quantizers.push_back(quantizers_of(*modules[l.name], l.name));
  }
  const size_t n = names.size();
  TORCH_CHECK(n > 0, "layer stats: the model has no searchable layer");
  const std::vector<int64_t>& candidates = qm.candidates();
  const auto nb = static_cast<int64_t>(candidates.size());
  torch::Tensor sums = torch::zeros({static_cast<int64_t>(n), kColumns}, torch::kFloat64);
  // Per element of each weight, the summed squared per-example gradient;
  // per (layer, candidate), the summed Fisher-weighted activation error.
  std::vector<torch::Tensor> weight_grad2;
  for (const auto& w : weights) weight_grad2.push_back(torch::zeros(w.sizes(), w.options().dtype(torch::kFloat64)));
  torch::Tensor act_error = torch::zeros({static_cast<int64_t>(n), nb}, torch::kFloat64);
  std::vector<bool> learned;
  for (const auto& q : quantizers) learned.push_back(q.learned(candidates));
  int64_t seen = 0;

  model.eval();
  const auto format = models::memory_format_of(model);
  // Data-parallel workers share the examples (each reads its own shard).
  const int64_t mine = (samples + dist::world_size() - 1) / dist::world_size();
  while (seen < mine) {
    auto batch = loader.next();
    if (!batch) break;
    for (int64_t i = 0; i < batch->images.size(0) && seen < mine; ++i) {
      const torch::Tensor image = batch->images.slice(0, i, i + 1).to(device).contiguous(format);
      const torch::Tensor label = batch->labels.slice(0, i, i + 1).to(device);
      nn::LayerTracer tracer(/*keep_inputs=*/true);
      const torch::Tensor loss = torch::nn::functional::cross_entropy(model.forward(image), label);
      std::vector<torch::Tensor> acts(n);
      for (const auto& e : tracer.events()) {
        auto it = index_of.find(e.module);
        if (it != index_of.end() && !acts[it->second].defined()) acts[it->second] = e.input;
      }
      std::vector<torch::Tensor> wrt = weights;
      for (size_t k = 0; k < n; ++k) {
        TORCH_CHECK(acts[k].defined(), "layer stats: layer '", names[k], "' did not run in the forward pass");
        wrt.push_back(acts[k]);
      }
      const auto grads = torch::autograd::grad({loss}, wrt, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                               /*allow_unused=*/true);
      torch::NoGradGuard no_grad;
      for (size_t k = 0; k < n; ++k) {
        auto row = sums[static_cast<int64_t>(k)];
        if (grads[k].defined()) {
          const torch::Tensor g2 = grads[k].to(torch::kFloat64).pow(2);
          weight_grad2[k] += g2;
          row[kWeightGrad2] += g2.sum().item<double>();
        }
        // Rounding noise only where the activation is not 0: a ReLU's zeros
        // are represented exactly at every bit-width.
        if (grads[n + k].defined()) {
          const torch::Tensor g = grads[n + k].to(torch::kFloat64) * acts[k].detach().ne(0);
          row[kActGrad2] += g.pow(2).sum().item<double>();
          const torch::Tensor g2 = grads[n + k].to(torch::kFloat64).pow(2);
          for (int64_t j = 0; j < nb && learned[k]; ++j) {
            act_error[static_cast<int64_t>(k)][j] +=
                weighted_error(*quantizers[k].input, candidates[j], acts[k], g2, names[k]);
          }
        }
        row[kAct2] += acts[k].detach().to(torch::kFloat64).pow(2).sum().item<double>();
        row[kActCount] += static_cast<double>(acts[k].numel());
      }
      ++seen;
    }
  }
  std::vector<torch::Tensor> reduced = {sums, act_error, torch::full({1}, static_cast<double>(seen), torch::kFloat64)};
  reduced.insert(reduced.end(), weight_grad2.begin(), weight_grad2.end());
  dist::allreduce_sum(reduced);
  const double count = reduced[2].item<double>();
  TORCH_CHECK(count > 0, "layer stats: the loader gave no example");

  std::map<std::string, quant::TensorStats> stats;
  for (size_t k = 0; k < n; ++k) {
    const auto row = reduced[0][static_cast<int64_t>(k)];
    quant::TensorStats s;
    s.weight_rms = std::sqrt(weights[k].detach().to(torch::kFloat64).pow(2).mean().item<double>());
    s.act_rms = std::sqrt(row[kAct2].item<double>() / row[kActCount].item<double>());
    s.weight_fisher = row[kWeightGrad2].item<double>() / count;
    s.act_fisher = row[kActGrad2].item<double>() / count;
    const torch::Tensor fisher = reduced[3 + k] / count;
    for (int64_t j = 0; j < nb && learned[k]; ++j) {
      const int64_t b = candidates[j];
      s.weight_error[b] = 0.5 * weighted_error(*quantizers[k].weight, b, weights[k], fisher, names[k]);
      s.act_error[b] = 0.5 * reduced[1][static_cast<int64_t>(k)][j].item<double>() / count;
    }
    s.samples = static_cast<int64_t>(count);
    stats[names[k]] = s;
  }
  return stats;
}

}  // namespace limpq::train
