// Full-precision training, and quantization-aware training under a policy:
// one forward/backward pass per step.
#include <optional>

#include "limpq/models/quantized.h"
#include "limpq/quant/lsq_quantizer.h"
#include "limpq/quant/policy.h"
#include "limpq/train/step.h"

namespace limpq::train {
namespace {

class PlainStep : public TrainStep {
 public:
  PlainStep(const TrainConfig& config, models::Model model, const data::DataBundle& data) : TrainStep(config.optim) {
    const FinetuneOptions& quant = config.quant;
    if (!quant.enabled()) return;
    TORCH_CHECK(quant.policy().empty() || quant.uniform().empty(),
                "finetune: give either quant.policy (--policy) or quant.uniform (--uniform), not both");
    quantized_.emplace(model, data.input_shape, quant.quantize());
    const bool from_file = !quant.policy().empty();
    const quant::Policy policy = from_file ? quant::read_policy(quant.policy())
                                           : quantized_->uniform_policy(quant::parse_uniform(quant.uniform()));
    quantized_->prepare_policy(policy, from_file ? quant.policy() : "--uniform " + quant.uniform());
    steps_.emplace(*model, quant.quantize().max_step_change());
  }

  std::string record() const override { return quantized_ ? quantized_->describe().dump() : std::string(); }

  bool decays(const std::string& parameter_name) const override { return !is_quantizer_step(parameter_name); }

  void before_update(std::vector<torch::Tensor>& /*parameters*/) override {
    if (steps_) steps_->snapshot();
  }

  void after_update() override {
    if (steps_) steps_->apply();
  }

  void finish(FinishContext& /*context*/, TrainResult& result) override {
    if (quantized_) result.test.cost = models::policy_cost(quantized_->layers(), quantized_->current_policy());
  }

 private:
  std::optional<models::QuantModel> quantized_;
  std::optional<quant::StepGuard> steps_;
};

}  // namespace

std::unique_ptr<TrainStep> make_plain_step(const TrainConfig& config, models::Model model,
                                           const data::DataBundle& data) {
  return std::make_unique<PlainStep>(config, std::move(model), data);
}

}  // namespace limpq::train
