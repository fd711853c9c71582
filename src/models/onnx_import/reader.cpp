// The only file that sees ONNX's protobuf classes (built with libonnx's
// definitions and without the precompiled header, see src/CMakeLists.txt).
#include "graph.h"

#include <c10/util/Exception.h>

#include "limpq/models/onnx_model.h"
#include "limpq/util/text.h"

#ifdef LIMPQ_WITH_ONNX

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <cstring>

namespace limpq::models {
bool onnx_import_available() { return true; }
}  // namespace limpq::models

namespace limpq::models::onnx_import {
namespace {

constexpr int64_t kMinOpset = 13;
constexpr int64_t kMaxOpset = 18;  // ops.h: kLastOpset

bool default_domain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

std::optional<torch::ScalarType> scalar_type(int32_t data_type) {
  switch (data_type) {
    case onnx::TensorProto_DataType_FLOAT: return torch::kFloat32;
    case onnx::TensorProto_DataType_DOUBLE: return torch::kFloat64;
    case onnx::TensorProto_DataType_INT64: return torch::kInt64;
    case onnx::TensorProto_DataType_INT32: return torch::kInt32;
    case onnx::TensorProto_DataType_INT8: return torch::kInt8;
    case onnx::TensorProto_DataType_UINT8: return torch::kUInt8;
    case onnx::TensorProto_DataType_BOOL: return torch::kBool;
    default: return std::nullopt;
  }
}

// The tensor's elements from the typed field that holds them (ONNX stores
// FLOAT in float_data, INT64 in int64_data, the small integer types and BOOL
// in int32_data, DOUBLE in double_data).
torch::Tensor typed_field_values(const onnx::TensorProto& t, torch::ScalarType type, int64_t count) {
  torch::Tensor out;
  switch (type) {
    case torch::kFloat32:
      out = torch::tensor(std::vector<float>(t.float_data().begin(), t.float_data().end()), torch::kFloat32);
      break;
    case torch::kFloat64:
      out = torch::tensor(std::vector<double>(t.double_data().begin(), t.double_data().end()), torch::kFloat64);
      break;
    case torch::kInt64:
      out = torch::tensor(std::vector<int64_t>(t.int64_data().begin(), t.int64_data().end()), torch::kInt64);
      break;
    default:
      out = torch::tensor(std::vector<int64_t>(t.int32_data().begin(), t.int32_data().end()), torch::kInt64).to(type);
      break;
  }
  TORCH_CHECK(out.numel() == count, "holds ", out.numel(), " values where its shape needs ", count);
  return out;
}

torch::Tensor to_tensor(const onnx::TensorProto& t) {
  TORCH_CHECK(t.data_location() != onnx::TensorProto_DataLocation_EXTERNAL,
              "keeps its data in an external file; export the model as one file");
  const auto type = scalar_type(t.data_type());
  TORCH_CHECK(type.has_value(), "has data type ", onnx_type_name(t.data_type()),
              ", which limpq cannot import (FLOAT, DOUBLE, INT64, INT32, INT8, UINT8 or BOOL)");
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  int64_t count = 1;
  for (int64_t d : dims) {
    TORCH_CHECK(d >= 0 && d <= (int64_t{1} << 40) / std::max<int64_t>(count, 1), "has an invalid shape");
    count *= d;
  }
  torch::Tensor flat;
  if (t.has_raw_data()) {
    const std::string& raw = t.raw_data();
    const int64_t element = static_cast<int64_t>(c10::elementSize(*type));
    TORCH_CHECK(static_cast<int64_t>(raw.size()) == count * element, "holds ", raw.size(),
                " bytes where its shape needs ", count * element, " (truncated file?)");
    flat = torch::empty({count}, torch::TensorOptions().dtype(*type));
    if (count > 0) std::memcpy(flat.data_ptr(), raw.data(), raw.size());
  } else {
    flat = typed_field_values(t, *type, count);
  }
  return flat.reshape(dims);
}

OnnxAttribute to_attribute(const onnx::AttributeProto& a) {
  OnnxAttribute out;
  out.type = onnx::AttributeProto_AttributeType_Name(a.type());
  switch (a.type()) {
    case onnx::AttributeProto_AttributeType_INT: out.i = a.i(); break;
    case onnx::AttributeProto_AttributeType_FLOAT: out.f = a.f(); break;
    case onnx::AttributeProto_AttributeType_STRING: out.s = a.s(); break;
    case onnx::AttributeProto_AttributeType_INTS: out.ints.assign(a.ints().begin(), a.ints().end()); break;
    case onnx::AttributeProto_AttributeType_FLOATS: out.floats.assign(a.floats().begin(), a.floats().end()); break;
    case onnx::AttributeProto_AttributeType_TENSOR: out.t = to_tensor(a.t()); break;
    default: break;  // kept by type name; a converter that reads it refuses it
  }
  return out;
}

OnnxNode to_node(const onnx::NodeProto& n) {
  OnnxNode node;
  node.op_type = n.op_type();
  node.domain = n.domain();
  node.name = n.name();
  node.inputs.assign(n.input().begin(), n.input().end());
  node.outputs.assign(n.output().begin(), n.output().end());
  for (const auto& a : n.attribute()) {
    try {
      node.attributes[a.name()] = to_attribute(a);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "attribute '", a.name(), "' ", e.msg());
    }
  }
  return node;
}

int64_t default_opset(const onnx::ModelProto& model, const std::string& source) {
  for (const auto& o : model.opset_import()) {
    if (default_domain(o.domain())) return o.version();
  }
  TORCH_CHECK(false, "onnx: '", source, "' imports no opset of the default ONNX domain");
}

// The newest default-domain opset this libonnx's checker knows.
int64_t checker_opset() {
  const auto& ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  auto it = ranges.find("");
  return it == ranges.end() ? 0 : it->second.second;
}

}  // namespace

std::string onnx_type_name(int32_t data_type) {
  if (onnx::TensorProto_DataType_IsValid(data_type)) {
    return onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(data_type));
  }
  return "type " + std::to_string(data_type);
}

OnnxGraph read_onnx_graph(const std::string& bytes, const std::string& source) {
  onnx::ModelProto model;
  TORCH_CHECK(!bytes.empty() && model.ParseFromString(bytes) && model.has_graph() && model.graph().node_size() > 0,
              "onnx: '", source, "' is not an ONNX model (no graph could be read: a truncated file or another format)");
  const int64_t opset = default_opset(model, source);
  // The checker of an older libonnx does not know a newer opset's ops; the
  // converters check what they read then.
  if (opset <= checker_opset()) {
    try {
      onnx::checker::check_model(model);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "onnx: '", source, "' is not a valid ONNX model: ", util::error_message(e));
    }
  }
  OnnxGraph g;
  g.source = source;
  g.opset = opset;
  TORCH_CHECK(g.opset >= kMinOpset && g.opset <= kMaxOpset, "onnx: '", source, "' uses opset ", g.opset,
              "; limpq imports opsets ", kMinOpset, " to ", kMaxOpset,
              " (torch.onnx.export(..., opset_version=17))");
  g.producer = model.producer_name() + (model.producer_version().empty() ? "" : " " + model.producer_version());
  const auto& graph = model.graph();
  TORCH_CHECK(graph.sparse_initializer_size() == 0, "onnx: '", source,
              "' has sparse initializers, which limpq cannot import");
  for (const auto& t : graph.initializer()) {
    try {
      g.initializers[t.name()] = to_tensor(t);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "onnx: '", source, "': initializer '", t.name(), "' ", e.msg());
    }
  }
  std::vector<std::string> inputs;
  for (const auto& in : graph.input()) {
    if (!g.initializers.count(in.name())) inputs.push_back(in.name());
  }
  if (inputs.size() != 1) {
    std::string names;
    for (const auto& n : inputs) names += (names.empty() ? "" : ", ") + n;
    TORCH_CHECK(false, "onnx: '", source, "' has ", inputs.size(), " inputs (", names,
                "); limpq imports networks with one image input");
  }
  g.input = inputs.front();
  for (const auto& in : graph.input()) {
    if (in.name() != g.input) continue;
    TORCH_CHECK(in.type().has_tensor_type() && in.type().tensor_type().has_shape(), "onnx: '", source, "': input '",
                g.input, "' has no tensor shape");
    TORCH_CHECK(in.type().tensor_type().elem_type() == onnx::TensorProto_DataType_FLOAT, "onnx: '", source,
                "': input '", g.input, "' is ", onnx_type_name(in.type().tensor_type().elem_type()),
                ", expected FLOAT");
    for (const auto& d : in.type().tensor_type().shape().dim()) {
      g.input_dims.push_back(d.has_dim_value() && d.dim_value() > 0 ? d.dim_value() : -1);
    }
  }
  for (const auto& out : graph.output()) g.outputs.push_back(out.name());
  for (const auto& n : graph.node()) {
    try {
      g.nodes.push_back(to_node(n));
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "onnx: '", source, "': node '", n.name(), "' (", n.op_type(), "): ", e.msg());
    }
  }
  return g;
}

}  // namespace limpq::models::onnx_import

#else  // !LIMPQ_WITH_ONNX

namespace limpq::models {
bool onnx_import_available() { return false; }
}  // namespace limpq::models

namespace limpq::models::onnx_import {

std::string onnx_type_name(int32_t data_type) { return "type " + std::to_string(data_type); }

OnnxGraph read_onnx_graph(const std::string&, const std::string& source) {
  TORCH_CHECK(false, "onnx: cannot import '", source, "': limpq was built without ONNX support (install libonnx-dev "
              "and configure again)");
}

}  // namespace limpq::models::onnx_import

#endif  // LIMPQ_WITH_ONNX
