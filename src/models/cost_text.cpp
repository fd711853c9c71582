// The text of `limpq cost`: kept out of the training core (cost.cpp), which
// builds without fmt.
#include <fmt/core.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <vector>

#include "limpq/models/cost.h"

namespace limpq::models {

std::string CostTable::to_text() const {
  const auto square = [](const std::array<int64_t, 2>& a) {
    return a[0] == a[1] ? std::to_string(a[0]) : fmt::format("{}x{}", a[0], a[1]);
  };
  // The whole output of one image in the layout the network holds it: a
  // conv's 1xCxHxW, a linear layer's 1xTxC or 1xHxWxC (17x1x576 inside
  // torch's MultiheadAttention, tokens first), an attention product's
  // headsxTxT.
  const auto shape_text = [](const std::vector<int64_t>& shape) {
    return shape.empty() ? std::string("-") : fmt::format("{}", fmt::join(shape, "x"));
  };
  size_t width = 5;
  for (const auto& l : layers) width = std::max(width, l.name.size());
  std::string out = fmt::format("{:<{}} {:>6} {:>5} {:>5} {:>3} {:>2} {:>6} {:>12} {:>13} {:>10}\n", "layer", width,
                                "kind", "in", "out", "k", "s", "groups", "out shape", "MACs", "params");
  for (const auto& l : layers) {
    std::string notes;
    if (!l.searchable) notes = "fixed";
    if (l.signed_input) notes += notes.empty() ? "signed input" : ", signed input";
    out += fmt::format("{:<{}} {:>6} {:>5} {:>5} {:>3} {:>2} {:>6} {:>12} {:>13} {:>10} {}\n", l.name, width, l.kind,
                       l.in_channels, l.out_channels, square(l.kernel_size), square(l.stride), l.groups,
                       shape_text(l.output_shape), l.macs, l.params, notes);
  }
  const auto& shape = input_shape;
  out += fmt::format("\n{} at {}x{}x{}: {:.4f} G MACs, {:.4f} M parameters (quantizable layers, biases not counted)\n",
                     model, shape[0], shape[1], shape[2], macs / 1e9, params / 1e6);
  out += fmt::format("full precision (32/32): {:.3f} GBitOps, {:.3f} MB weights\n", full_precision.fp_bitops / 1e9,
                     full_precision.fp_size_bits / 8e6);
  for (auto it = uniform.rbegin(); it != uniform.rend(); ++it) {
    out += fmt::format("uniform W{0}A{0} (fixed layers at {1} bits): {2:.3f} GBitOps, {3:.3f} MB weights\n", it->first,
                       fixed_bits, it->second.bitops / 1e9, it->second.size_bits / 8e6);
  }
  return out;
}

}  // namespace limpq::models
