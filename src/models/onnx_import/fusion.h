// Node sequences the importer runs as one torch op. The file's own nodes
// stay what the network is exported as (deploy/onnx.cpp writes the imported
// graph back); only the forward pass runs the fused op, which computes the
// same function with fewer passes over memory, forward and backward.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "graph.h"
#include "ops.h"

namespace limpq::models::onnx_import {

struct FusedOp {
  std::vector<size_t> nodes;  // the graph's nodes it replaces, in order
  OnnxNode node;              // one node reading the sequence's input, writing its output
  Kernel kernel;
};

// PyTorch's export of nn.GELU() (erf form): Div(x, sqrt 2), Erf, Add 1,
// Mul by x, Mul by 0.5, with every value in between read by the next node
// alone, run as torch::gelu. `producer` maps each value to its node;
// `skipped` nodes are not the graph's any more.
std::vector<FusedOp> find_gelus(const OnnxGraph& graph, const std::map<std::string, size_t>& producer,
                                const std::vector<bool>& skipped);

}  // namespace limpq::models::onnx_import
