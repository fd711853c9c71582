// State dicts: named parameters and buffers, read from and written to files
// that PyTorch reads too.
//
//   // In Python: torch.save(dict(torchvision.models.resnet18().state_dict()), "r18.pt")
//   auto sd = limpq::models::read_state_dict_file("r18.pt");
//   limpq::models::load_state_dict(*model, sd, "r18.pt");   // lists every mismatch
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <map>
#include <string>

namespace limpq::models {

using StateDict = std::map<std::string, torch::Tensor>;

// Parameters and buffers by dotted name (detached, on their device).
StateDict state_dict(const torch::nn::Module& module);

// Copies `sd` into the module's parameters and buffers. Strict: any missing
// key, unexpected key or shape mismatch is an error that lists all of them;
// `source` names the file in that message.
void load_state_dict(torch::nn::Module& module, const StateDict& sd, const std::string& source);

// Reads a file holding either a plain dict of tensors (PyTorch's
// torch.save(dict(model.state_dict()))) or a limpq checkpoint (its "model").
StateDict read_state_dict_file(const std::string& path);

// What a file of initial weights must have been trained as.
struct WeightsTarget {
  std::string arch;
  // For a network imported from ONNX: its file and that file's checksum.
  std::string onnx, onnx_checksum;
};

// read_state_dict_file for a model of `target`: a limpq checkpoint of another
// architecture, or of another ONNX file (or of this file before it changed),
// is an error naming both and what to pass.
StateDict read_weights_for(const std::string& path, const WeightsTarget& target);

// The dict <-> IValue conversions used by checkpoints (tensors moved to CPU).
c10::IValue state_dict_to_ivalue(const StateDict& sd);
StateDict state_dict_from_ivalue(const c10::IValue& value, const std::string& source);

}  // namespace limpq::models
