#include "limpq/models/resnet.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

namespace limpq::models {
namespace {

nn::QuantConv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return nn::QuantConv2d(nn::QuantConv2dOptions(in, out, 3).stride(stride).padding(1));
}

nn::QuantConv2d conv1x1(int64_t in, int64_t out, int64_t stride) {
  return nn::QuantConv2d(nn::QuantConv2dOptions(in, out, 1).stride(stride));
}

torch::nn::Sequential projection(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Sequential(conv1x1(in, out, stride), nn::SwitchableBatchNorm2d(out));
}

template <typename Block>
torch::nn::Sequential make_stage(int64_t& in_planes, int64_t planes, int64_t blocks, int64_t stride) {
  torch::nn::Sequential stage;
  for (int64_t i = 0; i < blocks; ++i) {
    stage->push_back(Block(in_planes, planes, i == 0 ? stride : 1));
    in_planes = planes * Block::Impl::kExpansion;
  }
  return stage;
}

torch::Tensor stage_to_preact(const torch::nn::Sequential& stage, torch::Tensor t, bool input_is_preact) {
  for (const auto& child : stage->children()) {
    auto* block = child->as<ResidualBlockImpl>();
    TORCH_CHECK(block != nullptr, "ResNet: unexpected module in a stage: ", child->name());
    t = input_is_preact ? block->forward_preact(t) : block->forward_to_preact(t);
    input_is_preact = true;
  }
  return t;
}

}  // namespace

void init_conv_bn(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& module : model.modules(/*include_self=*/false)) {
    if (auto* conv = module->as<nn::QuantConv2dImpl>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* bn = module->as<nn::SwitchableBatchNorm2dImpl>()) {
      bn->reset_parameters();
    }
  }
}

torch::Tensor ResidualBlockImpl::forward(torch::Tensor x) { return torch::relu(forward_to_preact(x)); }

torch::Tensor ResidualBlockImpl::forward_to_preact(const torch::Tensor& x) { return residual(x, conv1(x)); }

torch::Tensor ResidualBlockImpl::forward_preact(const torch::Tensor& z) {
  auto [x, conv1_out] = conv1->relu_and_forward(z);
  return residual(x, conv1_out);
}

BasicBlockImpl::BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride) {
  conv1 = register_module("conv1", conv3x3(in_planes, planes, stride));
  bn1 = register_module("bn1", nn::SwitchableBatchNorm2d(planes));
  conv2 = register_module("conv2", conv3x3(planes, planes, 1));
  bn2 = register_module("bn2", nn::SwitchableBatchNorm2d(planes));
  if (stride != 1 || in_planes != planes) {
    downsample = register_module("downsample", projection(in_planes, planes, stride));
  }
}

torch::Tensor BasicBlockImpl::residual(const torch::Tensor& x, const torch::Tensor& conv1_out) {
  torch::Tensor out = bn2(conv2->forward_after_relu(bn1(conv1_out)));
  out += downsample ? downsample->forward(x) : x;
  return out;
}

std::string BasicBlockImpl::write_graph(nn::GraphWriter& g, const std::string& x) {
  std::string out = g.relu(g.batch_norm(*bn1, g.conv(*conv1, x)));
  out = g.batch_norm(*bn2, g.conv(*conv2, out));
  return g.relu(g.add(out, downsample ? write_sequential_graph(g, downsample, x) : x));
}

BottleneckImpl::BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride) {
  const int64_t out_planes = planes * kExpansion;
  conv1 = register_module("conv1", conv1x1(in_planes, planes, 1));
  bn1 = register_module("bn1", nn::SwitchableBatchNorm2d(planes));
  conv2 = register_module("conv2", conv3x3(planes, planes, stride));
  bn2 = register_module("bn2", nn::SwitchableBatchNorm2d(planes));
  conv3 = register_module("conv3", conv1x1(planes, out_planes, 1));
  bn3 = register_module("bn3", nn::SwitchableBatchNorm2d(out_planes));
  if (stride != 1 || in_planes != out_planes) {
    downsample = register_module("downsample", projection(in_planes, out_planes, stride));
  }
}

torch::Tensor BottleneckImpl::residual(const torch::Tensor& x, const torch::Tensor& conv1_out) {
  torch::Tensor out = conv2->forward_after_relu(bn1(conv1_out));
  out = bn3(conv3->forward_after_relu(bn2(out)));
  out += downsample ? downsample->forward(x) : x;
  return out;
}

std::string BottleneckImpl::write_graph(nn::GraphWriter& g, const std::string& x) {
  std::string out = g.relu(g.batch_norm(*bn1, g.conv(*conv1, x)));
  out = g.relu(g.batch_norm(*bn2, g.conv(*conv2, out)));
  out = g.batch_norm(*bn3, g.conv(*conv3, out));
  return g.relu(g.add(out, downsample ? write_sequential_graph(g, downsample, x) : x));
}

CifarResNetImpl::CifarResNetImpl(int64_t depth, int64_t in_channels, int64_t num_classes)
    : ModelImpl("resnet" + std::to_string(depth)) {
  TORCH_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "CifarResNet: depth must be 6n+2 (20, 32, 56, ...), got ",
              depth);
  const int64_t n = (depth - 2) / 6;
  conv1 = register_module("conv1", conv3x3(in_channels, 16, 1));
  bn1 = register_module("bn1", nn::SwitchableBatchNorm2d(16));
  int64_t in_planes = 16;
  layer1 = register_module("layer1", make_stage<BasicBlock>(in_planes, 16, n, 1));
  layer2 = register_module("layer2", make_stage<BasicBlock>(in_planes, 32, n, 2));
  layer3 = register_module("layer3", make_stage<BasicBlock>(in_planes, 64, n, 2));
  fc = register_module("fc", nn::QuantLinear(64, num_classes));
  init_conv_bn(*this);
}

torch::Tensor CifarResNetImpl::forward(torch::Tensor x) {
  torch::Tensor z = bn1(conv1(x));
  for (const auto* stage : {&layer1, &layer2, &layer3}) z = stage_to_preact(*stage, z, /*input_is_preact=*/true);
  x = torch::adaptive_avg_pool2d(torch::relu(z), {1, 1}).flatten(1);
  return fc(x);
}

std::string CifarResNetImpl::write_graph(nn::GraphWriter& g, const std::string& input) {
  std::string x = g.relu(g.batch_norm(*bn1, g.conv(*conv1, input)));
  for (const auto* stage : {&layer1, &layer2, &layer3}) x = write_sequential_graph(g, *stage, x);
  return g.linear(*fc, g.global_avg_pool_flatten(x));
}

ResNetImpl::ResNetImpl(int64_t depth, int64_t in_channels, int64_t num_classes)
    : ModelImpl("resnet" + std::to_string(depth)) {
  TORCH_CHECK(depth == 18 || depth == 50, "ResNet: depth must be 18 or 50, got ", depth);
  conv1 = register_module("conv1", nn::QuantConv2d(nn::QuantConv2dOptions(in_channels, 64, 7).stride(2).padding(3)));
  bn1 = register_module("bn1", nn::SwitchableBatchNorm2d(64));
  int64_t in_planes = 64;
  int64_t final_planes = 0;
  if (depth == 18) {
    layer1 = register_module("layer1", make_stage<BasicBlock>(in_planes, 64, 2, 1));
    layer2 = register_module("layer2", make_stage<BasicBlock>(in_planes, 128, 2, 2));
    layer3 = register_module("layer3", make_stage<BasicBlock>(in_planes, 256, 2, 2));
    layer4 = register_module("layer4", make_stage<BasicBlock>(in_planes, 512, 2, 2));
  } else {
    layer1 = register_module("layer1", make_stage<Bottleneck>(in_planes, 64, 3, 1));
    layer2 = register_module("layer2", make_stage<Bottleneck>(in_planes, 128, 4, 2));
    layer3 = register_module("layer3", make_stage<Bottleneck>(in_planes, 256, 6, 2));
    layer4 = register_module("layer4", make_stage<Bottleneck>(in_planes, 512, 3, 2));
  }
  final_planes = in_planes;
  fc = register_module("fc", nn::QuantLinear(final_planes, num_classes));
  init_conv_bn(*this);
}

torch::Tensor ResNetImpl::forward(torch::Tensor x) {
  x = torch::relu(bn1(conv1(x)));
  x = torch::max_pool2d(x, 3, 2, 1);
  torch::Tensor z = stage_to_preact(layer1, x, /*input_is_preact=*/false);
  for (const auto* stage : {&layer2, &layer3, &layer4}) z = stage_to_preact(*stage, z, /*input_is_preact=*/true);
  x = torch::adaptive_avg_pool2d(torch::relu(z), {1, 1}).flatten(1);
  return fc(x);
}

std::string ResNetImpl::write_graph(nn::GraphWriter& g, const std::string& input) {
  std::string x = g.relu(g.batch_norm(*bn1, g.conv(*conv1, input)));
  x = g.max_pool(x, 3, 2, 1);
  for (const auto* stage : {&layer1, &layer2, &layer3, &layer4}) x = write_sequential_graph(g, *stage, x);
  return g.linear(*fc, g.global_avg_pool_flatten(x));
}

}  // namespace limpq::models
