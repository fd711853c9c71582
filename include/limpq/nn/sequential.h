// A torch::nn::Sequential that can itself be stored in a Sequential
// (torch::nn::Sequential's templated forward cannot), needed to mirror
// torchvision's nested layouts such as features.1.conv.0.0.
#pragma once

#include <torch/nn/modules/container/sequential.h>

namespace limpq::nn {

class SequentialStackImpl : public torch::nn::SequentialImpl {
 public:
  using torch::nn::SequentialImpl::SequentialImpl;
  torch::Tensor forward(torch::Tensor x) { return torch::nn::SequentialImpl::forward(x); }
};
TORCH_MODULE(SequentialStack);

}  // namespace limpq::nn
