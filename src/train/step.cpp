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

// `Optimizer` over two groups: `decayed` at `weight_decay`, `undecayed` at
// none; both with `options` otherwise.
template <typename Optimizer, typename Options>
std::unique_ptr<torch::optim::Optimizer> grouped(const Options& options, double weight_decay,
                                                 const std::vector<torch::Tensor>& decayed,
                                                 const std::vector<torch::Tensor>& undecayed) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decayed, std::make_unique<Options>(Options(options).weight_decay(weight_decay)));
  if (!undecayed.empty()) groups.emplace_back(undecayed, std::make_unique<Options>(Options(options).weight_decay(0.0)));
  return std::make_unique<Optimizer>(groups, Options(options.lr()));
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> TrainStep::make_optimizer(const std::vector<torch::Tensor>& decayed,
                                                                   const std::vector<torch::Tensor>& undecayed) const {
  if (optim_.optimizer() == "sgd") {
    const auto sgd = torch::optim::SGDOptions(optim_.lr()).momentum(optim_.momentum()).nesterov(optim_.nesterov());
    return grouped<torch::optim::SGD>(sgd, optim_.weight_decay(), decayed, undecayed);
  }
  if (optim_.optimizer() == "adamw") {
    return grouped<torch::optim::AdamW>(torch::optim::AdamWOptions(optim_.lr()), optim_.weight_decay(), decayed,
                                        undecayed);
  }
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
