#include "limpq/train/sensitivity.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>

#include "limpq/data/loader.h"
#include "limpq/dist/dist.h"
#include "limpq/models/indicator_layer.h"
#include "limpq/models/quantized.h"
#include "limpq/models/state_dict.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/nn/trace.h"
#include "limpq/quant/lsq.h"
#include "limpq/quant/lsq_quantizer.h"
#include "limpq/train/evaluate.h"
#include "limpq/train/layer_stats.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/progress.h"
#include "limpq/util/runtime.h"
#include "limpq/util/signals.h"

namespace limpq::train {
namespace {

// The smallest value written for a criterion: the indicators format needs
// positive values, and a negative trace estimate (the loss is not convex)
// means "quantizing this tensor barely matters".
constexpr double kFloor = 1e-30;

// ||Q_b(x) - x||^2 with the initial LSQ step of `x` at `range`.
double squared_error(const torch::Tensor& x, const torch::Tensor& step, const quant::QuantRange& range) {
  return quantization_delta(x, step.clamp_min(1e-12), range).pow(2).sum().item<double>();
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

namespace {

// What both methods start from: the data, the full-precision weights and the
// network's layers as analysed (network order).
struct Setup {
  Setup(data::DataBundle data_, torch::Device device_) : data(std::move(data_)), device(device_) {}
  data::DataBundle data;
  models::StateDict weights;
  std::vector<models::LayerInfo> layers;
  torch::Device device;

  models::Model fresh_model(const SensitivityConfig& config) const {
    models::Model model = models::build_model(models::ModelOptions(config.model).weights(""), data.input_shape,
                                              data.num_classes);
    if (!weights.empty()) models::load_state_dict(*model, weights, config.model.weights());
    return model;
  }
};

Setup make_setup(const SensitivityConfig& config) {
  const SensitivityOptions& options = config.sensitivity;
  TORCH_CHECK(!options.candidates().empty(), "sensitivity: no candidate bit-widths");
  for (int64_t b : options.candidates()) {
    TORCH_CHECK(b >= 2 && b <= 8, "sensitivity: candidate bit-widths must be in 2..8, got ", b);
  }
  util::set_threads(worker_threads(config.threads));
  Setup setup(data::make_data(config.data, config.seed), util::resolve_device(config.device));
  if (config.model.weights().empty()) {
    TORCH_WARN("sensitivity: no --weights given; the criterion of a randomly initialised network means little");
  } else {
    setup.weights = models::read_weights_for(config.model.weights(), models::weights_target(config.model));
  }
  models::Model model = setup.fresh_model(config);
  setup.layers = models::QuantModel(model, setup.data.input_shape,
                                    models::QuantizeOptions().fixed_layers(options.fixed_layers()))
                     .layers();
  TORCH_CHECK(std::any_of(setup.layers.begin(), setup.layers.end(), [](const auto& l) { return l.searchable; }),
              "sensitivity: the model has no searchable layer");
  return setup;
}

// The indicators skeleton: every layer with its costs, the searchable ones'
// values filled by `fill(layer, entry)` in network order.
template <typename Fill>
quant::Indicators indicators_of(const SensitivityConfig& config, const Setup& setup, Fill&& fill) {
  quant::Indicators ind;
  ind.model = config.model.arch();
  ind.input_shape = setup.data.input_shape;
  ind.candidates = config.sensitivity.candidates();
  for (const auto& l : setup.layers) {
    quant::IndicatorLayer e = models::indicator_layer(l);
    if (l.searchable) fill(l, e);
    ind.layers.push_back(std::move(e));
  }
  return ind;
}

quant::Indicators hessian_sensitivity(const SensitivityConfig& config, const Setup& setup) {
  const SensitivityOptions& options = config.sensitivity;
  TORCH_CHECK(options.batches() > 0, "sensitivity: batches must be positive, got ", options.batches());
  TORCH_CHECK(options.probes() > 0, "sensitivity: probes must be positive, got ", options.probes());
  const torch::Device device = setup.device;
  models::Model model = setup.fresh_model(config);
  model->to(device);
  model->eval();

  // The searchable layers in network order.
  auto modules = model->named_modules("", /*include_self=*/false);
  std::map<const torch::nn::Module*, size_t> index_of;  // searchable layer module -> position
  std::vector<const models::LayerInfo*> layers;
  std::vector<torch::Tensor> weights;
  for (const auto& l : setup.layers) {
    if (!l.searchable) continue;
    TORCH_CHECK(l.has_weight, "sensitivity --method hessian: layer '", l.name, "' is a ", l.kind,
                " of two activations, whose Hessian trace by a weight is not defined; use --method drop, or keep it "
                "out of the search with --fixed-layers");
    const auto& module = modules[l.name];
    index_of[module.get()] = layers.size();
    layers.push_back(&l);
    weights.push_back(quantizable_weight(*module, l.name));
  }
  const size_t n = layers.size();
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
  data::DataLoader loader(setup.data.train, setup.data.eval_transform,
                          data::LoaderOptions()
                              .batch_size(config.data.batch_size())
                              .shuffle(true)
                              .seed(config.seed)
                              .workers(config.data.workers())
                              .pin_memory(device.is_cuda()));
  util::ProgressLine progress("sensitivity --method hessian", options.batches(), dist::is_main());
  for (int64_t b = 0; b < options.batches(); ++b) {
    // The estimate needs every batch: a stop writes nothing.
    if (util::stop_requested()) {
      throw util::Interrupted(fmt::format("sensitivity --method hessian stopped after {} of {} batches; nothing was "
                                          "written (the estimate needs every batch): run the same command again",
                                          b, options.batches()),
                              util::stop_signal());
    }
    progress.update(b, fmt::format("batch {}/{}", b + 1, options.batches()));
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
  if (dist::is_main()) {
    progress.finish(fmt::format("{} batches, {} probes each", static_cast<int64_t>(batches_done.item<double>()),
                                options.probes()));
  }
  std::vector<torch::Tensor> sums = {weight_trace_sum, act_trace_sum, act_error_sum, batches_done};
  dist::allreduce_sum(sums);
  const double count = sums[3].item<double>();
  TORCH_CHECK(count > 0, "sensitivity: the training set gave no calibration batch");

  nlohmann::ordered_json traces = nlohmann::ordered_json::object();
  int64_t floored = 0;
  auto positive = [&](double v) {
    if (!(v > kFloor)) ++floored;
    return std::isfinite(v) && v > kFloor ? v : kFloor;
  };
  size_t i = 0;  // position among the searchable layers (both in network order)
  quant::Indicators ind = indicators_of(config, setup, [&](const models::LayerInfo& l, quant::IndicatorLayer& e) {
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
  });
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

// One measurement of the drop method: `layer` alone quantized, its weights
// (`weight`) or its input activations at `bits`; every other layer, fixed
// ones included, at full precision.
struct Probe {
  std::string layer;
  bool weight = true;
  int64_t bits = 0;
};

quant::Policy full_precision_policy(const std::string& arch, const std::vector<models::LayerInfo>& layers) {
  quant::Policy policy;
  policy.model = arch;
  const quant::LayerBits fp{quant::kFullPrecisionBits, quant::kFullPrecisionBits};
  for (const auto& l : layers) (l.searchable ? policy.layers : policy.fixed).emplace_back(l.name, fp);
  return policy;
}

data::DataLoader shuffled_loader(const Setup& setup, const SensitivityConfig& config, bool augment,
                                 uint64_t salt) {
  return data::DataLoader(setup.data.train, augment ? setup.data.train_transform : setup.data.eval_transform,
                          data::LoaderOptions()
                              .batch_size(config.data.batch_size())
                              .shuffle(true)
                              .seed(util::mix_seed(config.seed ^ salt))
                              .workers(config.data.workers())
                              .pin_memory(setup.device.is_cuda()));
}

// A few quantization-aware steps (SGD, momentum 0.9, label smoothing 0.1) on
// the training set: the short-QAT variant. As in the training loop, a stop
// request ends it (the measurements finished before are kept) and a
// non-finite loss or gradient is an error naming the step, never a
// measurement.
void short_qat(models::ModelImpl& model, const SensitivityConfig& config, const Setup& setup,
               const std::string& what) {
  const SensitivityOptions& o = config.sensitivity;
  data::DataLoader loader = shuffled_loader(setup, config, /*augment=*/true, 0x51);
  torch::optim::SGD sgd(model.parameters(), torch::optim::SGDOptions(o.qat_lr()).momentum(0.9));
  model.train();
  const auto format = models::memory_format_of(model);
  for (int64_t step = 0, epoch = 0; step < o.qat_steps();) {
    if (util::stop_requested()) {
      throw util::Interrupted(fmt::format("sensitivity stopped in the quantization-aware steps of {}; the "
                                          "measurements finished before it are kept: run the same command again to "
                                          "continue",
                                          what),
                              util::stop_signal());
    }
    auto batch = loader.next();
    if (!batch) {
      loader.start_epoch(++epoch);
      continue;
    }
    const torch::Tensor logits = model.forward(batch->images.to(setup.device).contiguous(format));
    const torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits, batch->labels.to(setup.device), torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(0.1));
    sgd.zero_grad();
    loss.backward();
    // One host synchronisation: the loss and every gradient together.
    std::vector<torch::Tensor> finite{torch::isfinite(loss.detach())};
    for (const auto& p : model.parameters()) {
      if (p.grad().defined()) finite.push_back(torch::isfinite(p.grad()).all());
    }
    TORCH_CHECK(torch::stack(finite).all().item<bool>(), "sensitivity: non-finite loss or gradient at quantization-aware step ", step + 1, " of ",
                o.qat_steps(), " (", what, "); lower sensitivity.qat_lr (now ", o.qat_lr(), ")");
    sgd.step();
    ++step;
  }
  model.eval();
}

// The model under `probe` (none: full precision) after the variant's steps,
// evaluated on the measurement split.
EvalResult measure(const SensitivityConfig& config, const Setup& setup, const std::optional<Probe>& probe) {
  const SensitivityOptions& o = config.sensitivity;
  models::Model model = setup.fresh_model(config);
  if (probe) {
    models::QuantModel qm(model, setup.data.input_shape, models::QuantizeOptions().fixed_layers(o.fixed_layers()));
    quant::Policy policy = full_precision_policy(config.model.arch(), setup.layers);
    for (auto& [name, bits] : policy.layers) {
      if (name == probe->layer) bits = {probe->bits, probe->bits};
    }
    qm.prepare_policy(policy, "sensitivity --method drop");
    qm.set_layer_bits(probe->layer, probe->weight ? probe->bits : quant::kFullPrecisionBits,
                      probe->weight ? quant::kFullPrecisionBits : probe->bits);
  }
  model->to(setup.device);
  model->eval();
  {
    // The lazily initialised activation step takes its rule from this batch.
    data::DataLoader calibration = shuffled_loader(setup, config, /*augment=*/false, 0);
    auto batch = calibration.next();
    TORCH_CHECK(batch, "sensitivity: the training set is empty; the drop method calibrates on it");
    torch::NoGradGuard no_grad;
    model->forward(batch->images.to(setup.device).contiguous(models::memory_format_of(*model)));
  }
  if (o.qat_steps() > 0) {
    const std::string what = probe ? fmt::format("{} {} at {} bits", probe->layer, probe->weight ? "weights" : "inputs",
                                                 probe->bits)
                                   : std::string("the full-precision reference");
    short_qat(*model, config, setup, what);
  }
  if (o.bn_batches() > 0) {
    data::DataLoader calibration = shuffled_loader(setup, config, /*augment=*/false, 0xb7);
    recalibrate_batch_norm(*model, calibration, setup.device, o.bn_batches());
  }
  const auto& split = o.split() == "val" ? setup.data.val : setup.data.test;
  data::DataLoader loader(split, setup.data.eval_transform,
                          data::LoaderOptions()
                              .batch_size(config.data.eval_batch_size())
                              .workers(config.data.workers())
                              .pin_memory(setup.device.is_cuda()));
  return evaluate(*model, loader, setup.device);
}

nlohmann::ordered_json measurement_json(const EvalResult& r) {
  return {{"loss", r.loss}, {"top1", r.top1}, {"count", r.count}};
}

void check_drop_options(const SensitivityOptions& o, const Setup& setup) {
  TORCH_CHECK(!dist::is_distributed(), "sensitivity: --method drop runs in one process (launch it without workers)");
  TORCH_CHECK(o.split() == "val" || o.split() == "test", "sensitivity: split must be val or test, got '", o.split(),
              "'");
  TORCH_CHECK(o.split() == "test" || setup.data.val != nullptr,
              "sensitivity: --method drop measures on the validation split, but data.val_size is 0; hold out "
              "training examples with --val-size N (or measure on --split test)");
  TORCH_CHECK(o.metric() == "loss" || o.metric() == "top1", "sensitivity: metric must be loss or top1, got '",
              o.metric(), "'");
  TORCH_CHECK(o.bn_batches() >= 0 && o.qat_steps() >= 0, "sensitivity: bn_batches and qat_steps must be >= 0, got ",
              o.bn_batches(), " and ", o.qat_steps());
}

// Everything a drop measurement depends on: a record of measurements is
// only continued by a run with the same settings.
nlohmann::ordered_json drop_settings(const SensitivityConfig& config) {
  const SensitivityOptions& o = config.sensitivity;
  return {{"checkpoint", config.model.weights()},
          {"arch", config.model.arch()},
          {"dataset", config.data.dataset()},
          {"val_size", config.data.val_size()},
          {"split", o.split()},
          {"bn_batches", o.bn_batches()},
          {"qat_steps", o.qat_steps()},
          {"qat_lr", o.qat_lr()},
          {"fixed_layers", o.fixed_layers()},
          {"seed", config.seed}};
}

// The raw measurements of a drop run, kept in config.partial_path after
// each one so that a stopped or killed run continues where it was:
//   {"settings": {...}, "full_precision": {loss, top1, count},
//    "measured": {layer: {"weight": {bits: {...}}, "act": {...}}}}
class DropRecord {
 public:
  DropRecord(std::string path, nlohmann::ordered_json settings) : path_(std::move(path)) {
    record_ = {{"settings", std::move(settings)}, {"measured", nlohmann::ordered_json::object()}};
    if (path_.empty() || !std::filesystem::exists(path_)) return;
    nlohmann::ordered_json kept;
    try {
      kept = nlohmann::ordered_json::parse(util::read_file(path_));
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK(false, "sensitivity: ", path_, " (the measurements of an earlier run) is not valid JSON: ",
                  e.what(), "; delete it to measure again");
    }
    for (const auto& [key, value] : record_["settings"].items()) {
      TORCH_CHECK(kept.contains("settings") && kept["settings"].value(key, nlohmann::ordered_json()) == value,
                  "sensitivity: ", path_, " holds measurements taken with ", key, " = ",
                  kept.contains("settings") ? kept["settings"].value(key, nlohmann::ordered_json()).dump() : "?",
                  ", this run has ", value.dump(), "; run with the same settings to continue it, or delete it");
    }
    TORCH_CHECK(kept.value("measured", nlohmann::ordered_json::object()).is_object(), "sensitivity: ", path_,
                ": 'measured' must be an object of layers; delete the file to measure again");
    if (!kept.contains("measured")) kept["measured"] = nlohmann::ordered_json::object();
    record_ = std::move(kept);
    fmt::print(stderr, "sensitivity: continuing from {} ({} measurements kept)\n", path_, count());
  }

  // The measurement at `path` (keys from the record's root), taken now by
  // `measure` unless an earlier run kept it.
  template <typename Measure>
  nlohmann::ordered_json get(const std::vector<std::string>& path, Measure&& measure) {
    nlohmann::ordered_json* node = &record_;
    for (const auto& key : path) node = &(*node)[key];
    if (node->is_null()) {
      if (util::stop_requested()) {
        throw util::Interrupted(fmt::format("sensitivity stopped; {} measurements are kept in {}: run the same "
                                            "command again to continue",
                                            count(), path_.empty() ? "no file" : path_),
                                util::stop_signal());
      }
      *node = measurement_json(measure());
      if (!path_.empty()) util::write_file_atomic(path_, record_.dump(1));
    }
    return *node;
  }

  const nlohmann::ordered_json& measured() const { return record_["measured"]; }

 private:
  int64_t count() const {
    int64_t n = record_.contains("full_precision") ? 1 : 0;
    for (const auto& [layer, tensors] : record_["measured"].items()) {
      for (const auto& [tensor, bits] : tensors.items()) {
        n += std::count_if(bits.begin(), bits.end(), [](const auto& m) { return !m.is_null(); });
      }
    }
    return n;
  }

  std::string path_;
  nlohmann::ordered_json record_;
};

quant::Indicators drop_sensitivity(const SensitivityConfig& config, const Setup& setup) {
  const SensitivityOptions& o = config.sensitivity;
  check_drop_options(o, setup);
  util::Stopwatch clock;
  DropRecord record(config.partial_path, drop_settings(config));
  const nlohmann::ordered_json base = record.get({"full_precision"}, [&] { return measure(config, setup, std::nullopt); });
  auto drop = [&](const nlohmann::ordered_json& r) {
    const char* m = o.metric() == "loss" ? "loss" : "top1";
    const double d = r[m].get<double>() - base[m].get<double>();
    return o.metric() == "loss" ? d : -d;
  };

  int64_t floored = 0;
  quant::Indicators ind = indicators_of(config, setup, [&](const models::LayerInfo& l, quant::IndicatorLayer& e) {
    for (int64_t b : o.candidates()) {
      for (const bool weight : {true, false}) {
        const std::vector<std::string> key = {"measured", l.name, weight ? "weight" : "act", std::to_string(b)};
        const double d = drop(record.get(key, [&] { return measure(config, setup, Probe{l.name, weight, b}); }));
        if (!(d > kFloor)) ++floored;
        (weight ? e.weight_steps : e.act_steps)[b] = std::isfinite(d) && d > kFloor ? d : kFloor;
      }
    }
    fmt::print(stderr, "sensitivity: {} measured ({}, {:.0f} s so far)\n", l.name,
               fmt::format("W{0}: {1:.4g}, A{0}: {2:.4g}", o.candidates().back(), e.weight_steps.at(o.candidates().back()),
                           e.act_steps.at(o.candidates().back())),
               clock.seconds());
  });
  ind.provenance = {{"method", "drop"},
                    {"variant", o.qat_steps() > 0 ? "short-qat" : "post-training"},
                    {"criterion", o.metric() == "loss"
                                      ? "loss increase with the tensor alone quantized (the rest full precision)"
                                      : "top-1 drop (points) with the tensor alone quantized (the rest full precision)"},
                    {"search_alpha", 1.0},
                    {"checkpoint", config.model.weights()},
                    {"dataset", config.data.dataset()},
                    {"split", o.split()},
                    {"examples", base["count"]},
                    {"metric", o.metric()},
                    {"bn_batches", o.bn_batches()},
                    {"qat_steps", o.qat_steps()},
                    {"qat_lr", o.qat_lr()},
                    {"seed", config.seed},
                    {"floored_values", floored},
                    {"seconds", clock.seconds()},
                    {"full_precision", base},
                    {"measured", record.measured()}};
  return ind;
}

}  // namespace

quant::Indicators run_sensitivity(const SensitivityConfig& given) {
  SensitivityConfig config = given;
  config.model = models::resolve_model_options(config.model);
  const std::string& method = config.sensitivity.method();
  TORCH_CHECK(method == "hessian" || method == "drop", "sensitivity: unknown method '", method,
              "' (expected hessian or drop)");
  dist::init_from_environment(std::chrono::seconds(300));
  const Setup setup = make_setup(config);
  return method == "hessian" ? hessian_sensitivity(config, setup) : drop_sensitivity(config, setup);
}

std::string sensitivity_text(const quant::Indicators& ind) {
  const bool hessian = ind.provenance.contains("traces");
  std::string out = fmt::format("{:<28} {:>25}   criterion at {}..{} bits (weights | activations)\n", "layer",
                                hessian ? "    Tr(H_W)  Tr(H_A)/n_A" : "", ind.candidates.front(), ind.candidates.back());
  for (const auto& l : ind.layers) {
    if (!l.searchable) continue;
    out += fmt::format("{:<28} ", l.name);
    if (hessian) {
      const auto& traces = ind.provenance.at("traces").at(l.name);
      out += fmt::format("{:>12.4g} {:>12.4g}", traces["weight_trace"].get<double>(),
                         traces["act_trace_per_element"].get<double>());
    } else {
      out += fmt::format("{:>25}", "");
    }
    for (int64_t b : ind.candidates) out += fmt::format(" {:.3g}", l.weight_steps.at(b));
    out += " |";
    for (int64_t b : ind.candidates) out += fmt::format(" {:.3g}", l.act_steps.at(b));
    out += "\n";
  }
  return out;
}

}  // namespace limpq::train
