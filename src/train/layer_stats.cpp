#include "limpq/train/layer_stats.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <cmath>

#include "limpq/dist/dist.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/nn/trace.h"

namespace limpq::train {

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

}  // namespace

std::map<std::string, quant::TensorStats> measure_layer_stats(const models::QuantModel& qm, data::DataLoader& loader,
                                                             const torch::Device& device, int64_t samples) {
  TORCH_CHECK(samples > 0, "layer stats: samples must be positive, got ", samples);
  models::ModelImpl& model = *qm.model();
  auto modules = model.named_modules("", /*include_self=*/false);
  std::map<const torch::nn::Module*, size_t> index_of;
  std::vector<std::string> names;
  std::vector<torch::Tensor> weights;
  for (const auto& l : qm.layers()) {
    if (!l.searchable) continue;
    index_of[modules[l.name].get()] = names.size();
    names.push_back(l.name);
    weights.push_back(quantizable_weight(*modules[l.name], l.name));
  }
  const size_t n = names.size();
  TORCH_CHECK(n > 0, "layer stats: the model has no searchable layer");
  torch::Tensor sums = torch::zeros({static_cast<int64_t>(n), kColumns}, torch::kFloat64);
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
        if (grads[k].defined()) row[kWeightGrad2] += grads[k].to(torch::kFloat64).pow(2).sum().item<double>();
        // Rounding noise only where the activation is not 0: a ReLU's zeros
        // are represented exactly at every bit-width.
        if (grads[n + k].defined()) {
          const torch::Tensor g = grads[n + k].to(torch::kFloat64) * acts[k].detach().ne(0);
          row[kActGrad2] += g.pow(2).sum().item<double>();
        }
        row[kAct2] += acts[k].detach().to(torch::kFloat64).pow(2).sum().item<double>();
        row[kActCount] += static_cast<double>(acts[k].numel());
      }
      ++seen;
    }
  }
  std::vector<torch::Tensor> reduced = {sums, torch::full({1}, static_cast<double>(seen), torch::kFloat64)};
  dist::allreduce_sum(reduced);
  const double count = reduced[1].item<double>();
  TORCH_CHECK(count > 0, "layer stats: the loader gave no example");

  std::map<std::string, quant::TensorStats> stats;
  for (size_t k = 0; k < n; ++k) {
    const auto row = reduced[0][static_cast<int64_t>(k)];
    quant::TensorStats s;
    s.weight_rms = std::sqrt(weights[k].detach().to(torch::kFloat64).pow(2).mean().item<double>());
    s.act_rms = std::sqrt(row[kAct2].item<double>() / row[kActCount].item<double>());
    s.weight_fisher = row[kWeightGrad2].item<double>() / count;
    s.act_fisher = row[kActGrad2].item<double>() / count;
    s.samples = static_cast<int64_t>(count);
    stats[names[k]] = s;
  }
  return stats;
}

}  // namespace limpq::train
