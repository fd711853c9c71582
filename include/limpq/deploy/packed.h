// The packed model format (limpq.packed/1): a fine-tuned mixed-precision
// model with each quantized weight stored as its b-bit integers, bit-packed
// at its own bit-width, beside its scale (the learned step). Its file size is
// the honest deployed size of the model.
//
// Layout (little-endian):
//   8 bytes   magic "LIMPQPK1"
//   4 bytes   header length H (uint32)
//   H bytes   header, JSON: {"format": "limpq.packed/1", "arch", "input_shape",
//             "num_classes", "quantization" (the QuantModel record), "config",
//             "policy", "tensors": [{"name", "dtype", "shape", "offset",
//             "bytes"} ... ]}; a packed weight adds "bits", "qn" (the lowest
//             integer) and "scale" (one step, or one per output channel)
//   payload   the tensors at their offsets (8-byte aligned): packed weights
//             as a bit stream, value (q - qn) in `bits` bits, least
//             significant bit first; other tensors raw
//   4 bytes   CRC-32 of everything before it
//
// read_packed restores a checkpoint whose quantized weights are q * scale:
// the quantized forward pass of the restored model equals the original's
// bit for bit.
//
//   deploy::write_packed("model.lpq", train::load_checkpoint("runs/ft/checkpoint.pt"));
//   train::Checkpoint ckpt = deploy::read_packed("model.lpq");
#pragma once

#include <cstdint>
#include <string>

#include "limpq/train/checkpoint.h"

namespace limpq::deploy {

inline constexpr const char* kPackedFormat = "limpq.packed/1";

struct PackedSummary {
  int64_t file_bytes = 0;
  int64_t packed_weight_bytes = 0;  // the bit-packed integer weights
  int64_t scale_bytes = 0;          // their steps
  int64_t other_bytes = 0;          // biases, batch norm, activation steps (float32)
  int64_t header_bytes = 0;
  int64_t cost_model_weight_bytes = 0;  // the policy's weight size by the cost model
  double fp_to_cost_model_ratio = 0;   // 32-bit weights over that size
};

// Writes the quantized model `checkpoint` holds (from `limpq finetune`);
// a full-precision checkpoint is an error.
PackedSummary write_packed(const std::string& path, const train::Checkpoint& checkpoint);

// Parses a packed file held in memory; `name` appears in errors.
train::Checkpoint parse_packed(const std::string& bytes, const std::string& name);
train::Checkpoint read_packed(const std::string& path);

// True when the file starts with the packed magic.
bool is_packed_file(const std::string& path);

}  // namespace limpq::deploy
