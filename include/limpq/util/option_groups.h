#pragma once
// Option groups that several commands share, each declared once: a group is
// a visit of the fields that the struct holding them passes in, so every
// command that has the group shows the same flags with the same help and
// reads the same YAML keys.
//
//   template <typename V>
//   void visit(V&& v) {
//     util::visit_compute(v, device_, threads_);
//     util::visit_fixed_layers(v, fixed_layers_);
//   }
//
// --policy/--uniform and --bn-recalibration-batches are not groups: eval's
// policy is a post-training quantization of a full-precision checkpoint and
// finetune's a policy to train under, and the re-estimation runs before
// eval evaluates but after train's last epoch; each command says its own.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace limpq::util {

// Where a command computes.
template <typename V>
void visit_compute(V&& v, std::string& device, int64_t& threads) {
  v("device", device, "cpu | cuda | cuda:N");
  v("threads", threads, "compute threads (0: all cores)");
}

// The layers kept out of the search.
template <typename V>
void visit_fixed_layers(V&& v, std::vector<std::string>& fixed_layers) {
  v("fixed_layers", fixed_layers, "layers kept out of the search (default: first conv and last layer)");
}

// Their bits: a number, or unset where a recorded run supplies it.
template <typename V>
void visit_fixed_bits(V&& v, int64_t& fixed_bits) {
  v("fixed_bits", fixed_bits, "bits of the layers kept out of the search");
}
template <typename V>
void visit_fixed_bits(V&& v, std::optional<int64_t>& fixed_bits) {
  v("fixed_bits", fixed_bits, "bits of the layers kept out of the search (empty: the run's, else 8)");
}

}  // namespace limpq::util
