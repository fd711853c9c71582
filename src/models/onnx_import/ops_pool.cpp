// Pooling and reductions over 2-d feature maps.
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <limits>

#include "ops.h"

namespace limpq::models::onnx_import {
namespace {

struct Window {
  std::vector<int64_t> kernel, strides, pads, dilations;
  bool ceil_mode = false;
  bool symmetric() const { return pads[0] == pads[2] && pads[1] == pads[3]; }
  // torch's padding order for constant_pad_nd: {left, right, top, bottom}.
  std::vector<int64_t> torch_pads() const { return {pads[1], pads[3], pads[0], pads[2]}; }
};

Window read_window(ImportContext& ctx, bool has_dilations) {
  const std::string auto_pad = ctx.attr_string("auto_pad", "NOTSET");
  ctx.check(auto_pad == "NOTSET" || auto_pad == "VALID",
            "auto_pad " + auto_pad + " is not handled (export with explicit pads)");
  Window w;
  w.kernel = ctx.attr_ints("kernel_shape", {});
  ctx.check(w.kernel.size() == 2, "only 2-d pooling is imported (kernel_shape with 2 values)");
  w.strides = ctx.attr_ints("strides", {1, 1});
  w.pads = ctx.attr_ints("pads", {0, 0, 0, 0});
  w.dilations = has_dilations ? ctx.attr_ints("dilations", {1, 1}) : std::vector<int64_t>{1, 1};
  w.ceil_mode = ctx.attr_int("ceil_mode", 0) != 0;
  ctx.check(w.strides.size() == 2 && w.pads.size() == 4 && w.dilations.size() == 2,
            "strides, pads and dilations must have 2, 4 and 2 values");
  return w;
}

Kernel convert_max_pool(ImportContext& ctx) {
  Window w = read_window(ctx, /*has_dilations=*/true);
  ctx.check(ctx.attr_int("storage_order", 0) == 0, "storage_order = 1 is not handled");
  ctx.check(ctx.node().outputs.size() < 2 || ctx.node().outputs[1].empty(), "the Indices output is not handled");
  return [w](const Values& in, const RunState&) {
    torch::Tensor x = in.at(0);
    std::vector<int64_t> pads = {w.pads[0], w.pads[1]};
    if (!w.symmetric()) {
      x = torch::constant_pad_nd(x, w.torch_pads(), -std::numeric_limits<float>::infinity());
      pads = {0, 0};
    }
    return Values{torch::max_pool2d(x, w.kernel, w.strides, pads, w.dilations, w.ceil_mode)};
  };
}

Kernel convert_average_pool(ImportContext& ctx) {
  Window w = read_window(ctx, /*has_dilations=*/false);
  const bool count_include_pad = ctx.attr_int("count_include_pad", 0) != 0;
  ctx.check(w.symmetric() || count_include_pad, "asymmetric pads need count_include_pad = 1");
  return [w, count_include_pad](const Values& in, const RunState&) {
    torch::Tensor x = in.at(0);
    std::vector<int64_t> pads = {w.pads[0], w.pads[1]};
    if (!w.symmetric()) {
      x = torch::constant_pad_nd(x, w.torch_pads(), 0.0);
      pads = {0, 0};
    }
    return Values{torch::avg_pool2d(x, w.kernel, w.strides, pads, w.ceil_mode, count_include_pad)};
  };
}

Kernel convert_global_average_pool(ImportContext&) {
  return [](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    TORCH_CHECK(x.dim() == 4, "GlobalAveragePool: expected N x C x H x W, got ", x.sizes());
    return Values{torch::adaptive_avg_pool2d(x, {1, 1})};
  };
}

Kernel convert_global_max_pool(ImportContext&) {
  return [](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    TORCH_CHECK(x.dim() == 4, "GlobalMaxPool: expected N x C x H x W, got ", x.sizes());
    return Values{torch::amax(x, {2, 3}, /*keepdim=*/true)};
  };
}

Kernel reduce_mean(std::vector<int64_t> axes, bool keepdims, bool noop_with_empty_axes) {
  return [axes, keepdims, noop_with_empty_axes](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    if (axes.empty() && noop_with_empty_axes) return Values{x};
    std::vector<int64_t> dims;
    for (int64_t a : axes) dims.push_back(normalize_axis(a, x.dim()));
    if (dims.empty()) {
      for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
    }
    return Values{x.mean(dims, keepdims)};
  };
}

// Up to opset 17 the axes are an attribute; none means every axis.
Kernel convert_reduce_mean(ImportContext& ctx) {
  return reduce_mean(ctx.attr_ints("axes", {}), ctx.attr_int("keepdims", 1) != 0, false);
}

// Opset 18: the axes are an optional input, known at import.
Kernel convert_reduce_mean_18(ImportContext& ctx) {
  std::vector<int64_t> axes;
  if (ctx.has_input(1)) axes = ctx.constant_ints(1, "axes");
  return reduce_mean(axes, ctx.attr_int("keepdims", 1) != 0, ctx.attr_int("noop_with_empty_axes", 0) != 0);
}

}  // namespace

void add_pool_ops(std::vector<OpEntry>& r) {
  r.push_back(op("MaxPool", 12, 1, convert_max_pool));
  r.push_back(op("AveragePool", 11, 1, convert_average_pool));
  r.push_back(op("GlobalAveragePool", 1, 1, convert_global_average_pool));
  r.push_back(op("GlobalMaxPool", 1, 1, convert_global_max_pool));
  r.push_back(op("ReduceMean", 13, 1, convert_reduce_mean).until(17));
  r.push_back(op("ReduceMean", 18, 2, convert_reduce_mean_18));
}

}  // namespace limpq::models::onnx_import
