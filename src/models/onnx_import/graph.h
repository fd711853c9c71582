// An ONNX graph as plain C++ values: what the importer needs of a ModelProto,
// read once by read_onnx_graph (the only code that sees ONNX's protobuf
// classes, see reader.cpp), so that the op converters and the interpreter
// compile without them.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace limpq::models::onnx_import {

// One attribute of a node; `type` is the AttributeProto type's name.
struct OnnxAttribute {
  std::string type;  // "INT", "FLOAT", "STRING", "INTS", "FLOATS", "TENSOR", or another type's name
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  torch::Tensor t;
};

struct OnnxNode {
  std::string op_type;
  std::string domain;  // "" or "ai.onnx" for the default domain
  std::string name;    // may be empty in hand-made graphs
  std::vector<std::string> inputs;   // "" for an omitted optional input
  std::vector<std::string> outputs;  // "" for an omitted optional output
  std::map<std::string, OnnxAttribute> attributes;
};

struct OnnxGraph {
  std::string source;  // the file, for messages
  int64_t opset = 0;   // of the default domain
  std::string producer;  // "pytorch 1.13.1"
  std::vector<OnnxNode> nodes;
  std::map<std::string, torch::Tensor> initializers;
  std::string input;  // the one graph input that is not an initializer
  // Its dimensions; -1 where a dimension is symbolic or unknown.
  std::vector<int64_t> input_dims;
  std::vector<std::string> outputs;
};

// Reads a serialized ModelProto. Errors name `source` and say what is wrong:
// not an ONNX model, truncated, external tensor data, an opset outside
// 13..18, a graph with several inputs, a tensor type limpq cannot hold.
OnnxGraph read_onnx_graph(const std::string& bytes, const std::string& source);

// The ONNX data type's name ("FLOAT", "INT64", ...), for messages.
std::string onnx_type_name(int32_t data_type);

}  // namespace limpq::models::onnx_import
