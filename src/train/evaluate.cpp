// Evaluation, batch-norm recalibration and loading checkpoints: what
// training, `limpq eval` and the other commands share.
#include "limpq/train/evaluate.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>
#include <torch/torch.h>

#include <thread>

#include "limpq/dist/dist.h"
#include "limpq/models/onnx_model.h"
#include "limpq/models/state_dict.h"
#include "limpq/nn/batch_norm.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/options.h"
#include "limpq/util/runtime.h"

namespace limpq::train {
namespace {

namespace F = torch::nn::functional;

}  // namespace

int64_t worker_threads(int64_t requested) {
  if (requested > 0 || dist::local_world_size() == 1) return requested;
  return std::max<int64_t>(1, std::thread::hardware_concurrency() / dist::local_world_size());
}

nlohmann::ordered_json EvalResult::to_json() const {
  nlohmann::ordered_json j = {{"loss", loss}, {"top1", top1}, {"top5", top5}, {"count", count}};
  if (cost) {
    j["bitops"] = cost->bitops;
    j["size_bytes"] = cost->size_bits / 8.0;
    j["fp_bitops"] = cost->fp_bitops;
    j["fp_size_bytes"] = cost->fp_size_bits / 8.0;
  }
  return j;
}

std::string EvalResult::cost_text() const {
  if (!cost) return "";
  const auto& c = *cost;
  return fmt::format(
      "policy cost: {:.4f} GBitOps ({:.1f}x fewer than 32-bit), weights {:.1f} KB ({:.1f}x smaller than 32-bit)\n",
      c.bitops / 1e9, c.fp_bitops / c.bitops, c.size_bits / 8e3, c.fp_size_bits / c.size_bits);
}

EvalResult evaluate(models::ModelImpl& model, data::DataLoader& loader, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  auto opts = torch::TensorOptions().device(device);
  const torch::MemoryFormat format = models::memory_format_of(model);
  torch::Tensor loss_sum = torch::zeros({}, opts.dtype(torch::kFloat64));
  torch::Tensor top1 = torch::zeros({}, opts.dtype(torch::kInt64));
  torch::Tensor top5 = torch::zeros({}, opts.dtype(torch::kInt64));
  int64_t count = 0;
  loader.start_epoch(0);
  while (auto batch = loader.next()) {
    auto images = batch->images.to(device, /*non_blocking=*/true).contiguous(format);
    auto labels = batch->labels.to(device, /*non_blocking=*/true);
    auto logits = model.forward(images);
    loss_sum += F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .to(torch::kFloat64);
    const int64_t k = std::min<int64_t>(5, logits.size(1));
    auto topk = std::get<1>(logits.topk(k, 1));
    auto hits = topk.eq(labels.unsqueeze(1));
    top1 += hits.narrow(1, 0, 1).sum();
    top5 += hits.sum();
    count += labels.size(0);
  }
  model.train(was_training);
  if (dist::is_distributed()) {  // each worker saw its shard of the data
    std::vector<torch::Tensor> sums{loss_sum, torch::stack({top1, top5, torch::full({}, count, top1.options())})};
    dist::allreduce_sum(sums);
    loss_sum = sums[0];
    top1 = sums[1][0];
    top5 = sums[1][1];
    count = sums[1][2].item<int64_t>();
  }
  TORCH_CHECK(count > 0, "evaluate: the data loader produced no examples");
  EvalResult r;
  r.count = count;
  r.loss = loss_sum.item<double>() / count;
  r.top1 = 100.0 * top1.item<int64_t>() / count;
  r.top5 = 100.0 * top5.item<int64_t>() / count;
  return r;
}

data::DataLoader calibration_loader(const data::DataBundle& data, const data::DataOptions& options, uint64_t seed,
                                    bool pin_memory) {
  return data::DataLoader(data.train, data.eval_transform,
                          data::LoaderOptions()
                              .batch_size(options.batch_size())
                              .shuffle(true)
                              .workers(options.workers())
                              .seed(util::mix_seed(seed ^ 0xb7))
                              .rank(dist::rank())
                              .world_size(dist::world_size())
                              .pin_memory(pin_memory));
}

bool has_batch_norm(const models::ModelImpl& model) {
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (m->as<nn::SwitchableBatchNorm2dImpl>() || m->as<torch::nn::BatchNorm2dImpl>()) return true;
  }
  return false;
}

int64_t recalibrate_batch_norm(models::ModelImpl& model, data::DataLoader& loader, const torch::Device& device,
                               int64_t batches) {
  TORCH_CHECK(batches > 0, "recalibrate_batch_norm: batches must be positive, got ", batches);
  // Every model here normalises with SwitchableBatchNorm2d: its base set, and
  // when switchable one torch BatchNorm2d per bit-width.
  std::vector<nn::SwitchableBatchNorm2dImpl*> bases;
  std::vector<torch::nn::BatchNorm2dImpl*> branches;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* base = m->as<nn::SwitchableBatchNorm2dImpl>()) bases.push_back(base);
    if (auto* branch = m->as<torch::nn::BatchNorm2dImpl>()) branches.push_back(branch);
  }
  TORCH_CHECK(!bases.empty() || !branches.empty(), "recalibrate_batch_norm: the model has no batch norm");
  torch::NoGradGuard no_grad;
  struct Stats {
    torch::Tensor mean, var, tracked;  // the module's buffers
    torch::Tensor saved_mean, saved_var, saved_tracked;
  };
  std::vector<Stats> stats;
  auto snapshot = [&](torch::Tensor& mean, torch::Tensor& var, torch::Tensor& tracked) {
    stats.push_back({mean, var, tracked, mean.clone(), var.clone(), tracked.clone()});
  };
  for (auto* b : bases) snapshot(b->running_mean, b->running_var, b->num_batches_tracked);
  for (auto* b : branches) snapshot(b->running_mean, b->running_var, b->num_batches_tracked);
  std::vector<double> base_momentum;
  std::vector<c10::optional<double>> branch_momentum;
  for (auto* b : bases) base_momentum.push_back(b->options.momentum());
  for (auto* b : branches) branch_momentum.push_back(b->options.momentum());
  auto set_momentum = [&](double m) {
    for (auto* b : bases) b->options.momentum(m);
    for (auto* b : branches) b->options.momentum(m);
  };

  for (auto& s : stats) {
    s.mean.zero_();
    s.var.fill_(1);
    s.tracked.zero_();
  }
  const bool was_training = model.is_training();
  model.train();
  const torch::MemoryFormat format = models::memory_format_of(model);
  // Every worker runs the same number of batches (SyncBatchNorm's
  // collectives pair up batch by batch).
  const int64_t planned = std::min(batches, loader.batches_per_epoch());
  loader.start_epoch(0);
  int64_t used = 0;
  while (used < planned) {
    auto batch = loader.next();
    TORCH_CHECK(batch, "recalibrate_batch_norm: the loader ended after ", used, " of ", planned, " batches");
    // Batch k enters the running average with weight 1/k.
    set_momentum(1.0 / static_cast<double>(used + 1));
    model.forward(batch->images.to(device, /*non_blocking=*/true).contiguous(format));
    ++used;
  }
  model.train(was_training);
  for (size_t i = 0; i < bases.size(); ++i) bases[i]->options.momentum(base_momentum[i]);
  for (size_t i = 0; i < branches.size(); ++i) branches[i]->options.momentum(branch_momentum[i]);
  for (auto& s : stats) {
    if (s.tracked.item<int64_t>() == 0) {  // no batch reached it
      s.mean.copy_(s.saved_mean);
      s.var.copy_(s.saved_var);
      s.tracked.copy_(s.saved_tracked);
    } else {
      s.tracked.add_(s.saved_tracked);
    }
  }
  if (!dist::sync_batch_norm_enabled()) dist::average_batch_norm_statistics(model);
  return used;
}

namespace {

// Section `section` of the config the checkpoint's run wrote, over the
// defaults of `Options`.
template <typename Options>
Options config_section_of(const Checkpoint& checkpoint, const std::string& section) {
  Options options;
  const auto config = nlohmann::json::parse(checkpoint.config, nullptr, /*allow_exceptions=*/false);
  if (!config.is_discarded() && config.contains(section)) {
    // JSON is YAML: the same loader checks the keys.
    util::from_yaml(YAML::Load(config[section].dump()), options, "checkpoint config: " + section);
  }
  return options;
}

}  // namespace

data::DataOptions data_options_of(const Checkpoint& checkpoint) {
  return config_section_of<data::DataOptions>(checkpoint, "data");
}

OptimOptions optim_options_of(const Checkpoint& checkpoint) {
  return config_section_of<OptimOptions>(checkpoint, "train");
}

Checkpoint onnx_checkpoint(const std::string& path) {
  models::OnnxModel model = models::import_onnx(path);
  Checkpoint ckpt;
  ckpt.arch = models::kOnnxArch;
  ckpt.path = path;
  ckpt.onnx = path;
  ckpt.onnx_checksum = model->checksum();
  ckpt.input_shape = model->input_shape();
  ckpt.num_classes = model->num_classes();
  ckpt.model = models::state_dict(*model);
  data::DataOptions data = data::DataOptions().channels(ckpt.input_shape[0]).image_size(ckpt.input_shape[1]);
  models::ModelOptions model_options = models::ModelOptions().onnx(path).arch(models::kOnnxArch);
  ckpt.config = nlohmann::json{{"data", util::to_json(data)}, {"model", util::to_json(model_options)}}.dump();
  return ckpt;
}

namespace {

// Whether the run that wrote the checkpoint trained channels-last. Evaluating
// in the same layout reproduces its numbers exactly: a different summation
// order in the convolutions can move a quantized activation by one step.
bool trained_channels_last(const Checkpoint& checkpoint) {
  const auto config = nlohmann::json::parse(checkpoint.config, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.contains("run")) return false;
  const auto& run = config["run"];
  return run.contains("channels_last") && run["channels_last"].is_boolean() && run["channels_last"].get<bool>();
}

}  // namespace

EvalResult run_eval(const Checkpoint& checkpoint, const EvalOptions& options, const data::DataOptions& data_options) {
  TORCH_CHECK(options.split() == "test" || options.split() == "val", "eval: split must be test or val, got '",
              options.split(), "'");
  TORCH_CHECK(options.bn_recalibration_batches() >= 0, "eval: --bn-recalibration-batches must be >= 0, got ",
              options.bn_recalibration_batches());
  TORCH_CHECK(options.policy().empty() || options.uniform().empty(), "eval: give --policy or --uniform, not both");
  TORCH_CHECK(options.policy().empty() || util::file_exists(options.policy()), "eval: the policy file '",
              options.policy(), "' (--policy) does not exist");
  dist::init_from_environment(std::chrono::seconds(300));
  util::set_threads(worker_threads(options.threads()));
  const torch::Device device = util::resolve_device(options.device());
  const uint64_t seed = 0;
  const bool ptq = !options.policy().empty() || !options.uniform().empty();
  const bool needs_train = ptq || options.bn_recalibration_batches() > 0;
  data::DataBundle data = options.split() == "test" && !needs_train ? data::make_test_data(data_options, seed)
                                                                     : data::make_data(data_options, seed);
  TORCH_CHECK(data.input_shape == checkpoint.input_shape && data.num_classes == checkpoint.num_classes,
              "eval: the checkpoint's model takes ", c10::IntArrayRef(checkpoint.input_shape), " inputs with ",
              checkpoint.num_classes, " classes, but dataset '", data_options.dataset(), "' gives ",
              c10::IntArrayRef(data.input_shape), " with ", data.num_classes);
  auto dataset = options.split() == "test" ? data.test : data.val;
  TORCH_CHECK(dataset != nullptr, "eval: --split val needs data.val_size > 0");
  LoadedModel loaded = load_model(checkpoint);
  models::Model model = loaded.model;
  if (ptq) {
    TORCH_CHECK(!loaded.quant, "eval: --policy/--uniform quantize a full-precision checkpoint, but this one is "
                "already quantized (", loaded.quant->mode(), ")");
    loaded.quant.emplace(model, checkpoint.input_shape, models::QuantizeOptions());
    const bool from_file = !options.policy().empty();
    loaded.quant->prepare_policy(from_file ? quant::read_policy(options.policy())
                                           : loaded.quant->uniform_policy(quant::parse_uniform(options.uniform())),
                                 from_file ? options.policy() : "--uniform " + options.uniform());
  }
  model->to(device);
  if (trained_channels_last(checkpoint)) models::to_channels_last(*model);
  if (ptq) {
    // The lazily initialised activation steps take their rule from this batch.
    data::DataLoader calibration(data.train, data.eval_transform,
                                 data::LoaderOptions().batch_size(data_options.batch_size()).shuffle(true).seed(seed));
    auto batch = calibration.next();
    TORCH_CHECK(batch, "eval: the training set is empty; post-training quantization calibrates on it");
    torch::NoGradGuard no_grad;
    model->eval();
    model->forward(batch->images.to(device).contiguous(models::memory_format_of(*model)));
  }
  if (options.bn_recalibration_batches() > 0) {
    data::DataLoader calibration = calibration_loader(data, data_options, seed, device.is_cuda());
    recalibrate_batch_norm(*model, calibration, device, options.bn_recalibration_batches());
  }
  data::DataLoader loader(dataset, data.eval_transform,
                          data::LoaderOptions()
                              .batch_size(data_options.eval_batch_size())
                              .workers(data_options.workers())
                              .rank(dist::rank())
                              .world_size(dist::world_size())
                              .pin_memory(device.is_cuda()));
  EvalResult result = evaluate(*model, loader, device);
  if (loaded.quant) result.cost = models::policy_cost(loaded.quant->layers(), loaded.quant->current_policy());
  return result;
}

namespace {

// The checkpoint's network, randomly initialised: a built-in architecture, or
// the ONNX file it was trained from, which must be unchanged.
models::Model network_of(const Checkpoint& checkpoint, const std::string& source) {
  if (checkpoint.arch != models::kOnnxArch) {
    return models::make_model(checkpoint.arch, checkpoint.input_shape[0], checkpoint.num_classes);
  }
  TORCH_CHECK(!checkpoint.onnx.empty(), "'", source, "': a checkpoint of an imported network without its ONNX file");
  TORCH_CHECK(util::file_exists(checkpoint.onnx), "'", source, "' was trained from the ONNX file '", checkpoint.onnx,
              "', which no longer exists; restore it there");
  models::OnnxModel model = models::import_onnx(checkpoint.onnx);
  TORCH_CHECK(model->checksum() == checkpoint.onnx_checksum, "'", source, "' was trained from the ONNX file '",
              checkpoint.onnx, "' with checksum ", checkpoint.onnx_checksum, ", but that file now has ",
              model->checksum(), "; restore the original file");
  return model;
}

}  // namespace

LoadedModel load_model(const Checkpoint& checkpoint, const std::string& given_source) {
  const std::string source = !given_source.empty()      ? given_source
                             : !checkpoint.path.empty() ? checkpoint.path
                                                        : std::string("the checkpoint");
  LoadedModel loaded;
  loaded.model = network_of(checkpoint, source);
  if (!checkpoint.quantization.empty()) {
    const auto record = nlohmann::json::parse(checkpoint.quantization, nullptr, /*allow_exceptions=*/false);
    TORCH_CHECK(!record.is_discarded(), "'", source, "': the quantization record is not valid JSON");
    loaded.quant.emplace(models::QuantModel::restore(loaded.model, checkpoint.input_shape, record));
  }
  models::load_state_dict(*loaded.model, checkpoint.model, source);
  return loaded;
}

}  // namespace limpq::train
