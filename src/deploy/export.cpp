#include "limpq/deploy/export.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>

#include "limpq/deploy/onnx.h"
#include "limpq/deploy/packed.h"
#include "limpq/deploy/pytorch.h"
#include "limpq/train/checkpoint.h"
#include "limpq/train/evaluate.h"

namespace limpq::deploy {
namespace {

std::string export_state_dict(const std::string& out, const train::Checkpoint& ckpt) {
  const auto s = write_pytorch_state_dict(out, ckpt);
  return fmt::format("{}: {} bytes, {} tensors (torch.load), learned steps and bits of {} quantized layers\n", out,
                     s.file_bytes, s.tensors, s.quantized_layers);
}

std::string export_packed(const std::string& out, const train::Checkpoint& ckpt) {
  const auto s = write_packed(out, ckpt);
  return fmt::format("{}: {} bytes ({} packed integer weights, {} weight scales, {} other float32 state, {} header)\n"
                     "cost model weight size: {} bytes ({:.1f}x smaller than 32-bit weights)\n",
                     out, s.file_bytes, s.packed_weight_bytes, s.scale_bytes, s.other_bytes, s.header_bytes,
                     s.cost_model_weight_bytes, s.fp_to_cost_model_ratio);
}

std::string agreement_text(const LogitAgreement& a) {
  return fmt::format("logits within {:g} relative on {:.1f}% of the images (median {:.3g}, max {:.3g} of the image's "
                     "largest logit; max absolute {:.3g}), top-1 agreement {:.2f}%, ONNX Runtime's top-1 {:.2f}% "
                     "({:.2f} s)",
                     a.tolerance, a.within_tolerance, a.median_rel_diff, a.max_rel_diff, a.max_abs_diff, a.agreement,
                     a.runtime_top1, a.runtime_seconds);
}

std::string verification_text(const OnnxVerification& v) {
  return fmt::format("verified in {} on {} test images (limpq's top-1 {:.2f}%):\n"
                     "  the graph as written (optimizations off): {}\n"
                     "  as deployed (default optimizations, which rewrite some float ops and so move an activation "
                     "across a quantizer's rounding boundary now and then): {}\n",
                     v.runtime, v.images, v.limpq_top1, agreement_text(v.exact), agreement_text(v.deployed));
}

std::string export_onnx(const ExportOptions& options, const train::Checkpoint& ckpt) {
  const std::string& out = options.out();
  const auto s = write_onnx(out, ckpt, OnnxOptions().opset(options.opset()));
  std::string text =
      fmt::format("{}: {} bytes, opset {}, {} nodes; {} integer weights ({} as INT4), {} quantized activations; {}\n",
                  out, s.file_bytes, s.opset, s.nodes, s.quantized_weights, s.int4_weights, s.quantized_activations,
                  s.checked ? "passed the ONNX checker" : "not checked (libonnx predates this opset)");
  if (!options.verify()) return text;
  const auto v =
      verify_onnx(out, ckpt, train::data_options_of(ckpt), options.verify_images(), find_ort_runner());
  return text + verification_text(v);
}

}  // namespace

std::string export_model(const ExportOptions& options) {
  const std::string& format = options.format();
  TORCH_CHECK(format == "packed" || format == "onnx" || format == "state-dict", "export: format '", format,
              "' is not supported (supported: packed, onnx, state-dict)");
  TORCH_CHECK(!options.checkpoint().empty(), "export: give the checkpoint to export (--checkpoint FILE)");
  TORCH_CHECK(!options.out().empty(), "export: give the file to write (--out FILE)");
  TORCH_CHECK(!options.verify() || format == "onnx", "export: --verify checks ONNX exports (--format onnx)");
  const auto ckpt = train::load_checkpoint(options.checkpoint());
  if (format == "state-dict") return export_state_dict(options.out(), ckpt);
  if (format == "packed") return export_packed(options.out(), ckpt);
  return export_onnx(options, ckpt);
}

}  // namespace limpq::deploy
