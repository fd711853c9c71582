// MobileNets.
//
// MobileNetV2: Sandler et al., "MobileNetV2: Inverted Residuals and Linear
// Bottlenecks", 2018; torchvision's layout and names (features.N.conv.M,
// classifier.1). mobilenet_v2_stem1 is the same network for small images:
// the stem at stride 1 instead of 2, so a 28x28 Fashion-MNIST image ends at
// 2x2 (the spatial sizes a 56x56 image has in the original) rather than 1x1;
// same layers and names.
// MobileNetV1: Howard et al., "MobileNets", 2017; the usual 224x224 network
// with 13 depthwise-separable blocks (features.0 is the stem, features.1..13
// are Sequential(dw conv, bn, relu, pw conv, bn, relu)), then fc.
#pragma once

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>

#include "limpq/models/model.h"
#include "limpq/nn/batch_norm.h"
#include "limpq/nn/quant_conv.h"

namespace limpq::models {

class InvertedResidualImpl : public torch::nn::Module {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio);
  torch::Tensor forward(torch::Tensor x);

  torch::nn::Sequential conv{nullptr};
  bool use_residual = false;
};
TORCH_MODULE(InvertedResidual);

class MobileNetV2Impl : public ModelImpl {
 public:
  MobileNetV2Impl(int64_t in_channels, int64_t num_classes, bool stem_stride_1 = false, double dropout = 0.2);
  torch::Tensor forward(torch::Tensor x) override;
  std::string write_graph(nn::GraphWriter& writer, const std::string& input) override;

  torch::nn::Sequential features{nullptr};
  torch::nn::Sequential classifier{nullptr};
};

class MobileNetV1Impl : public ModelImpl {
 public:
  MobileNetV1Impl(int64_t in_channels, int64_t num_classes);
  torch::Tensor forward(torch::Tensor x) override;
  std::string write_graph(nn::GraphWriter& writer, const std::string& input) override;

  torch::nn::Sequential features{nullptr};
  nn::QuantLinear fc{nullptr};
};

}  // namespace limpq::models
