// Batch normalisation for the layers that follow a quantizable conv.
//
// Parameter and buffer names match torch::nn::BatchNorm2d (`weight`, `bias`,
// `running_mean`, `running_var`, `num_batches_tracked`), so torchvision
// state_dicts load unchanged. The quantization core makes it switchable (one
// set of statistics per candidate bit-width, LIMPQ section 4).
//
//   SwitchableBatchNorm2d bn(SwitchableBatchNorm2dOptions(64));
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace limpq::nn {

struct SwitchableBatchNorm2dOptions {
  /* implicit */ SwitchableBatchNorm2dOptions(int64_t num_features) : num_features_(num_features) {}
  TORCH_ARG(int64_t, num_features);
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(double, momentum) = 0.1;
};

class SwitchableBatchNorm2dImpl : public torch::nn::Cloneable<SwitchableBatchNorm2dImpl> {
 public:
  explicit SwitchableBatchNorm2dImpl(SwitchableBatchNorm2dOptions options);
  void reset() override;
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& input);
  void pretty_print(std::ostream& stream) const override;

  SwitchableBatchNorm2dOptions options;
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
};
TORCH_MODULE(SwitchableBatchNorm2d);

}  // namespace limpq::nn
