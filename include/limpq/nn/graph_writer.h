// The inference graph of a network, written op by op: each model describes
// its forward pass to a GraphWriter (ModelImpl::write_graph), and a writer
// turns it into a file format (deploy/onnx.h writes ONNX). Values are named
// by strings; every call returns the name of its output.
#pragma once

#include <cstdint>
#include <string>

namespace limpq::nn {

class QuantConv2dImpl;
class QuantLinearImpl;
class SwitchableBatchNorm2dImpl;

class GraphWriter {
 public:
  virtual ~GraphWriter() = default;
  // Layers at their current bits (quantized input and weight, or full precision).
  virtual std::string conv(const QuantConv2dImpl& conv, const std::string& x) = 0;
  virtual std::string linear(const QuantLinearImpl& linear, const std::string& x) = 0;
  // Inference-mode batch norm with the running statistics.
  virtual std::string batch_norm(const SwitchableBatchNorm2dImpl& bn, const std::string& x) = 0;
  virtual std::string relu(const std::string& x) = 0;
  virtual std::string relu6(const std::string& x) = 0;
  virtual std::string add(const std::string& a, const std::string& b) = 0;
  virtual std::string max_pool(const std::string& x, int64_t kernel, int64_t stride, int64_t padding) = 0;
  // Global average pooling to N x C.
  virtual std::string global_avg_pool_flatten(const std::string& x) = 0;
};

}  // namespace limpq::nn
