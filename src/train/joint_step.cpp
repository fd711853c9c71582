// Joint training of the importance indicators (LIMPQ.md section 4): each
// step runs every candidate bit-width uniformly, then one random mixed
// policy, and accumulates the gradients. One-at-a-time training is the same
// step with one layer quantized at one bit-width and no mixed pass.
#include <fmt/core.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>

#include "limpq/data/image.h"
#include "limpq/models/indicator_layer.h"
#include "limpq/models/quantized.h"
#include "limpq/nn/quant_layer.h"
#include "limpq/quant/indicators.h"
#include "limpq/quant/lsq_quantizer.h"
#include "limpq/train/layer_stats.h"
#include "limpq/train/step.h"
#include "limpq/util/runtime.h"

namespace limpq::train {
namespace {

class JointIndicatorStep : public TrainStep {
 public:
  JointIndicatorStep(const TrainConfig& config, models::Model model, const data::DataBundle& data)
      : TrainStep(config.optim),
        config_(config),
        candidates_(config.indicators.candidates()),
        only_layer_(config.indicators.only_layer()) {
    TORCH_CHECK(config.optim.bn_recalibration_batches() == 0,
                "indicators: train.bn_recalibration_batches applies to train and finetune, not to indicator training");
    const double fraction = config.indicators.fraction();
    TORCH_CHECK(fraction > 0 && fraction <= 1, "indicators: fraction must be in (0, 1], got ", fraction);
    quantized_.emplace(model, data.input_shape,
                       models::QuantizeOptions()
                           .fixed_layers(config.indicators.fixed_layers())
                           .fused(config.indicators.fused()));
    quantized_->prepare_indicators(candidates_);
    steps_.emplace(*model, /*max_change=*/0.0);
    if (!only_layer_.empty()) check_only_layer();
  }

  std::string record() const override { return quantized_->describe().dump(); }

  // indicators.fraction of the training set, a subset fixed by the seed.
  std::shared_ptr<const data::Dataset> training_set(std::shared_ptr<const data::Dataset> train) const override {
    const double fraction = config_.indicators.fraction();
    if (fraction == 1) return train;
    const auto size = std::max<int64_t>(1, std::llround(fraction * train->size()));
    return data::take_subset(train, size, static_cast<uint64_t>(config_.run.seed()) + 3);
  }

  bool decays(const std::string& parameter_name) const override { return !is_quantizer_step(parameter_name); }

  // The steps are projected into their bounds, their change is not limited
  // (LIMPQ.md section 4 trains them as they are).
  void after_update() override { steps_->apply(); }

  int64_t passes() const override { return num_candidates() + (only_layer_.empty() ? 1 : 0); }

  void configure_pass(int64_t pass, int64_t step) override {
    if (pass < num_candidates()) {
      set_candidate(candidates_[pass]);
    } else {
      apply_random_policy(step);
    }
  }

  std::string describe_pass(int64_t pass) const override {
    return pass < num_candidates() ? fmt::format(" in the uniform W{0}A{0} pass", candidates_[pass])
                                   : std::string(" in the random mixed-policy pass");
  }

  std::vector<PassLabel> tracked_passes() const override {
    std::vector<PassLabel> labels;
    for (int64_t b : candidates_) labels.push_back({fmt::format("W{}", b), fmt::format("W{0}A{0}", b)});
    return labels;
  }

  std::string reported_label() const override { return only_layer_.empty() ? "mixed" : ""; }

  // Element-wise clip to [-1, 1]; all-zero gradients dropped.
  void before_update(std::vector<torch::Tensor>& parameters) override {
    torch::NoGradGuard no_grad;
    for (auto& p : parameters) {
      if (!p.grad().defined()) continue;
      p.mutable_grad().clamp_(-1.0, 1.0);
      if (!p.grad().any().item<bool>()) p.mutable_grad() = torch::Tensor();
    }
  }

  // Evaluated at the largest candidate, uniformly.
  void prepare_evaluation() override { set_candidate(candidates_.front()); }

  // Test accuracy at every candidate (or the first only), the tensors'
  // statistics, and the indicators file.
  void finish(FinishContext& context, TrainResult& result) override {
    for (int64_t b : candidates_) {
      if (b != candidates_.front() && !context.evaluate_every_candidate) continue;
      set_candidate(b);
      // The loop's final evaluation ran at the first candidate.
      EvalResult r = b == candidates_.front() ? result.test : evaluate(*context.model, *context.test_loader, context.device);
      r.cost = models::policy_cost(quantized_->layers(), quantized_->current_policy());
      result.per_candidate.emplace_back(b, r);
    }
    result.test = result.per_candidate.front().second;
    result.indicators = (std::filesystem::path(context.out_dir) / "indicators.json").string();
    std::map<std::string, quant::TensorStats> stats;
    if (config_.indicators.stats_samples() > 0) {
      set_candidate(*std::max_element(candidates_.begin(), candidates_.end()));
      data::DataLoader loader = calibration_loader(*context.data, config_.data,
                                                   static_cast<uint64_t>(config_.run.seed()), context.device.is_cuda());
      stats = measure_layer_stats(*quantized_, loader, context.device, config_.indicators.stats_samples(),
                                  static_cast<uint64_t>(config_.run.seed()));
    }
    const quant::Indicators indicators = collect_indicators(context.epochs, stats);
    if (context.main_rank) quant::write_indicators(result.indicators, indicators);
  }

 private:
  int64_t num_candidates() const { return static_cast<int64_t>(candidates_.size()); }

  void check_only_layer() const {
    const auto names = quantized_->searchable_names();
    TORCH_CHECK(std::find(names.begin(), names.end(), only_layer_) != names.end(), "indicators: only_layer '",
                only_layer_, "' is not a searchable layer of ", config_.model.arch());
    TORCH_CHECK(candidates_.size() == 1, "indicators: one-at-a-time training (only_layer) takes one bit-width in "
                "candidates, got ", candidates_.size());
  }

  // Every searchable layer at `bits`; one-at-a-time: only that layer, the
  // others at full precision.
  void set_candidate(int64_t bits) {
    if (only_layer_.empty()) {
      quantized_->set_uniform(bits);
      return;
    }
    for (const auto& name : quantized_->searchable_names()) {
      const int64_t b = name == only_layer_ ? bits : quant::kFullPrecisionBits;
      quantized_->set_layer_bits(name, b, b);
    }
  }

  // The random mixed policy of step `step`'s last pass.
  void apply_random_policy(int64_t step) {
    const auto seed = static_cast<uint64_t>(config_.run.seed());
    data::Rng rng(util::mix_seed(seed ^ util::mix_seed(static_cast<uint64_t>(step))));
    for (const auto& name : quantized_->searchable_names()) {
      const int64_t b = candidates_[rng() % candidates_.size()];
      quantized_->set_layer_bits(name, b, b);
    }
  }

  // Each searchable layer's effective steps at every candidate.
  static void read_steps(const quant::LsqQuantizerImpl& weights, const quant::LsqQuantizerImpl& acts,
                         const std::vector<int64_t>& candidates, quant::IndicatorLayer& layer) {
    for (int64_t b : candidates) {
      layer.weight_steps[b] = weights.effective_step(b).item<double>();
      layer.act_steps[b] = acts.effective_step(b).item<double>();
    }
  }

  quant::Indicators collect_indicators(int64_t epochs, const std::map<std::string, quant::TensorStats>& stats) const {
    quant::Indicators ind;
    ind.model = quantized_->model()->arch();
    ind.input_shape = quantized_->input_shape();
    ind.candidates = quantized_->candidates();
    ind.provenance = {{"checkpoint", config_.model.weights()},
                      {"epochs", epochs},
                      {"fraction", config_.indicators.fraction()},
                      {"seed", config_.run.seed()},
                      {"dataset", config_.data.dataset()}};
    if (!only_layer_.empty()) ind.provenance["only_layer"] = only_layer_;
    auto named = quantized_->model()->named_modules("", false);
    for (const auto& l : quantized_->layers()) {
      quant::IndicatorLayer e = models::indicator_layer(l);
      // One-at-a-time training: only the trained layer has indicators.
      e.searchable = l.searchable && (only_layer_.empty() || l.name == only_layer_);
      if (e.searchable) {
        const nn::QuantLayer* layer = nn::as_quant_layer(*named[l.name]);
        read_steps(*layer->weight_quantizer, *layer->input_quantizer, ind.candidates, e);
        auto it = stats.find(l.name);
        if (it != stats.end()) e.stats = it->second;
      }
      ind.layers.push_back(std::move(e));
    }
    return ind;
  }

  TrainConfig config_;
  std::vector<int64_t> candidates_;
  std::string only_layer_;
  std::optional<models::QuantModel> quantized_;
  std::optional<quant::StepGuard> steps_;
};

}  // namespace

std::unique_ptr<TrainStep> make_joint_indicator_step(const TrainConfig& config, models::Model model,
                                                     const data::DataBundle& data) {
  return std::make_unique<JointIndicatorStep>(config, std::move(model), data);
}

}  // namespace limpq::train
