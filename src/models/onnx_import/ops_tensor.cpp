// Ops that move, reshape, select or create tensors. Their integer inputs
// (shapes, axes, indices) are read at import when they are constants, and at
// run time when the graph computes them (Shape -> Gather -> Concat ->
// Reshape, as PyTorch exports x.view(x.size(0), ...)).
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <limits>

#include "ops.h"

namespace limpq::models::onnx_import {
namespace {

// The largest tensor a shape computed by the graph may ask for.
constexpr int64_t kMaxElements = int64_t{1} << 28;

Kernel convert_constant(ImportContext& ctx) {
  torch::Tensor value;
  if (ctx.has_attribute("value")) {
    value = ctx.attr_tensor("value");
  } else if (ctx.has_attribute("value_float")) {
    value = torch::tensor(ctx.attr_float("value_float", 0.0), torch::kFloat32);
  } else if (ctx.has_attribute("value_int")) {
    value = torch::tensor(ctx.attr_int("value_int", 0), torch::kInt64);
  } else if (ctx.has_attribute("value_ints")) {
    value = torch::tensor(ctx.attr_ints("value_ints", {}), torch::kInt64);
  } else {
    ctx.refuse("only value, value_float, value_int and value_ints are handled");
  }
  return [value](const Values&, const RunState&) { return Values{value}; };
}

// A tensor of the shape its input names, filled with `value` (float 0 by
// default); PyTorch's F.pad exports its pads through one.
Kernel convert_constant_of_shape(ImportContext& ctx) {
  torch::Tensor value = ctx.has_attribute("value") ? ctx.attr_tensor("value") : torch::zeros({1}, torch::kFloat32);
  ctx.check(value.numel() == 1, "value must hold one element");
  value = value.flatten();
  return [value](const Values& in, const RunState&) {
    const std::vector<int64_t> shape = to_ints(in.at(0));
    int64_t count = 1;
    for (int64_t d : shape) {
      TORCH_CHECK(d >= 0 && d <= kMaxElements / std::max<int64_t>(count, 1), "ConstantOfShape: shape ",
                  c10::IntArrayRef(shape), " is invalid or larger than ", kMaxElements, " elements");
      count *= std::max<int64_t>(d, 1);
    }
    return Values{value.expand(shape).contiguous()};
  };
}

Kernel convert_concat(ImportContext& ctx) {
  const int64_t axis = ctx.attr_int("axis", 0);
  return [axis](const Values& in, const RunState&) {
    return Values{torch::cat(in, normalize_axis(axis, in.at(0).dim()))};
  };
}

Kernel convert_flatten(ImportContext& ctx) {
  const int64_t axis = ctx.attr_int("axis", 1);
  return [axis](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    const int64_t a = axis < 0 ? axis + x.dim() : axis;
    TORCH_CHECK(a >= 0 && a <= x.dim(), "Flatten: axis ", axis, " is out of range for ", x.sizes());
    int64_t outer = 1;
    for (int64_t d = 0; d < a; ++d) outer *= x.size(d);
    return Values{x.reshape({outer, -1})};
  };
}

// A shape entry 0 copies the input's size there (allowzero = 0). A file
// whose input batch size is fixed (exported without dynamic_axes) names
// that size as a constant; it is replaced by the batch size of the pass
// where the input's first dimension is the batch.
Kernel convert_reshape(ImportContext& ctx) {
  ctx.check(ctx.attr_int("allowzero", 0) == 0, "allowzero = 1 is not handled");
  return [](const Values& in, const RunState& state) {
    const torch::Tensor& x = in.at(0);
    std::vector<int64_t> shape = to_ints(in.at(1));
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] == 0 && static_cast<int64_t>(d) < x.dim()) shape[d] = x.size(d);
    }
    if (!shape.empty() && state.export_batch > 0 && state.batch != state.export_batch &&
        shape[0] == state.export_batch && x.dim() > 0 && x.size(0) == state.batch) {
      shape[0] = state.batch;
    }
    return Values{x.reshape(shape)};
  };
}

Kernel convert_transpose(ImportContext& ctx) {
  const std::vector<int64_t> perm = ctx.attr_ints("perm", {});
  return [perm](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    if (!perm.empty()) return Values{x.permute(perm)};
    std::vector<int64_t> reversed(x.dim());
    for (int64_t d = 0; d < x.dim(); ++d) reversed[d] = x.dim() - 1 - d;
    return Values{x.permute(reversed)};
  };
}

Kernel split(int64_t axis, int64_t parts, std::vector<int64_t> sizes) {
  return [axis, parts, sizes](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    const int64_t a = normalize_axis(axis, x.dim());
    if (!sizes.empty()) return x.split_with_sizes(sizes, a);
    TORCH_CHECK(x.size(a) % parts == 0, "Split: ", x.size(a), " is not divisible into ", parts, " equal parts");
    return x.split(x.size(a) / parts, a);
  };
}

// Opset 13: the sizes as an optional input; without it, equal parts.
Kernel convert_split(ImportContext& ctx) {
  std::vector<int64_t> sizes;
  if (ctx.has_input(1)) sizes = ctx.constant_ints(1, "split");
  return split(ctx.attr_int("axis", 0), static_cast<int64_t>(ctx.node().outputs.size()), sizes);
}

// Opset 18: num_outputs (equal parts, the last one smaller when the size
// does not divide) instead of one output per part.
Kernel convert_split_18(ImportContext& ctx) {
  const int64_t axis = ctx.attr_int("axis", 0);
  std::vector<int64_t> sizes;
  if (ctx.has_input(1)) sizes = ctx.constant_ints(1, "split");
  const int64_t parts = ctx.attr_int("num_outputs", static_cast<int64_t>(ctx.node().outputs.size()));
  ctx.check(!sizes.empty() || parts == static_cast<int64_t>(ctx.node().outputs.size()),
            "num_outputs must equal the number of outputs");
  if (!sizes.empty() || !ctx.has_attribute("num_outputs")) return split(axis, parts, sizes);
  return [axis, parts](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    const int64_t a = normalize_axis(axis, x.dim());
    const int64_t chunk = (x.size(a) + parts - 1) / parts;
    std::vector<int64_t> sizes(parts, chunk);
    sizes.back() = x.size(a) - chunk * (parts - 1);
    TORCH_CHECK(sizes.back() >= 0, "Split: ", x.size(a), " does not split into ", parts, " parts of ", chunk);
    return x.split_with_sizes(sizes, a);
  };
}

// starts, ends, axes and steps as inputs; out-of-range starts and ends
// (INT64_MAX for "to the end") clamp to the dimension as ONNX specifies:
// [0, size] for positive steps, [-1, size - 1] for negative ones.
torch::Tensor slice_axis(const torch::Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step) {
  TORCH_CHECK(step != 0, "Slice: step must not be 0");
  const int64_t size = x.size(axis);
  auto resolve = [size](int64_t v, int64_t lo, int64_t hi) { return std::clamp<int64_t>(v < 0 ? v + size : v, lo, hi); };
  if (step > 0) {
    const int64_t begin = resolve(start, 0, size);
    return x.slice(axis, begin, std::max(begin, resolve(end, 0, size)), step);
  }
  const int64_t begin = resolve(start, 0, size - 1);
  const int64_t stop = end < -size ? -1 : resolve(end, -1, size - 1);
  if (begin <= stop) return x.slice(axis, 0, 0);
  return x.index_select(axis, torch::arange(begin, stop, step, torch::TensorOptions(torch::kInt64).device(x.device())));
}

Kernel convert_slice(ImportContext& ctx) {
  return [](const Values& in, const RunState&) {
    torch::Tensor x = in.at(0);
    const std::vector<int64_t> starts = to_ints(in.at(1));
    const std::vector<int64_t> ends = to_ints(in.at(2));
    std::vector<int64_t> axes, steps;
    if (in.size() > 3 && in[3].defined()) axes = to_ints(in[3]);
    if (in.size() > 4 && in[4].defined()) steps = to_ints(in[4]);
    TORCH_CHECK(starts.size() == ends.size(), "Slice: starts and ends differ in length");
    for (size_t i = 0; i < starts.size(); ++i) {
      const int64_t axis = normalize_axis(axes.empty() ? static_cast<int64_t>(i) : axes.at(i), x.dim());
      x = slice_axis(x, axis, starts[i], ends[i], steps.empty() ? 1 : steps.at(i));
    }
    return Values{x};
  };
}

Kernel convert_gather(ImportContext& ctx) {
  const int64_t axis = ctx.attr_int("axis", 0);
  return [axis](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    const int64_t a = normalize_axis(axis, x.dim());
    torch::Tensor indices = in.at(1).to(torch::kInt64);
    indices = torch::where(indices < 0, indices + x.size(a), indices).to(x.device());
    // out.shape = x.shape[:a] + indices.shape + x.shape[a+1:]
    torch::Tensor flat = x.index_select(a, indices.flatten());
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().begin() + a);
    shape.insert(shape.end(), indices.sizes().begin(), indices.sizes().end());
    shape.insert(shape.end(), x.sizes().begin() + a + 1, x.sizes().end());
    return Values{flat.reshape(shape)};
  };
}

Kernel convert_shape(ImportContext& ctx) {
  const int64_t start = ctx.attr_int("start", 0);
  const int64_t end = ctx.attr_int("end", std::numeric_limits<int64_t>::max());
  return [start, end](const Values& in, const RunState&) {
    const auto sizes = in.at(0).sizes();
    const int64_t rank = static_cast<int64_t>(sizes.size());
    auto clamp_index = [rank](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + rank : v, 0, rank); };
    const int64_t b = clamp_index(start), e = std::max(b, clamp_index(end));
    return Values{torch::tensor(std::vector<int64_t>(sizes.begin() + b, sizes.begin() + e), torch::kInt64)};
  };
}

Kernel convert_unsqueeze(ImportContext& ctx) {
  std::vector<int64_t> axes = ctx.constant_ints(1, "axes");
  return [axes](const Values& in, const RunState&) {
    torch::Tensor x = in.at(0);
    const int64_t rank = x.dim() + static_cast<int64_t>(axes.size());
    std::vector<int64_t> sorted;
    for (int64_t a : axes) sorted.push_back(normalize_axis(a, rank));
    std::sort(sorted.begin(), sorted.end());
    for (int64_t a : sorted) x = x.unsqueeze(a);
    return Values{x};
  };
}

Kernel convert_squeeze(ImportContext& ctx) {
  std::vector<int64_t> axes;
  if (ctx.has_input(1)) axes = ctx.constant_ints(1, "axes");
  return [axes](const Values& in, const RunState&) {
    torch::Tensor x = in.at(0);
    if (axes.empty()) return Values{x.squeeze()};
    std::vector<int64_t> sorted;
    for (int64_t a : axes) sorted.push_back(normalize_axis(a, x.dim()));
    std::sort(sorted.rbegin(), sorted.rend());
    for (int64_t a : sorted) {
      TORCH_CHECK(x.size(a) == 1, "Squeeze: axis ", a, " has size ", x.size(a), ", expected 1");
      x = x.squeeze(a);
    }
    return Values{x};
  };
}

// pads = {x1_begin, x2_begin, ..., x1_end, x2_end, ...} over every axis
// (or, from opset 18, over the axes input); modes constant, reflect and
// edge. The pads may be computed by the graph (Swin pads its feature map to
// a multiple of the window from its shape); the value and axes are constants.
Kernel convert_pad(ImportContext& ctx) {
  const std::string mode = ctx.attr_string("mode", "constant");
  ctx.check(mode == "constant" || mode == "reflect" || mode == "edge", "mode " + mode + " is not handled");
  const std::optional<torch::Tensor> constant_pads = ctx.constant_input(1);
  double value = 0.0;
  if (auto v = ctx.constant_input(2)) value = v->item<double>();
  else ctx.check(!ctx.has_input(2), "constant_value must be known at import");
  std::vector<int64_t> axes;
  if (ctx.has_input(3)) axes = ctx.constant_ints(3, "axes");
  if (constant_pads) {
    ctx.check(axes.empty() || constant_pads->numel() == 2 * static_cast<int64_t>(axes.size()),
              "pads must hold two values per axis");
  }
  return [constant_pads, axes, mode, value](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    const int64_t rank = x.dim();
    const std::vector<int64_t> given = to_ints(constant_pads ? *constant_pads : in.at(1));
    std::vector<int64_t> pads = given;
    if (!axes.empty()) {  // spread over every axis
      TORCH_CHECK(given.size() == 2 * axes.size(), "Pad: ", given.size(), " pads for ", axes.size(), " axes");
      pads.assign(2 * rank, 0);
      const int64_t n = static_cast<int64_t>(axes.size());
      for (int64_t i = 0; i < n; ++i) {
        const int64_t a = normalize_axis(axes[i], rank);
        pads[a] = given[i];
        pads[a + rank] = given[i + n];
      }
    }
    TORCH_CHECK(static_cast<int64_t>(pads.size()) == 2 * rank, "Pad: ", pads.size(), " pads for a ", rank,
                "-d tensor");
    for (int64_t p : pads) TORCH_CHECK(p >= -kMaxElements && p <= kMaxElements, "Pad: pad ", p, " is out of range");
    int64_t count = 1;
    for (int64_t d = 0; d < rank; ++d) {
      const int64_t size = x.size(d) + pads[d] + pads[d + rank];
      TORCH_CHECK(size >= 0 && size <= kMaxElements / std::max<int64_t>(count, 1), "Pad: pads ",
                  c10::IntArrayRef(pads), " of a ", x.sizes(), " tensor give a negative size or more than ",
                  kMaxElements, " elements");
      count *= std::max<int64_t>(size, 1);
    }
    // torch's order: last axis first, (begin, end) pairs.
    std::vector<int64_t> torch_pads;
    int64_t outer = 0;  // leading axes without padding are left out
    while (outer < rank && pads[outer] == 0 && pads[outer + rank] == 0) ++outer;
    for (int64_t d = rank - 1; d >= outer; --d) {
      torch_pads.push_back(pads[d]);
      torch_pads.push_back(pads[d + rank]);
    }
    if (torch_pads.empty()) return Values{x};
    if (mode == "constant") return Values{torch::constant_pad_nd(x, torch_pads, value)};
    namespace F = torch::nn::functional;
    auto options = F::PadFuncOptions(torch_pads);
    if (mode == "reflect") {
      options.mode(torch::kReflect);
    } else {
      options.mode(torch::kReplicate);
    }
    return Values{F::pad(x, options)};
  };
}

// Bidirectional broadcast of the input to the shape (an input).
Kernel convert_expand(ImportContext&) {
  return [](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    const std::vector<int64_t> shape = to_ints(in.at(1));
    for (int64_t d : shape) TORCH_CHECK(d >= 0 && d <= kMaxElements, "Expand: shape ", c10::IntArrayRef(shape), " is invalid");
    const std::vector<int64_t> target = at::infer_size(x.sizes(), shape);
    int64_t count = 1;
    for (int64_t d : target) {
      TORCH_CHECK(d <= kMaxElements / std::max<int64_t>(count, 1), "Expand: shape ", c10::IntArrayRef(target),
                  " is larger than ", kMaxElements, " elements");
      count *= std::max<int64_t>(d, 1);
    }
    return Values{x.expand(target)};
  };
}

// start, limit, delta: scalars of one type.
Kernel convert_range(ImportContext&) {
  return [](const Values& in, const RunState&) {
    const torch::Tensor &start = in.at(0), &limit = in.at(1), &delta = in.at(2);
    TORCH_CHECK(delta.item<double>() != 0, "Range: delta must not be 0");
    const double count = std::ceil((limit.item<double>() - start.item<double>()) / delta.item<double>());
    TORCH_CHECK(count <= static_cast<double>(kMaxElements), "Range: ", count, " elements is more than ", kMaxElements);
    return Values{torch::arange(start.item(), limit.item(), delta.item(), start.options())};
  };
}

// data with updates written at the index tuples (the last axis of indices
// indexes data's first axes); reduction none.
Kernel convert_scatter_nd(ImportContext& ctx) {
  ctx.check(ctx.attr_string("reduction", "none") == "none", "reduction other than none is not handled");
  return [](const Values& in, const RunState&) {
    const torch::Tensor& data = in.at(0);
    const torch::Tensor indices = in.at(1).to(torch::kInt64);
    const int64_t k = indices.size(-1);
    TORCH_CHECK(k >= 1 && k <= data.dim(), "ScatterND: index tuples of ", k, " values for a ", data.dim(), "-d tensor");
    c10::List<c10::optional<at::Tensor>> index;
    for (int64_t d = 0; d < k; ++d) {
      torch::Tensor i = indices.select(-1, d);
      index.push_back(torch::where(i < 0, i + data.size(d), i).to(data.device()));
    }
    return Values{data.index_put(index, in.at(2))};
  };
}

// 2-d resizing as F.interpolate exports it: mode nearest with the
// asymmetric transformation and floor rounding, or mode linear with
// half_pixel / pytorch_half_pixel (align_corners=False) or align_corners.
Kernel convert_resize(ImportContext& ctx) {
  const std::string mode = ctx.attr_string("mode", "nearest");
  const std::string transform = ctx.attr_string("coordinate_transformation_mode", "half_pixel");
  const std::string nearest_mode = ctx.attr_string("nearest_mode", "round_prefer_floor");
  ctx.attr_float("cubic_coeff_a", -0.75);  // cubic only
  ctx.check(ctx.attr_int("exclude_outside", 0) == 0, "exclude_outside = 1 is not handled");
  ctx.attr_float("extrapolation_value", 0.0);  // tf_crop_and_resize only
  ctx.check(ctx.attr_int("antialias", 0) == 0, "antialias = 1 is not handled");
  ctx.check(!ctx.has_attribute("axes") || ctx.attr_ints("axes", {}) == std::vector<int64_t>{0, 1, 2, 3},
            "axes other than all four are not handled");
  ctx.check(ctx.attr_string("keep_aspect_ratio_policy", "stretch") == "stretch",
            "keep_aspect_ratio_policy other than stretch is not handled");
  const bool nearest = mode == "nearest" && transform == "asymmetric" && nearest_mode == "floor";
  const bool linear = mode == "linear" && (transform == "half_pixel" || transform == "pytorch_half_pixel" ||
                                           transform == "align_corners");
  ctx.check(nearest || linear, "mode " + mode + " with coordinate_transformation_mode " + transform +
                                   (mode == "nearest" ? " and nearest_mode " + nearest_mode : std::string()) +
                                   " is not handled (limpq imports F.interpolate's nearest and bilinear)");
  if (ctx.has_input(1)) {
    const auto roi = ctx.constant_input(1);
    ctx.check(roi && roi->numel() == 0, "roi is not handled (tf_crop_and_resize)");
  }
  // Scales or sizes: constants, or computed by the graph (F.interpolate
  // with a size exports Concat(Shape(x)[:2], size)).
  const auto scales = ctx.constant_input(2);
  const bool by_scales = scales ? scales->numel() > 0 : ctx.has_input(2);
  ctx.check(by_scales || ctx.has_input(3), "needs scales or sizes");
  const bool align_corners = transform == "align_corners";
  return [nearest, align_corners, by_scales](const Values& in, const RunState&) {
    const torch::Tensor& x = in.at(0);
    TORCH_CHECK(x.dim() == 4, "Resize: input must be 4-d, got ", x.sizes());
    std::vector<int64_t> out;
    c10::optional<double> sh, sw;
    if (by_scales) {
      const torch::Tensor s = in.at(2).to(torch::kCPU, torch::kFloat64).flatten().contiguous();
      TORCH_CHECK(s.numel() == 4 && s[0].item<double>() == 1 && s[1].item<double>() == 1,
                  "Resize: scales must resize the last two axes only, got ", s);
      sh = s[2].item<double>();
      sw = s[3].item<double>();
      out = {static_cast<int64_t>(std::floor(x.size(2) * *sh)), static_cast<int64_t>(std::floor(x.size(3) * *sw))};
    } else {
      const std::vector<int64_t> sizes = to_ints(in.at(3));
      TORCH_CHECK(sizes.size() == 4 && sizes[0] == x.size(0) && sizes[1] == x.size(1),
                  "Resize: sizes must keep the batch and channels, got ", c10::IntArrayRef(sizes), " for ", x.sizes());
      out = {sizes[2], sizes[3]};
    }
    TORCH_CHECK(out[0] > 0 && out[1] > 0 && out[0] * out[1] <= kMaxElements, "Resize: output size ",
                c10::IntArrayRef(out), " is invalid");
    if (nearest) return Values{torch::upsample_nearest2d(x, out, sh, sw)};
    return Values{torch::upsample_bilinear2d(x, out, align_corners, align_corners ? c10::nullopt : sh,
                                             align_corners ? c10::nullopt : sw)};
  };
}

}  // namespace

// Opset 13 moved axes and split sizes to inputs (Squeeze, Unsqueeze, Split);
// opset 18 gave Split num_outputs and Pad an axes input, each a converter of
// its own range; Resize's opset 18 attributes are read by its one converter.
void add_tensor_ops(std::vector<OpEntry>& r) {
  r.push_back(op("Constant", 13, 0, convert_constant));
  r.push_back(op("ConstantOfShape", 9, 1, convert_constant_of_shape));
  r.push_back(op("Concat", 13, kAnyNumber, convert_concat));
  r.push_back(op("Flatten", 13, 1, convert_flatten));
  r.push_back(op("Reshape", 13, 2, convert_reshape));
  r.push_back(op("Transpose", 13, 1, convert_transpose));
  r.push_back(op("Split", 13, 2, convert_split).until(17));
  r.push_back(op("Split", 18, 2, convert_split_18));
  r.push_back(op("Slice", 13, 5, convert_slice));
  r.push_back(op("Gather", 13, 2, convert_gather));
  r.push_back(op("Shape", 13, 1, convert_shape));
  r.push_back(op("Unsqueeze", 13, 2, convert_unsqueeze));
  r.push_back(op("Squeeze", 13, 2, convert_squeeze));
  r.push_back(op("Pad", 13, 3, convert_pad).until(17));
  r.push_back(op("Pad", 18, 4, convert_pad));
  r.push_back(op("Expand", 13, 2, convert_expand));
  r.push_back(op("Range", 11, 3, convert_range));
  r.push_back(op("ScatterND", 13, 3, convert_scatter_nd));
  r.push_back(op("Resize", 13, 4, convert_resize));
}

}  // namespace limpq::models::onnx_import
