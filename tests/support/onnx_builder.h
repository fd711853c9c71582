// Hand-made ONNX graphs for the importer's single-node tests, built with
// libonnx's protobuf classes behind a plain C++ interface (this header does
// not include them, so tests share the library's precompiled header).
//
//   OnnxGraphBuilder g(17, {3, 4, 5});                      // input "input": N x 3 x 4 x 5
//   g.initializer("slope", torch::full({3, 1, 1}, 0.1));
//   g.node("PRelu", {"input", "slope"}, {"y"});
//   const std::string model = g.flattened("y");             // y -> Flatten -> "logits"
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace limpq::testing {

using OnnxAttribute = std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>>;

class OnnxGraphBuilder {
 public:
  // A graph at `opset` whose input "input" is N x `chw` (N symbolic).
  OnnxGraphBuilder(int64_t opset, std::vector<int64_t> chw);

  OnnxGraphBuilder& initializer(const std::string& name, const torch::Tensor& value);
  OnnxGraphBuilder& node(const std::string& op, std::vector<std::string> inputs, std::vector<std::string> outputs,
                         std::map<std::string, OnnxAttribute> attributes = {});
  // The serialized model whose output "logits" is `value` flattened to N x
  // rest (the importer takes classifiers).
  std::string flattened(const std::string& value) const;

 private:
  struct Node {
    std::string op;
    std::vector<std::string> inputs, outputs;
    std::map<std::string, OnnxAttribute> attributes;
  };
  int64_t opset_;
  std::vector<int64_t> chw_;
  std::vector<std::pair<std::string, torch::Tensor>> initializers_;
  std::vector<Node> nodes_;
};

// True when the tests were built with libonnx.
bool onnx_builder_available();

}  // namespace limpq::testing
