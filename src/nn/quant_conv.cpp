#include "limpq/nn/quant_conv.h"

#include <c10/util/Exception.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>

#include <cmath>

namespace limpq::nn {

QuantConv2dImpl::QuantConv2dImpl(QuantConv2dOptions options_) : options(options_) { reset(); }

void QuantConv2dImpl::reset() {
  TORCH_CHECK(options.in_channels() > 0 && options.out_channels() > 0 && options.kernel_size() > 0,
              "QuantConv2d: channels and kernel_size must be positive, got in=", options.in_channels(),
              " out=", options.out_channels(), " kernel=", options.kernel_size());
  TORCH_CHECK(options.groups() > 0 && options.in_channels() % options.groups() == 0 &&
                  options.out_channels() % options.groups() == 0,
              "QuantConv2d: groups=", options.groups(), " must divide in_channels=", options.in_channels(),
              " and out_channels=", options.out_channels());
  weight = register_parameter(
      "weight", torch::empty({options.out_channels(), options.in_channels() / options.groups(),
                              options.kernel_size(), options.kernel_size()}));
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

torch::Tensor QuantConv2dImpl::forward(const torch::Tensor& input) {
  return torch::conv2d(input, weight, bias, options.stride(), options.padding(), /*dilation=*/1,
                       options.groups());
}

void QuantConv2dImpl::pretty_print(std::ostream& stream) const {
  stream << "limpq::nn::QuantConv2d(" << options.in_channels() << ", " << options.out_channels()
         << ", kernel_size=" << options.kernel_size() << ", stride=" << options.stride()
         << ", padding=" << options.padding() << ", groups=" << options.groups()
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
  return torch::linear(input, weight, bias);
}

void QuantLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "limpq::nn::QuantLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << std::boolalpha << options.bias()
         << ")";
}

}  // namespace limpq::nn
