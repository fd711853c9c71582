#include "limpq/train/loop.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/core.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "limpq/dist/dist.h"
#include "limpq/models/onnx_model.h"
#include "limpq/models/state_dict.h"
#include "limpq/nn/quant_layer.h"
#include "limpq/nn/trace.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/signals.h"

namespace limpq::train {
namespace {

// The weights of the network's conv and linear layers (quantizable layers,
// in full precision or not), by parameter name.
std::set<std::string> layer_weight_names(torch::nn::Module& model) {
  std::set<std::string> names;
  for (const auto& m : model.named_modules("", /*include_self=*/false)) {
    const nn::QuantLayer* layer = nn::as_quant_layer(*m.value());
    if (layer != nullptr && layer->has_weight()) names.insert(m.key() + ".weight");
  }
  return names;
}

const char* const kResumeHint = "run the same command again with --resume to continue (limpq run resumes by itself)";

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

// Training accuracy within 1.5x of guessing after an epoch: said, since
// nothing else (no NaN, a finite loss) would tell. What it may mean depends
// on the run: a full-precision network may just need more steps; a
// quantized one that started from trained weights has lost them.
std::string chance_warning(double train_top1, int64_t num_classes, int64_t steps, bool quantized) {
  const double chance = 100.0 / static_cast<double>(num_classes);
  if (num_classes < 2 || train_top1 >= 1.5 * chance) return "";
  return fmt::format("train top-1 {:.2f}% after {} steps is near chance ({:.2f}% for {} classes): {}", train_top1,
                     steps, chance, num_classes,
                     quantized ? "the quantized network is not learning (diverged, or broken by its quantizers); "
                                 "lower the learning rate"
                               : "the network has not learned yet (too few steps, or a learning rate too high)");
}

// Whether any worker asked to stop (one small all-reduce).
bool any_worker_stopping() {
  bool stop = util::stop_requested();
  if (dist::is_distributed()) {
    torch::Tensor any = torch::full({1}, stop ? 1.0f : 0.0f);
    std::vector<torch::Tensor> one{any};
    dist::allreduce_sum(one);
    stop = any.item<float>() > 0;
  }
  return stop;
}

}  // namespace

// --- RunningStats, MetricsLog ----------------------------------------------

void RunningStats::reset(const torch::Device& device) {
  loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  count = 0;
}

void RunningStats::add(const torch::Tensor& loss, const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t n = labels.size(0);
  loss_sum += loss.detach().to(torch::kFloat64) * n;
  correct += logits.detach().argmax(1).eq(labels).sum();
  count += n;
}

double RunningStats::mean_loss() const { return count ? loss_sum.item<double>() / count : 0.0; }

double RunningStats::accuracy() const { return count ? 100.0 * correct.item<int64_t>() / count : 0.0; }

RunningStats RunningStats::reduced() const {
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

// Exact round trip (doubles print as their shortest exact form): a run
// resumed mid-epoch reports the same epoch statistics.
nlohmann::ordered_json RunningStats::to_json() const {
  return {{"loss_sum", loss_sum.item<double>()}, {"correct", correct.item<int64_t>()}, {"count", count}};
}

void RunningStats::restore(const nlohmann::json& j) {
  loss_sum.fill_(j.at("loss_sum").get<double>());
  correct.fill_(j.at("correct").get<int64_t>());
  count = j.at("count").get<int64_t>();
}

void MetricsLog::restore_until(int64_t epoch) {
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

void MetricsLog::append(const nlohmann::ordered_json& entry) {
  lines_.push_back(entry.dump());
  std::string text;
  for (const auto& l : lines_) text += l + "\n";
  util::write_file_atomic(path_, text);
}

// --- TrainingLoop: setup ------------------------------------------------------

TrainingLoop::TrainingLoop(const TrainConfig& config, models::Model model, const data::DataBundle& data,
                           TrainStep& step, const torch::Device& device)
    : config_(config),
      model_(std::move(model)),
      data_(data),
      step_(step),
      device_(device),
      main_rank_(dist::is_main()),
      format_(models::memory_format_of(*model_)),
      parameters_(model_->parameters()),
      use_val_(data.val != nullptr),
      checkpoint_path_((std::filesystem::path(config.run.out_dir()) / "checkpoint.pt").string()),
      metrics_((std::filesystem::path(config.run.out_dir()) / "metrics.jsonl").string()),
      tracked_(step.tracked_passes()) {
  data_.train = step.training_set(data.train);
  const bool cuda = device.is_cuda();
  const auto seed = static_cast<uint64_t>(config.run.seed());
  train_loader_ = std::make_unique<data::DataLoader>(data_.train, data_.train_transform,
                                                     data::LoaderOptions()
                                                         .batch_size(config.data.batch_size())
                                                         .shuffle(true)
                                                         .drop_last(true)
                                                         .workers(config.data.workers())
                                                         .seed(seed)
                                                         .rank(dist::rank())
                                                         .world_size(dist::world_size())
                                                         .pin_memory(cuda));
  steps_per_epoch_ = train_loader_->batches_per_epoch();
  TORCH_CHECK(steps_per_epoch_ > 0, "train: ", data_.train->size(), " training examples make no full batch of ",
              config.data.batch_size());
  eval_loader_ = std::make_unique<data::DataLoader>(use_val_ ? data.val : data.test, data.eval_transform,
                                                    data::LoaderOptions()
                                                        .batch_size(config.data.eval_batch_size())
                                                        .workers(config.data.workers())
                                                        .rank(dist::rank())
                                                        .world_size(dist::world_size())
                                                        .pin_memory(cuda));
  const OptimOptions& optim = config.optim;
  const int64_t total_steps = steps_per_epoch_ * optim.epochs();
  const auto warmup_steps = std::min<int64_t>(
      total_steps, static_cast<int64_t>(std::llround(optim.warmup_epochs() * steps_per_epoch_)));
  schedule_ = std::make_unique<CosineSchedule>(optim.lr(), optim.min_lr(), warmup_steps, total_steps);
  build_optimizer();
  checkpoint_.arch = config.model.arch();
  if (const auto* imported = dynamic_cast<const models::OnnxModelImpl*>(model_.get())) {
    checkpoint_.onnx = imported->source();
    checkpoint_.onnx_checksum = imported->checksum();
  }
  checkpoint_.input_shape = data.input_shape;
  checkpoint_.num_classes = data.num_classes;
  checkpoint_.config = config_.to_json().dump();
  checkpoint_.quantization = step.record();
}

// The strategy's optimizer, over its decayed and undecayed parameters
// (with optim.decay_layer_weights_only, only the layers' weights decay).
void TrainingLoop::build_optimizer() {
  const std::set<std::string> layer_weights = layer_weight_names(*model_);
  const auto decays = [&](const std::string& name) {
    return step_.decays(name) && (!config_.optim.decay_layer_weights_only() || layer_weights.count(name) > 0);
  };
  std::vector<torch::Tensor> decayed, undecayed;
  for (const auto& p : model_->named_parameters()) (decays(p.key()) ? decayed : undecayed).push_back(p.value());
  optimizer_ = step_.make_optimizer(decayed, undecayed);
}

void TrainingLoop::restore(const std::string& path) {
  Checkpoint prev = load_checkpoint(path);
  TORCH_CHECK(prev.arch == checkpoint_.arch && prev.num_classes == checkpoint_.num_classes &&
                  prev.input_shape == checkpoint_.input_shape,
              "train: cannot resume '", path, "': it holds a ", prev.arch, " with ", prev.num_classes,
              " classes, this run builds a ", checkpoint_.arch, " with ", checkpoint_.num_classes);
  TORCH_CHECK(prev.quantization == checkpoint_.quantization, "train: cannot resume '", path,
              "': it was trained under another quantization (",
              prev.quantization.empty() ? "none" : prev.quantization, ")");
  const std::string optimizer = optim_options_of(prev).optimizer();
  TORCH_CHECK(optimizer == config_.optim.optimizer(), "train: cannot resume '", path, "': it was trained with the ",
              optimizer, " optimizer, this run uses ", config_.optim.optimizer(),
              " (its state does not carry over; give train.optimizer ", optimizer, ")");
  models::load_state_dict(*model_, prev.model, path);
  restore_optimizer(*optimizer_, prev.optimizer, device_);
  if (prev.rng_state.numel() > 0) {
    auto generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(prev.rng_state);
  }
  start_epoch_ = prev.epoch;
  start_batch_ = prev.batch;
  TORCH_CHECK(start_batch_ >= 0 && start_batch_ < steps_per_epoch_, "train: cannot resume '", path,
              "': it stopped at batch ", start_batch_, " of an epoch, but this run has ", steps_per_epoch_,
              " batches per epoch (batch size or data changed?)");
  if (start_batch_ > 0) {
    start_progress_ = nlohmann::json::parse(prev.progress, nullptr, /*allow_exceptions=*/false);
    TORCH_CHECK(!start_progress_.is_discarded(), "train: '", path, "': unreadable progress record");
  }
  step_index_ = prev.step;
  metrics_.restore_until(start_epoch_);
  if (!main_rank_) return;
  const int64_t epochs = config_.optim.epochs();
  if (start_batch_ > 0) {
    fmt::print(stderr, "resuming '{}' in epoch {}/{} at batch {}/{} (step {})\n", path, start_epoch_ + 1, epochs,
               start_batch_, steps_per_epoch_, step_index_);
  } else {
    fmt::print(stderr, "resuming '{}' after epoch {}/{} (step {})\n", path, start_epoch_, epochs, step_index_);
  }
}

void TrainingLoop::announce() {
  if (!main_rank_) return;
  const RunOptions& run = config_.run;
  util::write_file_atomic((std::filesystem::path(run.out_dir()) / "config.json").string(),
                          config_.to_json().dump(2) + "\n");
  fmt::print(stderr, "train: {} on {} ({} train / {} {} examples), {} epochs, batch {}{}, {} threads, {}\n",
             config_.model.arch(), config_.data.dataset(), data_.train->size(), use_val_ ? "val" : "test",
             (use_val_ ? data_.val : data_.test)->size(), config_.optim.epochs(), config_.data.batch_size(),
             dist::is_distributed()
                 ? fmt::format(" per worker x {} workers{}", dist::world_size(), run.sync_bn() ? ", SyncBatchNorm" : "")
                 : "",
             at::get_num_threads(), device_.str());
}

// --- TrainingLoop: the run ----------------------------------------------------

TrainResult TrainingLoop::run(bool resume, const TrainHooks& hooks) {
  if (resume && util::file_exists(checkpoint_path_)) restore(checkpoint_path_);
  // Every worker starts from rank 0's state (they agree already when seeded
  // alike; this makes it a guarantee).
  dist::broadcast_module(*model_);
  announce();
  total_clock_.reset();
  for (int64_t epoch = start_epoch_; epoch < config_.optim.epochs(); ++epoch) {
    if (run_epoch(epoch, hooks)) {
      TrainResult result;
      result.checkpoint = checkpoint_path_;
      result.test = last_eval_;
      result.images_per_second = images_per_second_;
      result.seconds = total_clock_.seconds();
      result.epochs = epoch + 1;
      return result;
    }
  }
  return finish(hooks);
}

bool TrainingLoop::run_epoch(int64_t epoch, const TrainHooks& hooks) {
  const RunOptions& run = config_.run;
  const int64_t first_batch = epoch == start_epoch_ ? start_batch_ : 0;
  begin_epoch(epoch, first_batch);
  util::ProgressLine progress(fmt::format("epoch {}/{}", epoch + 1, config_.optim.epochs()), steps_per_epoch_,
                              run.progress() && main_rank_);
  while (auto batch = train_loader_->next()) {
    auto images = batch->images.to(device_, /*non_blocking=*/true).contiguous(format_);
    auto labels = batch->labels.to(device_, /*non_blocking=*/true);
    lr_ = schedule_->lr(step_index_);
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr_);
    const StepOutcome outcome = forward_backward(images, labels);
    if (outcome.nonfinite) {
      skip_nonfinite_step(outcome, images, epoch);
    } else {
      update(outcome, labels);
    }
    ++step_index_;
    ++batch_index_;
    if (hooks.after_step) hooks.after_step(step_index_);
    if (batch_index_ % 20 == 0 || batch_index_ == steps_per_epoch_) report_progress(progress);
    // One process: a request that arrived during this step stops now; with
    // several, the all-reduced flag keeps the workers in step (a late
    // request is seen at the next step).
    const bool stop_now = outcome.stop || (!dist::is_distributed() && util::stop_requested());
    if (batch_index_ == steps_per_epoch_) continue;
    if (stop_now || (run.checkpoint_every() > 0 && step_index_ % run.checkpoint_every() == 0)) {
      save(epoch, batch_index_, nlohmann::ordered_json::object());
    }
    if (stop_now) {
      if (main_rank_) progress.finish("interrupted");
      interrupted(fmt::format("in epoch {}/{} at batch {}/{} (step {})", epoch + 1, config_.optim.epochs(),
                              batch_index_, steps_per_epoch_, step_index_));
    }
  }
  std::string status;
  const nlohmann::ordered_json entry = end_epoch(epoch, status);
  if (main_rank_) progress.finish(status);
  // Metrics first: a crash between the two writes leaves a metrics line
  // ahead of the checkpoint, which a resume drops and recomputes.
  if (main_rank_) metrics_.append(entry);
  save(epoch + 1, 0, entry);
  const bool last = epoch + 1 == config_.optim.epochs();
  if (!last && any_worker_stopping()) {
    interrupted(fmt::format("after epoch {}/{}", epoch + 1, config_.optim.epochs()));
  }
  return !last && hooks.should_stop && hooks.should_stop(epoch + 1);
}

void TrainingLoop::begin_epoch(int64_t epoch, int64_t first_batch) {
  model_->train();
  train_loader_->start_epoch(epoch, first_batch);
  stats_.reset(device_);
  tracked_stats_.assign(tracked_.size(), RunningStats());
  for (auto& s : tracked_stats_) s.reset(device_);
  prior_seconds_ = 0;
  if (first_batch > 0) {
    // The checkpoint holds the statistics summed over workers: rank 0
    // carries them on, the others start from zero.
    if (main_rank_) {
      stats_.restore(start_progress_.at("stats"));
      // The tracked passes' statistics; the key keeps its first name
      // ("candidates") so that older mid-epoch checkpoints still resume.
      const auto& tracked = start_progress_.at("candidates");
      for (size_t k = 0; k < tracked_stats_.size(); ++k) tracked_stats_[k].restore(tracked.at(k));
    }
    prior_seconds_ = start_progress_.value("train_seconds", 0.0);
  }
  epoch_clock_.reset();
  batch_index_ = first_batch;
  lr_ = 0;
}

// One forward/backward per pass of the strategy; gradients averaged over
// workers once, after all passes. One host synchronisation (and one small
// all-reduce) per step: any worker's non-finite loss or gradient, any
// worker's stop request.
TrainingLoop::StepOutcome TrainingLoop::forward_backward(const torch::Tensor& images, const torch::Tensor& labels) {
  dist::heartbeat(step_index_);
  optimizer_->zero_grad();
  StepOutcome out;
  for (int64_t k = 0; k < step_.passes(); ++k) {
    step_.configure_pass(k, step_index_);
    auto logits = model_->forward(images);
    auto loss = step_.loss(logits, labels);
    loss.backward();
    out.finite.push_back(torch::isfinite(loss.detach()));
    out.loss.push_back(loss.detach());
    out.logits.push_back(logits.detach());
  }
  allreduced_bytes_ = dist::allreduce_gradients(parameters_);
  for (const auto& p : parameters_) {
    if (p.grad().defined()) out.finite.push_back(torch::isfinite(p.grad()).all());
  }
  torch::Tensor flags = torch::stack({torch::logical_not(torch::stack(out.finite).all()).to(torch::kFloat32),
                                      torch::full({}, util::stop_requested() ? 1.0f : 0.0f)});
  if (dist::is_distributed()) {
    std::vector<torch::Tensor> one{flags};
    dist::allreduce_sum(one);
  }
  out.nonfinite = flags[0].item<float>() > 0;
  out.stop = flags[1].item<float>() > 0;
  return out;
}

// Names what went non-finite and where; stops (the default) or drops the
// step's update when run.on_nonfinite is skip and no buffer was hit.
void TrainingLoop::skip_nonfinite_step(const StepOutcome& outcome, const torch::Tensor& images, int64_t epoch) {
  std::string what, where;
  for (int64_t k = 0; k < step_.passes() && what.empty(); ++k) {
    if (outcome.finite[k].item<bool>()) continue;  // (on another worker: named there)
    what = fmt::format("loss ({}){}", outcome.loss[k].item<double>(), step_.describe_pass(k));
    step_.configure_pass(k, step_index_);
    where = locate_nonfinite_output(*model_, images);
  }
  if (what.empty()) {
    const std::string grad_where = locate_nonfinite_gradient(*model_);
    what = dist::is_distributed() && grad_where.rfind("no ", 0) == 0 ? "loss on another worker" : "gradient";
    where = grad_where;
  }
  const std::string at = fmt::format("epoch {}, batch {}/{}, step {}", epoch + 1, batch_index_ + 1,
                                     steps_per_epoch_, step_index_ + 1);
  // Name the last good checkpoint only when one was written.
  const std::string last_good = util::file_exists(checkpoint_path_)
                                    ? "the last good checkpoint is '" + checkpoint_path_ + "'"
                                    : "no checkpoint was written yet";
  TORCH_CHECK(config_.run.on_nonfinite() == "skip", "train: non-finite ", what, " at ", at, ": ", where,
              ". Stopped without saving; ", last_good,
              " (lower the learning rate, or set run.on_nonfinite: skip to skip such steps)");
  for (const auto& b : model_->named_buffers()) {
    TORCH_CHECK(!b.value().is_floating_point() || torch::isfinite(b.value()).all().item<bool>(),
                "train: non-finite ", what, " at ", at, " (", where, ") also made the buffer '", b.key(),
                "' non-finite, so the step cannot be skipped; ", last_good);
  }
  if (main_rank_) fmt::print(stderr, "\ntrain: skipped the step at {}: non-finite {} ({})\n", at, what, where);
  optimizer_->zero_grad();
}

void TrainingLoop::update(const StepOutcome& outcome, const torch::Tensor& labels) {
  for (size_t k = 0; k < tracked_stats_.size(); ++k) tracked_stats_[k].add(outcome.loss[k], outcome.logits[k], labels);
  stats_.add(outcome.loss.back(), outcome.logits.back(), labels);
  step_.before_update(parameters_);
  optimizer_->step();
  step_.after_update();
}

// "W6A6 0.412/88.1% W5A5 ... | mixed " before the step's own figures.
std::string TrainingLoop::pass_summary() const {
  if (tracked_.empty()) return "";
  std::string out;
  for (size_t k = 0; k < tracked_.size(); ++k) {
    out += fmt::format("{} {:.3f}/{:.1f}% ", tracked_[k].label, tracked_stats_[k].mean_loss(),
                       tracked_stats_[k].accuracy());
  }
  const std::string label = step_.reported_label();
  return out + "| " + (label.empty() ? "" : label + " ");
}

void TrainingLoop::report_progress(util::ProgressLine& progress) const {
  const double seconds = std::max(1e-9, prior_seconds_ + epoch_clock_.seconds());
  progress.update(batch_index_, fmt::format("{}loss {:.4f} acc {:.2f}% lr {:.4g} | {:.0f} img/s", pass_summary(),
                                            stats_.mean_loss(), stats_.accuracy(), lr_, stats_.count / seconds));
}

// The epoch's statistics over all workers, batch-norm statistics averaged
// (SyncBatchNorm keeps them equal already), the evaluation; returns the
// metrics entry and the progress line's final status.
nlohmann::ordered_json TrainingLoop::end_epoch(int64_t epoch, std::string& status) {
  stats_ = stats_.reduced();
  for (auto& s : tracked_stats_) s = s.reduced();
  if (!dist::sync_batch_norm_enabled()) dist::average_batch_norm_statistics(*model_);
  const double train_seconds = prior_seconds_ + epoch_clock_.seconds();
  const double images_per_second = stats_.count / std::max(1e-9, train_seconds);
  nlohmann::ordered_json entry = {{"epoch", epoch + 1},
                                  {"step", step_index_},
                                  {"lr", lr_},
                                  {"train_loss", stats_.mean_loss()},
                                  {"train_top1", stats_.accuracy()},
                                  {"images_per_second", images_per_second},
                                  {"train_seconds", train_seconds}};
  if (dist::is_distributed()) {
    entry["workers"] = dist::world_size();
    entry["allreduce_bytes_per_step"] = allreduced_bytes_;
  }
  for (size_t k = 0; k < tracked_.size(); ++k) {
    entry["train_" + tracked_[k].key] = {{"loss", tracked_stats_[k].mean_loss()},
                                         {"top1", tracked_stats_[k].accuracy()}};
  }
  status = pass_summary() + fmt::format("loss {:.4f} acc {:.2f}% | {:.0f} img/s", stats_.mean_loss(),
                                        stats_.accuracy(), images_per_second);
  if (const std::string warning = chance_warning(stats_.accuracy(), data_.num_classes, step_index_,
                                                 !checkpoint_.quantization.empty());
      !warning.empty()) {
    entry["warning"] = warning;
    if (main_rank_) fmt::print(stderr, "\ntrain: warning: epoch {}: {}\n", epoch + 1, warning);
  }
  const bool last = epoch + 1 == config_.optim.epochs();
  const bool evaluate_now = (epoch + 1) % config_.run.eval_every() == 0 || last;
  if (evaluate_now) step_.prepare_evaluation();
  const int64_t bn_batches = config_.optim.bn_recalibration_batches();
  if (last && bn_batches > 0 && has_batch_norm(*model_)) {
    data::DataLoader calibration = calibration_loader(data_, config_.data, static_cast<uint64_t>(config_.run.seed()),
                                                      device_.is_cuda());
    const int64_t used = recalibrate_batch_norm(*model_, calibration, device_, bn_batches);
    entry["bn_recalibration_batches"] = used;
    status += fmt::format(" | BN statistics from {} batches", used);
  }
  if (evaluate_now) {
    last_eval_ = evaluate(*model_, *eval_loader_, device_);
    final_test_done_ = last && !use_val_;
    entry[use_val_ ? "val" : "test"] = last_eval_.to_json();
    status += fmt::format(" | {} top1 {:.2f}% loss {:.4f}", use_val_ ? "val" : "test", last_eval_.top1,
                          last_eval_.loss);
  }
  images_per_second_ = images_per_second;
  return entry;
}

void TrainingLoop::save(int64_t epochs_done, int64_t batches_done, const nlohmann::ordered_json& entry) {
  nlohmann::ordered_json progress_record;
  if (batches_done > 0) {
    progress_record = {{"stats", stats_.reduced().to_json()},
                       {"candidates", nlohmann::ordered_json::array()},
                       {"train_seconds", prior_seconds_ + epoch_clock_.seconds()}};
    for (const auto& s : tracked_stats_) progress_record["candidates"].push_back(s.reduced().to_json());
  }
  if (!main_rank_) return;
  checkpoint_.model = models::state_dict(*model_);
  checkpoint_.optimizer = serialize_optimizer(*optimizer_);
  checkpoint_.epoch = epochs_done;
  checkpoint_.batch = batches_done;
  checkpoint_.step = step_index_;
  checkpoint_.rng_state = at::detail::getDefaultCPUGenerator().get_state();
  checkpoint_.metrics = entry.dump();
  checkpoint_.progress = batches_done > 0 ? progress_record.dump() : std::string();
  save_checkpoint(checkpoint_path_, checkpoint_);
}

void TrainingLoop::interrupted(const std::string& where) const {
  throw util::Interrupted(
      fmt::format("interrupted {}; checkpoint written to '{}'; {}", where, checkpoint_path_, kResumeHint),
      util::stop_signal());
}

// The final model on the test set; the strategy adds what its run leaves.
TrainResult TrainingLoop::finish(const TrainHooks& hooks) {
  data::DataLoader test_loader(data_.test, data_.eval_transform,
                               data::LoaderOptions()
                                   .batch_size(config_.data.eval_batch_size())
                                   .workers(config_.data.workers())
                                   .rank(dist::rank())
                                   .world_size(dist::world_size())
                                   .pin_memory(device_.is_cuda()));
  TrainResult result;
  result.checkpoint = checkpoint_path_;
  result.images_per_second = images_per_second_;
  step_.prepare_evaluation();
  result.test = final_test_done_ ? last_eval_ : evaluate(*model_, test_loader, device_);
  FinishContext context;
  context.model = model_;
  context.device = device_;
  context.data = &data_;
  context.test_loader = &test_loader;
  context.out_dir = config_.run.out_dir();
  context.epochs = config_.optim.epochs();
  context.main_rank = main_rank_;
  context.evaluate_every_candidate = hooks.evaluate_every_candidate;
  step_.finish(context, result);
  result.completed = true;
  result.epochs = config_.optim.epochs();
  result.seconds = total_clock_.seconds();
  return result;
}

}  // namespace limpq::train
