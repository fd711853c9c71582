#include "limpq/train/sensitivity.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "limpq/data/loader.h"
#include "limpq/dist/dist.h"
#include "limpq/models/quantized.h"
#include "limpq/models/state_dict.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/nn/trace.h"
#include "limpq/quant/lsq.h"
#include "limpq/quant/lsq_quantizer.h"
#include "limpq/train/trainer.h"
#include "limpq/util/runtime.h"

namespace limpq::train {
namespace {

// The smallest value written for a criterion: the indicators format needs
// positive values, and a negative trace estimate (the loss is not convex)
// means "quantizing this tensor barely matters".
constexpr double kFloor = 1e-30;

// ||Q_b(x) - x||^2 with the initial LSQ step of `x` at `range`.
double squared_error(const torch::Tensor& x, const torch::Tensor& step, const quant::QuantRange& range) {
  torch::NoGradGuard no_grad;
  const torch::Tensor xf = x.detach().to(torch::kFloat32).contiguous();
  const torch::Tensor s = step.clamp_min(1e-12).to(xf.device());
  return (quant::lsq_fake_quant(xf, s, range, 1.0) - xf).pow(2).sum().item<double>();
}

const torch::Tensor& layer_weight(torch::nn::Module& m) {
  if (auto* conv = m.as<nn::QuantConv2dImpl>()) return conv->weight;
  auto* linear = m.as<nn::QuantLinearImpl>();
  TORCH_CHECK(linear != nullptr, "sensitivity: layer is neither a QuantConv2d nor a QuantLinear");
  return linear->weight;
}

}  // namespace

std::vector<double> hutchinson_traces(const torch::Tensor& loss, const std::vector<torch::Tensor>& wrt,
                                      int64_t probes, at::Generator generator) {
  TORCH_CHECK(loss.numel() == 1, "hutchinson_traces: the loss must be a scalar, got shape ", loss.sizes());
  TORCH_CHECK(probes > 0, "hutchinson_traces: probes must be positive, got ", probes);
  const auto grads = torch::autograd::grad({loss}, wrt, /*grad_outputs=*/{}, /*retain_graph=*/true,
                                           /*create_graph=*/true, /*allow_unused=*/true);
  std::vector<double> traces(wrt.size(), 0.0);
  for (int64_t p = 0; p < probes; ++p) {
    std::vector<torch::Tensor> probe(wrt.size());
    torch::Tensor dot = torch::zeros({}, loss.options());
    for (size_t i = 0; i < wrt.size(); ++i) {
      if (!grads[i].defined() || !grads[i].requires_grad()) continue;  // no second-order path
      probe[i] = torch::randint(0, 2, wrt[i].sizes(), generator, wrt[i].options().requires_grad(false)) * 2 - 1;
      dot = dot + (grads[i] * probe[i]).sum();
    }
    if (!dot.requires_grad()) break;  // every tensor's Hessian block is zero
    const auto hv = torch::autograd::grad({dot}, wrt, /*grad_outputs=*/{}, /*retain_graph=*/true,
                                          /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < wrt.size(); ++i) {
      if (hv[i].defined() && probe[i].defined()) traces[i] += (hv[i] * probe[i]).sum().item<double>();
    }
  }
  for (double& t : traces) t /= static_cast<double>(probes);
  return traces;
}

quant::Indicators run_sensitivity(const SensitivityConfig& config) {
  const SensitivityOptions& options = config.sensitivity;
  TORCH_CHECK(options.method() == "hessian", "sensitivity: unknown method '", options.method(),
              "' (expected hessian)");
  TORCH_CHECK(options.batches() > 0, "sensitivity: batches must be positive, got ", options.batches());
  TORCH_CHECK(options.probes() > 0, "sensitivity: probes must be positive, got ", options.probes());
  TORCH_CHECK(!options.candidates().empty(), "sensitivity: no candidate bit-widths");
  for (int64_t b : options.candidates()) {
    TORCH_CHECK(b >= 2 && b <= 8, "sensitivity: candidate bit-widths must be in 2..8, got ", b);
  }
  dist::init_from_environment(std::chrono::seconds(300));
  util::set_threads(worker_threads(config.threads));
  const torch::Device device = util::resolve_device(config.device);

  data::DataBundle data = data::make_data(config.data, config.seed);
  models::Model model = models::make_model(config.model.arch(), data.input_shape[0], data.num_classes);
  if (config.model.weights().empty()) {
    TORCH_WARN("sensitivity: no --weights given; the criterion of a randomly initialised network means little");
  } else {
    models::load_state_dict(*model, models::read_state_dict_file(config.model.weights()), config.model.weights());
  }
  const models::QuantModel analysed(model, data.input_shape,
                                    models::QuantizeOptions().fixed_layers(options.fixed_layers()));
  model->to(device);
  model->eval();

  // The searchable layers in network order, as analysed.layers() lists them.
  const auto modules = model->named_modules("", /*include_self=*/false);
  std::map<const torch::nn::Module*, size_t> index_of;  // searchable layer module -> position
  std::vector<const models::LayerInfo*> layers;
  std::vector<torch::Tensor> weights;
  for (const auto& l : analysed.layers()) {
    if (!l.searchable) continue;
    const auto& module = modules[l.name];
    index_of[module.get()] = layers.size();
    layers.push_back(&l);
    weights.push_back(layer_weight(*module));
  }
  const size_t n = layers.size();
  TORCH_CHECK(n > 0, "sensitivity: the model has no searchable layer");
  const auto& candidates = options.candidates();
  const size_t nb = candidates.size();

  // Sums over this worker's batches: weight traces, activation traces per
  // element, per (layer, bits) the activation errors ||Q_b(A) - A||^2; then
  // the batch count.
  torch::Tensor weight_trace_sum = torch::zeros({static_cast<int64_t>(n)}, torch::kFloat64);
  torch::Tensor act_trace_sum = torch::zeros({static_cast<int64_t>(n)}, torch::kFloat64);
  torch::Tensor act_error_sum = torch::zeros({static_cast<int64_t>(n), static_cast<int64_t>(nb)}, torch::kFloat64);
  torch::Tensor batches_done = torch::zeros({1}, torch::kFloat64);

  // Every worker reads the same shuffled order and takes every world_size-th
  // batch; each batch's probes come from its own seed, so the estimate does
  // not depend on the number of workers.
  data::DataLoader loader(data.train, data.eval_transform,
                          data::LoaderOptions()
                              .batch_size(config.data.batch_size())
                              .shuffle(true)
                              .seed(config.seed)
                              .workers(config.data.workers())
                              .pin_memory(device.is_cuda()));
  for (int64_t b = 0; b < options.batches(); ++b) {
    auto batch = loader.next();
    if (!batch) break;
    if (b % dist::world_size() != dist::rank()) continue;
    const torch::Tensor images = batch->images.to(device);
    const torch::Tensor labels = batch->labels.to(device);

    nn::LayerTracer tracer(/*keep_inputs=*/true);
    const torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(images), labels);
    std::vector<torch::Tensor> acts(n);
    for (const auto& e : tracer.events()) {
      auto it = index_of.find(e.module);
      if (it != index_of.end() && !acts[it->second].defined()) acts[it->second] = e.input;
    }
    for (size_t i = 0; i < n; ++i) {
      TORCH_CHECK(acts[i].defined(), "sensitivity: layer '", layers[i]->name, "' did not run in the forward pass");
    }
    std::vector<torch::Tensor> wrt = weights;
    wrt.insert(wrt.end(), acts.begin(), acts.end());
    at::Generator gen = at::detail::createCPUGenerator(util::mix_seed(config.seed ^ util::mix_seed(b + 1)));
    const std::vector<double> traces = hutchinson_traces(loss, wrt, options.probes(), gen);

    for (size_t i = 0; i < n; ++i) {
      weight_trace_sum[i] += traces[i];
      const double act_trace = traces[n + i];
      const torch::Tensor& a = acts[i];
      act_trace_sum[i] += act_trace / static_cast<double>(a.numel());
      for (size_t k = 0; k < nb; ++k) {
        const auto range = quant::QuantRange::of(candidates[k], layers[i]->signed_input);
        act_error_sum[i][k] += squared_error(a, quant::initial_activation_step(a, range), range);
      }
    }
    batches_done[0] += 1;
  }
  std::vector<torch::Tensor> sums = {weight_trace_sum, act_trace_sum, act_error_sum, batches_done};
  dist::allreduce_sum(sums);
  const double count = sums[3].item<double>();
  TORCH_CHECK(count > 0, "sensitivity: the training set gave no calibration batch");

  quant::Indicators ind;
  ind.model = model->arch();
  ind.input_shape = data.input_shape;
  ind.candidates = candidates;
  nlohmann::ordered_json traces = nlohmann::ordered_json::object();
  int64_t floored = 0;
  auto positive = [&](double v) {
    if (!(v > kFloor)) ++floored;
    return std::isfinite(v) && v > kFloor ? v : kFloor;
  };
  size_t i = 0;  // position among the searchable layers (both in network order)
  for (const auto& l : analysed.layers()) {
    quant::IndicatorLayer e;
    e.name = l.name;
    e.kind = l.kind == models::LayerKind::kConv ? "conv" : "linear";
    e.searchable = l.searchable;
    e.macs = l.macs;
    e.params = l.params;
    if (l.searchable) {
      const torch::Tensor w = weights[i].detach();
      const double weight_trace = sums[0][i].item<double>() / count;
      const double act_trace_per_element = sums[1][i].item<double>() / count;
      for (size_t k = 0; k < nb; ++k) {
        const auto range = quant::QuantRange::of(candidates[k], /*is_signed=*/true);
        const double err = squared_error(w, quant::initial_weight_step(w, candidates[k]), range);
        e.weight_steps[candidates[k]] = positive(weight_trace / static_cast<double>(w.numel()) * err);
        e.act_steps[candidates[k]] = positive(act_trace_per_element * sums[2][i][k].item<double>() / count);
      }
      traces[l.name] = {{"weight_trace", weight_trace}, {"act_trace_per_element", act_trace_per_element}};
      ++i;
    }
    ind.layers.push_back(std::move(e));
  }
  ind.provenance = {{"method", "hessian"},
                    {"criterion", "Tr(H)/n * ||Q_b(x) - x||^2; activations: both factors averaged over the batches"},
                    {"search_alpha", 1.0},
                    {"checkpoint", config.model.weights()},
                    {"dataset", config.data.dataset()},
                    {"batches", static_cast<int64_t>(count)},
                    {"batch_size", config.data.batch_size()},
                    {"probes", options.probes()},
                    {"seed", config.seed},
                    {"floored_values", floored},
                    {"traces", traces}};
  return ind;
}

}  // namespace limpq::train
