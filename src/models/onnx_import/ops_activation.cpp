// Activations and element-wise functions beyond the CNN zoo's: the ones
// transformers use (Erf for GELU, Tanh, Softmax, Sqrt and Pow of the
// LayerNorm that opsets 13 to 16 spell out) and the ones people write by
// hand (LeakyRelu, PRelu with its trainable slope, Elu, Selu, Softplus,
// Mish), plus the comparisons and selections of attention masks.
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <cmath>

#include "ops.h"

namespace limpq::models::onnx_import {
namespace {

template <typename F>
Kernel unary(F f) {
  return [f](const Values& in, const RunState&) { return Values{f(in.at(0))}; };
}

template <typename F>
Kernel binary(F f) {
  return [f](const Values& in, const RunState&) { return Values{f(in.at(0), in.at(1))}; };
}

Kernel convert_erf(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::erf(x); }); }
Kernel convert_tanh(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::tanh(x); }); }
Kernel convert_sqrt(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::sqrt(x); }); }
Kernel convert_neg(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::neg(x); }); }
Kernel convert_exp(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::exp(x); }); }
Kernel convert_abs(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::abs(x); }); }
Kernel convert_not(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::logical_not(x); }); }

// x ^ y, broadcast; the type of x (ONNX's Pow keeps the base's type).
Kernel convert_pow(ImportContext&) {
  return binary([](const torch::Tensor& x, const torch::Tensor& y) { return torch::pow(x, y).to(x.scalar_type()); });
}

Kernel convert_equal(ImportContext&) {
  return binary([](const torch::Tensor& a, const torch::Tensor& b) { return torch::eq(a, b); });
}

// fmod = 0 takes the divisor's sign (Python's %), fmod = 1 the dividend's (C's).
Kernel convert_mod(ImportContext& ctx) {
  const bool fmod = ctx.attr_int("fmod", 0) != 0;
  return binary([fmod](const torch::Tensor& a, const torch::Tensor& b) {
    return fmod ? torch::fmod(a, b) : torch::remainder(a, b);
  });
}

Kernel convert_where(ImportContext&) {
  return [](const Values& in, const RunState&) {
    return Values{torch::where(in.at(0).to(torch::kBool), in.at(1), in.at(2))};
  };
}

// Opset 13 on: one axis (earlier opsets flattened to 2-d first).
Kernel convert_softmax(ImportContext& ctx) {
  const int64_t axis = ctx.attr_int("axis", -1);
  return unary([axis](const torch::Tensor& x) { return torch::softmax(x, normalize_axis(axis, x.dim())); });
}

Kernel convert_leaky_relu(ImportContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 0.01);
  return unary([alpha](const torch::Tensor& x) { return torch::leaky_relu(x, alpha); });
}

// The slope is an input (a parameter when it is the module's, so it trains)
// broadcast against x.
Kernel convert_prelu(ImportContext&) {
  return binary([](const torch::Tensor& x, const torch::Tensor& slope) { return torch::where(x >= 0, x, x * slope); });
}

Kernel convert_elu(ImportContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 1.0);
  return unary([alpha](const torch::Tensor& x) { return torch::elu(x, alpha); });
}

Kernel convert_selu(ImportContext& ctx) {
  // ONNX's defaults are the rounded constants of the SELU paper.
  const double alpha = ctx.attr_float("alpha", 1.67326319217681884765625);
  const double gamma = ctx.attr_float("gamma", 1.05070102214813232421875);
  return unary([alpha, gamma](const torch::Tensor& x) { return gamma * torch::elu(x, alpha); });
}

// log(exp(x) + 1); torch's threshold (x above 20 returned as is) differs
// from it by less than float rounding.
Kernel convert_softplus(ImportContext&) {
  return unary([](const torch::Tensor& x) { return torch::softplus(x); });
}

// x * tanh(softplus(x)) (an op of opset 18; PyTorch's exporter spells it out
// before).
Kernel convert_mish(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::mish(x); }); }

}  // namespace

// Their semantics are unchanged from the version named up to opset 18
// (later versions added types only).
void add_activation_ops(std::vector<OpEntry>& r) {
  r.push_back(op("Erf", 13, 1, convert_erf));
  r.push_back(op("Tanh", 13, 1, convert_tanh));
  r.push_back(op("Sqrt", 13, 1, convert_sqrt));
  r.push_back(op("Neg", 13, 1, convert_neg));
  r.push_back(op("Exp", 13, 1, convert_exp));
  r.push_back(op("Abs", 13, 1, convert_abs));
  r.push_back(op("Not", 1, 1, convert_not));
  r.push_back(op("Pow", 13, 2, convert_pow));
  r.push_back(op("Equal", 13, 2, convert_equal));
  r.push_back(op("Mod", 13, 2, convert_mod));
  r.push_back(op("Where", 9, 3, convert_where));
  r.push_back(op("Softmax", 13, 1, convert_softmax));
  r.push_back(op("LeakyRelu", 6, 1, convert_leaky_relu));
  r.push_back(op("PRelu", 9, 2, convert_prelu));
  r.push_back(op("Elu", 6, 1, convert_elu));
  r.push_back(op("Selu", 6, 1, convert_selu));
  r.push_back(op("Softplus", 1, 1, convert_softplus));
  r.push_back(op("Mish", 18, 1, convert_mish));
}

}  // namespace limpq::models::onnx_import
