// Training checkpoints.
//
// A checkpoint is a pickled dict (torch::pickle_save; Python reads it with
// torch.load) holding the model's state_dict, the optimizer state, the
// schedule position (at the end of an epoch or in the middle of one), the
// RNG state and the resolved configuration, plus a format version and a
// checksum of all of it (util::ivalue_checksum). It is written atomically: a
// crash leaves the previous checkpoint intact. Loading refuses a truncated,
// corrupt or unknown-version file, naming it and the problem.
//
//   Checkpoint ckpt = load_checkpoint("runs/train/checkpoint.pt");
//   model->to(device); load_state_dict(*model, ckpt.model, path);
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "limpq/models/state_dict.h"

namespace limpq::train {

inline constexpr const char* kCheckpointFormat = "limpq.checkpoint/2";
// Read for compatibility: no checksum, no mid-epoch position.
inline constexpr const char* kCheckpointFormatV1 = "limpq.checkpoint/1";

struct Checkpoint {
  // The file it was read from, for messages ("" when made in memory); not stored.
  std::string path;
  std::string arch;  // models::kOnnxArch for a network imported from ONNX
  // The ONNX file of an imported network and its checksum (CRC-32 of its
  // bytes); loading refuses a file with another checksum. Empty otherwise.
  std::string onnx, onnx_checksum;
  std::vector<int64_t> input_shape;  // C, H, W
  int64_t num_classes = 0;
  models::StateDict model;
  std::string optimizer;  // torch::optim state, serialized
  int64_t epoch = 0;      // epochs completed
  int64_t batch = 0;      // batches done in epoch `epoch` (0: at an epoch boundary)
  int64_t step = 0;       // optimizer steps taken
  torch::Tensor rng_state;
  std::string config;   // resolved configuration (JSON)
  std::string metrics;  // metrics of the last evaluation (JSON)
  std::string quantization;  // QuantModel::describe() record (JSON); empty for full precision
  std::string progress;      // running statistics of a partial epoch (JSON); empty at a boundary
};

void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);
Checkpoint load_checkpoint(const std::string& path);

}  // namespace limpq::train
