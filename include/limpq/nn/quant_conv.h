// Convolution and linear layers that quantize their input activation and
// their weight, each with its own LsqQuantizer, at a (weight bits, activation
// bits) pair set at run time.
//
// Parameter names match torch::nn / torchvision (`weight`, `bias`), so a
// torchvision state_dict loads into a limpq model one to one. Until
// quantizers are attached (QuantLayer, quant_layer.h) these layers are
// exactly a full-precision Conv2d / Linear; the quantizers then appear as
// the submodules `weight_quantizer` and `input_quantizer`.
//
//   QuantConv2d conv(QuantConv2dOptions(64, 128, 3).stride(2).padding(1));
//   conv->attach_quantizers(LsqQuantizerOptions({4}).kind(QuantizerKind::kWeight),
//                           LsqQuantizerOptions({4}).is_signed(false));
//   conv->set_bits(4, 4);
//   auto y = conv(x);
#pragma once

#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <utility>

#include "limpq/nn/quant_layer.h"
#include "limpq/quant/lsq_quantizer.h"

namespace limpq::nn {

// Sizes per spatial axis (height, width); a single number means both, as in
// torch::nn::Conv2dOptions. `padding` is symmetric; `padding_end`, when set,
// makes it asymmetric: `padding` pads the top and left, `padding_end` the
// bottom and right (ONNX's pads = {top, left, bottom, right}).
struct QuantConv2dOptions {
  QuantConv2dOptions(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<2> kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(torch::ExpandingArray<2>, kernel_size);
  TORCH_ARG(torch::ExpandingArray<2>, stride) = 1;
  TORCH_ARG(torch::ExpandingArray<2>, padding) = 0;
  TORCH_ARG(c10::optional<torch::ExpandingArray<2>>, padding_end) = c10::nullopt;
  TORCH_ARG(torch::ExpandingArray<2>, dilation) = 1;
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(bool, bias) = false;

 public:
  // True when the bottom/right padding differs from the top/left.
  bool asymmetric_padding() const;
};

class QuantConv2dImpl : public torch::nn::Cloneable<QuantConv2dImpl>, public QuantLayer {
 public:
  explicit QuantConv2dImpl(QuantConv2dOptions options);
  void reset() override;
  // torch::nn::Conv2d's default initialisation (kaiming-uniform, a = sqrt(5)).
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& input);
  // forward(relu(pre_activation)), the ReLU folded into the input quantizer
  // when it can be (LsqQuantizer::forward_after_relu). For a ReLU whose
  // output feeds only this layer, as inside a residual block.
  torch::Tensor forward_after_relu(const torch::Tensor& pre_activation);
  // {relu(pre_activation), forward(relu(pre_activation))}, the ReLU folded
  // likewise and its output kept for other uses (LsqQuantizer::relu_and_forward):
  // for a residual block's output, which feeds the next block's first
  // convolution and its shortcut.
  std::pair<torch::Tensor, torch::Tensor> relu_and_forward(const torch::Tensor& pre_activation);
  void pretty_print(std::ostream& stream) const override;

  const char* kind() const override { return "conv"; }
  bool has_weight() const override { return true; }
  torch::Tensor weight_tensor() const override { return weight; }
  LayerShape shape(const TraceEvent& call, int64_t batch) const override;

  QuantConv2dOptions options;
  torch::Tensor weight;
  torch::Tensor bias;  // undefined when options.bias() is false

 protected:
  torch::nn::Module& as_module() override { return *this; }

 private:
  // The convolution of an (already quantized) input with the quantized weight.
  torch::Tensor convolve(const torch::Tensor& x);
};
TORCH_MODULE(QuantConv2d);

struct QuantLinearOptions {
  QuantLinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
};

// Over the last axis of an input of any rank ([N, in], or [N, tokens, in]
// for a transformer's projections), as torch::nn::Linear.
class QuantLinearImpl : public torch::nn::Cloneable<QuantLinearImpl>, public QuantLayer {
 public:
  explicit QuantLinearImpl(QuantLinearOptions options);
  QuantLinearImpl(int64_t in_features, int64_t out_features)
      : QuantLinearImpl(QuantLinearOptions(in_features, out_features)) {}
  void reset() override;
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& input);
  void pretty_print(std::ostream& stream) const override;

  const char* kind() const override { return "linear"; }
  bool has_weight() const override { return true; }
  torch::Tensor weight_tensor() const override { return weight; }
  LayerShape shape(const TraceEvent& call, int64_t batch) const override;

  QuantLinearOptions options;
  torch::Tensor weight;
  torch::Tensor bias;

 protected:
  torch::nn::Module& as_module() override { return *this; }
};
TORCH_MODULE(QuantLinear);

}  // namespace limpq::nn
