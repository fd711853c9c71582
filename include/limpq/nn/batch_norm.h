// Batch normalisation for the layers that follow a quantizable conv.
//
// Parameter and buffer names match torch::nn::BatchNorm2d (`weight`, `bias`,
// `running_mean`, `running_var`, `num_batches_tracked`), so torchvision
// state_dicts load unchanged. make_switchable() adds one independent
// BatchNorm (affine parameters and running statistics) per candidate
// bit-width, each a copy of the current one, as `branches.<bits>.*`
// (LIMPQ.md section 4); set_bits() picks the branch of the bit-width of the
// conv before it. Any other bit-width (full precision) uses the base set.
//
//   SwitchableBatchNorm2d bn(SwitchableBatchNorm2dOptions(64));
//   bn->make_switchable({6, 5, 4, 3, 2});
//   bn->set_bits(4);
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/types.h>

#include <vector>

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

  void make_switchable(const std::vector<int64_t>& bits);
  bool switchable() const { return !branches.is_empty(); }
  void set_bits(int64_t bits);
  int64_t bits() const { return bits_; }

  SwitchableBatchNorm2dOptions options;
  torch::nn::ModuleDict branches{nullptr};
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  int64_t bits_ = 32;
};
TORCH_MODULE(SwitchableBatchNorm2d);

}  // namespace limpq::nn
