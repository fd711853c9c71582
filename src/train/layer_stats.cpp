#include "limpq/train/layer_stats.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "limpq/dist/dist.h"
#include "limpq/nn/quant_layer.h"
#include "limpq/nn/trace.h"
#include "limpq/quant/lsq.h"
#include "limpq/quant/lsq_quantizer.h"

namespace limpq::train {

torch::Tensor quantization_delta(const torch::Tensor& x, const torch::Tensor& step, const quant::QuantRange& range) {
  torch::NoGradGuard no_grad;
  const torch::Tensor xf = x.detach().to(torch::kFloat32).contiguous();
  const torch::Tensor s = step.detach().to(xf.device());
  return (quant::lsq_fake_quant(xf, s, range, 1.0) - xf).to(torch::kFloat64);
}

int64_t sample_label(const torch::Tensor& logits, std::mt19937_64& rng) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) == 1, "sample_label: expects one example's logits [1, classes], got ",
              logits.sizes());
  const torch::Tensor p = torch::softmax(logits.detach().to(torch::kCPU, torch::kFloat64), 1).contiguous();
  const double* prob = p.data_ptr<double>();
  const int64_t classes = p.size(1);
  double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  for (int64_t c = 0; c < classes - 1; ++c) {
    if (u < prob[c]) return c;
    u -= prob[c];
  }
  return classes - 1;
}

torch::Tensor quantizable_weight(torch::nn::Module& layer, const std::string& name) {
  const nn::QuantLayer* q = nn::as_quant_layer(layer);
  TORCH_CHECK(q != nullptr, "layer '", name, "' is not a quantizable layer");
  TORCH_CHECK(q->has_weight(), "layer '", name, "' is a ", q->kind(), " of two activations: it has no weight");
  return q->weight_tensor();
}

namespace {

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
  nn::QuantLayer* q = nn::as_quant_layer(layer);
  TORCH_CHECK(q != nullptr && q->quantized(), "layer stats: layer '", name, "' has no quantizers");
  return {q->weight_quantizer.get(), q->input_quantizer.get()};
}

// One searchable layer's sums over examples, and the statistics they give.
class LayerSums {
 public:
  LayerSums(std::string name, torch::Tensor weight, Quantizers quantizers, const std::vector<int64_t>& candidates)
      : name_(std::move(name)),
        weight_(std::move(weight)),
        quantizers_(quantizers),
        candidates_(candidates),
        with_errors_(quantizers.learned(candidates)),
        scalars_(torch::zeros({kScalars}, torch::kFloat64)),
        weight_error_(torch::zeros({static_cast<int64_t>(candidates.size())}, torch::kFloat64)),
        act_error_(torch::zeros({static_cast<int64_t>(candidates.size())}, torch::kFloat64)) {
    if (!with_errors_) return;
    for (int64_t b : candidates_) weight_deltas_.push_back(delta_at(*quantizers_.weight, b, weight_));
  }

  const torch::Tensor& weight() const { return weight_; }

  // One example: the loss gradients by the weight and by the layer's input
  // `act` (either undefined where the loss does not reach it).
  void add(const torch::Tensor& weight_grad, const torch::Tensor& act_grad, const torch::Tensor& act) {
    torch::NoGradGuard no_grad;
    if (weight_grad.defined()) {
      const torch::Tensor g = weight_grad.to(torch::kFloat64);
      scalars_[kWeightGrad2] += g.pow(2).sum().item<double>();
      // The same rounding error meets every example: its first-order loss
      // change g . delta, squared, is the Fisher block's quadratic form.
      for (size_t j = 0; j < weight_deltas_.size(); ++j) {
        weight_error_[static_cast<int64_t>(j)] += (g * weight_deltas_[j]).sum().pow(2).item<double>();
      }
    }
    if (act_grad.defined()) {
      const torch::Tensor g2 = act_grad.to(torch::kFloat64).pow(2);
      // Rounding noise only where the activation is not 0: a ReLU's zeros
      // are represented exactly at every bit-width.
      scalars_[kActGrad2] += (g2 * act.detach().ne(0)).sum().item<double>();
      // An activation's rounding error changes with the example, nearly
      // independently element to element: the cross terms average out, and
      // the diagonal is the lower-variance estimate.
      for (size_t j = 0; j < candidates_.size() && with_errors_; ++j) {
        act_error_[static_cast<int64_t>(j)] += (g2 * delta_at(*quantizers_.input, candidates_[j], act).pow(2))
                                                   .sum()
                                                   .item<double>();
      }
    }
    scalars_[kAct2] += act.detach().to(torch::kFloat64).pow(2).sum().item<double>();
    scalars_[kActCount] += static_cast<double>(act.numel());
  }

  // The tensors data-parallel workers sum.
  std::vector<torch::Tensor> sums() const { return {scalars_, weight_error_, act_error_}; }

  quant::TensorStats stats(double count) const {
    torch::NoGradGuard no_grad;
    quant::TensorStats s;
    s.weight_rms = std::sqrt(weight_.detach().to(torch::kFloat64).pow(2).mean().item<double>());
    s.act_rms = std::sqrt(scalars_[kAct2].item<double>() / scalars_[kActCount].item<double>());
    s.weight_fisher = scalars_[kWeightGrad2].item<double>() / count;
    s.act_fisher = scalars_[kActGrad2].item<double>() / count;
    for (size_t j = 0; j < candidates_.size() && with_errors_; ++j) {
      const int64_t b = candidates_[j];
      s.weight_error[b] = 0.5 * weight_error_[static_cast<int64_t>(j)].item<double>() / count;
      s.act_error[b] = 0.5 * act_error_[static_cast<int64_t>(j)].item<double>() / count;
    }
    s.samples = static_cast<int64_t>(count);
    return s;
  }

 private:
  // Sums over examples: squared weight gradients, squared activation
  // gradients (nonzero activations), squared activations, activation elements.
  enum Scalar : int64_t { kWeightGrad2, kActGrad2, kAct2, kActCount, kScalars };

  // Q_b(x) - x with the quantizer's learned step for `bits`.
  torch::Tensor delta_at(const quant::LsqQuantizerImpl& q, int64_t bits, const torch::Tensor& x) const {
    TORCH_CHECK(q.initialized(bits), "layer stats: layer '", name_, "' has no learned step for ", bits, " bits");
    return quantization_delta(x, q.effective_step(bits), q.range(bits));
  }

  std::string name_;
  torch::Tensor weight_;
  Quantizers quantizers_;
  std::vector<int64_t> candidates_;
  bool with_errors_;
  std::vector<torch::Tensor> weight_deltas_;  // per candidate: Q_b(w) - w
  torch::Tensor scalars_;                     // [kScalars]
  torch::Tensor weight_error_;                // [candidates]: sum over examples of (g . (Q_b(w) - w))^2
  torch::Tensor act_error_;                   // [candidates]: sum of sum_i g_i^2 (Q_b(a_i) - a_i)^2
};

// Each searchable layer's input in the traced forward pass, in the order of
// `index_of`.
std::vector<torch::Tensor> layer_inputs(const nn::LayerTracer& tracer,
                                        const std::map<const torch::nn::Module*, size_t>& index_of,
                                        const std::vector<std::string>& names) {
  std::vector<torch::Tensor> acts(names.size());
  for (const auto& e : tracer.events()) {
    auto it = index_of.find(e.module);
    if (it != index_of.end() && !acts[it->second].defined()) acts[it->second] = e.input;
  }
  for (size_t k = 0; k < names.size(); ++k) {
    TORCH_CHECK(acts[k].defined(), "layer stats: layer '", names[k], "' did not run in the forward pass");
  }
  return acts;
}

}  // namespace

std::mt19937_64 label_rng(uint64_t seed) {
  std::seed_seq seq{seed, static_cast<uint64_t>(dist::rank())};
  return std::mt19937_64(seq);
}

std::map<std::string, quant::TensorStats> measure_layer_stats(const models::QuantModel& qm, data::DataLoader& loader,
                                                             const torch::Device& device, int64_t samples,
                                                             uint64_t seed) {
  TORCH_CHECK(samples > 0, "layer stats: samples must be positive, got ", samples);
  models::ModelImpl& model = *qm.model();
  auto modules = model.named_modules("", /*include_self=*/false);
  std::map<const torch::nn::Module*, size_t> index_of;
  std::vector<std::string> names;
  std::vector<LayerSums> layers;
  for (const auto& l : qm.layers()) {
    // A product of two activations has no weight statistics; the criteria
    // that need them refuse its indicators (search/criterion.h).
    if (!l.searchable || !l.has_weight) continue;
    torch::nn::Module& module = *modules[l.name];
    index_of[&module] = names.size();
    names.push_back(l.name);
    layers.emplace_back(l.name, quantizable_weight(module, l.name), quantizers_of(module, l.name), qm.candidates());
  }
  const size_t n = names.size();
  TORCH_CHECK(n > 0, "layer stats: the model has no searchable layer");
  std::vector<torch::Tensor> weights;
  for (const auto& l : layers) weights.push_back(l.weight());

  model.eval();
  const auto format = models::memory_format_of(model);
  // Data-parallel workers share the examples (each reads its own shard).
  const int64_t mine = (samples + dist::world_size() - 1) / dist::world_size();
  std::mt19937_64 rng = label_rng(seed);
  int64_t seen = 0;
  while (seen < mine) {
    auto batch = loader.next();
    if (!batch) break;
    for (int64_t i = 0; i < batch->images.size(0) && seen < mine; ++i, ++seen) {
      const torch::Tensor image = batch->images.slice(0, i, i + 1).to(device).contiguous(format);
      nn::LayerTracer tracer(/*keep_inputs=*/true);
      const torch::Tensor logits = model.forward(image);
      const torch::Tensor label = torch::full({1}, sample_label(logits, rng), torch::dtype(torch::kLong).device(device));
      const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, label);
      const std::vector<torch::Tensor> acts = layer_inputs(tracer, index_of, names);
      std::vector<torch::Tensor> wrt = weights;
      wrt.insert(wrt.end(), acts.begin(), acts.end());
      const auto grads = torch::autograd::grad({loss}, wrt, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                               /*allow_unused=*/true);
      for (size_t k = 0; k < n; ++k) layers[k].add(grads[k], grads[n + k], acts[k]);
    }
  }
  std::vector<torch::Tensor> reduced = {torch::full({1}, static_cast<double>(seen), torch::kFloat64)};
  for (const auto& l : layers) {
    for (const auto& t : l.sums()) reduced.push_back(t);
  }
  dist::allreduce_sum(reduced);  // in place: the layers' sums are these tensors
  const double count = reduced[0].item<double>();
  TORCH_CHECK(count > 0, "layer stats: the loader gave no example");

  std::map<std::string, quant::TensorStats> stats;
  for (size_t k = 0; k < n; ++k) stats[names[k]] = layers[k].stats(count);
  return stats;
}

}  // namespace limpq::train
