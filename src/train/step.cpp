// The step strategies' common ground: the default loss and optimizer, and
// which strategy a config runs.
#include "limpq/train/step.h"

#include <torch/nn/functional/loss.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

namespace limpq::train {

torch::Tensor TrainStep::loss(const torch::Tensor& logits, const torch::Tensor& labels) const {
  namespace F = torch::nn::functional;
  return F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().label_smoothing(optim_.label_smoothing()));
}

namespace {

std::unique_ptr<torch::optim::Optimizer> make_sgd(const OptimOptions& optim, const std::vector<torch::Tensor>& decayed,
                                                  const std::vector<torch::Tensor>& undecayed) {
  auto options = [&](double weight_decay) {
    return std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(optim.lr())
                                                          .momentum(optim.momentum())
                                                          .nesterov(optim.nesterov())
                                                          .weight_decay(weight_decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, options(optim.weight_decay()));
  if (!undecayed.empty()) groups.emplace_back(undecayed, options(0.0));
  return std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(optim.lr()));
}

std::unique_ptr<torch::optim::Optimizer> make_adamw(const OptimOptions& optim, const std::vector<torch::Tensor>& decayed,
                                                    const std::vector<torch::Tensor>& undecayed) {
  auto options = [&](double weight_decay) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(optim.lr()).weight_decay(weight_decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, options(optim.weight_decay()));
  if (!undecayed.empty()) groups.emplace_back(undecayed, options(0.0));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(optim.lr()));
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> TrainStep::make_optimizer(const std::vector<torch::Tensor>& decayed,
                                                                   const std::vector<torch::Tensor>& undecayed) const {
  if (optim_.optimizer() == "sgd") return make_sgd(optim_, decayed, undecayed);
  if (optim_.optimizer() == "adamw") return make_adamw(optim_, decayed, undecayed);
  TORCH_CHECK(false, "train: unknown optimizer '", optim_.optimizer(), "' (known: sgd, adamw)");
}

bool is_quantizer_step(const std::string& parameter_name) {
  const std::string suffix = ".steps";
  return parameter_name.size() >= suffix.size() &&
         parameter_name.compare(parameter_name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::unique_ptr<TrainStep> make_train_step(const TrainConfig& config, models::Model model,
                                           const data::DataBundle& data) {
  TORCH_CHECK(!(config.joint_indicators && config.quant.enabled()),
              "train: indicator training and fine-tuning under a policy exclude each other");
  if (config.joint_indicators) return make_joint_indicator_step(config, std::move(model), data);
  return make_plain_step(config, std::move(model), data);
}

}  // namespace limpq::train
