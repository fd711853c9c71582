// ResNets (He et al., "Deep Residual Learning for Image Recognition", 2016).
//
// CifarResNet: the 6n+2-layer CIFAR networks (resnet20/32/56: 16/32/64
// channels, three stages) with 1x1-conv projection shortcuts.
// ResNet: torchvision's ImageNet resnet18 / resnet50 (v1.5: stride on the 3x3
// conv of the bottleneck), parameter names identical to torchvision's.
#pragma once

#include <torch/nn/modules/container/sequential.h>

#include "limpq/models/model.h"
#include "limpq/nn/batch_norm.h"
#include "limpq/nn/quant_conv.h"

namespace limpq::models {

// What BasicBlock and Bottleneck share: conv1 on the input, the rest of the
// block (`residual`), the shortcut added, and the final ReLU.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  torch::Tensor forward(torch::Tensor x);
  // The output before the final ReLU (forward = relu(forward_to_preact)).
  torch::Tensor forward_to_preact(const torch::Tensor& x);
  // The same from the input's pre-activation z (the input is relu(z)): the
  // ReLU runs inside conv1's input quantizer, which also hands relu(z) to
  // the shortcut.
  torch::Tensor forward_preact(const torch::Tensor& z);

  nn::QuantConv2d conv1{nullptr};
  torch::nn::Sequential downsample{nullptr};

 protected:
  // The rest of the block once conv1 has run on its input x, up to and
  // including the shortcut's addition.
  virtual torch::Tensor residual(const torch::Tensor& x, const torch::Tensor& conv1_out) = 0;
};

class BasicBlockImpl : public ResidualBlockImpl {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride);
  std::string write_graph(nn::GraphWriter& writer, const std::string& x);

  nn::QuantConv2d conv2{nullptr};
  nn::SwitchableBatchNorm2d bn1{nullptr}, bn2{nullptr};

 protected:
  torch::Tensor residual(const torch::Tensor& x, const torch::Tensor& conv1_out) override;
};
TORCH_MODULE(BasicBlock);

class BottleneckImpl : public ResidualBlockImpl {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride);
  std::string write_graph(nn::GraphWriter& writer, const std::string& x);

  nn::QuantConv2d conv2{nullptr}, conv3{nullptr};
  nn::SwitchableBatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};

 protected:
  torch::Tensor residual(const torch::Tensor& x, const torch::Tensor& conv1_out) override;
};
TORCH_MODULE(Bottleneck);

class CifarResNetImpl : public ModelImpl {
 public:
  // depth = 6n + 2 (20, 32, 56, ...).
  CifarResNetImpl(int64_t depth, int64_t in_channels, int64_t num_classes);
  torch::Tensor forward(torch::Tensor x) override;
  std::string write_graph(nn::GraphWriter& writer, const std::string& input) override;

  nn::QuantConv2d conv1{nullptr};
  nn::SwitchableBatchNorm2d bn1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  nn::QuantLinear fc{nullptr};
};

class ResNetImpl : public ModelImpl {
 public:
  // depth 18 (BasicBlock x [2,2,2,2]) or 50 (Bottleneck x [3,4,6,3]).
  ResNetImpl(int64_t depth, int64_t in_channels, int64_t num_classes);
  torch::Tensor forward(torch::Tensor x) override;
  std::string write_graph(nn::GraphWriter& writer, const std::string& input) override;

  nn::QuantConv2d conv1{nullptr};
  nn::SwitchableBatchNorm2d bn1{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  nn::QuantLinear fc{nullptr};
};

// Kaiming-normal (fan_out, ReLU) convs, unit-scale batch norms: torchvision's
// initialisation for ResNets and MobileNets.
void init_conv_bn(torch::nn::Module& model);

}  // namespace limpq::models
