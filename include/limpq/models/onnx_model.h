// Networks imported from ONNX files, trained and quantized like limpq's own.
//
// import_onnx converts an ONNX image classifier (as torch.onnx.export writes
// it, opsets 13 to 18: CNNs, vision transformers, Swin, ConvNeXt) into a
// limpq Model: every Conv becomes a QuantConv2d, every Gemm and MatMul by a
// weight a QuantLinear, every MatMul of two activations (attention's) a
// QuantMatMul, every BatchNormalization a SwitchableBatchNorm2d, each holding
// the file's weights as trainable parameters, so that the network trains,
// learns its indicators and is fine-tuned with no per-model code. Every
// other floating-point initializer the file names as a module's parameter
// (a class token, a position embedding, a LayerNorm's scale and bias, the
// bias added after a MatMul, a layer scale) is a trainable parameter of the
// model too, under its own name; the exporter's constants (`onnx::...`) and
// batch-norm statistics are not. The other nodes run as torch ops in the
// file's order. Layers are named by the PyTorch module path the export
// recorded (`layer1.0.conv1`, from the weight `layer1.0.conv1.weight`, or
// from the node's scope `/layer1/layer1.0/conv1/Conv` where the weight has a
// synthetic name), so a policy applies to the user's own module by name.
//
//   auto model = limpq::models::import_onnx("resnet18.onnx");   // refuses what it cannot run
//   model->input_shape();        // {3, 32, 32}, from the file
//   model->num_classes();        // 10
//   torch::Tensor logits = model->forward(images);
//
// The file is read whole and checked before anything else: an op, an input
// or an attribute value the importer does not handle, a second input, a
// symbolic spatial size or a file that is not ONNX is one error naming the
// file, the node, its op type and the opset (docs/onnx.md lists the ops).
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "limpq/models/model.h"

namespace limpq::models {

namespace onnx_import {
struct Program;
}  // namespace onnx_import

// Where an imported layer's tensor came from in the file.
struct ImportedTensor {
  size_t input = 0;         // the input of the layer's node that holds it
  std::string tensor;       // the layer's parameter or buffer ("weight", "bias", ...)
  bool transposed = false;  // that input holds the 2-d tensor transposed
  // The initializer it was read from, when the input is that initializer or
  // a transpose of it (PyTorch's MatMul(x, Transpose(weight))): the name and
  // layout of the user's own parameter. Empty for a value computed otherwise.
  std::string source;
  bool source_transposed = false;  // the initializer holds it transposed
};

// A node the importer made a layer of.
struct ImportedLayer {
  std::string path;  // the layer's module path
  std::vector<ImportedTensor> tensors;
};

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
  // Nodes the importer ran at import because every input was a constant.
  int64_t folded_nodes() const { return folded_nodes_; }
  // Nodes the forward pass runs fused, several as one torch op (GELU's five).
  int64_t fused_nodes() const { return fused_nodes_; }
  // The layer each node became, keyed by the node's first output (unique in
  // a graph): how the exports find a layer's node and write its tensors back.
  const std::map<std::string, ImportedLayer>& layers() const { return layers_; }
  // The trainable parameters outside layers, by the initializer they came
  // from: its name in the file -> the parameter's module path in the model.
  const std::map<std::string, std::string>& parameters_by_source() const { return parameters_by_source_; }
  // The file's other named initializers (the module's buffers, such as an
  // index table), as read: a state_dict of the user's module holds them too.
  const std::map<std::string, torch::Tensor>& named_constants() const { return named_constants_; }

 private:
  friend class OnnxModelBuilder;
  std::string source_, checksum_;
  std::vector<int64_t> input_shape_;
  int64_t num_classes_ = 0;
  int64_t opset_ = 0;
  int64_t folded_nodes_ = 0;
  int64_t fused_nodes_ = 0;
  std::map<std::string, ImportedLayer> layers_;
  std::map<std::string, std::string> parameters_by_source_;
  std::map<std::string, torch::Tensor> named_constants_;
  std::unique_ptr<onnx_import::Program> program_;
  // The program's floating-point constants on the device of the last pass.
  std::vector<torch::Tensor> device_constants_;
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

// Whether an initializer's name is a PyTorch parameter or buffer name (a
// module path, not the exporter's "onnx::..." constants).
bool is_module_tensor_name(const std::string& name);

}  // namespace limpq::models
