// Element-wise ops: activations, arithmetic with broadcasting, casts, and
// the ops that pass their input through (Identity, Dropout at inference),
// and Einsum.
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <string>

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

Kernel convert_relu(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::relu(x); }); }

Kernel convert_sigmoid(ImportContext&) { return unary([](const torch::Tensor& x) { return torch::sigmoid(x); }); }

Kernel convert_hard_sigmoid(ImportContext& ctx) {
  const double alpha = ctx.attr_float("alpha", 0.2);
  const double beta = ctx.attr_float("beta", 0.5);
  // PyTorch's Hardsigmoid exports alpha = 1/6, beta = 0.5 (ReLU6(x + 3) / 6).
  if (std::abs(alpha - 1.0 / 6.0) < 1e-7 && beta == 0.5) {
    return unary([](const torch::Tensor& x) { return torch::hardsigmoid(x); });
  }
  return unary([alpha, beta](const torch::Tensor& x) { return torch::clamp(x * alpha + beta, 0.0, 1.0); });
}

Kernel convert_hard_swish(ImportContext&) {
  return unary([](const torch::Tensor& x) { return torch::hardswish(x); });
}

// min and max as inputs (opset 11 on); omitted ones leave that side open.
Kernel convert_clip(ImportContext& ctx) {
  const auto lo = ctx.constant_input(1);
  const auto hi = ctx.constant_input(2);
  const bool constant_bounds = (!ctx.has_input(1) || lo) && (!ctx.has_input(2) || hi);
  if (constant_bounds) {
    c10::optional<c10::Scalar> min, max;
    if (lo) min = lo->item();
    if (hi) max = hi->item();
    if (min && max && min->toDouble() == 0.0) {
      const double top = max->toDouble();
      if (top == 6.0) return unary([](const torch::Tensor& x) { return torch::relu6(x); });
    }
    return unary([min, max](const torch::Tensor& x) { return torch::clamp(x, min, max); });
  }
  return [](const Values& in, const RunState&) {
    c10::optional<torch::Tensor> min, max;
    if (in.size() > 1 && in[1].defined()) min = in[1];
    if (in.size() > 2 && in[2].defined()) max = in[2];
    return Values{torch::clamp(in.at(0), min, max)};
  };
}

Kernel convert_add(ImportContext&) { return binary([](const torch::Tensor& a, const torch::Tensor& b) { return a + b; }); }
Kernel convert_sub(ImportContext&) { return binary([](const torch::Tensor& a, const torch::Tensor& b) { return a - b; }); }
Kernel convert_mul(ImportContext&) { return binary([](const torch::Tensor& a, const torch::Tensor& b) { return a * b; }); }

// Integer division truncates in ONNX (shape arithmetic: channels / groups).
Kernel convert_div(ImportContext&) {
  return binary([](const torch::Tensor& a, const torch::Tensor& b) {
    if (c10::isIntegralType(a.scalar_type(), /*includeBool=*/false) &&
        c10::isIntegralType(b.scalar_type(), /*includeBool=*/false)) {
      return torch::div(a, b, "trunc");
    }
    return a / b;
  });
}

Kernel convert_cast(ImportContext& ctx) {
  const int64_t to = ctx.attr_int("to", 0);
  c10::ScalarType type;
  switch (to) {
    case 1: type = torch::kFloat32; break;
    case 11: type = torch::kFloat64; break;
    case 7: type = torch::kInt64; break;
    case 6: type = torch::kInt32; break;
    case 9: type = torch::kBool; break;
    default: ctx.refuse("cast to " + onnx_type_name(static_cast<int32_t>(to)) + " is not handled");
  }
  return unary([type](const torch::Tensor& x) { return x.to(type); });
}

Kernel convert_identity(ImportContext&) { return unary([](const torch::Tensor& x) { return x; }); }

// Dropout keeps the network's own regularisation in training: its ratio (an
// input from opset 12, a constant) drops at that rate; at inference it is
// the identity. Its mask output (in training-mode exports) is left
// undefined: a node that reads it fails the import's probe.
Kernel convert_dropout(ImportContext& ctx) {
  ctx.attr_int("seed", 0);
  double ratio = 0.5;
  if (auto r = ctx.constant_input(1)) ratio = r->item<double>();
  else ctx.check(!ctx.has_input(1), "the ratio must be known at import");
  ctx.check(!ctx.has_input(2) || ctx.constant_input(2).has_value(), "training_mode must be known at import");
  const size_t outputs = ctx.node().outputs.size();
  return [ratio, outputs](const Values& in, const RunState& state) {
    Values out(outputs);
    out[0] = state.training && ratio > 0 ? torch::dropout(in.at(0), ratio, true) : in.at(0);
    return out;
  };
}

// The term of each input, comma-separated, and optionally "->" and the
// output's (numpy's and torch.einsum's notation; "..." for the dimensions a
// term leaves unnamed). Runs as torch::einsum in full precision: MaxViT's
// attention products arrive as Einsum, and are not quantized layers.
Kernel convert_einsum(ImportContext& ctx) {
  const std::string equation = ctx.attr_string("equation", "");
  ctx.check(!equation.empty(), "the equation attribute is required");
  for (char c : equation) {
    ctx.check(std::isalpha(static_cast<unsigned char>(c)) || std::string(",.->").find(c) != std::string::npos ||
                  c == ' ',
              "equation '" + equation + "' may hold letters, ',', '->', '...' and spaces only");
  }
  const std::string inputs = equation.substr(0, equation.find("->"));
  const auto terms = static_cast<size_t>(std::count(inputs.begin(), inputs.end(), ',')) + 1;
  ctx.check(terms == ctx.num_inputs(), "equation '" + equation + "' has " + std::to_string(terms) +
                                           " input terms for the node's " + std::to_string(ctx.num_inputs()) +
                                           " inputs");
  return [equation](const Values& in, const RunState&) { return Values{torch::einsum(equation, in)}; };
}

}  // namespace

// One entry per op: the semantics of these ops did not change between
// opsets 13 and 18 (later versions only added types).
void add_math_ops(std::vector<OpEntry>& r) {
  r.push_back(op("Relu", 13, 1, convert_relu));
  r.push_back(op("Sigmoid", 13, 1, convert_sigmoid));
  r.push_back(op("HardSigmoid", 6, 1, convert_hard_sigmoid));
  r.push_back(op("HardSwish", 14, 1, convert_hard_swish));
  r.push_back(op("Clip", 13, 3, convert_clip));
  r.push_back(op("Add", 13, 2, convert_add));
  r.push_back(op("Sub", 13, 2, convert_sub));
  r.push_back(op("Mul", 13, 2, convert_mul));
  r.push_back(op("Div", 13, 2, convert_div));
  r.push_back(op("Cast", 13, 1, convert_cast));
  r.push_back(op("Identity", 13, 1, convert_identity));
  r.push_back(op("Dropout", 13, 3, convert_dropout));
  r.push_back(op("Einsum", 12, kAnyNumber, convert_einsum));
}

}  // namespace limpq::models::onnx_import
