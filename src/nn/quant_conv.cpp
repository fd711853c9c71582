#include "limpq/nn/quant_conv.h"

#include <c10/util/Exception.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>

#include <array>
#include <cmath>

#include "limpq/nn/trace.h"

namespace limpq::nn {

namespace {

bool all_at_least(torch::ExpandingArray<2> a, int64_t lo) { return (*a)[0] >= lo && (*a)[1] >= lo; }

}  // namespace

bool QuantConv2dOptions::asymmetric_padding() const {
  return padding_end_.has_value() && **padding_end_ != *padding_;
}

QuantConv2dImpl::QuantConv2dImpl(QuantConv2dOptions options_) : options(options_) { reset(); }

void QuantConv2dImpl::reset() {
  TORCH_CHECK(options.in_channels() > 0 && options.out_channels() > 0 && all_at_least(options.kernel_size(), 1),
              "QuantConv2d: channels and kernel_size must be positive, got in=", options.in_channels(),
              " out=", options.out_channels(), " kernel=", options.kernel_size());
  TORCH_CHECK(all_at_least(options.stride(), 1) && all_at_least(options.dilation(), 1) &&
                  all_at_least(options.padding(), 0) &&
                  (!options.padding_end() || all_at_least(*options.padding_end(), 0)),
              "QuantConv2d: stride and dilation must be positive and padding non-negative, got stride=",
              options.stride(), " dilation=", options.dilation(), " padding=", options.padding());
  TORCH_CHECK(options.groups() > 0 && options.in_channels() % options.groups() == 0 &&
                  options.out_channels() % options.groups() == 0,
              "QuantConv2d: groups=", options.groups(), " must divide in_channels=", options.in_channels(),
              " and out_channels=", options.out_channels());
  weight = register_parameter(
      "weight", torch::empty({options.out_channels(), options.in_channels() / options.groups(),
                              (*options.kernel_size())[0], (*options.kernel_size())[1]}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.out_channels()}));
  } else {
    bias = torch::Tensor();
  }
  reset_parameters();
}

void QuantConv2dImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const auto fan_in = weight.size(1) * weight.size(2) * weight.size(3);
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

LayerShape QuantConv2dImpl::shape(const TraceEvent& call, int64_t batch) const {
  LayerShape s;
  s.in_channels = options.in_channels();
  s.out_channels = options.out_channels();
  s.groups = options.groups();
  s.kernel_size = *options.kernel_size();
  s.stride = *options.stride();
  s.output_shape = one_image(call.output_shape, batch);
  s.params = weight.numel();
  // C_in / G * k_h * k_w per output element.
  s.macs = per_image(call.output_shape, batch) * (s.params / s.out_channels);
  return s;
}

LayerShape QuantLinearImpl::shape(const TraceEvent& call, int64_t batch) const {
  LayerShape s;
  s.in_channels = options.in_features();
  s.out_channels = options.out_features();
  s.output_shape = one_image(call.output_shape, batch);
  s.params = weight.numel();
  s.macs = per_image(call.output_shape, batch) * s.in_channels;
  return s;
}

torch::Tensor QuantConv2dImpl::forward(const torch::Tensor& input) {
  LayerTracer* tracer = LayerTracer::active();
  // A tracer that keeps inputs gets this layer's own branch of the input, so
  // that derivatives by it cover this layer's use alone (not a shortcut's).
  const torch::Tensor own = tracer && tracer->keeps_inputs() ? input.view_as(input) : input;
  torch::Tensor out = convolve(quantized() ? input_quantizer(own) : own);
  if (tracer) tracer->record(this, own, out);
  return out;
}

torch::Tensor QuantConv2dImpl::forward_after_relu(const torch::Tensor& pre_activation) {
  // A tracer records the layer's actual input (its sign decides the input
  // quantizer's range), so it sees the ReLU's output.
  if (!quantized() || LayerTracer::active()) return forward(torch::relu(pre_activation));
  return convolve(input_quantizer->forward_after_relu(pre_activation));
}

std::pair<torch::Tensor, torch::Tensor> QuantConv2dImpl::relu_and_forward(const torch::Tensor& pre_activation) {
  if (!quantized() || LayerTracer::active()) {
    torch::Tensor x = torch::relu(pre_activation);
    return {x, forward(x)};
  }
  auto [x, xq] = input_quantizer->relu_and_forward(pre_activation);
  return {std::move(x), convolve(xq)};
}

torch::Tensor QuantConv2dImpl::convolve(const torch::Tensor& x) {
  const torch::Tensor w = quantized() ? weight_quantizer(weight) : weight;
  if (options.asymmetric_padding()) {
    // Zero is on every quantizer's grid, so padding the quantized input
    // equals quantizing the padded one.
    const auto& begin = *options.padding();
    const auto& end = **options.padding_end();
    const torch::Tensor padded = torch::constant_pad_nd(x, {begin[1], end[1], begin[0], end[0]});
    const std::array<int64_t, 2> no_padding{0, 0};
    return torch::conv2d(padded, w, bias, at::IntArrayRef(*options.stride()), no_padding,
                         at::IntArrayRef(*options.dilation()), options.groups());
  }
  return torch::conv2d(x, w, bias, at::IntArrayRef(*options.stride()), at::IntArrayRef(*options.padding()),
                       at::IntArrayRef(*options.dilation()), options.groups());
}

void QuantConv2dImpl::pretty_print(std::ostream& stream) const {
  stream << "limpq::nn::QuantConv2d(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride()
         << ", padding=" << options.padding();
  if (options.padding_end()) stream << ", padding_end=" << *options.padding_end();
  stream << ", dilation=" << options.dilation() << ", groups=" << options.groups()
         << ", bias=" << std::boolalpha << options.bias() << ")";
}

QuantLinearImpl::QuantLinearImpl(QuantLinearOptions options_) : options(options_) { reset(); }

void QuantLinearImpl::reset() {
  TORCH_CHECK(options.in_features() > 0 && options.out_features() > 0,
              "QuantLinear: features must be positive, got in=", options.in_features(),
              " out=", options.out_features());
  weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.out_features()}));
  } else {
    bias = torch::Tensor();
  }
  reset_parameters();
}

void QuantLinearImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(options.in_features()));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor QuantLinearImpl::forward(const torch::Tensor& input) {
  LayerTracer* tracer = LayerTracer::active();
  // A tracer that keeps inputs gets this layer's own branch of the input, so
  // that derivatives by it cover this layer's use alone (not a shortcut's).
  const torch::Tensor own = tracer && tracer->keeps_inputs() ? input.view_as(input) : input;
  const torch::Tensor x = quantized() ? input_quantizer(own) : own;
  const torch::Tensor w = quantized() ? weight_quantizer(weight) : weight;
  torch::Tensor out = torch::linear(x, w, bias);
  if (tracer) tracer->record(this, own, out);
  return out;
}

void QuantLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "limpq::nn::QuantLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << std::boolalpha << options.bias()
         << ")";
}

}  // namespace limpq::nn
