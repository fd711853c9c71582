// The ops with weights: each becomes a limpq layer that owns them as
// trainable parameters (Conv -> QuantConv2d, Gemm and MatMul by an
// initializer -> QuantLinear, BatchNormalization -> SwitchableBatchNorm2d).
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include "ops.h"

namespace limpq::models::onnx_import {
namespace {

std::string shape_text(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

Kernel convert_conv(ImportContext& ctx) {
  const torch::Tensor weight = ctx.parameter_input(1, "the weight");
  ctx.check(weight.dim() == 4, "only 2-d convolutions are imported (4-d weight), got weight " + shape_text(weight));
  const torch::Tensor bias = ctx.has_input(2) ? ctx.parameter_input(2, "the bias") : torch::Tensor();
  const std::string auto_pad = ctx.attr_string("auto_pad", "NOTSET");
  ctx.check(auto_pad == "NOTSET" || auto_pad == "VALID",
            "auto_pad " + auto_pad + " is not handled (export with explicit pads)");
  const auto kernel = ctx.attr_ints("kernel_shape", {weight.size(2), weight.size(3)});
  ctx.check(kernel == std::vector<int64_t>{weight.size(2), weight.size(3)},
            "kernel_shape does not match the weight " + shape_text(weight));
  const auto strides = ctx.attr_ints("strides", {1, 1});
  const auto dilations = ctx.attr_ints("dilations", {1, 1});
  const auto pads = ctx.attr_ints("pads", {0, 0, 0, 0});
  const int64_t groups = ctx.attr_int("group", 1);
  ctx.check(strides.size() == 2 && dilations.size() == 2 && pads.size() == 4,
            "strides, dilations and pads must have 2, 2 and 4 values");
  ctx.check(groups >= 1 && weight.size(0) % groups == 0, "group " + std::to_string(groups) +
                                                              " must divide the output channels");
  auto options = nn::QuantConv2dOptions(weight.size(1) * groups, weight.size(0), {kernel[0], kernel[1]})
                     .stride({strides[0], strides[1]})
                     .dilation({dilations[0], dilations[1]})
                     .padding({pads[0], pads[1]})
                     .groups(groups)
                     .bias(bias.defined());
  if (pads[2] != pads[0] || pads[3] != pads[1]) options.padding_end(torch::ExpandingArray<2>({pads[2], pads[3]}));
  auto conv = ctx.add_conv(options, weight, bias).ptr();
  return [conv](const Values& in, const RunState&) { return Values{conv->forward(in.at(0))}; };
}

// Y = A * B' + C with B an initializer: a linear layer of weight B' (out x in).
Kernel convert_gemm(ImportContext& ctx) {
  ctx.check(ctx.attr_int("transA", 0) == 0, "transA = 1 is not handled");
  ctx.check(ctx.attr_float("alpha", 1.0) == 1.0 && ctx.attr_float("beta", 1.0) == 1.0,
            "alpha and beta other than 1 are not handled");
  const bool trans_b = ctx.attr_int("transB", 0) != 0;
  const torch::Tensor b = ctx.parameter_input(1, "B (the weight)");
  ctx.check(b.dim() == 2, "B must be 2-d, got " + shape_text(b));
  const torch::Tensor weight = trans_b ? b : b.t();
  torch::Tensor bias;
  if (ctx.has_input(2)) {
    bias = ctx.parameter_input(2, "C (the bias)");
    ctx.check(bias.numel() == weight.size(0) || bias.numel() == 1,
              "C must hold one value per output, got " + shape_text(bias));
    bias = bias.flatten().expand({weight.size(0)}).contiguous();
  }
  auto linear = ctx.add_linear(weight.contiguous(), bias, !trans_b).ptr();
  return [linear](const Values& in, const RunState&) {
    TORCH_CHECK(in.at(0).dim() == 2, "Gemm: input A must be 2-d, got ", in.at(0).sizes());
    return Values{linear->forward(in.at(0))};
  };
}

// A x B with B an initializer is a linear layer without bias; a product of
// two computed values stays a plain matmul.
Kernel convert_matmul(ImportContext& ctx) {
  const auto b = ctx.constant_input(1);
  if (!b.has_value() || b->dim() != 2 || ctx.constant_input(0).has_value()) {
    return [](const Values& in, const RunState&) { return Values{torch::matmul(in.at(0), in.at(1))}; };
  }
  const torch::Tensor weight = ctx.parameter_input(1, "B (the weight)").t().contiguous();
  auto linear = ctx.add_linear(weight, torch::Tensor(), /*stored_transposed=*/true).ptr();
  return [linear](const Values& in, const RunState&) { return Values{linear->forward(in.at(0))}; };
}

Kernel convert_batch_norm(ImportContext& ctx) {
  const torch::Tensor scale = ctx.parameter_input(1, "scale");
  const torch::Tensor bias = ctx.parameter_input(2, "B");
  const torch::Tensor mean = ctx.parameter_input(3, "input_mean");
  const torch::Tensor var = ctx.parameter_input(4, "input_var");
  const int64_t channels = scale.numel();
  for (const auto* t : {&bias, &mean, &var}) {
    ctx.check(t->numel() == channels, "scale, B, mean and var must have the same size");
  }
  // ONNX's momentum weighs the old running value (PyTorch's: the new one).
  const double momentum = 1.0 - ctx.attr_float("momentum", 0.9);
  const double epsilon = ctx.attr_float("epsilon", 1e-5);
  ctx.attr_int("training_mode", 0);  // either way: batch statistics in training, running ones in eval
  auto bn = ctx.add_batch_norm(nn::SwitchableBatchNorm2dOptions(channels).eps(epsilon).momentum(momentum), scale, bias,
                               mean, var)
                .ptr();
  const size_t outputs = ctx.node().outputs.size();
  return [bn, outputs](const Values& in, const RunState&) {
    Values out(outputs);
    out[0] = bn->forward(in.at(0));
    return out;
  };
}

}  // namespace

void add_layer_ops(std::vector<OpEntry>& r) {
  r.push_back({"Conv", 11, convert_conv, true});
  r.push_back({"Gemm", 13, convert_gemm, true});
  r.push_back({"MatMul", 13, convert_matmul, true});
  // Version 14 added training_mode and the running statistics as outputs;
  // both are read by the one converter.
  r.push_back({"BatchNormalization", 9, convert_batch_norm, true});
}

}  // namespace limpq::models::onnx_import
