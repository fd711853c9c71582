#include "limpq/models/mobilenet.h"

#include <torch/torch.h>

#include "limpq/models/resnet.h"
#include "limpq/nn/sequential.h"

namespace limpq::models {
namespace {

// Appends conv -> BN -> activation (torchvision's Conv2dNormActivation) to `seq`.
void append_conv_bn_act(nn::SequentialStack& seq, int64_t in, int64_t out, int64_t kernel, int64_t stride,
                        int64_t groups, bool relu6) {
  seq->push_back(nn::QuantConv2d(
      nn::QuantConv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2).groups(groups)));
  seq->push_back(nn::SwitchableBatchNorm2d(out));
  if (relu6) {
    seq->push_back(torch::nn::ReLU6(torch::nn::ReLU6Options().inplace(true)));
  } else {
    seq->push_back(torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
  }
}

nn::SequentialStack conv_bn_act(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups,
                                bool relu6) {
  nn::SequentialStack seq;
  append_conv_bn_act(seq, in, out, kernel, stride, groups, relu6);
  return seq;
}

}  // namespace

InvertedResidualImpl::InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio) {
  TORCH_CHECK(stride == 1 || stride == 2, "InvertedResidual: stride must be 1 or 2, got ", stride);
  const int64_t hidden = in * expand_ratio;
  use_residual = stride == 1 && in == out;
  conv = torch::nn::Sequential();
  if (expand_ratio != 1) conv->push_back(conv_bn_act(in, hidden, 1, 1, 1, true));
  conv->push_back(conv_bn_act(hidden, hidden, 3, stride, hidden, true));
  conv->push_back(nn::QuantConv2d(nn::QuantConv2dOptions(hidden, out, 1)));
  conv->push_back(nn::SwitchableBatchNorm2d(out));
  register_module("conv", conv);
}

torch::Tensor InvertedResidualImpl::forward(torch::Tensor x) {
  return use_residual ? x + conv->forward(x) : conv->forward(x);
}

MobileNetV2Impl::MobileNetV2Impl(int64_t in_channels, int64_t num_classes, bool stem_stride_1, double dropout)
    : ModelImpl(stem_stride_1 ? "mobilenet_v2_stem1" : "mobilenet_v2") {
  struct Stage {
    int64_t t, c, n, s;
  };
  const Stage stages[] = {{1, 16, 1, 1},  {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                          {6, 96, 3, 1},  {6, 160, 3, 2}, {6, 320, 1, 1}};
  features = torch::nn::Sequential();
  features->push_back(conv_bn_act(in_channels, 32, 3, stem_stride_1 ? 1 : 2, 1, true));
  int64_t in = 32;
  for (const auto& st : stages) {
    for (int64_t i = 0; i < st.n; ++i) {
      features->push_back(InvertedResidual(in, st.c, i == 0 ? st.s : 1, st.t));
      in = st.c;
    }
  }
  features->push_back(conv_bn_act(in, 1280, 1, 1, 1, true));
  register_module("features", features);
  classifier = torch::nn::Sequential(torch::nn::Dropout(dropout), nn::QuantLinear(1280, num_classes));
  register_module("classifier", classifier);

  init_conv_bn(*this);
  torch::NoGradGuard no_grad;
  auto fc = classifier[1]->as<nn::QuantLinearImpl>();
  torch::nn::init::normal_(fc->weight, 0.0, 0.01);
  fc->bias.zero_();
}

torch::Tensor MobileNetV2Impl::forward(torch::Tensor x) {
  x = features->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return classifier->forward(x);
}

MobileNetV1Impl::MobileNetV1Impl(int64_t in_channels, int64_t num_classes) : ModelImpl("mobilenet_v1") {
  struct Block {
    int64_t out, stride;
  };
  const Block blocks[] = {{64, 1},  {128, 2}, {128, 1}, {256, 2}, {256, 1}, {512, 2},  {512, 1},
                          {512, 1}, {512, 1}, {512, 1}, {512, 1}, {1024, 2}, {1024, 1}};
  features = torch::nn::Sequential();
  features->push_back(conv_bn_act(in_channels, 32, 3, 2, 1, false));
  int64_t in = 32;
  for (const auto& b : blocks) {
    nn::SequentialStack block;
    append_conv_bn_act(block, in, in, 3, b.stride, in, false);    // depthwise
    append_conv_bn_act(block, in, b.out, 1, 1, 1, false);         // pointwise
    features->push_back(block);
    in = b.out;
  }
  register_module("features", features);
  fc = register_module("fc", nn::QuantLinear(in, num_classes));
  init_conv_bn(*this);
}

torch::Tensor MobileNetV1Impl::forward(torch::Tensor x) {
  x = features->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return fc(x);
}

std::string MobileNetV2Impl::write_graph(nn::GraphWriter& g, const std::string& input) {
  return write_sequential_graph(g, classifier, g.global_avg_pool_flatten(write_sequential_graph(g, features, input)));
}

std::string MobileNetV1Impl::write_graph(nn::GraphWriter& g, const std::string& input) {
  return g.linear(*fc, g.global_avg_pool_flatten(write_sequential_graph(g, features, input)));
}

}  // namespace limpq::models
