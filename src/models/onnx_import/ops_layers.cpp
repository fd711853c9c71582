// The ops that become limpq layers: Conv -> QuantConv2d, Gemm and MatMul by
// a weight -> QuantLinear (over inputs of any rank), MatMul of two
// activations -> QuantMatMul, BatchNormalization -> SwitchableBatchNorm2d.
// A layer owns its weights as trainable parameters, bound to the node's
// inputs they came from (the exports write them back there).
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include "limpq/nn/batch_norm.h"
#include "limpq/nn/quant_conv.h"
#include "limpq/nn/quant_matmul.h"
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
  auto conv = nn::QuantConv2d(options).ptr();
  ctx.check(conv->weight.sizes() == weight.sizes(), "weight shape does not match the convolution's attributes");
  ctx.add_layer(conv, {{1, "weight"}, {2, "bias"}});
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
  const int64_t out = trans_b ? b.size(0) : b.size(1), in = trans_b ? b.size(1) : b.size(0);
  if (ctx.has_input(2)) {
    const torch::Tensor c = ctx.parameter_input(2, "C (the bias)");
    ctx.check(c.numel() == out || c.numel() == 1, "C must hold one value per output, got " + shape_text(c));
  }
  auto linear = nn::QuantLinear(nn::QuantLinearOptions(in, out).bias(ctx.has_input(2))).ptr();
  ctx.add_layer(linear, {{1, "weight", /*transposed=*/!trans_b}, {2, "bias"}});
  return [linear](const Values& in, const RunState&) {
    TORCH_CHECK(in.at(0).dim() == 2, "Gemm: input A must be 2-d, got ", in.at(0).sizes());
    return Values{linear->forward(in.at(0))};
  };
}

// A x B with B a 2-d weight (an initializer, or computed from one, as
// PyTorch's nn.Linear exports MatMul(x, Transpose(weight))) is a linear
// layer without bias over A's last axis; the bias, when the module has one,
// is the Add after it. A product of two computed values (attention's) is a
// QuantMatMul. Anything else (a constant A, a batched constant B) stays a
// plain matmul.
Kernel convert_matmul(ImportContext& ctx) {
  const auto a = ctx.constant_input(0);
  const auto b = ctx.constant_input(1);
  if (!a && !b) {
    auto product = nn::QuantMatMul().ptr();
    ctx.add_layer(product, {});
    return [product](const Values& in, const RunState&) { return Values{product->forward(in.at(0), in.at(1))}; };
  }
  if (a || b->dim() != 2) {
    return [](const Values& in, const RunState&) { return Values{torch::matmul(in.at(0), in.at(1))}; };
  }
  auto linear = nn::QuantLinear(nn::QuantLinearOptions(b->size(0), b->size(1)).bias(false)).ptr();
  ctx.add_layer(linear, {{1, "weight", /*transposed=*/true}});
  return [linear](const Values& in, const RunState&) { return Values{linear->forward(in.at(0))}; };
}

Kernel convert_batch_norm(ImportContext& ctx) {
  const int64_t channels = ctx.parameter_input(1, "scale").numel();
  // ONNX's momentum weighs the old running value (PyTorch's: the new one).
  const double momentum = 1.0 - ctx.attr_float("momentum", 0.9);
  const double epsilon = ctx.attr_float("epsilon", 1e-5);
  ctx.attr_int("training_mode", 0);  // either way: batch statistics in training, running ones in eval
  auto bn = nn::SwitchableBatchNorm2d(nn::SwitchableBatchNorm2dOptions(channels).eps(epsilon).momentum(momentum)).ptr();
  ctx.add_layer(bn, {{1, "weight"}, {2, "bias"}, {3, "running_mean"}, {4, "running_var"}});
  const size_t outputs = ctx.node().outputs.size();
  return [bn, outputs](const Values& in, const RunState&) {
    Values out(outputs);
    out[0] = bn->forward(in.at(0));
    return out;
  };
}

}  // namespace

void add_layer_ops(std::vector<OpEntry>& r) {
  r.push_back(op("Conv", 11, 3, convert_conv).parameters({1, 2}));
  r.push_back(op("Gemm", 13, 3, convert_gemm).parameters({1, 2}));
  r.push_back(op("MatMul", 13, 2, convert_matmul).parameters({1}));
  // Version 14 added training_mode and the running statistics as outputs;
  // both are read by the one converter.
  r.push_back(op("BatchNormalization", 9, 5, convert_batch_norm).parameters({1, 2, 3, 4}));
}

}  // namespace limpq::models::onnx_import
