// The common base of limpq's networks and the registry of built-in
// architectures.
//
//   auto model = limpq::models::make_model(ModelOptions().arch("resnet20"), /*in_channels=*/1,
//                                          /*num_classes=*/10);
//   torch::Tensor logits = model->forward(images);
//
// Module and parameter names follow torchvision (conv1, bn1, layer1.0.conv1,
// downsample.0, fc; features.1.conv.0.0, classifier.1), so torchvision
// state_dicts map one to one.
#pragma once

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "limpq/models/state_dict.h"
#include "limpq/nn/graph_writer.h"

namespace limpq::models {

class ModelImpl : public torch::nn::Module {
 public:
  explicit ModelImpl(std::string arch) : torch::nn::Module(arch), arch_(std::move(arch)) {}
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // Describes the inference-mode forward pass to `writer` (for export);
  // returns the output's name.
  virtual std::string write_graph(nn::GraphWriter& writer, const std::string& input);
  const std::string& arch() const { return arch_; }

 private:
  std::string arch_;
};
using Model = std::shared_ptr<ModelImpl>;

// The arch recorded for a network imported from ONNX (model.onnx).
inline constexpr const char* kOnnxArch = "onnx";

struct ModelOptions {
  // Empty: resnet20, unless `onnx` is set (resolve_model_options).
  TORCH_ARG(std::string, arch) = "";
  // Weights to start from: a torch.save(dict(model.state_dict())) file from
  // PyTorch, or a limpq checkpoint. Empty: random initialisation (or, for
  // an ONNX network, the file's own weights).
  TORCH_ARG(std::string, weights) = "";
  // An ONNX classifier to import instead of a built-in architecture
  // (onnx_model.h); excludes `arch`.
  TORCH_ARG(std::string, onnx) = "";

 public:
  template <typename V>
  void visit(V&& v) {
    v("arch", arch_,
      "resnet20 | resnet32 | resnet56 | resnet18 | resnet50 | mobilenet_v1 | mobilenet_v2 | mobilenet_v2_stem1 "
      "(default resnet20; excludes --onnx)");
    v("weights", weights_, "initial weights: a PyTorch state_dict file or a limpq checkpoint");
    v("onnx", onnx_,
      "your own network: an ONNX file from torch.onnx.export to import instead of --arch (docs/onnx.md)");
  }
};

// The built-in architecture when none is named.
inline constexpr const char* kDefaultArch = "resnet20";

// `options` checked and resolved: without `onnx`, an empty `arch` becomes
// kDefaultArch; with `onnx` set, `arch` must be empty (or "onnx") and
// becomes "onnx".
ModelOptions resolve_model_options(ModelOptions options);

// What initial weights for the network `options` names must have been
// trained as (the ONNX file's checksum included).
WeightsTarget weights_target(const ModelOptions& options);

// The network `options` names: the built-in `arch` for an input of
// `input_shape` (C, H, W) and `num_classes` outputs, randomly initialised,
// or the ONNX file's network with the file's weights, which must take that
// input and give that many classes (the error says which data options adapt
// the data to it). `options.weights()`, when set, is loaded on top.
Model build_model(const ModelOptions& options, const std::vector<int64_t>& input_shape, int64_t num_classes);

// Writes the children of `seq` in order (limpq's layers, ReLU/ReLU6, dropout,
// nested sequentials and the residual blocks); returns the output's name.
std::string write_sequential_graph(nn::GraphWriter& writer, const torch::nn::Sequential& seq, std::string x);

const std::vector<std::string>& model_names();

// Builds `options.arch()` with random initialisation (weights are loaded by
// the caller, see state_dict.h).
Model make_model(const std::string& arch, int64_t in_channels, int64_t num_classes);

// Stores every 4-d parameter channels-last (NHWC in memory). Values, names
// and state dicts are unchanged.
void to_channels_last(torch::nn::Module& module);
// The memory format a module's convolutions use (for its inputs).
torch::MemoryFormat memory_format_of(const torch::nn::Module& module);

}  // namespace limpq::models
