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

class BasicBlockImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride);
  torch::Tensor forward(torch::Tensor x);
  // The output before the final ReLU (forward = relu(forward_to_preact)).
  torch::Tensor forward_to_preact(const torch::Tensor& x);
  // The same from the input's pre-activation z (the input is relu(z)): the
  // ReLU runs inside conv1's input quantizer, which also hands relu(z) to
  // the shortcut.
  torch::Tensor forward_preact(const torch::Tensor& z);
  std::string write_graph(nn::GraphWriter& writer, const std::string& x);

  nn::QuantConv2d conv1{nullptr}, conv2{nullptr};
  nn::SwitchableBatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};

 private:
  // The rest of the block once conv1 has run on its input x.
  torch::Tensor residual(const torch::Tensor& x, const torch::Tensor& conv1_out);
};
TORCH_MODULE(BasicBlock);

class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride);
  torch::Tensor forward(torch::Tensor x);
  // The output before the final ReLU (forward = relu(forward_to_preact)).
  torch::Tensor forward_to_preact(const torch::Tensor& x);
  // The same from the input's pre-activation z (the input is relu(z)): the
  // ReLU runs inside conv1's input quantizer, which also hands relu(z) to
  // the shortcut.
  torch::Tensor forward_preact(const torch::Tensor& z);
  std::string write_graph(nn::GraphWriter& writer, const std::string& x);

  nn::QuantConv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::SwitchableBatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};

 private:
  torch::Tensor residual(const torch::Tensor& x, const torch::Tensor& conv1_out);
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
