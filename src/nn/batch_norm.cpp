#include "limpq/nn/batch_norm.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

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

torch::Tensor SwitchableBatchNorm2dImpl::forward(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4 && input.size(1) == options.num_features(),
              "SwitchableBatchNorm2d: expected N x ", options.num_features(), " x H x W input, got ",
              input.sizes());
  if (is_training()) {
    torch::NoGradGuard no_grad;
    num_batches_tracked.add_(1);
  }
  return torch::batch_norm(input, weight, bias, running_mean, running_var, is_training(), options.momentum(),
                           options.eps(), /*cudnn_enabled=*/true);
}

void SwitchableBatchNorm2dImpl::pretty_print(std::ostream& stream) const {
  stream << "limpq::nn::SwitchableBatchNorm2d(" << options.num_features() << ", eps=" << options.eps()
         << ", momentum=" << options.momentum() << ")";
}

}  // namespace limpq::nn
