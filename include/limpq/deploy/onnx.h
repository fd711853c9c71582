// ONNX export of a fine-tuned mixed-precision model in QDQ form, written
// through libonnx's protobuf classes and checked with the ONNX checker:
//
//   weight:      int8 initializer of its b-bit integers (INT4 at opset 21 with
//                int4 storage) -> DequantizeLinear(scale = learned step)
//   activation:  QuantizeLinear(scale = learned step) -> Clip to the b-bit
//                range -> DequantizeLinear       (int8, or uint8 after a ReLU)
//   batch norm:  BatchNormalization with the running statistics (the weights
//                were quantized before batch norm, so folding it would change
//                them)
//   fixed layers at their bits; full-precision layers as plain float ops.
//
// The graph comes from the model's own description (ModelImpl::write_graph):
// input "input" (N x C x H x W, N free), output "logits" (N x classes).
//
//   deploy::OnnxSummary s = deploy::write_onnx("model.onnx", train::load_checkpoint("ft/checkpoint.pt"));
#pragma once

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <string>

#include "limpq/data/datasets.h"
#include "limpq/train/checkpoint.h"

namespace limpq::deploy {

struct OnnxOptions {
  // 13: int8/uint8 storage for every bit-width. 21: weights of <= 4 bits as
  // native INT4 initializers (the ONNX checker of libonnx 1.12 predates
  // opset 21, so that file is checked only by a runtime).
  TORCH_ARG(int64_t, opset) = 13;
};

struct OnnxSummary {
  int64_t opset = 0;
  int64_t file_bytes = 0;
  int64_t nodes = 0;
  int64_t quantized_weights = 0;      // weights exported as integers
  int64_t quantized_activations = 0;  // Q -> Clip -> DQ chains
  int64_t int4_weights = 0;           // of them stored as INT4
  bool checked = false;               // passed the ONNX checker
};

// True when limpq was built with libonnx (LIMPQ_WITH_ONNX).
bool onnx_available();

// Writes the model a fine-tuned (policy) checkpoint holds; errors name what
// cannot be exported (indicator checkpoints with switchable batch norm,
// architectures without a graph description).
OnnxSummary write_onnx(const std::string& path, const train::Checkpoint& checkpoint, const OnnxOptions& options = {});

// limpq's logits against a runtime's on the same images.
struct LogitAgreement {
  double max_abs_diff = 0;  // largest |logit difference|
  // Largest |logit difference| relative to the largest |logit| of its image.
  double max_rel_diff = 0;
  double median_rel_diff = 0;  // of the images' largest relative differences
  double within_tolerance = 0; // percent of images whose logits all agree within `tolerance` (relative)
  double tolerance = 1e-4;
  double agreement = 0;     // percent of images with the same top-1 class
  double runtime_top1 = 0;  // the runtime's accuracy against the labels
  double runtime_seconds = 0;
};

// Compares logits (images x classes) against `labels`.
LogitAgreement compare_logits(const torch::Tensor& ours, const torch::Tensor& theirs, const torch::Tensor& labels);

// limpq's forward pass against ONNX Runtime on the same images.
struct OnnxVerification {
  int64_t images = 0;
  LogitAgreement exact;     // graph optimizations off: the file as written
  LogitAgreement deployed;  // ONNX Runtime's default optimizations
  double limpq_top1 = 0;    // against the labels
  std::string runtime;      // e.g. "onnxruntime-node 1.23.2"
};

// The ONNX Runtime runner script: $LIMPQ_ORT_RUNNER, else
// tools/ort/run_onnx.js beside the source tree the executable was built in
// (<exe>/../tools/ort) or under the current directory; "" when none exists.
std::string find_ort_runner();

// A batch run through ONNX Runtime (node + `runner`, CPU): the file's first
// output, the runtime's name and version, and the seconds the run took.
struct OnnxRuntimeResult {
  torch::Tensor outputs;
  std::string runtime;
  double seconds = 0;
};
// `optimization`: ONNX Runtime's graph optimization level, "all" (what a
// deployment runs), "extended", "basic" or "disabled" (the graph as written).
OnnxRuntimeResult run_onnx_runtime(const std::string& onnx_path, const torch::Tensor& input, const std::string& runner,
                                   const std::string& optimization = "all");

// Runs the first `images` test images of `data` through the checkpoint's
// quantized forward pass and through ONNX Runtime (node + `runner`) on the
// exported `onnx_path`, and compares the logits twice: with the runtime's
// graph optimizations off, which checks that the file computes what limpq
// computes, and at their default level, what a deployment gets. The second
// differs more: ONNX Runtime rewrites some float ops (HardSwish into
// x * HardSigmoid(x), for one), and a last-bit change of an activation
// moves it across a quantizer's rounding boundary now and then, which
// changes that activation by a whole step.
OnnxVerification verify_onnx(const std::string& onnx_path, const train::Checkpoint& checkpoint,
                             const data::DataOptions& data, int64_t images, const std::string& runner);

}  // namespace limpq::deploy
