// Records which quantizable layers and batch norms a forward pass runs, in
// execution order, with their input and output shapes. The quantization
// conversion uses one traced pass to learn the network's layer order, which
// batch norm follows which conv, whether a layer's input can be negative, and
// the output sizes the cost model needs, for any network built from limpq's
// layers, without per-model tables.
//
//   LayerTracer tracer;          // active on this thread until destroyed
//   model->forward(sample);
//   for (const auto& e : tracer.events()) ...
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <vector>

namespace limpq::nn {

struct TraceEvent {
  const torch::nn::Module* module = nullptr;
  std::vector<int64_t> input_shape;
  std::vector<int64_t> output_shape;
  bool input_nonnegative = false;
  // A layer with a second activation operand (QuantMatMul): its shape and sign.
  std::vector<int64_t> other_shape;
  bool other_nonnegative = false;
  bool output_finite = true;  // no NaN or Inf in the output
  // The input tensor itself, still in the autograd graph (only when the
  // tracer keeps inputs: the Hessian sensitivity differentiates by it).
  torch::Tensor input;
};

class LayerTracer {
 public:
  // keep_inputs: each event also holds its layer's input tensor.
  explicit LayerTracer(bool keep_inputs = false);
  ~LayerTracer();
  LayerTracer(const LayerTracer&) = delete;
  LayerTracer& operator=(const LayerTracer&) = delete;

  // The tracer active on this thread, or null (the common case: one branch).
  static LayerTracer* active();
  bool keeps_inputs() const { return keep_inputs_; }
  // `other`: a second activation operand, when the layer has one.
  void record(const torch::nn::Module* module, const torch::Tensor& input, const torch::Tensor& output,
              const torch::Tensor& other = {});
  const std::vector<TraceEvent>& events() const { return events_; }

 private:
  LayerTracer* previous_;
  bool keep_inputs_;
  std::vector<TraceEvent> events_;
};

}  // namespace limpq::nn
