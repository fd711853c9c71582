// `limpq export`: a fine-tuned checkpoint in a deployable form, one of
//   packed      bit-packed integer weights (limpq.packed/1, packed.h)
//   onnx        a QDQ graph (onnx.h), optionally run in ONNX Runtime
//   state-dict  a PyTorch state_dict with the learned steps and bits (pytorch.h)
//
//   std::cout << export_model(ExportOptions().checkpoint("ft/checkpoint.pt").format("onnx").out("net.onnx"));
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <string>

namespace limpq::deploy {

struct ExportOptions {
  TORCH_ARG(std::string, checkpoint) = "";
  TORCH_ARG(std::string, format) = "packed";
  TORCH_ARG(std::string, out) = "";
  TORCH_ARG(int64_t, opset) = 13;
  TORCH_ARG(bool, verify) = false;
  TORCH_ARG(int64_t, verify_images) = 1000;

 public:
  template <typename V>
  void visit(V&& v) {
    v("checkpoint", checkpoint_, "checkpoint from limpq finetune (or limpq run's finetune_policy)");
    v("format", format_, "packed | onnx | state-dict");
    v("out", out_, "output file");
    v("opset", opset_, "ONNX opset: 13 (int8 storage) or 21 (INT4 storage for weights of <= 4 bits)");
    v("verify", verify_,
      "ONNX: run the export in ONNX Runtime (onnxruntime-node) on test images and compare with limpq's own forward "
      "pass");
    v("verify_images", verify_images_, "test images for --verify");
  }
};

// Writes the export; returns what it wrote (and, with verify, what the
// runtime gave), one line per fact.
std::string export_model(const ExportOptions& options);

}  // namespace limpq::deploy
