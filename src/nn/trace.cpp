#include "limpq/nn/trace.h"

#include <torch/torch.h>

namespace limpq::nn {
namespace {
thread_local LayerTracer* g_active = nullptr;
}  // namespace

LayerTracer::LayerTracer(bool keep_inputs) : previous_(g_active), keep_inputs_(keep_inputs) { g_active = this; }
LayerTracer::~LayerTracer() { g_active = previous_; }
LayerTracer* LayerTracer::active() { return g_active; }

namespace {

bool nonnegative(const torch::Tensor& t) { return t.numel() == 0 || t.min().item<float>() >= 0.0f; }

}  // namespace

void LayerTracer::record(const torch::nn::Module* module, const torch::Tensor& input, const torch::Tensor& output,
                         const torch::Tensor& other) {
  TraceEvent e;
  e.module = module;
  e.input_shape = input.sizes().vec();
  e.output_shape = output.sizes().vec();
  e.input_nonnegative = nonnegative(input);
  if (other.defined()) {
    e.other_shape = other.sizes().vec();
    e.other_nonnegative = nonnegative(other);
  }
  e.output_finite = output.numel() == 0 || torch::isfinite(output).all().item<bool>();
  if (keep_inputs_) e.input = input;
  events_.push_back(std::move(e));
}

}  // namespace limpq::nn
