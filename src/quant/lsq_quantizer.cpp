#include "limpq/quant/lsq_quantizer.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

namespace limpq::quant {
namespace {

AverageAcrossWorkers& average_hook() {
  static AverageAcrossWorkers hook;
  return hook;
}

}  // namespace

void set_average_across_workers(AverageAcrossWorkers fn) { average_hook() = std::move(fn); }

void average_across_workers(torch::Tensor& t) {
  if (average_hook()) average_hook()(t);
}

namespace {
int64_t g_data_parallel_workers = 1;
}  // namespace

void set_data_parallel_workers(int64_t workers) {
  TORCH_CHECK(workers >= 1, "set_data_parallel_workers: need at least one worker, got ", workers);
  g_data_parallel_workers = workers;
}
int64_t data_parallel_workers() { return g_data_parallel_workers; }

LsqQuantizerImpl::LsqQuantizerImpl(LsqQuantizerOptions options_) : options(std::move(options_)) { reset(); }

void LsqQuantizerImpl::reset() {
  const auto& bits = options.bits();
  TORCH_CHECK(!bits.empty(), "LsqQuantizer: bits must list at least one bit-width");
  for (size_t i = 0; i < bits.size(); ++i) {
    TORCH_CHECK(bits[i] >= 2 && bits[i] <= 16, "LsqQuantizer: bit-width ", bits[i], " is not in 2..16");
    for (size_t j = 0; j < i; ++j) TORCH_CHECK(bits[i] != bits[j], "LsqQuantizer: bit-width ", bits[i], " listed twice");
  }
  TORCH_CHECK(options.channels() >= 0, "LsqQuantizer: channels must be >= 0, got ", options.channels());
  TORCH_CHECK(options.channels() == 0 || options.kind() == QuantizerKind::kWeight,
              "LsqQuantizer: per-channel steps are for weights only");
  TORCH_CHECK(options.min_step() > 0, "LsqQuantizer: min_step must be positive, got ", options.min_step());
  TORCH_CHECK(options.max_step() == 0 || options.max_step() > options.min_step(),
              "LsqQuantizer: max_step must be 0 (none) or above min_step, got ", options.max_step());
  const auto n = static_cast<int64_t>(bits.size());
  steps = register_parameter("steps", options.channels() > 0 ? torch::ones({n, options.channels()})
                                                              : torch::ones({n}));
  initialized_ = register_buffer("initialized", torch::zeros({n}, torch::kUInt8));
  initialized_cache_.assign(n, false);
  bits_ = kFullPrecisionBits;
}

void LsqQuantizerImpl::pretty_print(std::ostream& stream) const {
  stream << "limpq::quant::LsqQuantizer(bits=" << c10::IntArrayRef(options.bits())
         << ", kind=" << (options.kind() == QuantizerKind::kWeight ? "weight" : "activation")
         << ", signed=" << std::boolalpha << options.is_signed() << ", channels=" << options.channels()
         << ", step_clamp=[" << options.min_step() << ", " << options.max_step() << "], active=" << bits_ << ")";
}

namespace {
// max(|mean - 3 std|, |mean + 3 std|) of a whole tensor.
torch::Tensor weight_bound(const torch::Tensor& w) {
  const torch::Tensor mean = w.mean();
  const torch::Tensor std = w.numel() > 1 ? w.std() : torch::zeros_like(mean);
  return torch::maximum((mean - 3 * std).abs(), (mean + 3 * std).abs());
}
}  // namespace

torch::Tensor initial_weight_step(const torch::Tensor& weight, int64_t bits) {
  torch::NoGradGuard no_grad;
  return weight_bound(weight.detach().to(torch::kFloat32)) / std::ldexp(1.0, static_cast<int>(bits - 1));
}

namespace {
// The activation rule in double. Averaged across equal shards, per-worker
// means in double equal the global batch's mean far below float precision,
// so one process and N workers start from the same float step. (In float
// they differ in the last bit, which flips the rounding of a few elements
// and sends the runs apart.)
torch::Tensor initial_activation_step_f64(const torch::Tensor& x, const QuantRange& range) {
  torch::NoGradGuard no_grad;
  const torch::Tensor mean_abs = x.detach().abs().sum(torch::kFloat64) / static_cast<double>(x.numel());
  return 2.0 * mean_abs / std::sqrt(static_cast<double>(range.qp));
}
}  // namespace

torch::Tensor initial_activation_step(const torch::Tensor& x, const QuantRange& range) {
  return initial_activation_step_f64(x, range).to(torch::kFloat32);
}

int64_t LsqQuantizerImpl::index_of(int64_t bits) const {
  const auto& all = options.bits();
  auto it = std::find(all.begin(), all.end(), bits);
  TORCH_CHECK(it != all.end(), "LsqQuantizer: bit-width ", bits, " is not one of its candidates ",
              c10::IntArrayRef(all));
  return it - all.begin();
}

void LsqQuantizerImpl::set_bits(int64_t bits) {
  if (bits != kFullPrecisionBits) index_of(bits);
  bits_ = bits;
}

bool LsqQuantizerImpl::initialized(int64_t bits) const {
  return initialized_[index_of(bits)].item<uint8_t>() != 0;
}

torch::Tensor LsqQuantizerImpl::step(int64_t bits) const { return steps[index_of(bits)]; }

namespace {
// `s` clamped to [min_step, max_step] (max_step 0: no upper bound).
torch::Tensor within_bounds(const torch::Tensor& s, const LsqQuantizerOptions& o) {
  return o.max_step() > 0 ? s.clamp(o.min_step(), o.max_step()) : s.clamp_min(o.min_step());
}
}  // namespace

torch::Tensor LsqQuantizerImpl::effective_step(int64_t bits) const { return within_bounds(step(bits), options); }

void LsqQuantizerImpl::project_steps() {
  torch::NoGradGuard no_grad;
  steps.copy_(within_bounds(steps, options));
}

StepGuard::StepGuard(torch::nn::Module& root, double max_change) : max_change_(max_change) {
  TORCH_CHECK(max_change >= 0 && max_change < 1, "max_step_change must be in [0, 1), got ", max_change);
  for (const auto& m : root.modules(/*include_self=*/true)) {
    if (auto q = std::dynamic_pointer_cast<LsqQuantizerImpl>(m)) quantizers_.push_back(std::move(q));
  }
}

void StepGuard::snapshot() {
  if (max_change_ == 0) return;
  before_.clear();
  for (const auto& q : quantizers_) before_.push_back(q->steps.detach().clone());
}

void StepGuard::apply() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < before_.size(); ++i) {
    const torch::Tensor& b = before_[i];
    quantizers_[i]->steps.copy_(torch::clamp(quantizers_[i]->steps, b * (1 - max_change_), b * (1 + max_change_)));
  }
  before_.clear();
  for (const auto& q : quantizers_) q->project_steps();
}

void LsqQuantizerImpl::init_from_weight(const torch::Tensor& weight) {
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.detach().to(torch::kFloat32);
  torch::Tensor bound;
  if (options.channels() > 0) {
    TORCH_CHECK(w.dim() >= 1 && w.size(0) == options.channels(), "LsqQuantizer: per-channel weight needs ",
                options.channels(), " channels along dim 0, got shape ", w.sizes());
    const torch::Tensor flat = w.reshape({options.channels(), -1});
    const torch::Tensor mean = flat.mean(1);
    const torch::Tensor std = flat.numel() / options.channels() > 1 ? flat.std(1) : torch::zeros_like(mean);
    bound = torch::maximum((mean - 3 * std).abs(), (mean + 3 * std).abs());
  } else {
    bound = weight_bound(w);
  }
  const auto& bits = options.bits();
  for (size_t i = 0; i < bits.size(); ++i) {
    const double denom = std::ldexp(1.0, static_cast<int>(bits[i] - 1));
    steps[i].copy_((bound / denom).clamp_min(options.min_step()).to(steps.device()));
    initialized_[i].fill_(1);
  }
}

void LsqQuantizerImpl::init_activation_step(int64_t index, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  torch::Tensor s = initial_activation_step_f64(x, range(options.bits()[index])).reshape({1});
  average_across_workers(s);
  steps[index].copy_(s.to(torch::kFloat32).clamp_min(options.min_step()).reshape(steps[index].sizes()));
  initialized_[index].fill_(1);
}

torch::Tensor LsqQuantizerImpl::forward(const torch::Tensor& x) { return quantize(x, ReluInput::kNone).quantized; }

torch::Tensor LsqQuantizerImpl::forward_after_relu(const torch::Tensor& x) {
  return quantize(x, ReluInput::kFolded).quantized;
}

ReluAndQuantized LsqQuantizerImpl::relu_and_forward(const torch::Tensor& x) {
  return quantize(x, ReluInput::kFoldedAndKept);
}

ReluAndQuantized LsqQuantizerImpl::quantize(const torch::Tensor& x, ReluInput relu) {
  // Only an unsigned per-tensor range can take the ReLU into the kernel;
  // otherwise (and for the reference) the ReLU runs on its own first.
  if (relu != ReluInput::kNone &&
      !(options.fused() && !options.is_signed() && options.channels() == 0 && !full_precision())) {
    const torch::Tensor r = torch::relu(x);
    return {relu == ReluInput::kFoldedAndKept ? r : torch::Tensor(), quantize(r, ReluInput::kNone).quantized};
  }
  if (full_precision()) return {torch::Tensor(), x};
  const int64_t i = index_of(bits_);
  // The host-side cache spares a device sync per call once a step is set.
  if (!initialized_cache_[i] && initialized_[i].item<uint8_t>() != 0) initialized_cache_[i] = true;
  if (!initialized_cache_[i]) {
    const torch::Tensor seen = relu == ReluInput::kNone ? x : torch::relu(x);  // the tensor being quantized
    if (options.kind() == QuantizerKind::kWeight) {
      // Normally done from the pretrained weight at conversion; this keeps a
      // freshly built quantizer usable on its own (every bit-width gets the
      // weight rule from the tensor it first sees).
      init_from_weight(seen);
    } else {
      init_activation_step(i, seen);
    }
    initialized_cache_[i] = true;
  }
  const torch::Tensor s = effective_step(bits_);
  const QuantRange r = range(bits_);
  int64_t covered = options.channels() > 0 ? x.numel() / options.channels() : x.numel();
  if (options.kind() == QuantizerKind::kActivation) covered *= data_parallel_workers();
  const double g = lsq_grad_scale(covered, r);
  switch (relu) {
    case ReluInput::kFolded:
      return {torch::Tensor(), lsq_fake_quant_of_relu(x, s, r, g)};
    case ReluInput::kFoldedAndKept:
      return relu_and_lsq_fake_quant(x, s, r, g);
    case ReluInput::kNone:
      break;
  }
  return {torch::Tensor(), options.fused() ? lsq_fake_quant(x, s, r, g) : lsq_fake_quant_reference(x, s, r, g)};
}

}  // namespace limpq::quant
