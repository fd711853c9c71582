// A fine-tuned network as a PyTorch state_dict file, for the user's own
// PyTorch code (`limpq export --format state-dict`):
//
//   sd = torch.load("net_mixed.pt")        # a dict of tensors
//   model.load_state_dict({k: v for k, v in sd.items() if not k.endswith(("_step", "_bits", "_signed"))})
//
// Parameters and buffers keep the network's own names (an imported ONNX
// network: the names and layouts of the user's module, every trained tensor
// at its current value, so load_state_dict(strict=True) takes it), and
// beside each quantized layer are its learned LSQ steps, bits and signs:
//   <layer>.weight_step, <layer>.input_step   float32 (a scalar, or one step per output channel)
//   <layer>.weight_bits, <layer>.act_bits     int64 scalars
//   <layer>.input_signed                      bool: the input's range is signed
// (a product of two activations has <layer>.other_step, .other_bits and
// .other_signed for its second operand instead of the weight's).
// The weights are the trained full-precision values; quantizing them with
// their step, round(clamp(w / s, -2^(b-1), 2^(b-1) - 1)) * s, gives the
// weights the network was fine-tuned with.
#pragma once

#include <cstdint>
#include <string>

#include "limpq/train/checkpoint.h"

namespace limpq::deploy {

struct StateDictSummary {
  int64_t tensors = 0;
  int64_t quantized_layers = 0;
  int64_t file_bytes = 0;
};

StateDictSummary write_pytorch_state_dict(const std::string& path, const train::Checkpoint& checkpoint);

}  // namespace limpq::deploy
