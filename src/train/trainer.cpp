#include "limpq/train/trainer.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "limpq/dist/dist.h"
#include "limpq/models/indicator_layer.h"
#include "limpq/models/state_dict.h"
#include "limpq/nn/batch_norm.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/nn/trace.h"
#include "limpq/quant/indicators.h"
#include "limpq/quant/lsq_quantizer.h"
#include "limpq/train/layer_stats.h"
#include "limpq/train/schedule.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/progress.h"
#include "limpq/util/runtime.h"
#include "limpq/util/signals.h"

namespace limpq::train {
namespace {

namespace F = torch::nn::functional;

std::string serialize_optimizer(const torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream ss;
  archive.save_to(ss);
  return ss.str();
}

void restore_optimizer(torch::optim::Optimizer& optimizer, const std::string& bytes, const torch::Device& device) {
  std::istringstream ss(bytes);
  torch::serialize::InputArchive archive;
  archive.load_from(ss, device);
  optimizer.load(archive);
}

// Metrics log: one JSON object per evaluated epoch, rewritten atomically.
class MetricsLog {
 public:
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}

  // Keeps the entries of epochs < `epoch` from an existing log (resume).
  void restore_until(int64_t epoch) {
    if (!util::file_exists(path_)) return;
    std::istringstream in(util::read_file(path_));
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      auto j = nlohmann::ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.contains("epoch") || !j["epoch"].is_number_integer()) continue;
      if (j["epoch"].get<int64_t>() <= epoch) lines_.push_back(line);
    }
  }

  void append(const nlohmann::ordered_json& entry) {
    lines_.push_back(entry.dump());
    std::string text;
    for (const auto& l : lines_) text += l + "\n";
    util::write_file_atomic(path_, text);
  }

 private:
  std::string path_;
  std::vector<std::string> lines_;
};

struct RunningStats {
  torch::Tensor loss_sum, correct;
  int64_t count = 0;
  void reset(const torch::Device& device) {
    loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
    correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device));
    count = 0;
  }
  void add(const torch::Tensor& loss, const torch::Tensor& logits, const torch::Tensor& labels) {
    const int64_t n = labels.size(0);
    loss_sum += loss.detach().to(torch::kFloat64) * n;
    correct += logits.detach().argmax(1).eq(labels).sum();
    count += n;
  }
  double mean_loss() const { return count ? loss_sum.item<double>() / count : 0.0; }
  double accuracy() const { return count ? 100.0 * correct.item<int64_t>() / count : 0.0; }
  // Exact round trip (doubles print as their shortest exact form): a run
  // resumed mid-epoch reports the same epoch statistics.
  nlohmann::ordered_json to_json() const {
    return {{"loss_sum", loss_sum.item<double>()}, {"correct", correct.item<int64_t>()}, {"count", count}};
  }
  // Sums over workers (the epoch's statistics of the global batch).
  RunningStats reduced() const {
    RunningStats r = *this;
    r.loss_sum = loss_sum.clone();
    r.correct = correct.clone();
    if (dist::is_distributed()) {
      torch::Tensor n = torch::full({}, count, correct.options());
      std::vector<torch::Tensor> sums{r.loss_sum, torch::stack({r.correct, n})};
      dist::allreduce_sum(sums);
      r.loss_sum = sums[0];
      r.correct = sums[1][0];
      r.count = sums[1][1].item<int64_t>();
    }
    return r;
  }
  void restore(const nlohmann::json& j) {
    loss_sum.fill_(j.at("loss_sum").get<double>());
    correct.fill_(j.at("correct").get<int64_t>());
    count = j.at("count").get<int64_t>();
  }
};

// Where a non-finite loss first appears: re-runs the forward pass on the
// batch under a tracer and names the first layer whose output is not
// finite. Batch-norm running statistics are restored afterwards.
std::string locate_nonfinite_output(models::ModelImpl& model, const torch::Tensor& images) {
  if (!torch::isfinite(images).all().item<bool>()) return "the input batch itself holds NaN or Inf";
  std::vector<std::pair<torch::Tensor, torch::Tensor>> saved;
  for (auto& b : model.buffers()) saved.emplace_back(b, b.clone());
  // Local only: the other workers are not running this pass.
  const bool sync_bn = dist::sync_batch_norm_enabled();
  dist::set_sync_batch_norm(false);
  std::string where = "every layer's output is finite; the loss itself overflowed";
  {
    torch::NoGradGuard no_grad;
    nn::LayerTracer tracer;
    model.forward(images);
    std::map<const torch::nn::Module*, std::string> names;
    for (const auto& item : model.named_modules("", false)) names[item.value().get()] = item.key();
    for (const auto& e : tracer.events()) {
      if (!e.output_finite) {
        where = "first non-finite output at layer '" + names[e.module] + "'";
        break;
      }
    }
  }
  for (auto& [buffer, copy] : saved) buffer.detach().copy_(copy);
  dist::set_sync_batch_norm(sync_bn);
  return where;
}

// The first parameter (in network order) with a non-finite gradient.
std::string locate_nonfinite_gradient(models::ModelImpl& model) {
  for (const auto& p : model.named_parameters()) {
    if (p.value().grad().defined() && !torch::isfinite(p.value().grad()).all().item<bool>()) {
      return "first non-finite gradient in '" + p.key() + "'";
    }
  }
  return "no gradient is non-finite";
}

// "W6A6 0.412/88.1% W5A5 ... " for the joint indicator progress line.
std::string candidate_summary(const std::vector<int64_t>& candidates, const std::vector<RunningStats>& stats) {
  std::string out;
  for (size_t k = 0; k < candidates.size(); ++k) {
    out += fmt::format("W{0}A{0} {1:.3f}/{2:.1f}% ", candidates[k], stats[k].mean_loss(), stats[k].accuracy());
  }
  return out;
}

quant::Indicators collect_indicators(const models::QuantModel& qm, const TrainConfig& config, int64_t epochs,
                                     const std::map<std::string, quant::TensorStats>& stats) {
  quant::Indicators ind;
  ind.model = qm.model()->arch();
  ind.input_shape = qm.input_shape();
  ind.candidates = qm.candidates();
  ind.provenance = {{"checkpoint", config.model.weights()},
                    {"epochs", epochs},
                    {"fraction", config.indicators.fraction()},
                    {"seed", config.run.seed()},
                    {"dataset", config.data.dataset()}};
  const std::string& only = config.indicators.only_layer();
  if (!only.empty()) ind.provenance["only_layer"] = only;
  auto named = qm.model()->named_modules("", false);
  for (const auto& l : qm.layers()) {
    quant::IndicatorLayer e = models::indicator_layer(l);
    // One-at-a-time training: only the trained layer has indicators.
    e.searchable = l.searchable && (only.empty() || l.name == only);
    if (e.searchable) {
      torch::nn::Module& m = *named[l.name];
      const quant::LsqQuantizerImpl* wq = nullptr;
      const quant::LsqQuantizerImpl* aq = nullptr;
      if (auto* conv = m.as<nn::QuantConv2dImpl>()) {
        wq = conv->weight_quantizer.get();
        aq = conv->input_quantizer.get();
      } else {
        auto* lin = m.as<nn::QuantLinearImpl>();
        wq = lin->weight_quantizer.get();
        aq = lin->input_quantizer.get();
      }
      for (int64_t b : ind.candidates) {
        e.weight_steps[b] = wq->effective_step(b).item<double>();
        e.act_steps[b] = aq->effective_step(b).item<double>();
      }
      auto it = stats.find(l.name);
      if (it != stats.end()) e.stats = it->second;
    }
    ind.layers.push_back(std::move(e));
  }
  return ind;
}

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

namespace {

// Unaugmented training images for batch-norm recalibration, sharded like
// training, in an order of their own.
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

}  // namespace

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

std::vector<util::ConfigSection> TrainConfig::sections() {
  return {util::section("data", data), util::section("model", model), util::section("train", optim),
          util::section("run", run), util::section("quant", quant), util::section("indicators", indicators)};
}

nlohmann::ordered_json TrainConfig::to_json() {
  return {{"data", util::to_json(data)},
          {"model", util::to_json(model)},
          {"train", util::to_json(optim)},
          {"run", util::to_json(run)},
          {"quant", util::to_json(quant)},
          {"indicators", util::to_json(indicators)}};
}

TrainResult run_train(TrainConfig config, bool resume, const TrainHooks& hooks) {
  const OptimOptions& optim = config.optim;
  const RunOptions& run = config.run;
  TORCH_CHECK(optim.epochs() > 0, "train: epochs must be positive, got ", optim.epochs());
  TORCH_CHECK(optim.warmup_epochs() >= 0, "train: warmup_epochs must be >= 0, got ", optim.warmup_epochs());
  TORCH_CHECK(optim.label_smoothing() >= 0 && optim.label_smoothing() < 1,
              "train: label_smoothing must be in [0, 1), got ", optim.label_smoothing());
  TORCH_CHECK(run.eval_every() > 0, "run: eval_every must be positive, got ", run.eval_every());

  TORCH_CHECK(run.dist_timeout() > 0, "run: dist_timeout must be positive, got ", run.dist_timeout());
  dist::init_from_environment(std::chrono::milliseconds(std::llround(run.dist_timeout() * 1000)));
  dist::set_sync_batch_norm(run.sync_bn());
  const bool main_rank = dist::is_main();  // alone writes files and prints
  const int64_t threads = util::set_threads(worker_threads(run.threads()));
  const torch::Device device = util::resolve_device(run.device());
  const auto seed = static_cast<uint64_t>(run.seed());
  util::seed_everything(seed);

  const std::string ckpt_path = (std::filesystem::path(run.out_dir()) / "checkpoint.pt").string();
  const bool have_ckpt = util::file_exists(ckpt_path);
  TORCH_CHECK(resume || !have_ckpt, "train: '", ckpt_path,
              "' already exists; pass --resume to continue it or choose another --out-dir");

  const bool joint = config.joint_indicators;
  TORCH_CHECK(!(joint && config.quant.enabled()), "train: indicator training and fine-tuning under a policy exclude each other");
  TORCH_CHECK(optim.bn_recalibration_batches() >= 0, "train: bn_recalibration_batches must be >= 0, got ",
              optim.bn_recalibration_batches());
  TORCH_CHECK(!(joint && optim.bn_recalibration_batches() > 0),
              "indicators: train.bn_recalibration_batches applies to train and finetune, not to indicator training");
  data::DataBundle data = data::make_data(config.data, seed);
  if (joint) {
    const double fraction = config.indicators.fraction();
    TORCH_CHECK(fraction > 0 && fraction <= 1, "indicators: fraction must be in (0, 1], got ", fraction);
    if (fraction < 1) {
      data.train = data::take_subset(data.train, std::max<int64_t>(1, std::llround(fraction * data.train->size())),
                                     seed + 3);
    }
  }
  models::Model model = models::make_model(config.model.arch(), data.input_shape[0], data.num_classes);
  if (!config.model.weights().empty()) {
    models::load_state_dict(*model, models::read_state_dict_file(config.model.weights()),
                            config.model.weights());
  }
  std::optional<models::QuantModel> quantized;
  if (config.quant.enabled()) {
    TORCH_CHECK(config.quant.policy().empty() || config.quant.uniform().empty(),
                "finetune: give either quant.policy (--policy) or quant.uniform (--uniform), not both");
    quantized.emplace(model, data.input_shape, config.quant.quantize());
    const bool from_file = !config.quant.policy().empty();
    const quant::Policy policy = from_file ? quant::read_policy(config.quant.policy())
                                           : quantized->uniform_policy(quant::parse_uniform(config.quant.uniform()));
    quantized->prepare_policy(policy, from_file ? config.quant.policy() : "--uniform " + config.quant.uniform());
  }
  if (joint) {
    quantized.emplace(model, data.input_shape,
                      models::QuantizeOptions()
                          .fixed_layers(config.indicators.fixed_layers())
                          .fused(config.indicators.fused()));
    quantized->prepare_indicators(config.indicators.candidates());
  }
  const std::vector<int64_t> candidates = joint ? config.indicators.candidates() : std::vector<int64_t>{};
  const std::string& only_layer = config.indicators.only_layer();
  if (joint && !only_layer.empty()) {
    const auto names = quantized->searchable_names();
    TORCH_CHECK(std::find(names.begin(), names.end(), only_layer) != names.end(), "indicators: only_layer '",
                only_layer, "' is not a searchable layer of ", config.model.arch());
    TORCH_CHECK(candidates.size() == 1, "indicators: one-at-a-time training (only_layer) takes one bit-width in "
                "candidates, got ", candidates.size());
  }
  // Every searchable layer at `bits`; one-at-a-time: only that layer, the
  // others at full precision.
  auto set_candidate = [&](int64_t bits) {
    if (only_layer.empty()) {
      quantized->set_uniform(bits);
      return;
    }
    for (const auto& name : quantized->searchable_names()) {
      const int64_t b = name == only_layer ? bits : quant::kFullPrecisionBits;
      quantized->set_layer_bits(name, b, b);
    }
  };
  model->to(device);
  if (run.channels_last()) models::to_channels_last(*model);
  const torch::MemoryFormat format = models::memory_format_of(*model);

  // LSQ step sizes are not weight-decayed.
  std::vector<torch::Tensor> weights, steps;
  for (const auto& p : model->named_parameters()) {
    const bool is_step = p.key().size() >= 6 && p.key().compare(p.key().size() - 6, 6, ".steps") == 0;
    (is_step ? steps : weights).push_back(p.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto sgd_options = [&](double weight_decay) {
    return std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(optim.lr())
                                                          .momentum(optim.momentum())
                                                          .nesterov(optim.nesterov())
                                                          .weight_decay(weight_decay));
  };
  groups.emplace_back(weights, sgd_options(optim.weight_decay()));
  if (!steps.empty()) groups.emplace_back(steps, sgd_options(0.0));
  torch::optim::SGD optimizer(groups, torch::optim::SGDOptions(optim.lr()));

  const bool cuda = device.is_cuda();
  data::DataLoader train_loader(data.train, data.train_transform,
                                data::LoaderOptions()
                                    .batch_size(config.data.batch_size())
                                    .shuffle(true)
                                    .drop_last(true)
                                    .workers(config.data.workers())
                                    .seed(seed)
                                    .rank(dist::rank())
                                    .world_size(dist::world_size())
                                    .pin_memory(cuda));
  TORCH_CHECK(train_loader.batches_per_epoch() > 0, "train: ", data.train->size(),
              " training examples make no full batch of ", config.data.batch_size());
  const bool use_val = data.val != nullptr;
  data::DataLoader eval_loader(use_val ? data.val : data.test, data.eval_transform,
                               data::LoaderOptions()
                                   .batch_size(config.data.eval_batch_size())
                                   .workers(config.data.workers())
                                   .rank(dist::rank())
                                   .world_size(dist::world_size())
                                   .pin_memory(cuda));

  const int64_t steps_per_epoch = train_loader.batches_per_epoch();
  const int64_t total_steps = steps_per_epoch * optim.epochs();
  const auto warmup_steps = std::min<int64_t>(
      total_steps, static_cast<int64_t>(std::llround(optim.warmup_epochs() * steps_per_epoch)));
  CosineSchedule schedule(optim.lr(), optim.min_lr(), warmup_steps, total_steps);

  const nlohmann::ordered_json resolved = config.to_json();
  MetricsLog metrics((std::filesystem::path(run.out_dir()) / "metrics.jsonl").string());
  Checkpoint ckpt;
  ckpt.arch = config.model.arch();
  ckpt.input_shape = data.input_shape;
  ckpt.num_classes = data.num_classes;
  ckpt.config = resolved.dump();
  if (quantized) ckpt.quantization = quantized->describe().dump();

  int64_t start_epoch = 0;
  int64_t start_batch = 0;  // > 0: resuming in the middle of start_epoch
  nlohmann::json start_progress;
  int64_t step = 0;
  if (resume && have_ckpt) {
    Checkpoint prev = load_checkpoint(ckpt_path);
    TORCH_CHECK(prev.arch == ckpt.arch && prev.num_classes == ckpt.num_classes &&
                    prev.input_shape == ckpt.input_shape,
                "train: cannot resume '", ckpt_path, "': it holds a ", prev.arch, " with ", prev.num_classes,
                " classes, this run builds a ", ckpt.arch, " with ", ckpt.num_classes);
    TORCH_CHECK(prev.quantization == ckpt.quantization, "train: cannot resume '", ckpt_path,
                "': it was trained under another quantization (", prev.quantization.empty() ? "none" : prev.quantization,
                ")");
    models::load_state_dict(*model, prev.model, ckpt_path);
    restore_optimizer(optimizer, prev.optimizer, device);
    if (prev.rng_state.numel() > 0) {
      auto gen = at::detail::getDefaultCPUGenerator();
      gen.set_state(prev.rng_state);
    }
    start_epoch = prev.epoch;
    start_batch = prev.batch;
    TORCH_CHECK(start_batch >= 0 && start_batch < steps_per_epoch, "train: cannot resume '", ckpt_path,
                "': it stopped at batch ", start_batch, " of an epoch, but this run has ", steps_per_epoch,
                " batches per epoch (batch size or data changed?)");
    if (start_batch > 0) {
      start_progress = nlohmann::json::parse(prev.progress, nullptr, /*allow_exceptions=*/false);
      TORCH_CHECK(!start_progress.is_discarded(), "train: '", ckpt_path, "': unreadable progress record");
    }
    step = prev.step;
    metrics.restore_until(start_epoch);
    if (!main_rank) {
    } else if (start_batch > 0) {
      fmt::print(stderr, "resuming '{}' in epoch {}/{} at batch {}/{} (step {})\n", ckpt_path, start_epoch + 1,
                 optim.epochs(), start_batch, steps_per_epoch, step);
    } else {
      fmt::print(stderr, "resuming '{}' after epoch {}/{} (step {})\n", ckpt_path, start_epoch, optim.epochs(), step);
    }
  }
  // Every worker starts from rank 0's state (they agree already when seeded
  // alike; this makes it a guarantee). Lazy activation-step initialisation
  // averages over workers.
  dist::broadcast_module(*model);
  if (dist::is_distributed()) {
    quant::set_average_across_workers([](torch::Tensor& t) { dist::allreduce_mean(t); });
    quant::set_data_parallel_workers(dist::world_size());
  }
  struct ResetHooks {
    ~ResetHooks() {
      quant::set_average_across_workers(nullptr);
      quant::set_data_parallel_workers(1);
    }
  } reset_hooks;

  if (main_rank) {
    util::write_file_atomic((std::filesystem::path(run.out_dir()) / "config.json").string(), resolved.dump(2) + "\n");
    fmt::print(stderr, "train: {} on {} ({} train / {} {} examples), {} epochs, batch {}{}, {} threads, {}\n",
               config.model.arch(), config.data.dataset(), data.train->size(), use_val ? "val" : "test",
               (use_val ? data.val : data.test)->size(), optim.epochs(), config.data.batch_size(),
               dist::is_distributed()
                   ? fmt::format(" per worker x {} workers{}", dist::world_size(), run.sync_bn() ? ", SyncBatchNorm" : "")
                   : "",
               threads, device.str());
  }

  TrainResult result;
  result.checkpoint = ckpt_path;
  util::Stopwatch total_clock;
  EvalResult last_eval;
  bool final_test_done = false;  // last_eval is the final model on the test set
  TORCH_CHECK(run.on_nonfinite() == "stop" || run.on_nonfinite() == "skip",
              "run: on_nonfinite must be stop or skip, got '", run.on_nonfinite(), "'");
  TORCH_CHECK(run.checkpoint_every() >= 0, "run: checkpoint_every must be >= 0, got ", run.checkpoint_every());
  const std::string resume_hint = "run the same command again with --resume to continue (limpq run resumes by itself)";

  std::vector<torch::Tensor> all_params = model->parameters();
  int64_t allreduced_bytes = 0;  // per step, for the metrics
  for (int64_t epoch = start_epoch; epoch < optim.epochs(); ++epoch) {
    model->train();
    const int64_t first_batch = epoch == start_epoch ? start_batch : 0;
    train_loader.start_epoch(epoch, first_batch);
    RunningStats stats;  // joint training: the random mixed-precision pass
    stats.reset(device);
    std::vector<RunningStats> candidate_stats(candidates.size());
    for (auto& c : candidate_stats) c.reset(device);
    double prior_seconds = 0;  // train time before a mid-epoch resume
    if (first_batch > 0) {
      // The checkpoint holds the statistics summed over workers: rank 0
      // carries them on, the others start from zero.
      if (main_rank) {
        stats.restore(start_progress.at("stats"));
        for (size_t k = 0; k < candidates.size(); ++k) candidate_stats[k].restore(start_progress.at("candidates").at(k));
      }
      prior_seconds = start_progress.value("train_seconds", 0.0);
    }
    util::ProgressLine progress(fmt::format("epoch {}/{}", epoch + 1, optim.epochs()), steps_per_epoch,
                                run.progress() && main_rank);
    util::Stopwatch epoch_clock;
    int64_t batch_index = first_batch;
    double lr = 0;

    // Writes the checkpoint; batches_done < steps_per_epoch marks a position
    // inside the epoch, with the running statistics to continue from.
    // Collective (the statistics are reduced on every worker); rank 0 alone
    // assembles and writes the file.
    auto save = [&](int64_t epochs_done, int64_t batches_done, const nlohmann::ordered_json& entry) {
      nlohmann::ordered_json progress_record;
      if (batches_done > 0) {
        progress_record = {{"stats", stats.reduced().to_json()},
                           {"candidates", nlohmann::ordered_json::array()},
                           {"train_seconds", prior_seconds + epoch_clock.seconds()}};
        for (const auto& c : candidate_stats) progress_record["candidates"].push_back(c.reduced().to_json());
      }
      if (!main_rank) return;
      ckpt.model = models::state_dict(*model);
      ckpt.optimizer = serialize_optimizer(optimizer);
      ckpt.epoch = epochs_done;
      ckpt.batch = batches_done;
      ckpt.step = step;
      ckpt.rng_state = at::detail::getDefaultCPUGenerator().get_state();
      ckpt.metrics = entry.dump();
      ckpt.progress = batches_done > 0 ? progress_record.dump() : std::string();
      save_checkpoint(ckpt_path, ckpt);
    };

    while (auto batch = train_loader.next()) {
      auto images = batch->images.to(device, /*non_blocking=*/true).contiguous(format);
      auto labels = batch->labels.to(device, /*non_blocking=*/true);
      lr = schedule.lr(step);
      for (auto& group : optimizer.param_groups()) {
        static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
      }
      auto loss_of = [&](const torch::Tensor& logits) {
        return F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().label_smoothing(optim.label_smoothing()));
      };
      // The random mixed policy of this step's last joint pass.
      auto apply_random_policy = [&] {
        data::Rng policy_rng(util::mix_seed(seed ^ util::mix_seed(static_cast<uint64_t>(step))));
        for (const auto& name : quantized->searchable_names()) {
          const int64_t b = candidates[policy_rng() % candidates.size()];
          quantized->set_layer_bits(name, b, b);
        }
      };
      // One forward/backward per pass: joint training (LIMPQ.md section 4)
      // runs every candidate uniformly, then one random mixed policy, and
      // accumulates the gradients; otherwise one pass.
      const int64_t passes =
          joint ? static_cast<int64_t>(candidates.size()) + (only_layer.empty() ? 1 : 0) : 1;
      auto configure_pass = [&](int64_t k) {
        if (!joint) return;
        if (k < static_cast<int64_t>(candidates.size())) {
          set_candidate(candidates[k]);
        } else {
          apply_random_policy();
        }
      };
      dist::heartbeat(step);
      optimizer.zero_grad();
      std::vector<std::pair<torch::Tensor, torch::Tensor>> outputs;  // (loss, logits) per pass
      std::vector<torch::Tensor> finite;                               // per pass, then gradients
      for (int64_t k = 0; k < passes; ++k) {
        configure_pass(k);
        auto logits = model->forward(images);
        auto loss = loss_of(logits);
        loss.backward();
        finite.push_back(torch::isfinite(loss.detach()));
        outputs.emplace_back(loss.detach(), logits.detach());
      }
      // Gradients averaged over workers once per step, after all passes.
      allreduced_bytes = dist::allreduce_gradients(all_params);
      for (const auto& p : all_params) {
        if (p.grad().defined()) finite.push_back(torch::isfinite(p.grad()).all());
      }
      // One host synchronisation (and one small all-reduce) per step: any
      // worker's non-finite loss or gradient, any worker's stop request.
      torch::Tensor flags = torch::stack({torch::logical_not(torch::stack(finite).all()).to(torch::kFloat32),
                                          torch::full({}, util::stop_requested() ? 1.0f : 0.0f)});
      if (dist::is_distributed()) {
        std::vector<torch::Tensor> one{flags};
        dist::allreduce_sum(one);
      }
      const bool nonfinite = flags[0].item<float>() > 0;
      const bool stop = flags[1].item<float>() > 0;
      if (nonfinite) {
        std::string what, where;
        for (int64_t k = 0; k < passes && what.empty(); ++k) {
          if (finite[k].item<bool>()) continue;  // (on another worker: named there)
          what = fmt::format("loss ({})", outputs[k].first.item<double>());
          if (joint) {
            what += k < static_cast<int64_t>(candidates.size()) ? fmt::format(" in the uniform W{0}A{0} pass", candidates[k])
                                                                 : std::string(" in the random mixed-policy pass");
          }
          configure_pass(k);
          where = locate_nonfinite_output(*model, images);
        }
        if (what.empty()) {
          const std::string grad_where = locate_nonfinite_gradient(*model);
          what = dist::is_distributed() && grad_where.rfind("no ", 0) == 0 ? "loss on another worker" : "gradient";
          where = grad_where;
        }
        const std::string at = fmt::format("epoch {}, batch {}/{}, step {}", epoch + 1, batch_index + 1,
                                           steps_per_epoch, step + 1);
        TORCH_CHECK(run.on_nonfinite() == "skip", "train: non-finite ", what, " at ", at, ": ", where,
                    ". Stopped without saving; the last good checkpoint is '", ckpt_path,
                    "' (lower the learning rate, or set run.on_nonfinite: skip to skip such steps)");
        for (const auto& b : model->named_buffers()) {
          TORCH_CHECK(!b.value().is_floating_point() || torch::isfinite(b.value()).all().item<bool>(),
                      "train: non-finite ", what, " at ", at, " (", where, ") also made the buffer '", b.key(),
                      "' non-finite, so the step cannot be skipped; the last good checkpoint is '", ckpt_path, "'");
        }
        if (main_rank) fmt::print(stderr, "\ntrain: skipped the step at {}: non-finite {} ({})\n", at, what, where);
        optimizer.zero_grad();
      } else {
        for (int64_t k = 0; k < passes; ++k) {
          if (joint && k < static_cast<int64_t>(candidates.size())) {
            candidate_stats[k].add(outputs[k].first, outputs[k].second, labels);
          }
          // The mixed pass, a one-at-a-time pass, or the only pass.
          if (!joint || k == passes - 1) stats.add(outputs[k].first, outputs[k].second, labels);
        }
        if (joint) {
          // Element-wise clip to [-1, 1]; all-zero gradients dropped.
          torch::NoGradGuard no_grad;
          for (auto& p : all_params) {
            if (!p.grad().defined()) continue;
            p.mutable_grad().clamp_(-1.0, 1.0);
            if (!p.grad().any().item<bool>()) p.mutable_grad() = torch::Tensor();
          }
        }
        optimizer.step();
      }
      ++step;
      ++batch_index;
      if (hooks.after_step) hooks.after_step(step);
      if (batch_index % 20 == 0 || batch_index == steps_per_epoch) {
        const std::string per_bits = joint ? candidate_summary(candidates, candidate_stats) + "| mixed " : "";
        progress.update(batch_index, fmt::format("{}loss {:.4f} acc {:.2f}% lr {:.4g} | {:.0f} img/s", per_bits,
                                                 stats.mean_loss(), stats.accuracy(), lr,
                                                 stats.count / std::max(1e-9, prior_seconds + epoch_clock.seconds())));
      }
      // One process: a request that arrived during this step stops now; with
      // several, the all-reduced flag keeps the workers in step (a late
      // request is seen at the next step).
      const bool stop_now = stop || (!dist::is_distributed() && util::stop_requested());
      if (batch_index < steps_per_epoch) {
        if (stop_now || (run.checkpoint_every() > 0 && step % run.checkpoint_every() == 0)) {
          save(epoch, batch_index, nlohmann::ordered_json::object());
        }
        if (stop_now) {
          if (main_rank) progress.finish("interrupted");
          throw util::Interrupted(fmt::format("interrupted in epoch {}/{} at batch {}/{} (step {}); checkpoint "
                                              "written to '{}'; {}",
                                              epoch + 1, optim.epochs(), batch_index, steps_per_epoch, step,
                                              ckpt_path, resume_hint),
                                  util::stop_signal());
        }
      }
    }
    // The epoch's statistics over all workers; batch-norm running
    // statistics averaged (SyncBatchNorm keeps them equal already).
    stats = stats.reduced();
    for (auto& c : candidate_stats) c = c.reduced();
    if (!dist::sync_batch_norm_enabled()) dist::average_batch_norm_statistics(*model);
    const double train_seconds = prior_seconds + epoch_clock.seconds();
    result.images_per_second = stats.count / std::max(1e-9, train_seconds);

    nlohmann::ordered_json entry = {{"epoch", epoch + 1},
                                    {"step", step},
                                    {"lr", lr},
                                    {"train_loss", stats.mean_loss()},
                                    {"train_top1", stats.accuracy()},
                                    {"images_per_second", result.images_per_second},
                                    {"train_seconds", train_seconds}};
    if (dist::is_distributed()) {
      entry["workers"] = dist::world_size();
      entry["allreduce_bytes_per_step"] = allreduced_bytes;
    }
    for (size_t k = 0; k < candidates.size(); ++k) {
      entry["train_W" + std::to_string(candidates[k])] = {{"loss", candidate_stats[k].mean_loss()},
                                                          {"top1", candidate_stats[k].accuracy()}};
    }
    std::string status = fmt::format("loss {:.4f} acc {:.2f}% | {:.0f} img/s", stats.mean_loss(),
                                     stats.accuracy(), result.images_per_second);
    const bool last = epoch + 1 == optim.epochs();
    if (joint) status = candidate_summary(candidates, candidate_stats) + "| mixed " + status;
    if (joint && ((epoch + 1) % run.eval_every() == 0 || last)) {
      // Evaluated at the largest candidate, uniformly.
      set_candidate(candidates.front());
    }
    if (last && optim.bn_recalibration_batches() > 0) {
      data::DataLoader calibration = calibration_loader(data, config.data, seed, cuda);
      const int64_t used = recalibrate_batch_norm(*model, calibration, device, optim.bn_recalibration_batches());
      entry["bn_recalibration_batches"] = used;
      status += fmt::format(" | BN statistics from {} batches", used);
    }
    if ((epoch + 1) % run.eval_every() == 0 || last) {
      last_eval = evaluate(*model, eval_loader, device);
      final_test_done = last && !use_val;
      entry[use_val ? "val" : "test"] = last_eval.to_json();
      status += fmt::format(" | {} top1 {:.2f}% loss {:.4f}", use_val ? "val" : "test", last_eval.top1,
                            last_eval.loss);
    }
    if (main_rank) progress.finish(status);

    // Metrics first: a crash between the two writes leaves a metrics line
    // ahead of the checkpoint, which a resume drops and recomputes.
    if (main_rank) metrics.append(entry);
    save(epoch + 1, 0, entry);
    bool stop_now = util::stop_requested();
    if (dist::is_distributed()) {
      torch::Tensor any = torch::full({1}, stop_now ? 1.0f : 0.0f);
      std::vector<torch::Tensor> one{any};
      dist::allreduce_sum(one);
      stop_now = any.item<float>() > 0;
    }
    if (!last && stop_now) {
      throw util::Interrupted(fmt::format("interrupted after epoch {}/{}; checkpoint written to '{}'; {}", epoch + 1,
                                          optim.epochs(), ckpt_path, resume_hint),
                              util::stop_signal());
    }
    if (!last && hooks.should_stop && hooks.should_stop(epoch + 1)) {
      result.test = last_eval;
      result.seconds = total_clock.seconds();
      result.epochs = epoch + 1;
      return result;
    }
  }

  data::DataLoader test_loader(data.test, data.eval_transform,
                               data::LoaderOptions()
                                   .batch_size(config.data.eval_batch_size())
                                   .workers(config.data.workers())
                                   .rank(dist::rank())
                                   .world_size(dist::world_size())
                                   .pin_memory(cuda));
  if (joint) {
    for (int64_t b : candidates) {
      set_candidate(b);
      // The epoch loop's last evaluation ran at the first candidate.
      const bool reuse = final_test_done && b == candidates.front();
      result.per_candidate.emplace_back(b, reuse ? last_eval : evaluate(*model, test_loader, device));
      result.per_candidate.back().second.cost = models::policy_cost(quantized->layers(), quantized->current_policy());
    }
    result.test = result.per_candidate.front().second;
    result.indicators = (std::filesystem::path(run.out_dir()) / "indicators.json").string();
    std::map<std::string, quant::TensorStats> stats;
    if (config.indicators.stats_samples() > 0) {
      set_candidate(*std::max_element(candidates.begin(), candidates.end()));
      data::DataLoader stats_loader = calibration_loader(data, config.data, seed, cuda);
      stats = measure_layer_stats(*quantized, stats_loader, device, config.indicators.stats_samples());
    }
    quant::Indicators ind = collect_indicators(*quantized, config, optim.epochs(), stats);
    if (main_rank) quant::write_indicators(result.indicators, ind);
  } else {
    result.test = final_test_done ? last_eval : evaluate(*model, test_loader, device);
    if (quantized) result.test.cost = models::policy_cost(quantized->layers(), quantized->current_policy());
  }
  result.completed = true;
  result.epochs = optim.epochs();
  result.seconds = total_clock.seconds();
  return result;
}

data::DataOptions data_options_of(const Checkpoint& checkpoint) {
  data::DataOptions data;
  const auto config = nlohmann::json::parse(checkpoint.config, nullptr, /*allow_exceptions=*/false);
  if (!config.is_discarded() && config.contains("data")) {
    // JSON is YAML: the same loader checks the keys.
    util::from_yaml(YAML::Load(config["data"].dump()), data, "checkpoint config: data");
  }
  return data;
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
  LoadedModel loaded = load_model(checkpoint, "checkpoint");
  models::Model model = loaded.model;
  if (ptq) {
    TORCH_CHECK(!loaded.quant, "eval: --policy/--uniform quantize a full-precision checkpoint, but this one is "
                "already quantized (", loaded.quant->mode(), ")");
    TORCH_CHECK(options.policy().empty() || options.uniform().empty(), "eval: give --policy or --uniform, not both");
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

LoadedModel load_model(const Checkpoint& checkpoint, const std::string& source) {
  LoadedModel loaded;
  loaded.model = models::make_model(checkpoint.arch, checkpoint.input_shape[0], checkpoint.num_classes);
  if (!checkpoint.quantization.empty()) {
    const auto record = nlohmann::json::parse(checkpoint.quantization, nullptr, /*allow_exceptions=*/false);
    TORCH_CHECK(!record.is_discarded(), "'", source, "': the quantization record is not valid JSON");
    loaded.quant.emplace(models::QuantModel::restore(loaded.model, checkpoint.input_shape, record));
  }
  models::load_state_dict(*loaded.model, checkpoint.model, source);
  return loaded;
}

}  // namespace limpq::train
