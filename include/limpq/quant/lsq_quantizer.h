// LsqQuantizer: an LSQ quantizer with one learnable step size per candidate
// bit-width (LIMPQ.md sections 2 and 3).
//
// During indicator training a quantizer holds steps for every candidate
// (e.g. 6, 5, 4, 3, 2 bits) and is switched between them; the learned steps
// are the layer's importance indicators. For fine-tuning it holds a single
// bit-width. A bit-width of 32 means full precision (no quantization).
//
//   LsqQuantizer wq(LsqQuantizerOptions({6, 5, 4, 3, 2}).kind(QuantizerKind::kWeight));
//   wq->init_from_weight(conv->weight);      // every bit-width, from the pretrained weight
//   wq->set_bits(4);
//   auto w4 = wq(conv->weight);
//
// Activation steps initialise lazily on the first batch seen at each
// bit-width: s = 2 mean|x| / sqrt(Qp), averaged over data-parallel workers.
#pragma once

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <vector>

#include "limpq/quant/lsq.h"

namespace limpq::quant {

enum class QuantizerKind { kWeight, kActivation };

inline constexpr int64_t kFullPrecisionBits = 32;

struct LsqQuantizerOptions {
  /* implicit */ LsqQuantizerOptions(std::vector<int64_t> bits) : bits_(std::move(bits)) {}
  // Candidate bit-widths, each with its own step (2..16).
  TORCH_ARG(std::vector<int64_t>, bits);
  TORCH_ARG(QuantizerKind, kind) = QuantizerKind::kActivation;
  TORCH_ARG(bool, is_signed) = true;
  // > 0: one step per channel along dim 0 (weights only).
  TORCH_ARG(int64_t, channels) = 0;
  // The forward pass clamps the step to [min_step, max_step] (max_step 0: no
  // upper bound). Indicator training uses [1e-5, 1].
  TORCH_ARG(double, min_step) = 1e-5;
  TORCH_ARG(double, max_step) = 0.0;
  // Use the fused kernel (false: the composed-op reference).
  TORCH_ARG(bool, fused) = true;
};

// The initial step rules (LIMPQ.md section 2), per tensor, as float32
// scalars: weights max(|mean - 3 std|, |mean + 3 std|) / 2^(b-1); activations
// 2 mean|x| / sqrt(Qp). Neither is clamped.
torch::Tensor initial_weight_step(const torch::Tensor& weight, int64_t bits);
torch::Tensor initial_activation_step(const torch::Tensor& x, const QuantRange& range);

class LsqQuantizerImpl : public torch::nn::Cloneable<LsqQuantizerImpl> {
 public:
  explicit LsqQuantizerImpl(LsqQuantizerOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  // Selects the bit-width used by forward(); 32 is full precision.
  void set_bits(int64_t bits);
  int64_t bits() const { return bits_; }
  bool full_precision() const { return bits_ == kFullPrecisionBits; }

  torch::Tensor forward(const torch::Tensor& x);
  // forward(relu(x)). With an unsigned per-tensor range and the fused kernel
  // the ReLU is folded into the kernel (lsq_fake_quant_of_relu): same values
  // and gradients, one pass fewer each way.
  torch::Tensor forward_after_relu(const torch::Tensor& x);
  // {relu(x), forward(relu(x))}, for a ReLU whose output is used elsewhere
  // too; folded likewise (relu_and_lsq_fake_quant).
  ReluAndQuantized relu_and_forward(const torch::Tensor& x);

  // Weight rule for every candidate: max(|mean - 3 std|, |mean + 3 std|) / 2^(b-1)
  // (per channel when channels > 0).
  void init_from_weight(const torch::Tensor& weight);
  // The learned step for `bits` (shape [] or [channels]).
  torch::Tensor step(int64_t bits) const;
  // The step the forward pass uses: step(bits) clamped to [min_step,
  // max_step]; this is the importance indicator.
  torch::Tensor effective_step(int64_t bits) const;
  // Projects every stored step onto [min_step, max_step] (after an optimizer
  // update). A step the update carried past a bound would stay there: the
  // forward pass clamps it, so its gradient is zero and nothing brings it
  // back (a fixed 8-bit layer's weight step driven below zero by momentum
  // leaves the layer's weights at +-127 * min_step for the rest of the run).
  void project_steps();
  bool initialized(int64_t bits) const;
  QuantRange range(int64_t bits) const { return QuantRange::of(bits, options.is_signed()); }

  LsqQuantizerOptions options;
  torch::Tensor steps;        // [num_bits] or [num_bits, channels]
  torch::Tensor initialized_; // uint8 [num_bits]: 1 once a step is initialised

 private:
  int64_t index_of(int64_t bits) const;
  // The ReLU before the quantizer, if any: none; folded in; folded in with
  // its output returned too.
  enum class ReluInput { kNone, kFolded, kFoldedAndKept };
  ReluAndQuantized quantize(const torch::Tensor& x, ReluInput relu);
  void init_activation_step(int64_t index, const torch::Tensor& x);
  int64_t bits_ = kFullPrecisionBits;
  std::vector<bool> initialized_cache_;  // only ever caches "initialised"
};
TORCH_MODULE(LsqQuantizer);

// Averages a tensor over data-parallel workers in place. Installed by the
// distributed runtime; the default does nothing (one process).
using AverageAcrossWorkers = std::function<void(torch::Tensor&)>;
void set_average_across_workers(AverageAcrossWorkers fn);
void average_across_workers(torch::Tensor& t);

// The number of data-parallel workers sharing each batch (default 1). An
// activation step's gradient scale 1/sqrt(N Qp) counts the elements of the
// global batch, so that training does not depend on how it is split.
void set_data_parallel_workers(int64_t workers);
int64_t data_parallel_workers();

// Keeps the LSQ steps inside `root` where they learn, around each optimizer
// update: snapshot() before it; apply() after it limits every step's relative
// change to max_change (0: unbounded) and projects it onto [min_step,
// max_step]. The limit is for steps whose gradient, weighted by Qp, is large
// against their size: an 8-bit classifier's weight step of 1e-3 moved 26% in
// one SGD update at lr 0.01 on mobilenet_v2, crossed zero in the next, then
// grew 300x within six, rounding every weight to zero.
class StepGuard {
 public:
  StepGuard(torch::nn::Module& root, double max_change);
  void snapshot();
  void apply();

 private:
  std::vector<std::shared_ptr<LsqQuantizerImpl>> quantizers_;
  std::vector<torch::Tensor> before_;
  double max_change_;
};

}  // namespace limpq::quant
