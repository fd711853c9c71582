// Networks imported from ONNX files, trained and quantized like limpq's own.
//
// import_onnx converts an ONNX image classifier (as torch.onnx.export writes
// it, opsets 13 to 17) into a limpq Model: every Conv becomes a QuantConv2d,
// every Gemm (and MatMul by a weight) a QuantLinear, every
// BatchNormalization a SwitchableBatchNorm2d, each holding the file's
// weights as trainable parameters, so that the network trains, learns its
// indicators and is fine-tuned with no per-model code. The other nodes run
// as torch ops in the file's order. Layers are named by the PyTorch module
// path the export recorded (`layer1.0.conv1`, from the weight `layer1.0.conv1.weight`
// or, where the export folded batch norm into synthetic weight names, from
// the node's scope `/layer1/layer1.0/conv1/Conv`), so a policy applies to the
// user's own PyTorch module by name.
//
//   auto model = limpq::models::import_onnx("resnet18.onnx");   // refuses what it cannot run
//   model->input_shape();        // {3, 32, 32}, from the file
//   model->num_classes();        // 10
//   torch::Tensor logits = model->forward(images);
//
// The file is read whole and checked before anything else: an op or an
// attribute value the importer does not handle, a second input, a symbolic
// spatial size or a file that is not ONNX is one error naming the file, the
// node, its op type and the opset (docs/onnx.md lists the ops).
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "limpq/models/model.h"

namespace limpq::models {

namespace onnx_import {
struct Program;
}  // namespace onnx_import

class OnnxModelImpl : public ModelImpl {
 public:
  // Built by import_onnx.
  OnnxModelImpl(std::string source, std::string checksum);
  ~OnnxModelImpl() override;

  torch::Tensor forward(torch::Tensor x) override;

  const std::string& source() const { return source_; }
  // CRC-32 of the file's bytes ("crc32:xxxxxxxx"): checkpoints record it.
  const std::string& checksum() const { return checksum_; }
  // C, H, W of the network's input.
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  int64_t num_classes() const { return num_classes_; }
  int64_t opset() const { return opset_; }
  // Linear layers whose weight the file stores as in x out (MatMul, Gemm
  // with transB = 0); limpq holds every weight out x in.
  const std::set<std::string>& transposed_weights() const { return transposed_weights_; }
  // Nodes the importer ran at import because every input was a constant.
  int64_t folded_nodes() const { return folded_nodes_; }
  // The layer each weighted node became, keyed by the node's first output
  // (unique in a graph): how export finds the node of a layer.
  const std::map<std::string, std::string>& node_layers() const { return node_layers_; }

 private:
  friend class OnnxModelBuilder;
  std::string source_, checksum_;
  std::vector<int64_t> input_shape_;
  int64_t num_classes_ = 0;
  int64_t opset_ = 0;
  int64_t folded_nodes_ = 0;
  std::set<std::string> transposed_weights_;
  std::map<std::string, std::string> node_layers_;
  std::unique_ptr<onnx_import::Program> program_;
};
using OnnxModel = std::shared_ptr<OnnxModelImpl>;

// True when limpq was built with libonnx (the importer needs it).
bool onnx_import_available();

// Reads and converts the ONNX file at `path`.
OnnxModel import_onnx(const std::string& path);
// The same from the file's bytes; `source` names it in messages.
OnnxModel import_onnx_bytes(const std::string& bytes, const std::string& source);

// The op types the importer converts, sorted.
std::vector<std::string> onnx_supported_ops();

}  // namespace limpq::models
