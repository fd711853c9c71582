#include "limpq/nn/batch_norm.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include "limpq/dist/dist.h"
#include "limpq/nn/trace.h"

namespace limpq::nn {

SwitchableBatchNorm2dImpl::SwitchableBatchNorm2dImpl(SwitchableBatchNorm2dOptions options_)
    : options(options_) {
  reset();
}

void SwitchableBatchNorm2dImpl::reset() {
  TORCH_CHECK(options.num_features() > 0, "SwitchableBatchNorm2d: num_features must be positive, got ",
              options.num_features());
  const int64_t c = options.num_features();
  weight = register_parameter("weight", torch::ones({c}));
  bias = register_parameter("bias", torch::zeros({c}));
  running_mean = register_buffer("running_mean", torch::zeros({c}));
  running_var = register_buffer("running_var", torch::ones({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

void SwitchableBatchNorm2dImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  weight.fill_(1);
  bias.zero_();
  running_mean.zero_();
  running_var.fill_(1);
  num_batches_tracked.zero_();
}

void SwitchableBatchNorm2dImpl::make_switchable(const std::vector<int64_t>& bits) {
  TORCH_CHECK(!switchable(), "SwitchableBatchNorm2d: already switchable");
  TORCH_CHECK(!bits.empty(), "SwitchableBatchNorm2d: make_switchable needs at least one bit-width");
  branches = torch::nn::ModuleDict();
  torch::NoGradGuard no_grad;
  for (int64_t b : bits) {
    auto bn = torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(options.num_features())
                                         .eps(options.eps())
                                         .momentum(options.momentum()));
    bn->to(weight.device());
    bn->weight.copy_(weight);
    bn->bias.copy_(bias);
    bn->running_mean.copy_(running_mean);
    bn->running_var.copy_(running_var);
    bn->num_batches_tracked.copy_(num_batches_tracked);
    branches->update({{std::to_string(b), bn.ptr()}});
  }
  register_module("branches", branches);
}

void SwitchableBatchNorm2dImpl::set_bits(int64_t bits) {
  TORCH_CHECK(bits == 32 || !switchable() || branches->contains(std::to_string(bits)),
              "SwitchableBatchNorm2d: no branch for ", bits, " bits");
  bits_ = bits;
}

torch::Tensor SwitchableBatchNorm2dImpl::forward(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4 && input.size(1) == options.num_features(),
              "SwitchableBatchNorm2d: expected N x ", options.num_features(), " x H x W input, got ",
              input.sizes());
  torch::Tensor out;
  if (is_training() && dist::sync_batch_norm_enabled()) {
    // Statistics of the global batch across data-parallel workers.
    auto* branch = switchable() && bits_ != 32 ? &branches->at<torch::nn::BatchNorm2dImpl>(std::to_string(bits_))
                                               : nullptr;
    torch::Tensor& w = branch ? branch->weight : weight;
    torch::Tensor& b = branch ? branch->bias : bias;
    torch::Tensor& mean = branch ? branch->running_mean : running_mean;
    torch::Tensor& var = branch ? branch->running_var : running_var;
    {
      torch::NoGradGuard no_grad;
      (branch ? branch->num_batches_tracked : num_batches_tracked).add_(1);
    }
    const double momentum = branch ? branch->options.momentum().value_or(0.1) : options.momentum();
    const double eps = branch ? branch->options.eps() : options.eps();
    out = dist::sync_batch_norm(input, w, b, mean, var, momentum, eps);
  } else if (switchable() && bits_ != 32) {
    out = branches->at<torch::nn::BatchNorm2dImpl>(std::to_string(bits_)).forward(input);
  } else {
    if (is_training()) {
      torch::NoGradGuard no_grad;
      num_batches_tracked.add_(1);
    }
    out = torch::batch_norm(input, weight, bias, running_mean, running_var, is_training(), options.momentum(),
                            options.eps(), /*cudnn_enabled=*/true);
  }
  if (auto* tracer = LayerTracer::active()) tracer->record(this, input, out);
  return out;
}

void SwitchableBatchNorm2dImpl::pretty_print(std::ostream& stream) const {
  stream << "limpq::nn::SwitchableBatchNorm2d(" << options.num_features() << ", eps=" << options.eps()
         << ", momentum=" << options.momentum() << ")";
}

}  // namespace limpq::nn
