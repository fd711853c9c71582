// Normalisations other than batch norm: LayerNormalization (one op from
// opset 17; before it PyTorch spells it out with ReduceMean, Sub, Pow, Sqrt
// and Div), InstanceNormalization (how PyTorch exports GroupNorm before
// opset 18) and GroupNormalization (opset 18). Their scale and bias are
// inputs: the module's parameters when the file names them, so they train.
// They run in full precision: no quantizer sits on their inputs.
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include "ops.h"

namespace limpq::models::onnx_import {
namespace {

// Normalises over the axes from `axis` on; Scale and B broadcast against the
// normalised shape. The optional Mean and InvStdDev outputs are computed
// when the graph reads them.
Kernel convert_layer_norm(ImportContext& ctx) {
  const int64_t axis = ctx.attr_int("axis", -1);
  const double epsilon = ctx.attr_float("epsilon", 1e-5);
  ctx.check(ctx.attr_int("stash_type", 1) == 1, "stash_type other than 1 (float) is not handled");
  const size_t outputs = ctx.node().outputs.size();
  return [axis, epsilon, outputs](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    const int64_t a = normalize_axis(axis, x.dim());
    const std::vector<int64_t> normalized(x.sizes().begin() + a, x.sizes().end());
    const torch::Tensor& scale = in.at(1);
    const torch::Tensor bias = in.size() > 2 ? in[2] : torch::Tensor();
    const bool affine_fits = scale.sizes() == c10::IntArrayRef(normalized) &&
                             (!bias.defined() || bias.sizes() == c10::IntArrayRef(normalized));
    auto [y, mean, rstd] = torch::native_layer_norm(x, normalized, affine_fits ? scale : torch::Tensor(),
                                                    affine_fits ? bias : torch::Tensor(), epsilon);
    if (!affine_fits) {
      y = y * scale;
      if (bias.defined()) y = y + bias;
    }
    Values out(outputs);
    out[0] = y;
    if (outputs > 1) out[1] = mean;
    if (outputs > 2) out[2] = rstd;
    return out;
  };
}

// Per sample and channel over the spatial axes, then scale and B per channel.
Kernel convert_instance_norm(ImportContext& ctx) {
  const double epsilon = ctx.attr_float("epsilon", 1e-5);
  return [epsilon](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    TORCH_CHECK(x.dim() >= 3, "InstanceNormalization: input must be N x C x ..., got ", x.sizes());
    return Values{torch::instance_norm(x, in.at(1), in.at(2), {}, {}, /*use_input_stats=*/true, 0.0, epsilon,
                                       /*cudnn_enabled=*/false)};
  };
}

// Opset 18: scale and bias hold one value per group (opset 21 changed them
// to one per channel).
Kernel convert_group_norm(ImportContext& ctx) {
  const int64_t groups = ctx.attr_int("num_groups", 0);
  const double epsilon = ctx.attr_float("epsilon", 1e-5);
  ctx.check(groups > 0, "num_groups must be positive, got " + std::to_string(groups));
  return [groups, epsilon](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    TORCH_CHECK(x.dim() >= 3 && x.size(1) % groups == 0, "GroupNormalization: ", x.size(1),
                " channels do not split into ", groups, " groups");
    const int64_t per_group = x.size(1) / groups;
    const torch::Tensor scale = in.at(1).reshape({-1}).repeat_interleave(per_group);
    const torch::Tensor bias = in.at(2).reshape({-1}).repeat_interleave(per_group);
    return Values{torch::group_norm(x, groups, scale, bias, epsilon, /*cudnn_enabled=*/false)};
  };
}

}  // namespace

void add_norm_ops(std::vector<OpEntry>& r) {
  r.push_back(op("LayerNormalization", 17, 3, convert_layer_norm));
  r.push_back(op("InstanceNormalization", 6, 3, convert_instance_norm));
  r.push_back(op("GroupNormalization", 18, 3, convert_group_norm));
}

}  // namespace limpq::models::onnx_import
